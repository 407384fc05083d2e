using Iommu.Devices;
using Iommu.Domains;
using Iommu.Reliability.Tests.Infrastructure;
using Iommu.VtD.Driver;
using Iommu.VtD.Hardware;
using Xunit.Abstractions;

namespace Iommu.Reliability.Tests.FaultInjection;

/// <summary>
/// fail_nth over domains shared by two units of different widths (a 5-level unit and a 4-level one):
/// attaching behind the second unit and mapping a ragged range fail at every allocation in turn with
/// the state unchanged for both units' devices; the refused order (a domain in use on the wider unit
/// attached behind the narrower one) is -EINVAL with nothing allocated or changed; and unmaps that
/// cut superpages of the shared domain remove exactly the leaves they overlap, as both units see it.
/// </summary>
public sealed class MultiUnitFailNthTests(ITestOutputHelper output)
{
    private const ulong Iova = 0x3F_BFE0_0000 + 0x1000;   // ramps 4K → 2M → 1G → 2M → 4K
    private const ulong Pa = 0x2_BFE0_1000;
    private const ulong Size = Sizes.GiB + (6 * Sizes.MiB);

    public static TheoryData<bool> Modes => new() { false, true };

    [Theory]
    [MemberData(nameof(Modes))]
    public void A_domain_shared_across_widths_fails_cleanly_and_unmaps_exactly(bool scalable)
    {
        VtdConfig wide = scalable ? VtdConfig.ScalableMode57Bit : VtdConfig.Legacy48Bit with { Supports57BitTables = true, MaxGuestAddressWidth = 57 };
        VtdConfig narrow = scalable ? VtdConfig.ScalableMode48Bit : VtdConfig.Legacy48Bit;
        using var bed = new FailNthVtdBed(wide, scalable, narrow);
        PciDevice onWide = bed.AddDevice("0000:00:03.0");
        PciDevice onNarrow = bed.AddDevice("0000:05:00.0");
        PciDevice onWide2 = bed.AddDevice("0000:00:04.0");
        PciDevice onNarrow2 = bed.AddDevice("0000:05:01.0");
        var baseline = new List<string>();
        bed.Counters(baseline);

        // Narrow first: the domain drops to 4 levels, which the wide unit walks with a 48-bit AW.
        DmarDomain shared = bed.Unmanaged();
        Assert.Equal(Errno.None, bed.Iommu.AttachDevice(shared, onNarrow));
        Assert.Equal(4, shared.PageTable.Levels);
        (int attachFailures, Errno attached) = FailNthSweep.Run(
            bed.Platform.Frames,
            () => Snapshot(bed, shared, onWide, onNarrow),
            () => bed.Iommu.AttachDevice(shared, onWide),
            (n, err, pre) =>
            {
                Assert.True(err == Errno.EBUSY, $"attach fail_nth={n}: {err}, expected EBUSY");
                Assert.Equal(Errno.None, bed.Iommu.AttachGroup(onWide.IommuGroup!.DefaultDomain!, onWide.IommuGroup)); // 5.15 leaves the device attached to nothing
                FailNthSweep.AssertSame(pre, Snapshot(bed, shared, onWide, onNarrow), $"attach fail_nth={n}");
            });
        Assert.Equal(Errno.None, attached);

        List<string> Mapped() => Snapshot(bed, shared, onWide, onNarrow);
        (int mapFailures, Errno mapped) = FailNthSweep.Run(
            bed.Platform.Frames,
            Mapped,
            () => bed.Iommu.Map(shared, Iova, Pa, Size, IommuProt.Read | IommuProt.Write),
            (n, err, pre) =>
            {
                Assert.True(err == Errno.ENOMEM, $"map fail_nth={n}: {err}, expected ENOMEM");
                FailNthSweep.AssertSame(pre, Mapped(), $"map fail_nth={n}");
            });
        Assert.Equal(Errno.None, mapped);

        // Unmaps that cut superpages, with both units' IOTLBs warm: 4K inside the first 2M page, then a
        // range from the last 4K page below the 1G page into it. Exactly the overlapping leaves go.
        foreach ((ulong iova, ulong size) in new[] { (Iova + Sizes.MiB + 0x3000, Sizes.Page), (0x3F_BFFF_F000UL, 2 * Sizes.Page) })
        {
            var leaves = new List<(ulong Iova, ulong Size)>();
            shared.PageTable.ForEachLeaf((i, _, s, _) => leaves.Add((i, s)));
            var gone = leaves.FindAll(l => l.Iova < iova + size && iova < l.Iova + l.Size);
            Warm(onWide, onNarrow, leaves);
            Assert.Equal((ulong)gone.Sum(l => (long)l.Size), bed.Iommu.Unmap(shared, iova, size));
            foreach ((ulong li, ulong ls) in leaves)
            {
                bool removed = gone.Contains((li, ls));
                foreach (PciDevice dev in new[] { onWide, onNarrow })
                {
                    DmaResult r = dev.DmaRead(null, li + ls - 8, new byte[8]);
                    Assert.True(r.IsOk != removed, $"{dev.Name}: DMA at the end of leaf 0x{li:x}+0x{ls:x} ({(removed ? "removed" : "kept")}) was {r.Status}");
                }
            }
        }

        // The other order: a domain in use on the wide unit (5 levels) is refused behind the narrow one,
        // with no allocation and nothing changed.
        DmarDomain wideOnly = bed.Unmanaged();
        Assert.Equal(Errno.None, bed.Iommu.AttachDevice(wideOnly, onWide2));
        Assert.Equal(Errno.None, bed.Iommu.Map(wideOnly, 0x1000_0000, 0x9000_0000, Sizes.Page, IommuProt.Read | IommuProt.Write));
        List<string> Refused() => Snapshot(bed, wideOnly, onWide2, onNarrow2);
        List<string> before = Refused();
        (int refusedFailures, Errno refused) = FailNthSweep.Run(bed.Platform.Frames, Refused, () => bed.Iommu.AttachDevice(wideOnly, onNarrow2), (_, _, _) => { });
        Assert.Equal(0, refusedFailures);
        Assert.Equal(Errno.EINVAL, refused);
        Assert.Equal(5, wideOnly.PageTable.Levels);
        FailNthSweep.AssertSame(before, Refused(), "after the refused attach");

        output.WriteLine($"{(scalable ? "scalable" : "legacy")} 5-level + 4-level units: attach {attachFailures}, map {mapFailures} injected failures, each clean; the refused order allocates nothing");
        Assert.True((attachFailures >= 1 || !scalable) && mapFailures >= 2, $"attach {attachFailures}, map {mapFailures}"); // legacy: the context table exists already

        // Tear down: every frame and DID comes back.
        bed.Iommu.DetachDevice(shared, onWide);
        bed.Iommu.DetachDevice(shared, onNarrow);
        bed.Iommu.DetachDevice(wideOnly, onWide2);
        bed.Iommu.DomainFree(shared);
        bed.Iommu.DomainFree(wideOnly);
        var end = new List<string>();
        bed.Counters(end);
        FailNthSweep.AssertSame(baseline, end, "after teardown");
    }

    private static List<string> Snapshot(FailNthVtdBed bed, DmarDomain dom, PciDevice a, PciDevice b)
    {
        var s = new List<string>();
        bed.Counters(s, dom);
        FailNthVtdBed.Leaves("dom", dom, s);
        bed.Lookups("dom", dom, Iova - (4 * Sizes.MiB), Size + (8 * Sizes.MiB), s);
        IEnumerable<ulong> at = FailNthVtdBed.Samples(Iova - (4 * Sizes.MiB), Size + (8 * Sizes.MiB), 256 * Sizes.KiB).Append(0x1000_0000UL);
        FailNthVtdBed.Dma("a", a, null, at, s);
        FailNthVtdBed.Dma("b", b, null, at, s);
        return s;
    }

    private static void Warm(PciDevice a, PciDevice b, List<(ulong Iova, ulong Size)> leaves)
    {
        foreach ((ulong li, ulong ls) in leaves)
        {
            Assert.True(a.DmaRead(null, li + ls - 8, new byte[8]).IsOk);
            Assert.True(b.DmaRead(null, li + ls - 8, new byte[8]).IsOk);
        }
    }
}
