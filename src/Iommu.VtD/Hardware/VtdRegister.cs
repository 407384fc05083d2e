namespace Iommu.VtD.Hardware;

/// <summary>
/// Offsets of the VT-d remapping registers from the unit's MMIO base, and the bit positions of the
/// command and status registers. The IOTLB registers sit at ECAP.IRO×16 and the fault-recording
/// registers at CAP.FRO×16; <see cref="VtdEcap.IotlbRegisterOffset"/> and
/// <see cref="VtdCap.FaultRecordingOffset"/> compute them the way a driver does.
/// </summary>
public static class VtdRegister
{
    /// <summary>Version register (32-bit, RO): minor 3:0, major 7:4.</summary>
    [KernelSymbol("DMAR_VER_REG")]
    public const uint Ver = 0x000;

    /// <summary>Capability register (64-bit, RO).</summary>
    [KernelSymbol("DMAR_CAP_REG")]
    public const uint Cap = 0x008;

    /// <summary>Extended capability register (64-bit, RO).</summary>
    [KernelSymbol("DMAR_ECAP_REG")]
    public const uint Ecap = 0x010;

    /// <summary>Global command register (32-bit, WO: reads 0).</summary>
    [KernelSymbol("DMAR_GCMD_REG")]
    public const uint Gcmd = 0x018;

    /// <summary>Global status register (32-bit, RO).</summary>
    [KernelSymbol("DMAR_GSTS_REG")]
    public const uint Gsts = 0x01C;

    /// <summary>Root-table address register (64-bit, RW; takes effect on GCMD.SRTP).</summary>
    [KernelSymbol("DMAR_RTADDR_REG")]
    public const uint Rtaddr = 0x020;

    /// <summary>Context command register (64-bit): register-based context-cache invalidation.</summary>
    [KernelSymbol("DMAR_CCMD_REG")]
    public const uint Ccmd = 0x028;

    /// <summary>Fault status register (32-bit; PFO, IQE, ICE, ITE are RW1C).</summary>
    [KernelSymbol("DMAR_FSTS_REG")]
    public const uint Fsts = 0x034;

    /// <summary>Fault event control register (32-bit): IM (RW) bit 31, IP (RO) bit 30.</summary>
    [KernelSymbol("DMAR_FECTL_REG")]
    public const uint Fectl = 0x038;

    /// <summary>Fault event data register (32-bit).</summary>
    [KernelSymbol("DMAR_FEDATA_REG")]
    public const uint Fedata = 0x03C;

    /// <summary>Fault event address register (32-bit).</summary>
    [KernelSymbol("DMAR_FEADDR_REG")]
    public const uint Feaddr = 0x040;

    /// <summary>Fault event upper address register (32-bit).</summary>
    [KernelSymbol("DMAR_FEUADDR_REG")]
    public const uint Feuaddr = 0x044;

    /// <summary>Advanced fault log register (64-bit; not implemented, reads 0).</summary>
    [KernelSymbol("DMAR_AFLOG_REG")]
    public const uint Aflog = 0x058;

    /// <summary>Protected memory enable register (32-bit; protected regions are not implemented, reads 0).</summary>
    [KernelSymbol("DMAR_PMEN_REG")]
    public const uint Pmen = 0x064;

    /// <summary>Invalidation queue head (64-bit, RO).</summary>
    [KernelSymbol("DMAR_IQH_REG")]
    public const uint Iqh = 0x080;

    /// <summary>Invalidation queue tail (64-bit).</summary>
    [KernelSymbol("DMAR_IQT_REG")]
    public const uint Iqt = 0x088;

    /// <summary>Invalidation queue address (64-bit): base 63:12, DW 11, QS 2:0.</summary>
    [KernelSymbol("DMAR_IQA_REG")]
    public const uint Iqa = 0x090;

    /// <summary>Invalidation completion status (32-bit): IWC bit 0, RW1C.</summary>
    [KernelSymbol("DMAR_ICS_REG")]
    public const uint Ics = 0x09C;

    /// <summary>Invalidation event control (32-bit): IM bit 31, IP bit 30; Linux never programs it and has no name for it (QEMU calls it <c>DMAR_IECTL_REG</c>).</summary>
    public const uint Iectl = 0x0A0;

    /// <summary>Invalidation event data (32-bit); Linux never programs it and has no name for it (QEMU calls it <c>DMAR_IEDATA_REG</c>).</summary>
    public const uint Iedata = 0x0A4;

    /// <summary>Invalidation event address (32-bit); Linux never programs it and has no name for it (QEMU calls it <c>DMAR_IEADDR_REG</c>).</summary>
    public const uint Ieaddr = 0x0A8;

    /// <summary>Invalidation event upper address (32-bit); Linux never programs it and has no name for it (QEMU calls it <c>DMAR_IEUADDR_REG</c>).</summary>
    public const uint Ieuaddr = 0x0AC;

    /// <summary>Invalidation queue error record (64-bit, RO): IQEI 3:0.</summary>
    [KernelSymbol("DMAR_IQER_REG")]
    public const uint Iqercd = 0x0B0;

    /// <summary>Interrupt-remapping table address (64-bit; stored, interrupt remapping is not modelled).</summary>
    [KernelSymbol("DMAR_IRTA_REG")]
    public const uint Irta = 0x0B8;

    /// <summary>Page request queue head (64-bit): byte offset 18:5 of the next descriptor software reads; written by software.</summary>
    [KernelSymbol("DMAR_PQH_REG")]
    public const uint Pqh = 0x0C0;

    /// <summary>Page request queue tail (64-bit): byte offset 18:5 where hardware writes the next descriptor.</summary>
    [KernelSymbol("DMAR_PQT_REG")]
    public const uint Pqt = 0x0C8;

    /// <summary>Page request queue address (64-bit): base 63:12, PQS 2:0 (2^PQS 4 KiB pages).</summary>
    [KernelSymbol("DMAR_PQA_REG")]
    public const uint Pqa = 0x0D0;

    /// <summary>Page request status (32-bit): PPR bit 0, PRO bit 1, both RW1C.</summary>
    [KernelSymbol("DMAR_PRS_REG")]
    public const uint Prs = 0x0DC;

    /// <summary>Page request event control (32-bit): IM bit 31, IP bit 30.</summary>
    [KernelSymbol("DMAR_PECTL_REG")]
    public const uint Pectl = 0x0E0;

    /// <summary>Page request event data (32-bit).</summary>
    [KernelSymbol("DMAR_PEDATA_REG")]
    public const uint Pedata = 0x0E4;

    /// <summary>Page request event address (32-bit).</summary>
    [KernelSymbol("DMAR_PEADDR_REG")]
    public const uint Peaddr = 0x0E8;

    /// <summary>Page request event upper address (32-bit).</summary>
    [KernelSymbol("DMAR_PEUADDR_REG")]
    public const uint Peuaddr = 0x0EC;

    /// <summary>PRS.PPR: pending page request.</summary>
    [KernelSymbol("DMA_PRS_PPR")]
    public const uint PrsPpr = 1u << 0;

    /// <summary>PRS.PRO: page request overflow.</summary>
    [KernelSymbol("DMA_PRS_PRO")]
    public const uint PrsPro = 1u << 1;

    /// <summary>Offset of IVA inside the IOTLB register pair (at ECAP.IRO×16).</summary>
    public const uint IvaInPair = 0x0;

    /// <summary>Offset of the IOTLB invalidate register inside the pair (at ECAP.IRO×16 + 8).</summary>
    public const uint IotlbInPair = 0x8;

    /// <summary>Size of one fault-recording register (128 bits).</summary>
    public const uint FaultRecordSize = 16;

    // GCMD / GSTS bits (same positions in both).

    /// <summary>GCMD.TE / GSTS.TES: translation enable (level).</summary>
    public const uint GcmdTe = 1u << 31;

    /// <summary>GCMD.SRTP / GSTS.RTPS: set root-table pointer (one-shot).</summary>
    public const uint GcmdSrtp = 1u << 30;

    /// <summary>GCMD.SFL / GSTS.FLS: set fault log (one-shot).</summary>
    public const uint GcmdSfl = 1u << 29;

    /// <summary>GCMD.EAFL / GSTS.AFLS: enable advanced fault logging (level).</summary>
    public const uint GcmdEafl = 1u << 28;

    /// <summary>GCMD.WBF / GSTS.WBFS: write-buffer flush (one-shot).</summary>
    public const uint GcmdWbf = 1u << 27;

    /// <summary>GCMD.QIE / GSTS.QIES: queued-invalidation enable (level).</summary>
    public const uint GcmdQie = 1u << 26;

    /// <summary>GCMD.IRE / GSTS.IRES: interrupt-remapping enable (level).</summary>
    public const uint GcmdIre = 1u << 25;

    /// <summary>GCMD.SIRTP / GSTS.IRTPS: set interrupt-remap table pointer (one-shot).</summary>
    public const uint GcmdSirtp = 1u << 24;

    /// <summary>GCMD.CFI / GSTS.CFIS: compatibility-format interrupts (level).</summary>
    public const uint GcmdCfi = 1u << 23;

    /// <summary>AND mask that clears the one-shot bits (SRTP, SFL, WBF, SIRTP) of a GSTS value before it is reused as a GCMD value.</summary>
    public const uint GcmdOneShotClearMask = 0x96FF_FFFF;

    // FSTS bits.

    /// <summary>FSTS.PFO: primary fault overflow (RW1C).</summary>
    public const uint FstsPfo = 1u << 0;

    /// <summary>FSTS.PPF: primary pending fault (RO: OR of every FRCD.F).</summary>
    public const uint FstsPpf = 1u << 1;

    /// <summary>FSTS.IQE: invalidation queue error (RW1C).</summary>
    public const uint FstsIqe = 1u << 4;

    /// <summary>FSTS.ICE: invalidation completion error (RW1C; never set by this model).</summary>
    public const uint FstsIce = 1u << 5;

    /// <summary>FSTS.ITE: invalidation time-out error (RW1C; never set by this model).</summary>
    public const uint FstsIte = 1u << 6;

    /// <summary>Shift of FSTS.FRI, the index of the first pending fault record (bits 15:8).</summary>
    public const int FstsFriShift = 8;

    /// <summary>Mask of FSTS.FRI (bits 15:8): <c>(fsts &amp; FstsFriMask) &gt;&gt; FstsFriShift</c> is the index of the first pending fault record, meaningful only while <see cref="FstsPpf"/> is set.</summary>
    public const uint FstsFriMask = 0xFFu << FstsFriShift;

    /// <summary>FECTL/IECTL.IM: interrupt mask.</summary>
    public const uint EventControlIm = 1u << 31;

    /// <summary>FECTL/IECTL.IP: interrupt pending.</summary>
    public const uint EventControlIp = 1u << 30;

    /// <summary>ICS.IWC: invalidation wait descriptor complete.</summary>
    public const uint IcsIwc = 1u << 0;

    // CCMD fields.

    /// <summary>CCMD.ICC: invalidate context cache (bit 63).</summary>
    public const ulong CcmdIcc = 1UL << 63;

    /// <summary>Shift of CCMD.CIRG, the requested granularity (62:61).</summary>
    public const int CcmdCirgShift = 61;

    /// <summary>Shift of CCMD.CAIG, the actual granularity (60:59).</summary>
    public const int CcmdCaigShift = 59;

    /// <summary>Shift of CCMD.SID (31:16).</summary>
    public const int CcmdSidShift = 16;

    /// <summary>Shift of CCMD.FM (33:32).</summary>
    public const int CcmdFmShift = 32;

    // IOTLB register fields.

    /// <summary>IOTLB.IVT: invalidate IOTLB (bit 63).</summary>
    public const ulong IotlbIvt = 1UL << 63;

    /// <summary>Shift of IOTLB.IIRG, the requested granularity (61:60).</summary>
    public const int IotlbIirgShift = 60;

    /// <summary>Shift of IOTLB.IAIG, the actual granularity (58:57).</summary>
    public const int IotlbIaigShift = 57;

    /// <summary>Shift of IOTLB.DID (47:32).</summary>
    public const int IotlbDidShift = 32;

    // Fault-record (FRCD) fields in the upper 64 bits.

    /// <summary>FRCD.F (bit 127, i.e. bit 63 of the upper quadword): fault recorded (RW1C).</summary>
    public const ulong FrcdF = 1UL << 63;

    /// <summary>FRCD.T1 (bit 126): with T2 the request type (T1 T2): 00 write, 10 read, 01 page request.</summary>
    public const ulong FrcdT = 1UL << 62;

    /// <summary>FRCD.T2 (bit 92): set (with T1 clear) for a fault met by a page request.</summary>
    public const ulong FrcdT2 = 1UL << 28;

    /// <summary>FRCD.AT (125:124) = 01: the faulting request was an ATS translation request.</summary>
    public const ulong FrcdAtTranslationRequest = 1UL << 60;

    /// <summary>FRCD.PRIV (bit 93): the faulting request with PASID asked for supervisor privilege.</summary>
    public const ulong FrcdPriv = 1UL << 29;

    /// <summary>FRCD.EXE (bit 94): the faulting request with PASID asked for execute permission.</summary>
    public const ulong FrcdExe = 1UL << 30;

    /// <summary>FRCD.PP (bit 95): PASID present.</summary>
    public const ulong FrcdPp = 1UL << 31;

    /// <summary>Shift of FRCD.FR (103:96) in the upper quadword.</summary>
    public const int FrcdFrShift = 32;

    /// <summary>Shift of FRCD.PV (123:104) in the upper quadword.</summary>
    public const int FrcdPvShift = 40;
}
