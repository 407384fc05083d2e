using Iommu.Devices;
using Iommu.VtD.Driver.Format;
using Iommu.VtD.Hardware;
using Iommu.VtD.Tests.Hardware.Infrastructure;

namespace Iommu.VtD.Tests.Hardware;

/// <summary>
/// Conformance audit against the VT-d specification (vtd-hw.md, pasid-sva.md): bit positions the
/// driver writes and the unit reads, fault codes and fault-record layout, descriptor encodings.
/// </summary>
public class ConformanceAuditTests
{
    private const ushort Rid = 0x0418;

    // ---- scalable context / PASID structures ----

    [Theory]
    [InlineData(0, 0x1FFFu, true)]
    [InlineData(0, 0x2000u, false)]
    [InlineData(1, 0x3FFFu, true)]
    [InlineData(1, 0x4000u, false)]
    [InlineData(7, 0xF_FFFFu, true)]
    public void Pdts_bounds_the_directory_at_2_pow_pdts_plus_7_entries(int pdts, uint pasid, bool inside)
    {
        using var b = new VtdBench(VtdConfig.ScalableMode48Bit);
        ulong dir = b.AllocFrames(16);
        b.ScalableContext(Rid, dir, pdts);
        ulong sl = b.AllocFrame();
        b.PasidEntry(dir, pasid, VtdBench.PasidEntryLow(sl, 2, 2), did: 3);
        b.Map(sl, 4, 0x1000, 0x0050_0000);
        b.Enable(scalable: true);
        VtdTranslation t = b.Unit.Translate(Rid, pasid, 0x1000, 4, DmaAccess.Read);
        if (inside)
        {
            Assert.Equal(0x0050_0000UL, t.PhysicalAddress);
        }
        else
        {
            Assert.Equal(VtdFaultReason.PasidBeyondDirectory, t.Reason);
            (_, ulong hi) = b.FaultRecord(0);
            Assert.Equal(0x46UL, (hi >> 32) & 0xFF);
            Assert.Equal((ulong)pasid, (hi >> 40) & 0xF_FFFF);
            Assert.NotEqual(0UL, hi & (1UL << 31));
        }
    }

    [Fact]
    public void Driver_pasid_entry_setters_sit_at_the_spec_bits()
    {
        var pe = default(PasidEntry);
        pe.SetSlptr(0x1234_5000);
        pe.SetAddressWidth(3);
        pe.SetTranslationType(PasidPgtt.Nested);
        pe.SetDomainId(0xBEEF);
        pe.SetPageWalkSnoop(true);
        pe.SetPageSnoop();
        pe.SetSre();
        pe.SetFlpm(1);
        pe.SetWpe();
        pe.SetEafe();
        pe.SetFlptr(0xABC_D000);
        pe.SetPresent();
        Assert.Equal(0x1234_5000UL | (3UL << 2) | (3UL << 6) | 1, pe[0]);
        Assert.Equal(0xBEEFUL | (1UL << 23) | (1UL << 24), pe[1]);
        Assert.Equal(0xABC_D000UL | 1 | (1UL << 2) | (1UL << 4) | (1UL << 7), pe[2]);

        var sc = default(ScalableContextEntry);
        sc.SetPasidDirectory(0x7654_3000);
        sc.SetPdts(ScalableContextEntry.Pds(1u << 20));
        sc.SetDeviceTlbEnable();
        sc.SetPasidEnable();
        sc.SetPageRequestEnable();
        sc.SetRidPasid(0xF_FFFF);
        sc.SetPresent();
        Assert.Equal(0x7654_3000UL | (7UL << 9) | (1UL << 4) | (1UL << 3) | (1UL << 2) | 1, sc.Q0);
        Assert.Equal(0xF_FFFFUL, sc.Q1);
        Assert.Equal(2, ScalableContextEntry.Pds(0x8000));
        Assert.Equal(0, ScalableContextEntry.Pds(0x1000));
    }

    // ---- first level ----

    [Fact]
    public void First_level_sets_a_in_every_entry_ea_with_eafe_and_d_only_in_the_write_leaf()
    {
        using var f = new FirstStageRig(VtdConfig.ScalableModeFirstLevel48Bit with { ExtendedAccessedFlag = true });
        ulong leaf = f.Map(0x7000, 0x0066_6000);
        f.Entry(5, did: 4, q2Flags: FirstStageRig.Eafe);
        f.Enable();
        Assert.Equal(0x0066_6000UL, f.Unit.Translate(FirstStageRig.Rid, 5, 0x7000, 4, DmaAccess.Write).PhysicalAddress);
        ulong v = f.B.Memory.ReadUInt64(leaf);
        Assert.Equal(FirstStageRig.A | FirstStageRig.EA | FirstStageRig.D, v & (FirstStageRig.A | FirstStageRig.EA | FirstStageRig.D));
        ulong top = f.B.Memory.ReadUInt64(f.FlRoot);
        Assert.Equal(FirstStageRig.A | FirstStageRig.EA, top & (FirstStageRig.A | FirstStageRig.EA | FirstStageRig.D));
    }

    [Theory]
    [InlineData(4, 0x0000_8000_0000_0000UL, false)]
    [InlineData(4, 0xFFFF_8000_0000_0000UL, true)]
    [InlineData(4, 0x0000_7FFF_FFFF_F000UL, true)]
    [InlineData(5, 0x0000_8000_0000_0000UL, true)]
    [InlineData(5, 0x0100_0000_0000_0000UL, false)]
    [InlineData(5, 0xFF00_0000_0000_0000UL, true)]
    public void First_level_canonical_check_uses_48_or_57_bits_by_flpm(int levels, ulong iova, bool canonical)
    {
        using var f = new FirstStageRig(VtdConfig.ScalableModeFirstLevel57Bit, levels: levels);
        f.Map(iova, 0x0067_7000);
        f.Entry(5, did: 4);
        f.Enable();
        VtdTranslation t = f.Unit.Translate(FirstStageRig.Rid, 5, iova, 4, DmaAccess.Read);
        if (canonical)
        {
            Assert.Equal(0x0067_7000UL, t.PhysicalAddress);
        }
        else
        {
            Assert.Equal(VtdFaultReason.NonCanonicalAddress, t.Reason);
        }
    }

    [Fact]
    public void First_level_ps_in_pml4e_and_1g_without_fl1gp_are_reserved()
    {
        using var f = new FirstStageRig(VtdConfig.ScalableModeFirstLevel48Bit with { FirstLevel1GiBPages = false });
        f.Map(0x4000_0000, 0x4000_0000, leafLevel: 3, leaf: FirstStageRig.P | FirstStageRig.RW | FirstStageRig.US | FirstStageRig.PS);
        f.Entry(5, did: 4);
        f.Enable();
        Assert.Equal(VtdFaultReason.FirstLevelReserved, f.Unit.Translate(FirstStageRig.Rid, 5, 0x4000_0000, 4, DmaAccess.Read).Reason);
        f.B.Memory.WriteUInt64(f.FlRoot + 8, f.B.AllocFrame() | FirstStageRig.Table | FirstStageRig.PS);
        Assert.Equal(VtdFaultReason.FirstLevelReserved, f.Unit.Translate(FirstStageRig.Rid, 5, 1UL << 39, 4, DmaAccess.Read).Reason);
    }

    // ---- second level ----

    [Theory]
    [InlineData(1UL << 62)]
    [InlineData(1UL << 11)]
    public void Second_level_tm_and_snp_without_sc_are_reserved_in_leaves(ulong bit)
    {
        using var b = new VtdBench(VtdConfig.ScalableMode48Bit with { SnoopControl = false });
        (ulong _, ulong sl) = b.SetupScalableDevice(Rid, pasid: 0, 2, did: 2);
        b.Map(sl, 4, 0x1000, 0x0055_5000, extraLeafBits: bit);
        b.Enable(scalable: true);
        Assert.Equal(VtdFaultReason.SecondLevelReserved, b.Unit.Translate(Rid, null, 0x1000, 4, DmaAccess.Read).Reason);
    }

    // ---- legacy context ----

    [Fact]
    public void Legacy_tt_01_without_ecap_dt_is_an_invalid_context_entry()
    {
        using var b = new VtdBench(VtdConfig.Legacy48Bit);
        ulong sl = b.SetupLegacyDevice(Rid, aw: 2, did: 3, tt: 1);
        b.Map(sl, 4, 0x3000, 0x0044_4000);
        b.Enable(scalable: false);
        Assert.Equal(VtdFaultReason.ContextEntryInvalid, b.Unit.Translate(Rid, null, 0x3010, 4, DmaAccess.Write).Reason);
    }

    [Fact]
    public void Driver_ecap_dit_is_bit_41_not_eim()
    {
        Assert.True(DmarCap.EcapDit(1UL << 41));
        Assert.False(DmarCap.EcapDit(1UL << 4));
    }

    [Fact]
    public void Pasid_device_tlb_descriptor_with_pfsid_without_dit_is_invalid()
    {
        using var b = new VtdBench(VtdConfig.ScalableMode48Bit);
        b.Enable(scalable: true);
        b.EnableQueue(wide: true);
        b.Submit(VtdFormat.DescPasidDeviceTlb | ((ulong)Rid << 16) | (0x3UL << 12), 0);
        Assert.NotEqual(0u, b.Fsts & (1u << 4));
        Assert.Equal(4UL, b.Unit.Read64(0xB0) & 0xF);
    }

    [Fact]
    public void Legacy_tt_01_translates_when_the_unit_reports_ecap_dt()
    {
        using var b = new VtdBench(VtdConfig.ScalableMode48Bit with { DeviceTlb = true });
        Assert.NotEqual(0UL, b.Ecap & (1UL << 2));
        ulong sl = b.SetupLegacyDevice(Rid, aw: 2, did: 3, tt: 1);
        b.Map(sl, 4, 0x3000, 0x0044_4000);
        b.Enable(scalable: false);
        VtdTranslation t = b.Unit.Translate(Rid, null, 0x3010, 4, DmaAccess.Write);
        Assert.Equal(VtdTranslationStatus.Translated, t.Status);
        Assert.Equal(0x0044_4010UL, t.PhysicalAddress);
    }

    [Fact]
    public void Page_request_fault_records_type_page_request_t1_0_t2_1()
    {
        using var r = new AtsRig(pre: false);
        Assert.False(r.Request(0x2A, 0x1000, read: true, write: false));
        (_, ulong hi) = r.B.FaultRecord(0);
        Assert.Equal(0x47UL, (hi >> 32) & 0xFF);
        Assert.Equal(0UL, hi & (1UL << 62));            // T1 = 0
        Assert.NotEqual(0UL, hi & (1UL << 28));         // T2 = 1: page request
    }

    [Fact]
    public void Ats_translation_request_fault_records_at_translation_request()
    {
        using var r = new AtsRig();
        r.Fl.Entry(0x2A, 9);
        r.Fl.Enable();
        ulong pe = r.B.PasidEntryAddress(r.Fl.Dir, 0x2A);
        r.B.Memory.WriteUInt64(pe + 8, r.B.Memory.ReadUInt64(pe + 8) | (1UL << 16)); // q1 reserved bit
        AtsCompletion c = r.Unit.TranslationRequest(r.Dev, 0x2A, 0x1000, write: false);
        Assert.False(c.Success);
        (_, ulong hi) = r.B.FaultRecord(0);
        Assert.Equal(0x5AUL, (hi >> 32) & 0xFF);
        Assert.Equal(1UL, (hi >> 60) & 3);              // AT = 01: translation request
    }

    // ---- invalidation descriptors ----

    [Fact]
    public void Slade_without_ecap_slads_is_a_reserved_pasid_entry_bit()
    {
        using var b = new VtdBench(VtdConfig.ScalableMode48Bit);
        Assert.Equal(0UL, b.Ecap & (1UL << 45));
        ulong dir = b.AllocFrame();
        b.ScalableContext(Rid, dir, pdts: 7);
        ulong sl = b.AllocFrame();
        b.PasidEntry(dir, 0, VtdBench.PasidEntryLow(sl, 2, 2) | (1UL << 9), did: 3);
        b.Map(sl, 4, 0x1000, 0x0050_0000);
        b.Enable(scalable: true);
        Assert.Equal(VtdFaultReason.PasidEntryReserved, b.Unit.Translate(Rid, null, 0x1000, 4, DmaAccess.Read).Reason);
    }
}
