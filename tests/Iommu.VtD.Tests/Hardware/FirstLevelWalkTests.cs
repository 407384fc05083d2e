using Iommu;
using Iommu.Devices;
using Iommu.VtD.Hardware;
using Iommu.VtD.Tests.Hardware.Infrastructure;
using static Iommu.VtD.Tests.Hardware.Infrastructure.FirstStageRig;

namespace Iommu.VtD.Tests.Hardware;

/// <summary>
/// First-level (PGTT 001) translation: the IA-32e walk, its fault reasons (one test per row of spec
/// §1.5), accessed/dirty bits as they end in memory, 4/5 levels and large pages.
/// </summary>
public class FirstLevelWalkTests
{
    private const uint Pasid = 0x2A;
    private const ushort Did = 9;
    private const ulong Iova = 0x7F12_3456_7000;
    private const ulong Page = 0x0055_5000;

    private static FirstStageRig Rig(ulong q2 = 0, VtdConfig? config = null, int levels = 4)
    {
        var r = new FirstStageRig(config ?? VtdConfig.ScalableModeFirstLevel48Bit, levels: levels);
        r.Entry(Pasid, Did, q2);
        r.Enable();
        return r;
    }

    [Theory]
    [InlineData(4)]
    [InlineData(5)]
    public void Four_and_five_level_walks_reach_the_page_and_set_a_on_every_level(int levels)
    {
        using FirstStageRig r = Rig(config: VtdConfig.ScalableModeFirstLevel57Bit, levels: levels);
        ulong iova = levels == 5 ? 0x00AB_CDEF_1234_5000 : Iova;
        r.Map(iova, Page);
        VtdTranslation t = r.Translate(Pasid, iova + 0x10);
        Assert.Equal(VtdTranslationStatus.Translated, t.Status);
        Assert.Equal(Page + 0x10, t.PhysicalAddress);
        Assert.Equal(4096UL, t.PageSize);
        for (int level = levels; level >= 1; level--)
        {
            ulong e = r.Read(r.EntryAt(iova, level));
            Assert.Equal(A, e & (A | D | EA));
        }
    }

    [Fact]
    public void A_write_sets_d_in_the_leaf_only_and_a_on_the_path_as_bytes_in_memory()
    {
        using FirstStageRig r = Rig();
        ulong leaf = r.Map(Iova, Page);
        ulong before = r.Read(leaf);
        Assert.True(r.Translate(Pasid, Iova, DmaAccess.Read).Status == VtdTranslationStatus.Translated);
        Assert.Equal(before | A, r.Read(leaf));

        // The cached read left the leaf clean: a write through it walks again and sets D.
        Assert.True(r.Translate(Pasid, Iova, DmaAccess.Write).Writable);
        Assert.Equal(before | A | D, r.Read(leaf));
        for (int level = 4; level >= 2; level--)
        {
            Assert.Equal(Table | A, r.Read(r.EntryAt(Iova, level)) & 0xFFF);
        }
    }

    [Fact]
    public void Eafe_sets_ea_beside_a()
    {
        using FirstStageRig r = Rig(q2: Eafe);
        ulong leaf = r.Map(Iova, Page);
        r.Translate(Pasid, Iova);
        Assert.Equal(A | EA, r.Read(leaf) & (A | EA | D));
        Assert.Equal(A | EA, r.Read(r.EntryAt(Iova, 4)) & (A | EA));
    }

    [Fact]
    public void Eafe_without_eafs_is_a_reserved_bit()
    {
        using FirstStageRig r = Rig(q2: Eafe, config: VtdConfig.ScalableModeFirstLevel48Bit with { ExtendedAccessedFlag = false });
        r.Map(Iova, Page);
        Assert.Equal(VtdFaultReason.PasidEntryReserved, r.Translate(Pasid, Iova).Reason);
    }

    [Fact]
    public void Two_mib_and_one_gib_leaves_translate_with_their_size()
    {
        using FirstStageRig r = Rig();
        r.Map(0x4000_0000, 0x0060_0000, leafLevel: 2);
        r.Map(0x8000_0000, 0, leafLevel: 3);
        VtdTranslation m = r.Translate(Pasid, 0x4001_2340);
        Assert.Equal(0x0061_2340UL, m.PhysicalAddress);
        Assert.Equal(2UL << 20, m.PageSize);
        VtdTranslation g = r.Translate(Pasid, 0x8765_4320);
        Assert.Equal(0x0765_4320UL, g.PhysicalAddress);
        Assert.Equal(1UL << 30, g.PageSize);
    }

    [Fact]
    public void One_gib_leaf_without_fl1gp_is_a_reserved_bit_fault_and_sets_nothing()
    {
        using FirstStageRig r = Rig(config: VtdConfig.ScalableModeFirstLevel48Bit with { FirstLevel1GiBPages = false });
        ulong leaf = r.Map(0x8000_0000, 0, leafLevel: 3);
        ulong before = r.Read(leaf);
        Assert.Equal(VtdFaultReason.FirstLevelReserved, r.Translate(Pasid, 0x8000_1000, DmaAccess.Write).Reason);
        Assert.Equal(before, r.Read(leaf));
        Assert.Equal(Table, r.Read(r.EntryAt(0x8000_0000, 4)) & 0xFFF);
    }

    [Fact]
    public void Five_level_mode_without_fl5lp_is_an_invalid_entry()
    {
        using FirstStageRig r = Rig(config: VtdConfig.ScalableModeFirstLevel48Bit with { Supports57BitTables = true }, levels: 5);
        Assert.Equal(VtdFaultReason.PasidEntryInvalid, r.Translate(Pasid, 0x1000).Reason);
    }

    [Fact]
    public void First_level_entries_need_flts_else_invalid()
    {
        using FirstStageRig r = Rig(config: VtdConfig.ScalableMode48Bit);
        Assert.Equal(VtdFaultReason.PasidEntryInvalid, r.Translate(Pasid, 0x1000).Reason);
        Assert.Equal(0UL, r.B.Ecap & (1UL << 47));
    }

    [Fact]
    public void Nested_entries_need_nest_else_invalid()
    {
        using var r = new FirstStageRig(VtdConfig.ScalableModeFirstLevel48Bit with { NestedTranslation = false }, nested: true);
        r.Entry(Pasid, Did);
        r.Enable();
        Assert.Equal(VtdFaultReason.PasidEntryInvalid, r.Translate(Pasid, 0x1000).Reason);
    }

    [Theory]
    [InlineData(4, 0x0000_8000_0000_0000UL)]
    [InlineData(4, 0xFFFF_0000_0000_0000UL)]
    [InlineData(5, 0x0100_0000_0000_0000UL)]
    public void Non_canonical_input_faults_0x80(int levels, ulong iova)
    {
        using FirstStageRig r = Rig(config: VtdConfig.ScalableModeFirstLevel57Bit, levels: levels);
        Assert.Equal(VtdFaultReason.NonCanonicalAddress, r.Translate(Pasid, iova).Reason);
    }

    [Fact]
    public void Upper_half_canonical_addresses_walk()
    {
        using FirstStageRig r = Rig();
        const ulong high = 0xFFFF_8000_0000_1000;
        r.Map(high, Page);
        Assert.Equal(Page, r.Translate(Pasid, high).PhysicalAddress);
    }

    [Fact]
    public void Supervisor_request_without_sre_faults_0x5d()
    {
        using FirstStageRig r = Rig();
        r.Map(Iova, Page);
        Assert.Equal(VtdFaultReason.SupervisorRequestsDisabled, r.Translate(Pasid, Iova, attrs: DmaRequestAttributes.Privileged).Reason);
        Assert.Equal(Page, r.Translate(Pasid, Iova).PhysicalAddress);
    }

    [Fact]
    public void Execute_request_without_ere_faults_0x5c()
    {
        using FirstStageRig r = Rig(config: VtdConfig.ScalableModeFirstLevel48Bit with { ExecuteRequests = true });
        r.Map(Iova, Page);
        Assert.Equal(VtdFaultReason.ExecuteRequestsDisabled, r.Translate(Pasid, Iova, attrs: DmaRequestAttributes.Execute).Reason);
    }

    [Fact]
    public void Ere_without_ers_is_a_reserved_bit()
    {
        using FirstStageRig r = Rig(q2: Ere);
        Assert.Equal(VtdFaultReason.PasidEntryReserved, r.Translate(Pasid, Iova).Reason);
    }

    [Fact]
    public void Unreadable_flptr_faults_0x73()
    {
        using var r = new FirstStageRig(VtdConfig.ScalableModeFirstLevel48Bit);
        r.Entry(Pasid, Did, flptr: VtdBench.BeyondMemory);
        r.Enable();
        Assert.Equal(VtdFaultReason.FirstLevelPointerInvalid, r.Translate(Pasid, Iova).Reason);
    }

    [Fact]
    public void Unreadable_lower_table_faults_0x70()
    {
        using FirstStageRig r = Rig();
        r.Set(r.FlRoot + (((Iova >> 39) & 0x1FF) * 8), VtdBench.BeyondMemory | Table);
        Assert.Equal(VtdFaultReason.FirstLevelReadError, r.Translate(Pasid, Iova).Reason);
    }

    [Theory]
    [InlineData(4)]
    [InlineData(3)]
    [InlineData(1)]
    public void Not_present_entry_faults_0x71(int level)
    {
        using FirstStageRig r = Rig();
        r.Map(Iova, Page);
        ulong e = r.EntryAt(Iova, level);
        r.Set(e, r.Read(e) & ~P);
        Assert.Equal(VtdFaultReason.FirstLevelNotPresent, r.Translate(Pasid, Iova).Reason);
    }

    [Theory]
    [InlineData(4, PS)]                          // PS in a PML4E
    [InlineData(2, 1UL << 46)]                   // address bit at HAW 46
    [InlineData(1, 1UL << 51)]
    public void Reserved_bit_faults_0x72(int level, ulong bit)
    {
        using FirstStageRig r = Rig();
        r.Map(Iova, Page);
        ulong e = r.EntryAt(Iova, level);
        r.Set(e, r.Read(e) | bit);
        Assert.Equal(VtdFaultReason.FirstLevelReserved, r.Translate(Pasid, Iova).Reason);
    }

    [Fact]
    public void Low_address_bits_of_a_2mib_leaf_are_reserved()
    {
        using FirstStageRig r = Rig();
        r.Map(0x4000_0000, 0x0060_0000 | 0x2000, leafLevel: 2);
        Assert.Equal(VtdFaultReason.FirstLevelReserved, r.Translate(Pasid, 0x4000_0000).Reason);
    }

    [Fact]
    public void Ignored_bits_and_xd_without_nxe_do_not_fault()
    {
        using FirstStageRig r = Rig();
        r.Map(Iova, Page, leaf: P | RW | US | XD | (0x7FFUL << 52) | 0x100 | 0x800);
        Assert.Equal(Page, r.Translate(Pasid, Iova).PhysicalAddress);
    }

    [Fact]
    public void User_request_to_a_supervisor_page_faults_0x81_at_any_level()
    {
        using FirstStageRig r = Rig(q2: Sre);
        r.Map(Iova, Page, table: P | RW);
        Assert.Equal(VtdFaultReason.UserAccessDenied, r.Translate(Pasid, Iova).Reason);
        Assert.Equal(Page, r.Translate(Pasid, Iova, attrs: DmaRequestAttributes.Privileged).PhysicalAddress);
    }

    [Fact]
    public void User_write_to_a_read_only_path_faults_0x85()
    {
        using FirstStageRig r = Rig();
        ulong leaf = r.Map(Iova, Page, table: P | US);
        VtdTranslation read = r.Translate(Pasid, Iova);
        Assert.False(read.Writable);
        Assert.Equal(VtdFaultReason.ScalableWrite, r.Translate(Pasid, Iova, DmaAccess.Write).Reason);
        Assert.Equal(0UL, r.Read(leaf) & D);
    }

    [Theory]
    [InlineData(false, true)]
    [InlineData(true, false)]
    public void Supervisor_write_to_read_only_page_needs_wpe_to_fault(bool wpe, bool succeeds)
    {
        using FirstStageRig r = Rig(q2: Sre | (wpe ? Wpe : 0));
        ulong leaf = r.Map(Iova, Page, leaf: P | US);
        VtdTranslation t = r.Translate(Pasid, Iova, DmaAccess.Write, DmaRequestAttributes.Privileged);
        Assert.Equal(succeeds ? VtdFaultReason.None : VtdFaultReason.ScalableWrite, t.Reason);
        Assert.Equal(succeeds ? A | D : 0, r.Read(leaf) & (A | D));
    }

    [Fact]
    public void Execute_of_an_xd_page_with_nxe_faults_0x82()
    {
        VtdConfig ers = VtdConfig.ScalableModeFirstLevel48Bit with { ExecuteRequests = true };
        using FirstStageRig r = Rig(q2: Ere | Nxe, config: ers);
        r.Map(Iova, Page, leaf: P | RW | US | XD);
        Assert.Equal(VtdFaultReason.ExecuteDenied, r.Translate(Pasid, Iova, attrs: DmaRequestAttributes.Execute).Reason);
        Assert.Equal(Page, r.Translate(Pasid, Iova).PhysicalAddress);

        using FirstStageRig noNxe = Rig(q2: Ere, config: ers);
        noNxe.Map(Iova, Page, leaf: P | RW | US | XD);
        Assert.Equal(Page, noNxe.Translate(Pasid, Iova, attrs: DmaRequestAttributes.Execute).PhysicalAddress);
    }

    [Fact]
    public void Supervisor_fetch_from_a_user_page_with_smep_faults_0x82()
    {
        using FirstStageRig r = Rig(q2: Ere | Sre | Smep, config: VtdConfig.ScalableModeFirstLevel48Bit with { ExecuteRequests = true });
        r.Map(Iova, Page);
        const DmaRequestAttributes fetch = DmaRequestAttributes.Execute | DmaRequestAttributes.Privileged;
        Assert.Equal(VtdFaultReason.ExecuteDenied, r.Translate(Pasid, Iova, attrs: fetch).Reason);
        Assert.Equal(Page, r.Translate(Pasid, Iova, attrs: DmaRequestAttributes.Execute).PhysicalAddress);
    }

    [Fact]
    public void Output_in_the_interrupt_range_faults_0x87_and_sets_nothing()
    {
        using FirstStageRig r = Rig();
        ulong leaf = r.Map(Iova, 0xFEE0_0000);
        Assert.Equal(VtdFaultReason.ScalableInterruptAddress, r.Translate(Pasid, Iova, DmaAccess.Write).Reason);
        Assert.Equal(0UL, r.Read(leaf) & (A | D));
    }

    [Fact]
    public void A_failed_walk_sets_no_accessed_or_dirty_bit()
    {
        using FirstStageRig r = Rig();
        ulong leaf = r.Map(Iova, Page, leaf: P | US);
        Assert.True(r.Translate(Pasid, Iova, DmaAccess.Write).IsFault);
        Assert.Equal(P | US | Page, r.Read(leaf));
        for (int level = 4; level >= 2; level--)
        {
            Assert.Equal(0UL, r.Read(r.EntryAt(Iova, level)) & A);
        }
    }

    [Fact]
    public void Fault_record_carries_pasid_priv_and_exe()
    {
        using FirstStageRig r = Rig(q2: Sre | Ere, config: VtdConfig.ScalableModeFirstLevel48Bit with { ExecuteRequests = true });
        Assert.Equal(VtdFaultReason.FirstLevelNotPresent, r.Translate(Pasid, Iova, attrs: DmaRequestAttributes.Privileged | DmaRequestAttributes.Execute).Reason);
        (ulong lo, ulong hi) = r.B.FaultRecord(0);
        Assert.Equal(Iova, lo);
        Assert.Equal(0x71UL, (hi >> 32) & 0xFF);
        Assert.Equal(1UL, (hi >> 31) & 1);   // PP
        Assert.Equal((ulong)Pasid, (hi >> 40) & 0xF_FFFF);
        Assert.Equal(1UL, (hi >> 30) & 1);   // EXE
        Assert.Equal(1UL, (hi >> 29) & 1);   // PRIV
        Assert.Equal(1UL, (hi >> 62) & 1);   // T: read
        Assert.Equal(Rid, RidOf(hi));
    }

    [Fact]
    public void Attributes_of_a_request_without_pasid_are_dropped()
    {
        using var r = new FirstStageRig(VtdConfig.ScalableModeFirstLevel48Bit);
        r.Entry(0, Did);
        r.Enable();
        r.Map(Iova, Page);
        Assert.Equal(Page, r.Translate(null, Iova, attrs: DmaRequestAttributes.Privileged | DmaRequestAttributes.Execute).PhysicalAddress);
    }

    [Fact]
    public void Undefined_attribute_bits_throw()
    {
        using FirstStageRig r = Rig();
        Assert.Throws<ArgumentOutOfRangeException>(() => r.Translate(Pasid, Iova, attrs: (DmaRequestAttributes)4));
    }

    [Fact]
    public void Fpd_in_the_pasid_entry_suppresses_the_record_of_a_walk_fault()
    {
        using var r = new FirstStageRig(VtdConfig.ScalableModeFirstLevel48Bit);
        r.Entry(Pasid, Did, q0Extra: 2);
        r.Enable();
        VtdTranslation t = r.Translate(Pasid, Iova);
        Assert.Equal(VtdFaultReason.FirstLevelNotPresent, t.Reason);
        Assert.False(t.FaultRecorded);
        Assert.Equal(0UL, r.B.FaultRecord(0).Hi >> 63);
    }

    [Fact]
    public void Qemu_order_reports_us_before_reserved_bits()
    {
        using FirstStageRig spec = Rig();
        using FirstStageRig qemu = Rig(config: VtdConfig.ScalableModeFirstLevel48Bit with { QemuFirstLevelCheckOrder = true });
        foreach (FirstStageRig r in new[] { spec, qemu })
        {
            ulong leaf = r.Map(Iova, Page, leaf: P | RW);
            r.Set(leaf, r.Read(leaf) | (1UL << 50));
        }

        Assert.Equal(VtdFaultReason.FirstLevelReserved, spec.Translate(Pasid, Iova).Reason);
        Assert.Equal(VtdFaultReason.UserAccessDenied, qemu.Translate(Pasid, Iova).Reason);
    }

    [Fact]
    public void Dma_with_attributes_moves_bytes_through_the_first_level()
    {
        using FirstStageRig r = Rig(q2: Sre);
        r.Map(Iova, Page, leaf: P | RW);
        byte[] data = [1, 2, 3, 4];
        Assert.False(r.Unit.Write(Rid, Pasid, Iova, data).IsOk);
        Assert.True(r.Unit.Write(Rid, Pasid, Iova, data, DmaRequestAttributes.Privileged).IsOk);
        var back = new byte[4];
        Assert.True(r.Unit.Transfer(Rid, Pasid, Iova, back, DmaAccess.Read, DmaRequestAttributes.Privileged).IsOk);
        Assert.Equal(data, back);
        Assert.True(r.Unit.Read(Rid, Pasid, Iova, back, DmaRequestAttributes.Privileged).IsOk);
        Assert.Equal(data, r.B.Memory.GetSpan(Page, 4).ToArray());
    }

    [Fact]
    public void Pci_device_dma_carries_its_attributes_to_the_unit()
    {
        using var p = new Platform(new PlatformOptions { MemorySize = 256UL << 20 });
        PciBus pci = p.AddPciBus();
        var r = new FirstStageRig(VtdConfig.ScalableModeFirstLevel48Bit, memory: p.Memory); // the platform owns the memory
        pci.AddDmaRemapper(r.Unit, includeAll: true);
        PciDevice dev = pci.AddDevice(new PciDeviceSpec("0000:03:00.0"));
        Assert.Equal(Rid, dev.RequesterId);
        r.Entry(Pasid, Did, Sre);
        r.Enable();
        r.Map(Iova, Page, leaf: P | RW);
        byte[] data = [9, 8, 7, 6];
        Assert.Equal(VtdFaultReason.UserAccessDenied, dev.DmaWrite(Pasid, Iova, data).FaultReason.ToVtdFaultReason());
        Assert.True(dev.DmaWrite(Pasid, Iova, data, DmaRequestAttributes.Privileged).IsOk);
        var back = new byte[4];
        Assert.True(dev.DmaRead(Pasid, Iova, back, DmaRequestAttributes.Privileged).IsOk);
        Assert.Equal(data, back);
        Assert.Equal(A | D, r.Read(r.EntryAt(Iova, 1)) & (A | D));
    }

    [Fact]
    public void New_presets_report_their_capability_bits_and_old_presets_do_not()
    {
        VtdConfig c48 = VtdConfig.ScalableModeFirstLevel48Bit, c57 = VtdConfig.ScalableModeFirstLevel57Bit;
        const ulong flts = 1UL << 47, nest = 1UL << 26, srs = 1UL << 31, eafs = 1UL << 34, ers = 1UL << 30, prs = 1UL << 29;
        Assert.Equal(flts | nest | srs | eafs, c48.Ecap & (flts | nest | srs | eafs | ers | prs));
        Assert.Equal(1UL << 56, c48.Cap & ((1UL << 56) | (1UL << 60)));
        Assert.Equal((1UL << 56) | (1UL << 60), c57.Cap & ((1UL << 56) | (1UL << 60)));
        Assert.Equal(VtdConfig.ScalableMode48Bit.Cap | (1UL << 56), c48.Cap);
        Assert.Equal(VtdConfig.ScalableMode48Bit.Ecap | flts | nest | srs | eafs, c48.Ecap);
        foreach (VtdConfig old in new[] { VtdConfig.ScalableMode48Bit, VtdConfig.ScalableMode57Bit, VtdConfig.Qemu72ScalableAwBits48, VtdConfig.Legacy48Bit })
        {
            Assert.Equal(0UL, old.Ecap & (flts | nest | eafs | ers));
            Assert.Equal(0UL, old.Cap & ((1UL << 56) | (1UL << 60)));
        }
    }

    private static ushort RidOf(ulong hi) => (ushort)hi;
}
