namespace Iommu.VtD.Hardware;

/// <summary>Bit positions of the capability register (CAP, offset 0x008), and decoders of its fields for users of the model.</summary>
/// <remarks>
/// The hardware model builds CAP from <see cref="VtdConfig"/> with these bit positions; the driver decodes
/// CAP with its own <c>cap_*</c> functions, which write their bit positions themselves, so the two meet
/// only in the tests. The decoders here are for users; neither the hardware model nor the driver calls them.
/// </remarks>
public static class VtdCap
{
    /// <summary>ND, number of domains supported (2:0): 2^(4+2·ND) domain ids.</summary>
    public const int NdShift = 0;

    /// <summary>AFL, advanced fault logging (bit 3).</summary>
    public const ulong Afl = 1UL << 3;

    /// <summary>RWBF, required write-buffer flushing (bit 4).</summary>
    public const ulong Rwbf = 1UL << 4;

    /// <summary>PLMR, protected low-memory region (bit 5).</summary>
    public const ulong Plmr = 1UL << 5;

    /// <summary>PHMR, protected high-memory region (bit 6).</summary>
    public const ulong Phmr = 1UL << 6;

    /// <summary>CM, caching mode (bit 7).</summary>
    public const ulong Cm = 1UL << 7;

    /// <summary>SAGAW, supported adjusted guest address widths (12:8): bit 9 = 39-bit, 10 = 48-bit, 11 = 57-bit.</summary>
    public const int SagawShift = 8;

    /// <summary>MGAW, maximum guest address width minus 1 (21:16).</summary>
    public const int MgawShift = 16;

    /// <summary>ZLR, zero-length reads (bit 22).</summary>
    public const ulong Zlr = 1UL << 22;

    /// <summary>FRO, fault-recording register offset / 16 (33:24).</summary>
    public const int FroShift = 24;

    /// <summary>SLLPS, second-level large-page support (37:34): bit 34 = 2 MiB, 35 = 1 GiB.</summary>
    public const int SllpsShift = 34;

    /// <summary>PSI, page-selective invalidation (bit 39).</summary>
    public const ulong Psi = 1UL << 39;

    /// <summary>NFR, number of fault-recording registers minus 1 (47:40).</summary>
    public const int NfrShift = 40;

    /// <summary>MAMV, maximum address-mask value (53:48).</summary>
    public const int MamvShift = 48;

    /// <summary>DWD, write draining (bit 54).</summary>
    public const ulong Dwd = 1UL << 54;

    /// <summary>DRD, read draining (bit 55).</summary>
    public const ulong Drd = 1UL << 55;

    /// <summary>FL1GP, 1 GiB first-level pages (bit 56).</summary>
    public const ulong Fl1gp = 1UL << 56;

    /// <summary>FL5LP, 5-level first-level paging (bit 60).</summary>
    public const ulong Fl5lp = 1UL << 60;

    /// <summary>ESRTPS, SRTP also invalidates all DMA-remapping caches (bit 63).</summary>
    public const ulong Esrtps = 1UL << 63;

    /// <summary>Number of domain ids the unit supports.</summary>
    /// <param name="cap">CAP value.</param>
    /// <returns>2^(4 + 2·ND).</returns>
    public static ulong DomainCount(ulong cap) => 1UL << (4 + (2 * (int)(cap & 7)));

    /// <summary>The SAGAW field (5 bits).</summary>
    /// <param name="cap">CAP value.</param>
    /// <returns>Bit n set: AGAW 30 + 9·n supported.</returns>
    public static uint Sagaw(ulong cap) => (uint)(cap >> SagawShift) & 0x1F;

    /// <summary>Maximum guest address width in bits (MGAW + 1).</summary>
    /// <param name="cap">CAP value.</param>
    /// <returns>Width in bits.</returns>
    public static int Mgaw(ulong cap) => (int)((cap >> MgawShift) & 0x3F) + 1;

    /// <summary>Offset of the first fault-recording register from the MMIO base.</summary>
    /// <param name="cap">CAP value.</param>
    /// <returns>FRO × 16.</returns>
    public static uint FaultRecordingOffset(ulong cap) => (uint)((cap >> FroShift) & 0x3FF) * 16;

    /// <summary>Number of fault-recording registers (NFR + 1).</summary>
    /// <param name="cap">CAP value.</param>
    /// <returns>Count.</returns>
    public static int FaultRecordCount(ulong cap) => (int)((cap >> NfrShift) & 0xFF) + 1;

    /// <summary>The SLLPS field (bit 0 = 2 MiB, bit 1 = 1 GiB).</summary>
    /// <param name="cap">CAP value.</param>
    /// <returns>Four-bit field.</returns>
    public static uint SuperPages(ulong cap) => (uint)(cap >> SllpsShift) & 0xF;

    /// <summary>Maximum address-mask value for page-selective invalidation.</summary>
    /// <param name="cap">CAP value.</param>
    /// <returns>MAMV.</returns>
    public static int MaxAddressMask(ulong cap) => (int)((cap >> MamvShift) & 0x3F);

    /// <summary>Whether caching mode is reported.</summary>
    /// <param name="cap">CAP value.</param>
    /// <returns>CAP.CM.</returns>
    public static bool CachingMode(ulong cap) => (cap & Cm) != 0;
}
