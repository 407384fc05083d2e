using Iommu.VtD.Hardware;
using Iommu.VtD.Tests.Hardware.Infrastructure;

namespace Iommu.VtD.Tests.Hardware;

/// <summary>
/// Register semantics a guest kernel relies on (VT-d spec chapter 10 and 6.5), checked one register
/// interaction at a time: GCMD/GSTS, the fault and invalidation event registers, register-based
/// invalidation, access sizes.
/// </summary>
public class RegisterAuditTests
{
    private const uint Gsts = 0x1C;
    private const uint Irta = 0xB8;
    private const uint Te = 1u << 31, Srtp = 1u << 30, Wbf = 1u << 27, Qie = 1u << 26, Ire = 1u << 25, Sirtp = 1u << 24, Cfi = 1u << 23;

    // ---- GCMD / GSTS: interrupt-remapping bits (spec 10.4.4, 10.4.5) ----

    [Fact]
    public void Sirtp_latches_irta_and_sets_irtps_when_the_unit_reports_interrupt_remapping()
    {
        // Linux iommu_set_irq_remapping: IRTA, then GCMD = gcmd | SIRTP, then IOMMU_WAIT_OP(GSTS & IRTPS),
        // which panics ("DMAR hardware is malfunctioning") if IRTPS never sets.
        using var b = new VtdBench(VtdConfig.Legacy48Bit);
        Assert.NotEqual(0UL, b.Ecap & VtdEcap.Ir);
        b.Unit.Write64(Irta, b.AllocFrames(16) | 0xF);
        b.Gcmd(Sirtp);
        Assert.Equal(Sirtp, b.Unit.Read32(Gsts) & Sirtp);
        Assert.Equal(0u, b.Unit.Read32(0x18)); // GCMD still reads 0
    }

    [Fact]
    public void Ire_and_cfi_are_level_bits_reflected_in_ires_and_cfis()
    {
        using var b = new VtdBench(VtdConfig.Legacy48Bit);
        b.Unit.Write64(Irta, b.AllocFrames(16) | 0xF);
        b.Gcmd(Sirtp);
        b.Gcmd(Ire);
        Assert.Equal(Ire, b.Unit.Read32(Gsts) & Ire);
        b.Gcmd(Cfi);
        Assert.Equal(Ire | Cfi, b.Unit.Read32(Gsts) & (Ire | Cfi));

        // Later commands that rewrite the level bits keep them; clearing one clears only its status.
        b.Gcmd(Qie);
        Assert.Equal(Ire | Cfi | Qie, b.Unit.Read32(Gsts) & (Ire | Cfi | Qie));
        b.GcmdClear(Cfi);
        Assert.Equal(Ire | Qie, b.Unit.Read32(Gsts) & (Ire | Cfi | Qie));
        b.GcmdClear(Ire);
        Assert.Equal(0u, b.Unit.Read32(Gsts) & (Ire | Cfi)); // IRTPS stays
        Assert.Equal(Sirtp, b.Unit.Read32(Gsts) & Sirtp);
    }

    [Fact]
    public void Linux_style_gcmd_shadow_with_qie_te_and_ire_in_one_value_keeps_every_status()
    {
        // Linux keeps the level bits in iommu->gcmd and writes gcmd | one-shot bit.
        using var b = new VtdBench(VtdConfig.Legacy48Bit);
        uint gcmd = 0;
        b.Unit.Write64(0x88, 0);
        b.Unit.Write64(0x90, b.AllocFrame());
        gcmd |= Qie;
        b.Unit.Write32(0x18, gcmd);
        b.Unit.Write64(Irta, b.AllocFrames(16) | 0xF);
        b.Unit.Write32(0x18, gcmd | Sirtp);
        gcmd |= Ire;
        b.Unit.Write32(0x18, gcmd);
        b.Unit.Write64(0x20, b.RootTable);
        b.Unit.Write32(0x18, gcmd | Srtp);
        gcmd |= Te;
        b.Unit.Write32(0x18, gcmd);
        Assert.Equal(Te | Srtp | Qie | Ire | Sirtp, b.Unit.Read32(Gsts));
    }

    [Fact]
    public void Without_interrupt_remapping_the_ir_bits_and_irta_are_reserved()
    {
        using var b = new VtdBench(VtdConfig.Legacy39Bit);
        Assert.Equal(0UL, b.Ecap & VtdEcap.Ir);
        b.Unit.Write64(Irta, 0x1234_5000 | 0xF);
        b.Gcmd(Sirtp);
        b.Gcmd(Ire);
        b.Gcmd(Cfi);
        Assert.Equal(0u, b.Unit.Read32(Gsts));
        Assert.Equal(0UL, b.Unit.Read64(Irta));
    }

    // ---- GCMD / GSTS: the rest (checked right) ----

    [Fact]
    public void Gsts_is_read_only_and_one_shot_bits_complete_at_once()
    {
        using var b = new VtdBench(VtdConfig.Legacy48Bit);
        b.Unit.Write32(Gsts, 0xFFFF_FFFF);
        Assert.Equal(0u, b.Unit.Read32(Gsts));
        b.Unit.Write64(0x20, b.RootTable);
        b.Gcmd(Srtp);
        b.Gcmd(Wbf);
        Assert.Equal(Srtp, b.Unit.Read32(Gsts)); // RTPS set, WBFS already clear
        b.Unit.Write64(0x18, 0xFFFF_FFFF_0000_0000); // upper dword is GSTS: read-only
        Assert.Equal(Srtp, b.Unit.Read32(Gsts));
    }

    // ---- FSTS / FECTL / fault records (spec 10.4.9, 10.4.10, 10.4.14) ----

    [Fact]
    public void Masked_fault_sets_ip_unmasking_delivers_and_ppf_is_not_writable()
    {
        using var b = new VtdBench(VtdConfig.Legacy48Bit);
        int sent = 0;
        b.Unit.FaultEvent += (_, _) => sent++;
        b.Unit.Write32(0x3C, 0x41);
        b.Unit.Write32(0x40, 0xFEE0_0000);
        b.Enable(scalable: false);
        b.Unit.Translate(0x0100, null, 0x7000, 4, DmaAccess.Read); // root not present
        Assert.Equal(VtdRegister.FstsPpf, b.Fsts & 0xFF);
        Assert.Equal(0xC000_0000u, b.Unit.Read32(0x38)); // IM | IP
        Assert.Equal(0, sent);
        b.Unit.Write32(0x34, 0xFF); // PPF is RO
        Assert.Equal(VtdRegister.FstsPpf, b.Fsts & 0xFF);
        b.Unit.Write32(0x38, 0);
        Assert.Equal(1, sent);
        Assert.Equal(0u, b.Unit.Read32(0x38));
        b.ClearFaultRecord(0);
        Assert.Equal(0u, b.Fsts);
    }

    // ---- Invalidation queue registers (spec 10.4.22–10.4.26) ----

    [Fact]
    public void Ics_iwc_is_rw1c_and_clears_iectl_ip()
    {
        using var b = new VtdBench(VtdConfig.Legacy48Bit);
        ulong queue = b.AllocFrame();
        ulong status = b.AllocFrame();
        b.Unit.Write64(0x88, 0);
        b.Unit.Write64(0x90, queue);
        b.Gcmd(Qie);
        b.Memory.WriteUInt64(queue, 0x5 | (1UL << 4) | (1UL << 5) | (1UL << 32)); // wait, IF + SW
        b.Memory.WriteUInt64(queue + 8, status);
        b.Unit.Write64(0x88, 0x10);
        Assert.Equal(1u, b.Unit.Read32(0x9C));
        Assert.Equal(0xC000_0000u, b.Unit.Read32(0xA0));
        b.Unit.Write32(0x9C, 1);
        Assert.Equal(0u, b.Unit.Read32(0x9C));
        Assert.Equal(0x8000_0000u, b.Unit.Read32(0xA0));
    }

    [Fact]
    public void Tail_beyond_the_queue_reports_iqe_and_register_invalidation_is_ignored_while_qi_is_on()
    {
        using var b = new VtdBench(VtdConfig.Legacy48Bit);
        b.Unit.Write64(0x88, 0);
        b.Unit.Write64(0x90, b.AllocFrame()); // QS = 0: 256 descriptors
        b.Gcmd(Qie);
        b.Unit.Write64(0x88, 0x1000);
        Assert.Equal(VtdRegister.FstsIqe, b.Fsts & VtdRegister.FstsIqe);
        b.Unit.Write32(0x34, VtdRegister.FstsIqe);
        Assert.Equal(0u, b.Fsts);

        b.GlobalContextInvalidate();
        Assert.Equal(1UL << 63, b.Unit.Read64(0x28) & (1UL << 63));
    }

    // ---- access sizes (spec 10.2) ----

    [Fact]
    public void Halves_of_64_bit_registers_and_reserved_offsets()
    {
        using var b = new VtdBench(VtdConfig.Legacy48Bit);
        b.Unit.Write32(0x20, 0x1234_5C00);
        b.Unit.Write32(0x24, 0x0000_0012);
        Assert.Equal(0x12_1234_5C00UL, b.Unit.Read64(0x20));
        Assert.Equal(0x12u, b.Unit.Read32(0x24));
        Assert.Equal(0u, b.Unit.Read32(0x58));
        Assert.Equal(0u, b.Unit.Read32(0x64));
        Assert.Equal(0UL, b.Unit.Read64(0x24)); // misaligned quadword: ignored
        long ignored = b.Unit.IgnoredRegisterAccesses;
        b.Unit.Write64(0x34, ulong.MaxValue);
        Assert.Equal(ignored + 1, b.Unit.IgnoredRegisterAccesses);
    }
    [Fact]
    public void Fault_records_overflow_into_pfo_which_is_rw1c_and_stops_recording()
    {
        using var b = new VtdBench(VtdConfig.Legacy48Bit); // 8 records
        b.Enable(scalable: false);
        for (int i = 0; i < 9; i++)
        {
            b.Unit.Translate(0x0100, null, 0x7000 + ((ulong)i << 12), 4, DmaAccess.Read);
        }

        Assert.Equal(VtdRegister.FstsPfo | VtdRegister.FstsPpf, b.Fsts & 0xFF);
        Assert.Equal(0u, (b.Fsts >> 8) & 0xFF); // FRI: first pending record
        for (int i = 0; i < 8; i++)
        {
            b.ClearFaultRecord(i);
        }

        Assert.Equal(VtdRegister.FstsPfo, b.Fsts & 0xFF); // FRI is undefined once PPF is clear
        b.Unit.Translate(0x0100, null, 0x7000, 4, DmaAccess.Read);
        Assert.Equal(VtdRegister.FstsPfo, b.Fsts & 0xFF); // not recorded while PFO is set
        b.Unit.Write32(0x34, VtdRegister.FstsPfo);
        b.Unit.Translate(0x0100, null, 0x7000, 4, DmaAccess.Read);
        Assert.Equal(VtdRegister.FstsPpf, b.Fsts & 0xFF);
    }

    [Fact]
    public void Disabling_qi_resets_iqh_and_iotlb_register_reports_iaig()
    {
        using var b = new VtdBench(VtdConfig.Legacy48Bit);
        ulong queue = b.AllocFrame();
        b.Unit.Write64(0x88, 0);
        b.Unit.Write64(0x90, queue);
        b.Gcmd(Qie);
        b.Memory.WriteUInt64(queue, 0x5 | (1UL << 5)); // wait, SW
        b.Memory.WriteUInt64(queue + 8, b.AllocFrame());
        b.Unit.Write64(0x88, 0x10);
        Assert.Equal(0x10UL, b.Unit.Read64(0x80));
        b.GcmdClear(Qie);
        Assert.Equal(0UL, b.Unit.Read64(0x80)); // IQH reset whenever QIES is clear
        Assert.Equal(0u, b.Unit.Read32(Gsts) & Qie);

        b.Unit.Write64(b.IotlbRegBase + 8, (1UL << 63) | (2UL << 60) | (5UL << 32));
        Assert.Equal(2UL << 57, b.Unit.Read64(b.IotlbRegBase + 8) & ((1UL << 63) | (3UL << 57)));
        b.Unit.Write64(b.IotlbRegBase, 0x7000 | 63); // AM above MAMV
        b.Unit.Write64(b.IotlbRegBase + 8, (1UL << 63) | (3UL << 60) | (5UL << 32));
        Assert.Equal(0UL, b.Unit.Read64(b.IotlbRegBase + 8) & ((1UL << 63) | (3UL << 57)));
        Assert.Equal(0UL, b.Unit.Read64(b.IotlbRegBase)); // IVA reads 0
    }
}
