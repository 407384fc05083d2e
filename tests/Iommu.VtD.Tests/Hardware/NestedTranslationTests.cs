using Iommu.Devices;
using Iommu.VtD.Hardware;
using Iommu.VtD.Tests.Hardware.Infrastructure;
using static Iommu.VtD.Tests.Hardware.Infrastructure.FirstStageRig;

namespace Iommu.VtD.Tests.Hardware;

/// <summary>
/// Nested translation (PGTT 011): first-level tables at guest-physical addresses, each read and the
/// final output translated through the second level; one test per fault row of spec §1.6.
/// </summary>
public class NestedTranslationTests
{
    private const uint Pasid = 0x15;
    private const ushort Did = 12;
    private const ulong Iova = 0x0000_7F00_0010_3000;
    private const ulong Gpa = 0x3000_0000;
    private const ulong Page = 0x0066_6000;

    // HAW 52 above the 48-bit second level, so guest-physical addresses beyond the second level's
    // input width are not already reserved pointer bits.
    private static readonly VtdConfig WideHost = VtdConfig.ScalableModeFirstLevel48Bit with { HostAddressWidth = 52 };

    private static FirstStageRig Rig(VtdConfig? config = null, ulong q2 = 0)
    {
        var r = new FirstStageRig(config ?? VtdConfig.ScalableModeFirstLevel48Bit, nested: true);
        r.Entry(Pasid, Did, q2);
        r.Enable();
        return r;
    }

    private static FirstStageRig Mapped(VtdConfig? config = null, ulong q2 = 0)
    {
        FirstStageRig r = Rig(config, q2);
        r.Map(Iova, Gpa);
        r.SlMap(Gpa, Page);
        return r;
    }

    private static ulong SlLeaf(FirstStageRig r, ulong gpa, int level = 1) => r.B.EntryAddress(r.SlRoot, 4, gpa, level);

    [Fact]
    public void Both_stages_translate_and_a_d_land_in_the_guest_tables_host_frames()
    {
        using FirstStageRig r = Mapped();
        VtdTranslation t = r.Translate(Pasid, Iova + 0x44, DmaAccess.Write);
        Assert.Equal(VtdTranslationStatus.Translated, t.Status);
        Assert.Equal(Page + 0x44, t.PhysicalAddress);
        Assert.Equal(A | D, r.Read(r.EntryAt(Iova, 1)) & (A | D));
        Assert.Equal(A, r.Read(r.EntryAt(Iova, 3)) & (A | D));
    }

    [Fact]
    public void Five_level_first_stage_over_the_second_level()
    {
        using var r = new FirstStageRig(VtdConfig.ScalableModeFirstLevel57Bit, nested: true, levels: 5);
        r.Entry(Pasid, Did);
        r.Enable();
        const ulong high = 0x00AB_CDEF_1234_5000;
        r.Map(high, Gpa);
        r.SlMap(Gpa, Page);
        Assert.Equal(Page + 8, r.Translate(Pasid, high + 8, DmaAccess.Write).PhysicalAddress);
        Assert.Equal(A, r.Read(r.EntryAt(high, 5)) & (A | D));
        Assert.Equal(A | D, r.Read(r.EntryAt(high, 1)) & (A | D));
    }

    [Fact]
    public void Flptr_beyond_the_second_level_width_faults_0x74()
    {
        using var r = new FirstStageRig(WideHost, nested: true);
        r.Entry(Pasid, Did, flptr: 1UL << 50);
        r.Enable();
        Assert.Equal(VtdFaultReason.FirstLevelTableBeyondWidth, r.Translate(Pasid, Iova).Reason);
    }

    [Fact]
    public void Next_table_beyond_the_second_level_width_faults_0x74()
    {
        using FirstStageRig r = Mapped(WideHost);
        ulong pml4e = r.EntryAt(Iova, 4);
        r.Set(pml4e, (1UL << 49) | Table);
        Assert.Equal(VtdFaultReason.FirstLevelTableBeyondWidth, r.Translate(Pasid, Iova).Reason);
    }

    [Fact]
    public void Second_level_denying_read_of_the_top_table_faults_0x75()
    {
        using FirstStageRig r = Mapped();
        ulong sl = SlLeaf(r, r.FlRoot + r.GpaOffset);
        r.Set(sl, r.Read(sl) & ~1UL); // W only
        Assert.Equal(VtdFaultReason.FirstLevelRootReadDenied, r.Translate(Pasid, Iova).Reason);
    }

    [Fact]
    public void Second_level_denying_read_of_a_lower_table_faults_0x76()
    {
        using FirstStageRig r = Mapped();
        ulong tableGpa = r.Read(r.EntryAt(Iova, 3)) & 0x000F_FFFF_FFFF_F000;
        ulong sl = SlLeaf(r, tableGpa);
        r.Set(sl, 0); // not mapped at all
        Assert.Equal(VtdFaultReason.FirstLevelEntryReadDenied, r.Translate(Pasid, Iova).Reason);
    }

    [Fact]
    public void Accessed_update_of_a_read_only_guest_table_faults_0x77_and_writes_nothing()
    {
        using FirstStageRig r = Mapped();
        ulong tableGpa = r.Read(r.EntryAt(Iova, 2)) & 0x000F_FFFF_FFFF_F000;
        ulong sl = SlLeaf(r, tableGpa);
        r.Set(sl, r.Read(sl) & ~2UL); // R only
        Assert.Equal(VtdFaultReason.FirstLevelEntryWriteDenied, r.Translate(Pasid, Iova).Reason);
        Assert.Equal(0UL, r.Read(r.EntryAt(Iova, 4)) & A);
        Assert.Equal(0UL, r.Read(r.EntryAt(Iova, 1)) & A);

        // With A already set there (and D for a write), nothing needs writing and the walk succeeds.
        ulong leaf = r.EntryAt(Iova, 1);
        r.Set(leaf, r.Read(leaf) | A | D);
        Assert.Equal(Page, r.Translate(Pasid, Iova, DmaAccess.Write).PhysicalAddress);
    }

    [Fact]
    public void Unreadable_second_level_table_faults_0x78()
    {
        using FirstStageRig r = Mapped();
        ulong slPml4e = SlLeaf(r, Gpa, 4);
        ulong slPdpt = r.Read(slPml4e) & 0x000F_FFFF_FFFF_F000;
        r.Set(slPdpt + (((Gpa >> 30) & 0x1FF) * 8), VtdBench.BeyondMemory | 3);
        Assert.Equal(VtdFaultReason.SecondLevelReadError, r.Translate(Pasid, Iova).Reason);
    }

    [Theory]
    [InlineData(false, DmaAccess.Read)]
    [InlineData(true, DmaAccess.Write)]
    public void Output_without_second_level_permission_faults_0x79(bool mapped, DmaAccess access)
    {
        using FirstStageRig r = Rig();
        r.Map(Iova, Gpa);
        if (mapped)
        {
            r.SlMap(Gpa, Page, read: true, write: false);
        }

        Assert.Equal(VtdFaultReason.SecondLevelNestedPermission, r.Translate(Pasid, Iova, access).Reason);
        Assert.Equal(0UL, r.Read(r.EntryAt(Iova, 1)) & (A | D));
    }

    [Fact]
    public void Read_only_second_level_output_gives_a_read_only_translation()
    {
        using FirstStageRig r = Rig();
        r.Map(Iova, Gpa);
        r.SlMap(Gpa, Page, read: true, write: false);
        VtdTranslation t = r.Translate(Pasid, Iova);
        Assert.Equal(Page, t.PhysicalAddress);
        Assert.False(t.Writable);
    }

    [Fact]
    public void Reserved_bit_in_a_second_level_entry_faults_0x7a()
    {
        using FirstStageRig r = Mapped();
        ulong sl = SlLeaf(r, Gpa);
        r.Set(sl, r.Read(sl) | (1UL << 62));
        Assert.Equal(VtdFaultReason.SecondLevelReserved, r.Translate(Pasid, Iova).Reason);
    }

    [Fact]
    public void Unreadable_slptptr_faults_0x7b()
    {
        using var r = new FirstStageRig(VtdConfig.ScalableModeFirstLevel48Bit, nested: true);
        r.B.PasidEntry(r.Dir, Pasid, VtdBench.BeyondMemory | (2UL << 2) | (3UL << 6) | 1, Did, q2: r.FlRoot + r.GpaOffset);
        r.Enable();
        Assert.Equal(VtdFaultReason.SecondLevelPointerInvalid, r.Translate(Pasid, Iova).Reason);
    }

    [Fact]
    public void Output_beyond_the_second_level_width_faults_0x84()
    {
        using FirstStageRig r = Rig(WideHost);
        r.Map(Iova, 1UL << 49);
        Assert.Equal(VtdFaultReason.SecondLevelAddressBeyondWidth, r.Translate(Pasid, Iova).Reason);
    }

    [Theory]
    [InlineData(2, 1, 4096UL)]
    [InlineData(1, 2, 4096UL)]
    [InlineData(2, 2, 2UL << 20)]
    public void Effective_page_is_the_smaller_of_the_two_stages(int flLeaf, int slLeaf, ulong expected)
    {
        using FirstStageRig r = Rig();
        const ulong iova = 0x4000_0000, gpa = 0x2800_0000, hpa = 0x0060_0000;
        r.Map(iova, gpa, leafLevel: flLeaf);
        r.B.Map(r.SlRoot, 4, gpa, hpa, leafLevel: slLeaf);
        VtdTranslation t = r.Translate(Pasid, iova + 0x345);
        Assert.Equal(hpa + 0x345, t.PhysicalAddress);
        Assert.Equal(expected, t.PageSize);
    }

    [Fact]
    public void First_level_and_nested_walks_and_hits_allocate_nothing()
    {
        using FirstStageRig nested = Mapped();
        using var flat = new FirstStageRig(VtdConfig.ScalableModeFirstLevel48Bit);
        flat.Entry(Pasid, Did);
        flat.Enable();
        flat.Map(Iova, Page);
        var buffer = new byte[64];
        foreach (FirstStageRig r in new[] { nested, flat })
        {
            long allocated = Iommu.VtD.Tests.Infrastructure.Allocations.Fewest(() =>
            {
                for (int i = 0; i < 50; i++)
                {
                    r.B.GlobalIotlbInvalidate(); // every other request walks
                    r.Unit.Write(Rid, Pasid, Iova, buffer, DmaRequestAttributes.None);
                    r.Unit.Read(Rid, Pasid, Iova, buffer);
                }
            });
            Assert.Equal(0, allocated);
        }
    }

    [Fact]
    public void Domain_selective_iotlb_invalidation_removes_nested_entries()
    {
        using FirstStageRig r = Mapped();
        r.B.EnableQueue(wide: true);
        Assert.Equal(Page, r.Translate(Pasid, Iova).PhysicalAddress);
        ulong sl = SlLeaf(r, Gpa);
        r.Set(sl, 0x0077_7000 | 3);
        Assert.Equal(Page, r.Translate(Pasid, Iova).PhysicalAddress); // stale until flushed
        r.B.Submit(0x2 | (2UL << 4) | ((ulong)(Did + 1) << 16));     // another DID: still stale
        Assert.Equal(Page, r.Translate(Pasid, Iova).PhysicalAddress);
        r.B.Submit(0x2 | (2UL << 4) | ((ulong)Did << 16));
        Assert.Equal(0x0077_7000UL, r.Translate(Pasid, Iova).PhysicalAddress);
    }
}
