namespace Iommu.VtD.Driver.Format;

/// <summary>One 256-bit queued-invalidation descriptor as <c>qi_submit_sync</c> takes it (<c>struct qi_desc</c>).</summary>
[KernelSymbol("struct qi_desc")]
internal readonly record struct QiDesc(ulong Q0, ulong Q1, ulong Q2 = 0, ulong Q3 = 0);

/// <summary>
/// A page request descriptor as the unit wrote it into the page request queue (<c>struct page_req_dsc</c>),
/// with named accessors; the driver's only decoder of its bits.
/// </summary>
[KernelSymbol("struct page_req_dsc")]
internal readonly record struct PageRequestDescriptor(ulong Q0, ulong Q1, ulong Q2, ulong Q3)
{
    /// <summary>PP: the request carries a PASID.</summary>
    public bool PasidPresent => (Q0 & (1UL << 8)) != 0;

    /// <summary>PDP: private data present.</summary>
    public bool PrivDataPresent => (Q0 & (1UL << 9)) != 0;

    /// <summary>RID (requester bus:devfn).</summary>
    public ushort Rid => (ushort)(Q0 >> 16);

    /// <summary>PASID.</summary>
    public uint Pasid => (uint)(Q0 >> 32) & 0xF_FFFF;

    /// <summary>ER: execute requested.</summary>
    public bool ExeReq => (Q0 & (1UL << 52)) != 0;

    /// <summary>PM: privileged mode requested.</summary>
    public bool PmReq => (Q0 & (1UL << 53)) != 0;

    /// <summary>RD: read requested.</summary>
    public bool RdReq => (Q1 & 1) != 0;

    /// <summary>WR: write requested.</summary>
    public bool WrReq => (Q1 & 2) != 0;

    /// <summary>LPIG: last page in group.</summary>
    public bool Lpig => (Q1 & 4) != 0;

    /// <summary>PRGI: page request group index.</summary>
    public uint PrgIndex => (uint)(Q1 >> 3) & 0x1FF;

    /// <summary>The page address (ADDR &lt;&lt; 12).</summary>
    public ulong Address => Q1 & ~0xFFFUL;
}

/// <summary>The page request queue's registers and the page group response descriptor, driver side (<c>intel-iommu.h</c>, <c>svm.c</c>).</summary>
internal static class PageRequestQueue
{
    /// <summary>Page request queue head (<c>DMAR_PQH_REG</c>).</summary>
    [KernelSymbol("DMAR_PQH_REG")]
    public const uint PqhReg = 0xC0;

    /// <summary>Page request queue tail (<c>DMAR_PQT_REG</c>).</summary>
    [KernelSymbol("DMAR_PQT_REG")]
    public const uint PqtReg = 0xC8;

    /// <summary>Page request queue address and size (<c>DMAR_PQA_REG</c>).</summary>
    [KernelSymbol("DMAR_PQA_REG")]
    public const uint PqaReg = 0xD0;

    /// <summary>Page request status (<c>DMAR_PRS_REG</c>).</summary>
    [KernelSymbol("DMAR_PRS_REG")]
    public const uint PrsReg = 0xDC;

    /// <summary>Page request event control (<c>DMAR_PECTL_REG</c>): 0 unmasks the event (<c>dmar_msi_unmask</c>).</summary>
    [KernelSymbol("DMAR_PECTL_REG")]
    public const uint PectlReg = 0xE0;

    /// <summary>Pending page request (<c>DMA_PRS_PPR</c>).</summary>
    [KernelSymbol("DMA_PRS_PPR")]
    public const uint PrsPpr = 1;

    /// <summary>Page request overflow (<c>DMA_PRS_PRO</c>).</summary>
    [KernelSymbol("DMA_PRS_PRO")]
    public const uint PrsPro = 2;

    /// <summary>Queue size as a power of two of 4 KiB pages (<c>PRQ_ORDER</c>, 5.15: 16 KiB, 512 descriptors; 6.1+ uses 4).</summary>
    [KernelSymbol("PRQ_ORDER")]
    public const int Order = 2;

    /// <summary>Byte offsets in the ring (<c>PRQ_RING_MASK</c>).</summary>
    [KernelSymbol("PRQ_RING_MASK")]
    public const ulong RingMask = (0x1000UL << Order) - 0x20;

    /// <summary>Response code Invalid Request (<c>QI_RESP_INVALID</c>).</summary>
    [KernelSymbol("QI_RESP_INVALID")]
    public const int RespInvalid = 1;

    private const ulong PgrpType = 9; // QI_PGRP_RESP_TYPE
    private const int QiDone = 2; // QI_DONE

    /// <summary>A page group response (<c>QI_PGRP_PASID</c>, <c>QI_PGRP_DID</c> (the RID), <c>QI_PGRP_PASID_P</c>, <c>QI_PGRP_PDP</c>, <c>QI_PGRP_RESP_CODE</c>, <c>QI_PGRP_IDX</c>, <c>QI_PGRP_LPIG</c>).</summary>
    [KernelSymbol("QI_PGRP_RESP_TYPE")]
    public static QiDesc PageGroupResponse(uint pasid, ushort rid, bool pasidPresent, bool privData, int code, uint prgIndex, bool lpig, ulong priv0, ulong priv1) =>
        new(((ulong)pasid << 32) | ((ulong)rid << 16) | (pasidPresent ? 1UL << 4 : 0) | (privData ? 1UL << 5 : 0) | ((ulong)(uint)code << 12) | PgrpType,
            ((ulong)prgIndex << 3) | (lpig ? 1UL << 2 : 0),
            privData ? priv0 : 0,
            privData ? priv1 : 0);

    /// <summary>The drain's fence: a wait descriptor with FN and status data DONE, neither SW nor IF (<c>QI_IWD_STATUS_DATA(QI_DONE) | QI_IWD_FENCE</c>).</summary>
    [KernelSymbol("QI_IWD_FENCE")]
    public static QiDesc DrainFence() => new(((ulong)QiDone << QiDescriptor.IwdStatusDataShift) | QiDescriptor.IwdFence | QiDescriptor.IwdType, 0);
}
