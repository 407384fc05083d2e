using CsCheck;
using Iommu.Devices;
using Iommu.Domains;
using Iommu.VtD.Driver;
using Iommu.VtD.Driver.Format;
using static Iommu.VtD.Tests.Driver.DriverTestKit;

namespace Iommu.VtD.Tests.Driver;

/// <summary>
/// The driver's recovery from a descriptor the unit rejects (qi_check_fault) over random submissions with
/// rejected descriptors at random slots, interleaved with maps, DMA and unmaps: the queue always goes on.
/// </summary>
public sealed class QueueErrorRecoveryPropertyTests
{
    private const ulong Iova = 0x10_0000, Pa = 0x40_0000;
    private const int Pages = 16;

    /// <summary>
    /// After a submission with one or more rejected descriptors anywhere in it (the submission fails), FSTS.IQE is
    /// clear and IQH equals IQT; a submission without one succeeds; and a later synchronous unmap really
    /// empties the IOTLB (a DMA to the unmapped IOVA faults, even one the IOTLB held).
    /// </summary>
    [Fact]
    public void Property_after_a_rejected_descriptor_the_queue_goes_on_and_unmap_still_flushes()
    {
        Gen<(int Op, int Page, uint Bad)> op = Gen.Select(Gen.Int[0, 3], Gen.Int[0, Pages - 1], Gen.UInt);
        Gen.Select(Gen.Bool, op.Array[1, 30]).Sample((scalable, ops) =>
        {
            using DriverBed f = New(scalable ? "Sm48" : "Legacy48");
            PciDevice dev = f.AddDevice("0000:00:03.0");
            IDomain dom = f.Unmanaged();
            Assert.Equal(Errno.None, f.Iommu.AttachDevice(dom, dev));
            IntelIommuUnit unit = f.Driver.Units[0];
            var mapped = new bool[Pages];
            foreach ((int kind, int page, uint bad) in ops)
            {
                ulong iova = Iova + ((ulong)page * K4);
                switch (kind)
                {
                    case 0 when !mapped[page]:
                        Assert.Equal(Errno.None, f.Iommu.Map(dom, iova, Pa + ((ulong)page * K4), K4, RW));
                        mapped[page] = true;
                        f.AssertDma(dev, null, iova, Pa + ((ulong)page * K4), "after map (fills the IOTLB)");
                        break;
                    case 1 when mapped[page]:
                        Assert.Equal(K4, f.Iommu.Unmap(dom, iova, K4));
                        mapped[page] = false;
                        f.AssertDma(dev, null, iova, 0, "after a synchronous unmap");
                        break;
                    default:
                        Submit(f, unit, bad);
                        break;
                }
            }

            for (int page = 0; page < Pages; page++)
            {
                f.AssertDma(dev, null, Iova + ((ulong)page * K4), mapped[page] ? Pa + ((ulong)page * K4) : 0, "at the end");
            }
        }, iter: 60);
    }

    // A submission of 1-6 descriptors; bit i of bad (low 6 bits) rejects slot i with one of three descriptors the
    // unit refuses: type 0, a page-group response (no ECAP.PRS), an IOTLB invalidation with G = 0.
    private static void Submit(DriverBed f, IntelIommuUnit unit, uint bad)
    {
        int count = 1 + (int)((bad >> 6) % 6);
        var descs = new QiDesc[count];
        bool rejects = false;
        for (int i = 0; i < count; i++)
        {
            if ((bad & (1u << i)) != 0)
            {
                rejects = true;
                descs[i] = ((bad >> (9 + (2 * i))) % 3) switch
                {
                    0 => new QiDesc(0, 0),
                    1 => new QiDesc(9 | (1UL << 16), 1UL << 2),
                    _ => new QiDesc(2, 0),
                };
            }
            else
            {
                descs[i] = new QiDesc(5 | (1UL << 6), 0); // wait, FN only
            }
        }

        string what = $"a submission of {count} with rejected slots 0b{Convert.ToString(bad & ((1u << count) - 1), 2)}";
        if (rejects)
        {
            Assert.Throws<InvalidOperationException>(() => unit.SubmitSync(descs, waitDrain: false));
        }
        else
        {
            unit.SubmitSync(descs, waitDrain: false);
        }

        Assert.True((f.Unit.Read32(0x34) & (1u << 4)) == 0, $"FSTS.IQE after {what}");
        Assert.True(f.Unit.Read64(0x80) == f.Unit.Read64(0x88), $"IQH 0x{f.Unit.Read64(0x80):x} != IQT 0x{f.Unit.Read64(0x88):x} after {what}");
    }
}
