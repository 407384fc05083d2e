using Iommu.Devices;
using Iommu.VtD.Hardware;
using Iommu.VtD.Tests.Hardware.Infrastructure;
using static Iommu.VtD.Tests.Hardware.Infrastructure.FirstStageRig;

namespace Iommu.VtD.Tests.Hardware;

/// <summary>
/// PASID-based IOTLB invalidation (P_IOTLB, descriptor type 6) of first-level entries: G=10 all of a
/// (DID, PASID), G=11 pages within it; one PASID's invalidation never leaves its own entries stale and
/// never touches another PASID's.
/// </summary>
public class PasidIotlbInvalidationTests
{
    private const ushort Did = 5;
    private const ulong Base = 0x10_0000_0000;
    private const ulong OldPages = 0x0080_0000;
    private const ulong NewPages = 0x0090_0000;

    // PASIDs 7 and 8 share one set of first-level tables (same DID), so only the IOTLB tells them apart.
    private static FirstStageRig TwoPasids(int pages)
    {
        var r = new FirstStageRig(VtdConfig.ScalableModeFirstLevel48Bit);
        r.Entry(7, Did);
        r.Entry(8, Did);
        r.Enable();
        r.B.EnableQueue(wide: true);
        for (int i = 0; i < pages; i++)
        {
            r.Map(Base + ((ulong)i << 12), OldPages + ((ulong)i << 12));
        }

        return r;
    }

    private static void Warm(FirstStageRig r, uint pasid, int pages)
    {
        for (int i = 0; i < pages; i++)
        {
            Assert.Equal(OldPages + ((ulong)i << 12), r.Translate(pasid, Base + ((ulong)i << 12)).PhysicalAddress);
        }
    }

    // Moves every page to its new frame in memory (no invalidation).
    private static void Remap(FirstStageRig r, int pages)
    {
        for (int i = 0; i < pages; i++)
        {
            ulong leaf = r.EntryAt(Base + ((ulong)i << 12), 1);
            r.Set(leaf, (NewPages + ((ulong)i << 12)) | P | RW | US);
        }
    }

    private static void Piotlb(FirstStageRig r, int g, ushort did, uint pasid, ulong addr = 0, int am = 0, bool ih = false) =>
        r.B.Submit(0x6 | ((ulong)g << 4) | ((ulong)did << 16) | ((ulong)pasid << 32), g == 3 ? addr | (ih ? 1UL << 6 : 0) | (uint)am : 0);

    private static ulong Output(FirstStageRig r, uint pasid, int page) => r.Translate(pasid, Base + ((ulong)page << 12)).PhysicalAddress;

    [Fact]
    public void Without_invalidation_both_pasids_keep_the_old_translation()
    {
        using FirstStageRig r = TwoPasids(4);
        Warm(r, 7, 4);
        Warm(r, 8, 4);
        Remap(r, 4);
        Warm(r, 7, 4);
        Warm(r, 8, 4);
    }

    [Fact]
    public void All_in_pasid_drops_exactly_that_pasids_entries()
    {
        using FirstStageRig r = TwoPasids(4);
        Warm(r, 7, 4);
        Warm(r, 8, 4);
        Remap(r, 4);
        Piotlb(r, 2, Did, 7);
        Assert.Equal(0UL, r.B.Fsts & 0x10); // no queue error
        for (int i = 0; i < 4; i++)
        {
            Assert.Equal(NewPages + ((ulong)i << 12), Output(r, 7, i));
            Assert.Equal(OldPages + ((ulong)i << 12), Output(r, 8, i));
        }
    }

    [Fact]
    public void All_in_pasid_of_another_did_drops_nothing()
    {
        using FirstStageRig r = TwoPasids(2);
        Warm(r, 7, 2);
        Remap(r, 2);
        Piotlb(r, 2, Did + 1, 7);
        Warm(r, 7, 2);
    }

    [Theory]
    [InlineData(0, 0)]
    [InlineData(1, 2)]
    [InlineData(2, 4)]
    [InlineData(3, 0)]
    public void Page_selective_drops_the_aligned_range_of_that_pasid_only(int am, int target)
    {
        using FirstStageRig r = TwoPasids(8);
        Warm(r, 7, 8);
        Warm(r, 8, 8);
        Remap(r, 8);
        Piotlb(r, 3, Did, 7, Base + ((ulong)target << 12), am, ih: am == 1);
        int first = target & ~((1 << am) - 1);
        for (int i = 0; i < 8; i++)
        {
            bool inRange = i >= first && i < first + (1 << am);
            Assert.Equal((inRange ? NewPages : OldPages) + ((ulong)i << 12), Output(r, 7, i));
            Assert.Equal(OldPages + ((ulong)i << 12), Output(r, 8, i));
        }
    }

    [Fact]
    public void Page_selective_drops_a_large_page_that_overlaps_the_range()
    {
        using var r = new FirstStageRig(VtdConfig.ScalableModeFirstLevel48Bit);
        r.Entry(7, Did);
        r.Enable();
        r.B.EnableQueue(wide: true);
        ulong leaf = r.Map(0x4000_0000, 0x0060_0000, leafLevel: 2);
        Assert.Equal(0x0060_5000UL, r.Translate(7, 0x4000_5000).PhysicalAddress);
        r.Set(leaf, 0x0080_0000 | P | RW | US | PS);
        Piotlb(r, 3, Did, 7, 0x4000_5000);
        Assert.Equal(0x0080_5000UL, r.Translate(7, 0x4000_5000).PhysicalAddress);
    }

    [Fact]
    public void Page_selective_leaves_second_level_entries_of_the_pasid_alone()
    {
        using var b = new VtdBench(VtdConfig.ScalableModeFirstLevel48Bit);
        b.EnableQueue(wide: true);
        (ulong _, ulong sl) = b.SetupScalableDevice(Rid, pasid: 7, aw: 2, did: Did);
        b.Map(sl, 4, 0x1000, 0x0070_0000);
        b.Enable(scalable: true);
        Assert.Equal(0x0070_0000UL, b.Unit.Translate(Rid, 7, 0x1000, 4, DmaAccess.Read).PhysicalAddress);
        b.Map(sl, 4, 0x1000, 0x0071_0000);
        b.Submit(0x6 | (3UL << 4) | ((ulong)Did << 16) | (7UL << 32), 0x1000);
        Assert.Equal(0x0070_0000UL, b.Unit.Translate(Rid, 7, 0x1000, 4, DmaAccess.Read).PhysicalAddress);
        b.Submit(0x6 | (2UL << 4) | ((ulong)Did << 16) | (7UL << 32));
        Assert.Equal(0x0071_0000UL, b.Unit.Translate(Rid, 7, 0x1000, 4, DmaAccess.Read).PhysicalAddress);
    }

    [Fact]
    public void Pasid_cache_invalidation_makes_a_changed_pasid_entry_visible()
    {
        using FirstStageRig r = TwoPasids(1);
        Warm(r, 7, 1);
        r.Entry(7, Did, q2Flags: Sre);
        Assert.Equal(VtdFaultReason.SupervisorRequestsDisabled, r.Translate(7, Base, attrs: DmaRequestAttributes.Privileged).Reason);
        r.B.Submit(0x7 | (1UL << 4) | ((ulong)Did << 16) | (7UL << 32));
        Assert.Equal(OldPages, r.Translate(7, Base, attrs: DmaRequestAttributes.Privileged).PhysicalAddress);
    }
    // IOTLB page-selective-within-domain (type 2, G=11) names a second-stage input address; first-stage
    // and nested entries are tagged with first-stage inputs, so the spec drops every one of the DID's.
    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public void Iotlb_page_selective_drops_every_first_stage_and_nested_entry_of_the_did(bool nested)
    {
        using var r = new FirstStageRig(VtdConfig.ScalableModeFirstLevel48Bit with { NestedTranslation = true }, nested);
        r.Entry(7, Did);
        r.Enable();
        r.B.EnableQueue(wide: true);
        for (int i = 0; i < 3; i++)
        {
            if (nested)
            {
                r.SlMap(OldPages + r.GpaOffset + ((ulong)i << 12), OldPages + ((ulong)i << 12));
                r.SlMap(NewPages + r.GpaOffset + ((ulong)i << 12), NewPages + ((ulong)i << 12));
            }

            r.Map(Base + ((ulong)i << 12), OldPages + r.GpaOffset + ((ulong)i << 12));
        }

        Warm(r, 7, 3);
        for (int i = 0; i < 3; i++)
        {
            r.Set(r.EntryAt(Base + ((ulong)i << 12), 1), (NewPages + r.GpaOffset + ((ulong)i << 12)) | P | RW | US);
        }

        // Another DID's page-selective invalidation leaves them; this DID's, at an address none of them
        // has (as input or output), drops all three.
        r.B.Submit(0x2 | (3UL << 4) | ((ulong)(Did + 1) << 16), 0x7777_0000);
        Warm(r, 7, 3);
        r.B.Submit(0x2 | (3UL << 4) | ((ulong)Did << 16), 0x7777_0000);
        Assert.Equal(0UL, r.B.Fsts & 0x10);
        for (int i = 0; i < 3; i++)
        {
            Assert.Equal(NewPages + ((ulong)i << 12), Output(r, 7, i));
        }
    }
}
