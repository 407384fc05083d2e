namespace Iommu.VtD.Hardware;

/// <summary>Bit positions of the extended capability register (ECAP, offset 0x010), and decoders of its fields for users of the model.</summary>
/// <remarks>
/// The hardware model builds ECAP from <see cref="VtdConfig"/> with these bit positions; the driver decodes
/// ECAP with its own <c>ecap_*</c> functions, which write their bit positions themselves, so the two meet
/// only in the tests. The decoders here are for users; neither the hardware model nor the driver calls them.
/// </remarks>
public static class VtdEcap
{
    /// <summary>C, page-walk coherency (bit 0).</summary>
    public const ulong C = 1UL << 0;

    /// <summary>QI, queued invalidation (bit 1).</summary>
    public const ulong Qi = 1UL << 1;

    /// <summary>DT, device-TLB (bit 2).</summary>
    public const ulong Dt = 1UL << 2;

    /// <summary>IR, interrupt remapping (bit 3).</summary>
    public const ulong Ir = 1UL << 3;

    /// <summary>PT, pass-through (bit 6).</summary>
    public const ulong Pt = 1UL << 6;

    /// <summary>SC, snoop control (bit 7).</summary>
    public const ulong Sc = 1UL << 7;

    /// <summary>IRO, IOTLB register offset / 16 (17:8).</summary>
    public const int IroShift = 8;

    /// <summary>MTS, memory-type support (bit 25).</summary>
    public const ulong Mts = 1UL << 25;

    /// <summary>NEST, nested translation (bit 26).</summary>
    public const ulong Nest = 1UL << 26;

    /// <summary>PRS, page requests (bit 29).</summary>
    public const ulong Prs = 1UL << 29;

    /// <summary>ERS, execute requests (bit 30).</summary>
    public const ulong Ers = 1UL << 30;

    /// <summary>SRS, supervisor requests (bit 31).</summary>
    public const ulong Srs = 1UL << 31;

    /// <summary>EAFS, extended-accessed flag (bit 34).</summary>
    public const ulong Eafs = 1UL << 34;

    /// <summary>PSS, supported PASID width minus 1 (39:35).</summary>
    public const int PssShift = 35;

    /// <summary>PASID, requests with PASID (bit 40).</summary>
    public const ulong Pasid = 1UL << 40;

    /// <summary>DIT, device-TLB invalidation throttling: PFSID in device-TLB invalidation descriptors (bit 41). The model's units never report it.</summary>
    public const ulong Dit = 1UL << 41;

    /// <summary>PDS, page-request drain (bit 42).</summary>
    public const ulong Pds = 1UL << 42;

    /// <summary>SMTS, scalable-mode translation (bit 43).</summary>
    public const ulong Smts = 1UL << 43;

    /// <summary>SLADS, second-level accessed/dirty (bit 45).</summary>
    public const ulong Slads = 1UL << 45;

    /// <summary>SLTS, second-level translation in scalable mode (bit 46).</summary>
    public const ulong Slts = 1UL << 46;

    /// <summary>FLTS, first-level translation (bit 47).</summary>
    public const ulong Flts = 1UL << 47;

    /// <summary>SMPWCS, scalable-mode page-walk coherency (bit 48).</summary>
    public const ulong Smpwcs = 1UL << 48;

    /// <summary>RPS, RID_PASID supported (bit 49).</summary>
    public const ulong Rps = 1UL << 49;

    /// <summary>ADMS, abort-DMA mode (bit 52).</summary>
    public const ulong Adms = 1UL << 52;

    /// <summary>RPRIVS, RID_PRIV supported (bit 53).</summary>
    public const ulong Rprivs = 1UL << 53;

    /// <summary>Offset of the IOTLB register pair (IVA, IOTLB) from the MMIO base.</summary>
    /// <param name="ecap">ECAP value.</param>
    /// <returns>IRO × 16.</returns>
    public static uint IotlbRegisterOffset(ulong ecap) => (uint)((ecap >> IroShift) & 0x3FF) * 16;

    /// <summary>Supported PASID width in bits (PSS + 1).</summary>
    /// <param name="ecap">ECAP value.</param>
    /// <returns>Width.</returns>
    public static int PasidWidth(ulong ecap) => (int)((ecap >> PssShift) & 0x1F) + 1;
}
