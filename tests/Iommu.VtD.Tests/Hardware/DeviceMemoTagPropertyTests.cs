using CsCheck;
using Iommu.Devices;
using Iommu.Domains;
using Iommu.VtD.Driver;
using Iommu.VtD.Hardware;

namespace Iommu.VtD.Tests.Hardware;

/// <summary>
/// One device, several address spaces at the same IOVAs: a Scalable-IOV function with its own domain (untagged
/// requests, through RID_PASID) and aux domains (requests tagged with each one's PASID), every domain mapping the
/// same IOVA pages to pages of its own. <see cref="PciDevice.DmaRead(uint?, ulong, Span{byte})"/> and
/// <see cref="PciDevice.DmaWrite(uint?, ulong, ReadOnlySpan{byte})"/> serve 16–64 B from the unit's translation
/// memo inline, keyed by the tag: the device keeps the key and index of its untagged requests and the index of the
/// last PASID it used, and computes a tagged request's key from the request. Random sequences switch tags request
/// by request, so a key or index the device kept for one tag and used for another would read, or write, another
/// domain's page.
/// </summary>
public sealed class DeviceMemoTagPropertyTests
{
    private const ulong IovaBase = 0x4000_0000;
    private const int Pages = 4;
    private const int AuxDomains = 3;
    private const ulong DataBase = 0x8000_0000; // domain d's page k at DataBase + (d * Pages + k) * 4K

    // One request: which tag (0: untagged, 1..AuxDomains: that aux domain's PASID), read or write, where, how long,
    // and Wide: bits above the 20 a PASID has, ORed into the tag's PASID (a tagged request only; the unit refuses such
    // a PASID as an argument, ArgumentOutOfRangeException). Lengths of 16-64 B,
    // the memo's inline move, are drawn most often.
    private readonly record struct Request(int Tag, bool Write, int Offset, int Length, uint Wide);

    // A PASID's key puts it at bits 35:16 of a word whose bit 36 says "tagged": bit 20 of a PASID would land on that
    // bit, and the key would be the same PASID's without it, if nothing stopped it. So bit 20 most often.
    private static readonly Gen<uint> WideBits =
        Gen.Frequency((12, Gen.Const(0u)), (2, Gen.Const(1u << 20)), (1, Gen.UInt[1, 0xFFF].Select(w => w << 20)));

    private static readonly Gen<Request> Requests =
        Gen.Select(Gen.Int[0, AuxDomains], Gen.Bool, Gen.Int[0, (Pages * 4096) - 1], Gen.Frequency((4, Gen.Int[16, 64]), (1, Gen.Int[1, 200])), WideBits)
            .Where(t => (t.Item3 & 0xFFF) + t.Item4 <= 4096)
            .Select(t => new Request(t.Item1, t.Item2, t.Item3, t.Item4, t.Item1 == 0 ? 0 : t.Item5));

    [Fact]
    public void Requests_that_switch_tags_reach_only_the_tagged_domains_pages()
    {
        using var platform = new Platform(new PlatformOptions { MemorySize = 4 * Sizes.GiB, TableMemorySize = 16 * Sizes.MiB });
        PciBus pci = platform.AddPciBus();
        var unit = new VtdUnit(platform.Memory, VtdConfig.ScalableMode48Bit);
        pci.AddDmaRemapper(unit, includeAll: true);
        pci.SetIommuOps(new IntelIommu(platform, unit)).ThrowIfError();
        PciDevice dev = pci.AddDevice(new PciDeviceSpec("0000:00:02.0") { PasidWidth = 20, ScalableIov = true, Acs = true });
        IommuCore iommu = platform.Iommu;

        // Tag 0: the device's own domain; tags 1..AuxDomains: aux domains, each with its PASID.
        var domains = new IDomain[AuxDomains + 1];
        var pasids = new uint?[AuxDomains + 1];
        domains[0] = iommu.DomainAlloc(pci)!;
        Assert.Equal(Errno.None, iommu.AttachDevice(domains[0], dev));
        Assert.Equal(Errno.None, iommu.SetDevAttr(dev, IommuDevAttr.AuxdEnable));
        for (int d = 1; d <= AuxDomains; d++)
        {
            domains[d] = iommu.DomainAlloc(pci)!;
            Assert.Equal(Errno.None, iommu.AttachDeviceAux(domains[d], dev));
            Assert.Equal(Errno.None, iommu.DomainGetAttr(domains[d], DomainAttr.AuxdId, out uint pasid));
            pasids[d] = pasid;
        }

        Assert.Equal(AuxDomains, pasids.Skip(1).Distinct().Count());
        for (int d = 0; d <= AuxDomains; d++)
        {
            for (int k = 0; k < Pages; k++)
            {
                Assert.Equal(Errno.None, iommu.Map(domains[d], IovaBase + ((ulong)k << 12), PageOf(d, k), 4096, IommuProt.Read | IommuProt.Write));
            }
        }

        // What every domain's pages hold: random bytes for each sample, then each write the model predicts.
        const int Region = (AuxDomains + 1) * Pages * 4096;
        byte[] model = new byte[Region];
        Gen.Select(Requests.Array[1, 60], Gen.Int[0, int.MaxValue]).Sample(
            t =>
            {
                var bytes = new Random(t.Item2);
                bytes.NextBytes(model);
                Assert.True(platform.Memory.TryWrite(DataBase, model));
                foreach (Request r in t.Item1)
                {
                    ulong iova = IovaBase + (ulong)r.Offset;
                    int k = r.Offset >> 12;
                    ulong pa = PageOf(r.Tag, k) + (ulong)(r.Offset & 0xFFF);
                    uint? tag = pasids[r.Tag] | r.Wide;
                    string what = $"a {r.Length} B {(r.Write ? "write" : "read")} at IOVA 0x{iova:x} tagged {(tag is uint p ? $"PASID 0x{p:x}" : "untagged")}";
                    if (r.Wide != 0)
                    {
                        // Wider than a PASID: the unit refuses the argument (the request's PASID field cannot hold
                        // it), and no page is reached.
                        byte[] buffer = new byte[r.Length];
                        Assert.Throws<ArgumentOutOfRangeException>(() => r.Write ? dev.DmaWrite(tag, iova, buffer) : dev.DmaRead(tag, iova, buffer));
                        byte[] unchanged = new byte[Region];
                        Assert.True(platform.Memory.TryRead(DataBase, unchanged));
                        Assert.True(unchanged.AsSpan().SequenceEqual(model), $"{what} changed memory");
                    }
                    else if (r.Write)
                    {
                        byte[] source = new byte[r.Length];
                        bytes.NextBytes(source);
                        DmaResult w = dev.DmaWrite(tag, iova, source);
                        Assert.True(w.IsOk, $"{what}: {w.Status}");
                        Assert.Equal(pa, w.PhysicalAddress);
                        source.CopyTo(model.AsSpan((int)(pa - DataBase)));

                        // Every domain's pages: a byte that landed in another domain's page shows.
                        byte[] region = new byte[Region];
                        Assert.True(platform.Memory.TryRead(DataBase, region));
                        int wrong = Array.FindIndex(region, i => region[i] != model[i]);
                        Assert.True(wrong < 0, wrong < 0 ? null : $"after {what}: physical 0x{DataBase + (ulong)wrong:x} holds 0x{region[wrong]:x2}, expected 0x{model[wrong]:x2}");
                    }
                    else
                    {
                        byte[] destination = new byte[r.Length];
                        DmaResult rd = dev.DmaRead(tag, iova, destination);
                        Assert.True(rd.IsOk, $"{what}: {rd.Status}");
                        Assert.Equal(pa, rd.PhysicalAddress);
                        Assert.True(destination.AsSpan().SequenceEqual(model.AsSpan((int)(pa - DataBase), r.Length)), $"{what} read other bytes than its domain's page holds at 0x{pa:x}");
                    }
                }
            },
            iter: 200,
            threads: 1);
    }

    private static ulong PageOf(int domain, int page) => DataBase + ((ulong)((domain * Pages) + page) << 12);
}
