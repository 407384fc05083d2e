using Iommu.VtD.Hardware;

namespace Iommu.VtD.Driver.Format;

/// <summary>
/// The driver's encoders of queued-invalidation descriptors (the <c>QI_*</c> macros of
/// <c>intel-iommu.h</c>), q0 of each type; the type codes and field positions come from
/// <see cref="VtdFormat"/>, which the hardware model shares.
/// </summary>
internal static class QiDescriptor
{
    /// <summary>PASID-cache granularity: every PASID of a domain (<c>QI_PC_ALL_PASIDS</c>).</summary>
    [KernelSymbol("QI_PC_ALL_PASIDS")]
    public const int PcAllPasids = 0;

    /// <summary>PASID-cache granularity: one PASID of a domain (<c>QI_PC_PASID_SEL</c>).</summary>
    [KernelSymbol("QI_PC_PASID_SEL")]
    public const int PcPasidSel = 1;

    /// <summary>PASID-cache granularity: everything (<c>QI_PC_GLOBAL</c>).</summary>
    [KernelSymbol("QI_PC_GLOBAL")]
    public const int PcGlobal = 3;

    /// <summary>PASID-based IOTLB granularity: all non-global entries of a PASID (<c>QI_GRAN_NONG_PASID</c>).</summary>
    [KernelSymbol("QI_GRAN_NONG_PASID")]
    public const int GranNonGlobalPasid = 2;

    /// <summary>PASID-based IOTLB granularity: pages within a PASID (<c>QI_GRAN_PSI_PASID</c>).</summary>
    [KernelSymbol("QI_GRAN_PSI_PASID")]
    public const int GranPsiPasid = 3;

    private const ulong PiotlbIh = 1UL << 6; // QI_EIOTLB_IH: only leaves changed, keep paging-structure caches

    private const ulong IotlbDr = 1UL << 7, IotlbDw = 1UL << 6; // QI_IOTLB_DR, QI_IOTLB_DW

    /// <summary>Context-cache invalidate (<c>QI_CC_TYPE</c> with <c>QI_CC_FM</c>, <c>QI_CC_SID</c>, <c>QI_CC_DID</c>, <c>QI_CC_GRAN</c>).</summary>
    [KernelSymbol("QI_CC_TYPE")]
    public static ulong ContextCache(ushort did, ushort sid, int fm, int granularity) =>
        ((ulong)fm << VtdFormat.DescFmShift) | ((ulong)sid << VtdFormat.DescSidShift) | ((ulong)did << VtdFormat.DescDidShift)
        | ((ulong)granularity << VtdFormat.DescGranularityShift) | VtdFormat.DescContextCache;

    /// <summary>IOTLB invalidate (<c>QI_IOTLB_TYPE</c> with <c>QI_IOTLB_DID</c>, <c>QI_IOTLB_DR</c>, <c>QI_IOTLB_DW</c>, <c>QI_IOTLB_GRAN</c>).</summary>
    [KernelSymbol("QI_IOTLB_TYPE")]
    public static ulong Iotlb(ushort did, bool drainReads, bool drainWrites, int granularity) =>
        ((ulong)did << VtdFormat.DescDidShift) | (drainReads ? IotlbDr : 0) | (drainWrites ? IotlbDw : 0)
        | ((ulong)granularity << VtdFormat.DescGranularityShift) | VtdFormat.DescIotlb;

    /// <summary>PASID-cache invalidate (<c>QI_PC_TYPE</c> with <c>QI_PC_PASID</c>, <c>QI_PC_DID</c>, <c>QI_PC_GRAN</c>).</summary>
    [KernelSymbol("QI_PC_TYPE")]
    public static ulong PasidCache(ushort did, uint pasid, int granularity) =>
        ((ulong)pasid << VtdFormat.DescPasidShift) | ((ulong)did << VtdFormat.DescDidShift)
        | ((ulong)granularity << VtdFormat.DescGranularityShift) | VtdFormat.DescPasidCache;

    /// <summary>PASID-based IOTLB invalidate (<c>QI_EIOTLB_TYPE</c> with <c>QI_EIOTLB_PASID</c>, <c>QI_EIOTLB_DID</c>, <c>QI_EIOTLB_GRAN</c>).</summary>
    [KernelSymbol("QI_EIOTLB_TYPE")]
    public static ulong PasidIotlb(ushort did, uint pasid, int granularity) =>
        ((ulong)pasid << VtdFormat.DescPasidShift) | ((ulong)did << VtdFormat.DescDidShift)
        | ((ulong)granularity << VtdFormat.DescGranularityShift) | VtdFormat.DescPasidIotlb;

    /// <summary>Invalidation wait that writes <paramref name="statusData"/> to the address in q1 (<c>QI_IWD_TYPE</c> with <c>QI_IWD_STATUS_DATA</c>, <c>QI_IWD_STATUS_WRITE</c>).</summary>
    [KernelSymbol("QI_IWD_TYPE")]
    public static ulong WaitWithStatus(uint statusData) =>
        ((ulong)statusData << VtdFormat.DescWaitDataShift) | VtdFormat.DescWaitSw | VtdFormat.DescWait;

    /// <summary>q1 of a page-selective PASID-based IOTLB invalidate: 2^<paramref name="am"/> pages at <paramref name="addr"/> (<c>QI_EIOTLB_ADDR</c>, <c>QI_EIOTLB_IH</c>, <c>QI_EIOTLB_AM</c>).</summary>
    [KernelSymbol("QI_EIOTLB_ADDR")]
    public static ulong PasidIotlbAddress(ulong addr, bool ih, int am) =>
        (addr & ~0xFFFUL) | (ih ? PiotlbIh : 0) | ((ulong)am & 0x3F);
}
