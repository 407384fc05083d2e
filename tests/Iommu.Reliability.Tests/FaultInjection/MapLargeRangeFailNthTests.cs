using Iommu.Devices;
using Iommu.Domains;
using Iommu.Reliability.Tests.Infrastructure;
using Iommu.VtD.Driver;
using Iommu.VtD.Hardware;
using Xunit.Abstractions;

namespace Iommu.Reliability.Tests.FaultInjection;

/// <summary>
/// fail_nth over <c>iommu_map</c> of a large range into an attached domain: every page-table
/// allocation of the map fails once in turn; each failure must be -ENOMEM and leave the domain (its
/// leaves, iova_to_phys, the DMA the unit really does, the neighbours that share tables with the
/// range) and the frame/DID/PASID counts exactly as before.
/// </summary>
public sealed class MapLargeRangeFailNthTests(ITestOutputHelper output)
{
    public static TheoryData<string, ulong, ulong, ulong, ulong> Cases => new()
    {
        // 4K pages only (iova and pa differ modulo 2M) across the 512 GiB boundary: new L3/L2/L1 tables.
        { "Legacy48", 0x7F_FF00_0000 + 0x3000, 0x1_0000_1000, 24 * Sizes.MiB, Sizes.Page },
        { "Sm48", 0x7F_FF00_0000 + 0x3000, 0x1_0000_1000, 24 * Sizes.MiB, Sizes.Page },
        // Ramps 4K → 2M → 1G → 2M → 4K: superpages and the tables for both ragged ends.
        { "Sm48", 0x3F_BFE0_0000 + 0x1000, 0x2_BFE0_1000, Sizes.GiB + (6 * Sizes.MiB), 2 * Sizes.MiB },
    };

    [Theory]
    [MemberData(nameof(Cases))]
    public void Every_failing_table_allocation_is_enomem_and_leaves_the_domain_as_it_was(string config, ulong iova, ulong pa, ulong size, ulong gap)
    {
        bool scalable = config.StartsWith("Sm", StringComparison.Ordinal);
        using var bed = new FailNthVtdBed(scalable ? VtdConfig.ScalableMode48Bit : VtdConfig.Legacy48Bit, scalable);
        PciDevice dev = bed.AddDevice("0000:00:03.0");
        var baseline = new List<string>();
        bed.Counters(baseline);

        DmarDomain dom = bed.Unmanaged();
        Assert.Equal(Errno.None, bed.Iommu.AttachDevice(dom, dev));

        // Neighbours that share tables with the range: the first and last leaf tables when gap is one
        // page, only the upper tables otherwise (so that the range's own leaf tables are new).
        ulong before = iova - gap, after = iova + size + gap - Sizes.Page;
        Assert.Equal(Errno.None, bed.Iommu.Map(dom, before, 0x9000_0000, Sizes.Page, IommuProt.Read | IommuProt.Write));
        Assert.Equal(Errno.None, bed.Iommu.Map(dom, after, 0x9000_1000, Sizes.Page, IommuProt.Read));
        Fill(bed, 0x9000_0000, 2);

        ulong lookFrom = iova - (4 * Sizes.MiB), lookSize = size + (8 * Sizes.MiB);
        List<string> Snapshot()
        {
            var s = new List<string>();
            bed.Counters(s, dom);
            FailNthVtdBed.Leaves("dom", dom, s);
            bed.Lookups("dom", dom, lookFrom, lookSize, s);
            FailNthVtdBed.Dma("dev", dev, null, FailNthVtdBed.Samples(lookFrom, lookSize, 256 * Sizes.KiB).Append(before).Append(after), s);
            return s;
        }

        (int failures, Errno final) = FailNthSweep.Run(
            bed.Platform.Frames,
            Snapshot,
            () => bed.Iommu.Map(dom, iova, pa, size, IommuProt.Read | IommuProt.Write),
            (n, err, pre) =>
            {
                Assert.True(err == Errno.ENOMEM, $"fail_nth={n}: {err}, expected ENOMEM");
                FailNthSweep.AssertSame(pre, Snapshot(), $"fail_nth={n}");
            });

        Assert.Equal(Errno.None, final);
        output.WriteLine($"{config} map 0x{iova:x}+0x{size:x}: {failures} injected allocation failures, each -ENOMEM with state unchanged");
        Assert.True(failures >= 2, $"only {failures} allocations in a {size >> 20} MiB map");

        // The final map is complete, in the tables and in the hardware.
        Fill(bed, pa, 1);
        Fill(bed, pa + size - Sizes.Page, 1);
        for (ulong off = 0; off < size; off += Sizes.Page)
        {
            Assert.Equal(pa + off, bed.Iommu.IovaToPhys(dom, iova + off));
        }

        AssertDmaSees(dev, iova, pa);
        AssertDmaSees(dev, iova + size - Sizes.Page, pa + size - Sizes.Page);
        AssertDmaSees(dev, before, 0x9000_0000);

        // Tear down: every frame and DID comes back.
        Assert.True(bed.Iommu.Unmap(dom, iova, size) >= size);
        bed.Iommu.DetachDevice(dom, dev);
        bed.Iommu.DomainFree(dom);
        var end = new List<string>();
        bed.Counters(end);
        FailNthSweep.AssertSame(baseline, end, "after teardown");
    }

    private static void Fill(FailNthVtdBed bed, ulong pa, int pages)
    {
        for (int i = 0; i < pages; i++)
        {
            ulong p = pa + ((ulong)i * Sizes.Page);
            bed.Platform.Memory.WriteUInt64(p, p ^ 0x5A5A_0000_0000_0000);
        }
    }

    private static void AssertDmaSees(PciDevice dev, ulong iova, ulong pa)
    {
        Span<byte> b = stackalloc byte[8];
        DmaResult r = dev.DmaRead(null, iova, b);
        Assert.True(r.IsOk, $"DMA at 0x{iova:x}: {r.Status} reason 0x{r.FaultReason:x}");
        Assert.Equal(pa, r.Address);
        Assert.Equal(pa ^ 0x5A5A_0000_0000_0000, BitConverter.ToUInt64(b));
    }
}
