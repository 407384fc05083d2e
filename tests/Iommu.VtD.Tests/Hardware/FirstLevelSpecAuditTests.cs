using Iommu.Devices;
using Iommu.VtD.Hardware;
using Iommu.VtD.Tests.Hardware.Infrastructure;
using static Iommu.VtD.Tests.Hardware.Infrastructure.FirstStageRig;

namespace Iommu.VtD.Tests.Hardware;

/// <summary>
/// First-level and nested translation checked against the specification's rules where the other
/// first-stage test classes leave a gap: the order of nested faults, reserved bits per paging mode,
/// accessed/dirty bits in large leaves, the canonical check before anything else, and stale
/// PASID-entry fields until a PASID-cache invalidation.
/// </summary>
public class FirstLevelSpecAuditTests
{
    private const uint Pasid = 0x19;
    private const ushort Did = 6;
    private const ulong Iova = 0x0000_7F00_0020_5000;
    private const ulong Gpa = 0x3000_0000;
    private const ulong Page = 0x0066_6000;

    private static FirstStageRig Rig(VtdConfig? config = null, ulong q2 = 0, bool nested = false, int levels = 4)
    {
        var r = new FirstStageRig(config ?? VtdConfig.ScalableModeFirstLevel48Bit, nested: nested, levels: levels);
        r.Entry(Pasid, Did, q2);
        r.Enable();
        return r;
    }

    private static ulong SlLeaf(FirstStageRig r, ulong gpa) => r.B.EntryAddress(r.SlRoot, 4, gpa, 1);

    // Nested: the accessed/dirty update of a first-level entry is part of the first-level walk, which
    // comes before the translation of its output through the second level. A guest table the second
    // level maps read-only therefore faults 0x77 even when the output would also fault.
    [Theory]
    [InlineData("unmapped", false)]
    [InlineData("unmapped", true)]
    [InlineData("read-only", true)]
    [InlineData("beyond-width", false)]
    [InlineData("interrupt", false)]
    public void Nested_entry_update_denial_is_reported_before_the_output_translation(string output, bool write)
    {
        VtdConfig config = VtdConfig.ScalableModeFirstLevel48Bit with { HostAddressWidth = 52 };
        using FirstStageRig r = Rig(config, nested: true);
        ulong gpa = output == "beyond-width" ? 1UL << 49 : Gpa;
        r.Map(Iova, gpa);
        switch (output)
        {
            case "read-only":
                r.SlMap(Gpa, Page, read: true, write: false);
                break;
            case "interrupt":
                r.SlMap(Gpa, 0xFEE0_0000);
                break;
        }

        if (write)
        {
            // Only D is owed: A is already set at every level.
            for (int level = 4; level >= 1; level--)
            {
                ulong e = r.EntryAt(Iova, level);
                r.Set(e, r.Read(e) | A);
            }
        }

        // The leaf's table is read-only in the second level.
        ulong leafTableGpa = r.Read(r.EntryAt(Iova, 2)) & 0x000F_FFFF_FFFF_F000;
        ulong sl = SlLeaf(r, leafTableGpa);
        r.Set(sl, r.Read(sl) & ~2UL);

        VtdTranslation t = r.Translate(Pasid, Iova, write ? DmaAccess.Write : DmaAccess.Read);
        Assert.Equal(VtdFaultReason.FirstLevelEntryWriteDenied, t.Reason);
        Assert.Equal(0x77UL, (r.B.FaultRecord(0).Hi >> 32) & 0xFF);
        Assert.Equal(0UL, r.Read(r.EntryAt(Iova, 1)) & D);
    }

    [Theory]
    [InlineData(5)]
    [InlineData(4)]
    public void Ps_in_a_pml5e_or_pml4e_of_a_five_level_walk_faults_0x72(int level)
    {
        using FirstStageRig r = Rig(VtdConfig.ScalableModeFirstLevel57Bit, levels: 5);
        const ulong iova = 0x00AB_CDEF_1234_5000;
        r.Map(iova, Page);
        ulong e = r.EntryAt(iova, level);
        r.Set(e, r.Read(e) | PS);
        Assert.Equal(VtdFaultReason.FirstLevelReserved, r.Translate(Pasid, iova).Reason);
        Assert.Equal(0UL, r.Read(r.EntryAt(iova, 5)) & A);
    }

    [Theory]
    [InlineData(1UL << 13, true)]
    [InlineData(1UL << 29, true)]
    [InlineData(1UL << 12, false)] // PAT of a large leaf
    public void Low_address_bits_of_a_1gib_leaf_are_reserved_but_pat_is_not(ulong bit, bool faults)
    {
        using FirstStageRig r = Rig();
        r.Map(0x8000_0000, 0x4000_0000 | bit, leafLevel: 3);
        VtdTranslation t = r.Translate(Pasid, 0x8000_1230);
        if (faults)
        {
            Assert.Equal(VtdFaultReason.FirstLevelReserved, t.Reason);
        }
        else
        {
            Assert.Equal(0x4000_1230UL, t.PhysicalAddress);
        }
    }

    [Theory]
    [InlineData(2)]
    [InlineData(3)]
    public void A_write_through_a_large_leaf_sets_d_in_that_leaf_and_a_above(int leafLevel)
    {
        using FirstStageRig r = Rig();
        ulong leaf = r.Map(0x8000_0000, 0, leafLevel: leafLevel);
        Assert.Equal(VtdTranslationStatus.Translated, r.Translate(Pasid, 0x8000_0040, DmaAccess.Write).Status);
        Assert.Equal(A | D, r.Read(leaf) & (A | D));
        for (int level = 4; level > leafLevel; level--)
        {
            Assert.Equal(A, r.Read(r.EntryAt(0x8000_0000, level)) & (A | D));
        }
    }

    // The canonical check comes first: no table is read (an unreadable FLPTR is not reported) and a
    // supervisor request without SRE is not reported either.
    [Theory]
    [InlineData(false, DmaRequestAttributes.None)]
    [InlineData(true, DmaRequestAttributes.None)]
    [InlineData(false, DmaRequestAttributes.Privileged)]
    public void Non_canonical_input_faults_0x80_before_the_pasid_entry_gates_and_the_walk(bool nested, DmaRequestAttributes attrs)
    {
        using var r = new FirstStageRig(VtdConfig.ScalableModeFirstLevel48Bit, nested: nested);
        r.Entry(Pasid, Did, flptr: VtdBench.BeyondMemory);
        r.Enable();
        Assert.Equal(VtdFaultReason.NonCanonicalAddress, r.Translate(Pasid, 0x0000_8000_0000_1000, attrs: attrs).Reason);
        Assert.Equal(0x80UL, (r.B.FaultRecord(0).Hi >> 32) & 0xFF);
    }

    // The PASID cache keeps SRE as it was read: a supervisor request is refused until software
    // invalidates the PASID cache for that PASID, and served after.
    [Fact]
    public void A_changed_sre_takes_effect_only_after_pasid_cache_invalidation()
    {
        using FirstStageRig r = Rig(VtdConfig.ScalableModeFirstLevel48Bit);
        r.B.EnableQueue(wide: true);
        r.Map(Iova, Page);
        Assert.Equal(Page, r.Translate(Pasid, Iova).PhysicalAddress);
        r.Entry(Pasid, Did, Sre);
        Assert.Equal(VtdFaultReason.SupervisorRequestsDisabled, r.Translate(Pasid, Iova, attrs: DmaRequestAttributes.Privileged).Reason);
        r.B.Submit(7 | (1UL << 4) | ((ulong)Did << 16) | ((ulong)Pasid << 32));
        Assert.Equal(Page, r.Translate(Pasid, Iova, attrs: DmaRequestAttributes.Privileged).PhysicalAddress);
    }

    // WPE likewise: a supervisor write to a read-only page keeps succeeding (WPE = 0 cached) until the
    // PASID-cache invalidation; after it the write faults 0x85.
    [Fact]
    public void A_changed_wpe_takes_effect_only_after_pasid_cache_invalidation()
    {
        using FirstStageRig r = Rig(q2: Sre);
        r.B.EnableQueue(wide: true);
        r.Map(Iova, Page, leaf: P | US);
        Assert.Equal(Page, r.Translate(Pasid, Iova, DmaAccess.Write, DmaRequestAttributes.Privileged).PhysicalAddress);
        r.Entry(Pasid, Did, Sre | Wpe);
        Assert.Equal(Page, r.Translate(Pasid, Iova, DmaAccess.Write, DmaRequestAttributes.Privileged).PhysicalAddress);
        r.B.Submit(7 | (1UL << 4) | ((ulong)Did << 16) | ((ulong)Pasid << 32));
        Assert.Equal(VtdFaultReason.ScalableWrite, r.Translate(Pasid, Iova, DmaAccess.Write, DmaRequestAttributes.Privileged).Reason);
    }
}
