using CsCheck;
using Iommu.Devices;
using Iommu.Domains;
using static Iommu.VtD.Tests.Driver.DriverTestKit;

namespace Iommu.VtD.Tests.Driver;

public sealed class DifferentialTests
{
    public static TheoryData<string, bool> Cases() => new()
    {
        { "Legacy39", false }, { "Legacy48Cm", false }, { "Legacy48NoQi", false },
        { "Sm48", false }, { "Sm57Cm", false }, { "Sm48", true }, { "Sm57", true }, { "Sm48Cm", true },
    };

    // Random map/unmap sequences through IommuCore (non-overlapping ranges: one range per 4 GiB
    // slot, several sizes and alignments) against a SortedDictionary reference of ranges. After every
    // step, DMA and iova_to_phys agree with the model at sampled addresses; at the end everything is
    // unmapped, the domain is freed and every frame is back.
    [Theory]
    [MemberData(nameof(Cases))]
    public void Random_map_unmap_sequences_agree_with_a_reference_model(string config, bool aux)
    {
        ulong[] sizes = [K4, 3 * K4, M2, M2 + K4, 3 * M2, G1, G1 + M2];
        ulong[] iovaOffsets = [0, K4, 0x10_0000, M2, G1];
        ulong[] paOffsets = [0, K4, M2, G1];
        Gen<(bool Map, int Slot, int Size, int IovaOff, int PaOff)> op =
            Gen.Select(Gen.Int[0, 3].Select(i => i != 0), Gen.Int[0, 7], Gen.Int[0, sizes.Length - 1], Gen.Int[0, iovaOffsets.Length - 1], Gen.Int[0, paOffsets.Length - 1]);
        int width = Width(Config(config));

        op.Array[1, 20].Sample(ops =>
        {
            using DriverBed f = New(config);
            PciDevice dev = aux ? f.AuxParent("0000:00:02.0") : f.AddDevice("0000:00:03.0");
            long baseline = f.Platform.Frames.LiveFrames;
            IDomain dom = f.Unmanaged();
            uint? pasid = null;
            if (aux)
            {
                Assert.Equal(Errno.None, f.Iommu.AttachDeviceAux(dom, dev));
                pasid = (uint)f.Iommu.AuxGetPasid(dom, dev);
            }
            else
            {
                Assert.Equal(Errno.None, f.Iommu.AttachDevice(dom, dev));
            }

            var model = new SortedDictionary<ulong, (ulong Pa, ulong Size)>();
            var bySlot = new Dictionary<int, ulong>();
            foreach (var (map, slot, si, io, po) in ops)
            {
                ulong slotBase = slot == 7 ? (1UL << width) - (4 * G1) : (ulong)slot * 4 * G1;
                if (map && !bySlot.ContainsKey(slot))
                {
                    ulong size = sizes[si];
                    ulong iova = slotBase + iovaOffsets[io];
                    ulong pa = (4 * G1) + paOffsets[po] + ((ulong)slot * 0x1000_0000 % G1); // never PA 0 (AssertDma reads 0 as "faults")
                    Assert.Equal(Errno.None, f.Iommu.Map(dom, iova, pa, size, RW));
                    model[iova] = (pa, size);
                    bySlot[slot] = iova;
                }
                else if (!map && bySlot.Remove(slot, out ulong iova))
                {
                    (ulong _, ulong size) = model[iova];
                    model.Remove(iova);
                    Assert.Equal(size, f.Iommu.Unmap(dom, iova, size));
                }

                foreach (KeyValuePair<ulong, (ulong Pa, ulong Size)> kv in model)
                {
                    ulong i = kv.Key, p = kv.Value.Pa, s = kv.Value.Size;
                    foreach (ulong off in new[] { 0UL, s / 2 & ~7UL, s - 8 })
                    {
                        Assert.Equal(p + off, f.Iommu.IovaToPhys(dom, i + off));
                        f.AssertDma(dev, pasid, i + off, p + off);
                    }

                    if (!model.ContainsKey(i + s))
                    {
                        Assert.Equal(0UL, f.Iommu.IovaToPhys(dom, i + s));
                        f.AssertDma(dev, pasid, i + s, 0);
                    }

                    if (i >= K4 && !Covered(model, i - 8))
                    {
                        f.AssertDma(dev, pasid, i - 8, 0);
                    }
                }

                for (int s = 0; s < 8; s++)
                {
                    ulong b = s == 7 ? (1UL << width) - (4 * G1) : (ulong)s * 4 * G1;
                    if (!bySlot.ContainsKey(s))
                    {
                        Assert.Equal(0UL, f.Iommu.IovaToPhys(dom, b + G1 + 0x40));
                        f.AssertDma(dev, pasid, b + G1 + 0x40, 0);
                    }
                }
            }

            foreach (KeyValuePair<ulong, (ulong Pa, ulong Size)> kv in model)
            {
                Assert.Equal(kv.Value.Size, f.Iommu.Unmap(dom, kv.Key, kv.Value.Size));
                f.AssertDma(dev, pasid, kv.Key, 0);
            }

            Assert.Empty(Leaves(dom));
            if (aux)
            {
                f.Iommu.DetachDeviceAux(dom, dev);
            }
            else
            {
                f.Iommu.DetachDevice(dom, dev);
            }

            f.Iommu.DomainFree(dom);
            Assert.Equal(baseline, f.Platform.Frames.LiveFrames);
        }, iter: 25);
    }

    private static bool Covered(SortedDictionary<ulong, (ulong Pa, ulong Size)> model, ulong iova)
    {
        foreach (KeyValuePair<ulong, (ulong Pa, ulong Size)> kv in model)
        {
            if (iova >= kv.Key && iova < kv.Key + kv.Value.Size)
            {
                return true;
            }
        }

        return false;
    }
}
