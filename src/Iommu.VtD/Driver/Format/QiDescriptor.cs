namespace Iommu.VtD.Driver.Format;

/// <summary>
/// The driver's encoders of queued-invalidation descriptors (the <c>QI_*</c> macros of
/// <c>intel-iommu.h</c>), q0 of each type. Every type code and field position is written here as
/// the kernel writes it; the hardware model decodes descriptors with its own constants.
/// </summary>
internal static class QiDescriptor
{
    // Type codes, q0 3:0.
    private const ulong CcType = 0x1;       // QI_CC_TYPE
    private const ulong IotlbType = 0x2;    // QI_IOTLB_TYPE
    private const ulong DiotlbType = 0x3;   // QI_DIOTLB_TYPE
    private const ulong EiotlbType = 0x6;   // QI_EIOTLB_TYPE
    private const ulong PcType = 0x7;       // QI_PC_TYPE
    private const ulong DeiotlbType = 0x8;  // QI_DEIOTLB_TYPE

    /// <summary>Invalidation wait descriptor type (<c>QI_IWD_TYPE</c>).</summary>
    internal const ulong IwdType = 0x5;

    /// <summary>Shift of a wait descriptor's status data, q0 63:32 (<c>QI_IWD_STATUS_DATA</c>).</summary>
    [KernelSymbol("QI_IWD_STATUS_DATA")]
    internal const int IwdStatusDataShift = 32;

    /// <summary>SW: the wait writes its status data to the address in q1 (<c>QI_IWD_STATUS_WRITE</c>).</summary>
    [KernelSymbol("QI_IWD_STATUS_WRITE")]
    internal const ulong IwdStatusWrite = 1UL << 5;

    /// <summary>FN: later descriptors wait for this one (<c>QI_IWD_FENCE</c>).</summary>
    internal const ulong IwdFence = 1UL << 6;

    /// <summary>PD: the wait also drains page requests (<c>QI_IWD_PRQ_DRAIN</c>).</summary>
    [KernelSymbol("QI_IWD_PRQ_DRAIN")]
    internal const ulong IwdPrqDrain = 1UL << 7;

    // Field positions. The kernel's QI_CC_GRAN and QI_IOTLB_GRAN shift a register-position granularity
    // (DMA_CCMD_*, DMA_TLB_*) down to q0 5:4; callers here pass the 2-bit field, so it goes straight to 4.
    private const int GranShift = 4;        // QI_CC_GRAN, QI_IOTLB_GRAN, QI_PC_GRAN, QI_EIOTLB_GRAN
    private const int DidShift = 16;        // QI_CC_DID, QI_IOTLB_DID, QI_PC_DID, QI_EIOTLB_DID
    private const int CcSidShift = 32;      // QI_CC_SID
    private const int CcFmShift = 48;       // QI_CC_FM
    private const int PasidShift = 32;      // QI_PC_PASID, QI_EIOTLB_PASID, QI_DEV_EIOTLB_PASID
    private const int DevIotlbSidShift = 32;  // QI_DEV_IOTLB_SID
    private const int DevEiotlbSidShift = 16; // QI_DEV_EIOTLB_SID

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
        ((ulong)fm << CcFmShift) | ((ulong)sid << CcSidShift) | ((ulong)did << DidShift)
        | ((ulong)granularity << GranShift) | CcType;

    /// <summary>IOTLB invalidate (<c>QI_IOTLB_TYPE</c> with <c>QI_IOTLB_DID</c>, <c>QI_IOTLB_DR</c>, <c>QI_IOTLB_DW</c>, <c>QI_IOTLB_GRAN</c>).</summary>
    [KernelSymbol("QI_IOTLB_TYPE")]
    public static ulong Iotlb(ushort did, bool drainReads, bool drainWrites, int granularity) =>
        ((ulong)did << DidShift) | (drainReads ? IotlbDr : 0) | (drainWrites ? IotlbDw : 0)
        | ((ulong)granularity << GranShift) | IotlbType;

    /// <summary>PASID-cache invalidate (<c>QI_PC_TYPE</c> with <c>QI_PC_PASID</c>, <c>QI_PC_DID</c>, <c>QI_PC_GRAN</c>).</summary>
    [KernelSymbol("QI_PC_TYPE")]
    public static ulong PasidCache(ushort did, uint pasid, int granularity) =>
        ((ulong)pasid << PasidShift) | ((ulong)did << DidShift)
        | ((ulong)granularity << GranShift) | PcType;

    /// <summary>PASID-based IOTLB invalidate (<c>QI_EIOTLB_TYPE</c> with <c>QI_EIOTLB_PASID</c>, <c>QI_EIOTLB_DID</c>, <c>QI_EIOTLB_GRAN</c>).</summary>
    [KernelSymbol("QI_EIOTLB_TYPE")]
    public static ulong PasidIotlb(ushort did, uint pasid, int granularity) =>
        ((ulong)pasid << PasidShift) | ((ulong)did << DidShift)
        | ((ulong)granularity << GranShift) | EiotlbType;

    /// <summary>Invalidation wait that writes <paramref name="statusData"/> to the address in q1 (<c>QI_IWD_TYPE</c> with <c>QI_IWD_STATUS_DATA</c>, <c>QI_IWD_STATUS_WRITE</c>).</summary>
    [KernelSymbol("QI_IWD_TYPE")]
    public static ulong WaitWithStatus(uint statusData) =>
        ((ulong)statusData << IwdStatusDataShift) | IwdStatusWrite | IwdType;

    /// <summary>q1 of a page-selective PASID-based IOTLB invalidate: 2^<paramref name="am"/> pages at <paramref name="addr"/> (<c>QI_EIOTLB_ADDR</c>, <c>QI_EIOTLB_IH</c>, <c>QI_EIOTLB_AM</c>).</summary>
    [KernelSymbol("QI_EIOTLB_ADDR")]
    public static ulong PasidIotlbAddress(ulong addr, bool ih, int am) =>
        (addr & ~0xFFFUL) | (ih ? PiotlbIh : 0) | ((ulong)am & 0x3F);

    /// <summary>Invalidations a device may have pending above which the descriptor's queue-depth field reads 0 (<c>QI_DEV_IOTLB_MAX_INVS</c>).</summary>
    [KernelSymbol("QI_DEV_IOTLB_MAX_INVS")]
    public const int DevIotlbMaxInvs = 32;

    private const ulong DevIotlbSize = 1UL;          // QI_DEV_IOTLB_SIZE: q1 bit 0 of type 3
    private const ulong DevEiotlbSize = 1UL << 11;   // QI_DEV_EIOTLB_SIZE: q1 bit 11 of type 8
    private const int DevIotlbQdepShift = 16;        // QI_DEV_IOTLB_QDEP: q0 20:16 of type 3
    private const int DevEiotlbQdepShift = 4;        // QI_DEV_EIOTLB_QDEP: q0 8:4 of type 8

    /// <summary>Device-TLB invalidate, q0 (<c>QI_DIOTLB_TYPE</c> with <c>QI_DEV_IOTLB_SID</c>, <c>QI_DEV_IOTLB_QDEP</c>, <c>QI_DEV_IOTLB_PFSID</c>); a depth of 32 or more is sent as 0.</summary>
    [KernelSymbol("QI_DIOTLB_TYPE")]
    public static ulong DevIotlb(ushort sid, ushort pfsid, int qdep) =>
        ((ulong)sid << DevIotlbSidShift) | ((ulong)(qdep >= DevIotlbMaxInvs ? 0 : qdep & 0x1F) << DevIotlbQdepShift)
        | Pfsid(pfsid) | DiotlbType;

    /// <summary>
    /// q1 of a device-TLB invalidate (<c>qi_flush_dev_iotlb</c>): 2^<paramref name="mask"/> pages at <paramref name="addr"/>;
    /// for <paramref name="mask"/> &gt; 0 the address bits below 12 + mask − 1 are set and S marks the size.
    /// </summary>
    [KernelSymbol("QI_DEV_IOTLB_ADDR")]
    public static ulong DevIotlbAddress(ulong addr, int mask) =>
        mask == 0 ? addr & ~0xFFFUL : ((addr | ((1UL << (12 + mask - 1)) - 1)) & ~0xFFFUL) | DevIotlbSize;

    /// <summary>PASID-based device-TLB invalidate, q0 (<c>QI_DEIOTLB_TYPE</c> with <c>QI_DEV_EIOTLB_PASID</c>, <c>QI_DEV_EIOTLB_SID</c>, <c>QI_DEV_EIOTLB_QDEP</c>, <c>QI_DEV_IOTLB_PFSID</c>).</summary>
    [KernelSymbol("QI_DEIOTLB_TYPE")]
    public static ulong PasidDevIotlb(ushort sid, ushort pfsid, uint pasid, int qdep) =>
        ((ulong)(pasid & 0xF_FFFF) << PasidShift) | ((ulong)sid << DevEiotlbSidShift)
        | ((ulong)(qdep >= DevIotlbMaxInvs ? 0 : qdep & 0x1F) << DevEiotlbQdepShift) | Pfsid(pfsid) | DeiotlbType;

    /// <summary>
    /// q1 of a PASID-based device-TLB invalidate (<c>qi_flush_dev_iotlb_pasid</c>): 2^<paramref name="order"/> pages at
    /// <paramref name="addr"/>; for <paramref name="order"/> &gt; 0 address bits 12 … 12 + order − 2 are set, bit 12 + order − 1
    /// cleared, and S set (the lowest clear bit from 12 gives the size). G (bit 0, all PASIDs) is never set by Linux.
    /// </summary>
    [KernelSymbol("QI_DEV_EIOTLB_ADDR")]
    public static ulong PasidDevIotlbAddress(ulong addr, int order)
    {
        ulong q1 = addr & ~0xFFFUL;
        if (order == 0)
        {
            return q1;
        }

        ulong top = 1UL << (12 + order - 1);
        q1 |= (top | (top - 1)) & ~0xFFFUL; // GENMASK_ULL(12 + order - 1, 12)
        return (q1 & ~top) | DevEiotlbSize;
    }

    // QI_DEV_IOTLB_PFSID: PFSID[3:0] in q0 15:12, PFSID[15:4] in q0 63:52.
    [KernelSymbol("QI_DEV_IOTLB_PFSID")]
    private static ulong Pfsid(ushort pfsid) => ((ulong)(pfsid & 0xF) << 12) | ((ulong)(pfsid & 0xFFF0) << 48);
}
