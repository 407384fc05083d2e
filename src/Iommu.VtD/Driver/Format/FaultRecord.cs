namespace Iommu.VtD.Driver.Format;

/// <summary>
/// The driver's decoders of a 128-bit fault-recording register (the <c>dma_frcd_*</c> macros of
/// <c>intel-iommu.h</c>): lo = FI (63:12); hi = SID (15:0), PV (95:76 → hi 59:40) with PP (hi 31),
/// FR (hi 39:32), T (hi 62, 0 = write), F (hi 63, RW1C).
/// </summary>
internal static class FaultRecord
{
    /// <summary>F, hi bit 63 (<c>DMA_FRCD_F</c>); written as 1 to the top dword (offset 12) to clear.</summary>
    [KernelSymbol("DMA_FRCD_F")]
    public const ulong Fault = 1UL << 63;

    /// <summary>F as a 32-bit write to bytes 15:12 of the record.</summary>
    public const uint FaultClearDword = 1u << 31;

    [KernelSymbol("dma_frcd_source_id")]
    public static ushort SourceId(ulong hi) => (ushort)(hi & 0xFFFF);

    [KernelSymbol("dma_frcd_pasid_present")]
    public static bool PasidPresent(ulong hi) => (hi & (1UL << 31)) != 0;

    [KernelSymbol("dma_frcd_pasid_value")]
    public static uint PasidValue(ulong hi) => (uint)((hi >> 40) & 0xF_FFFF);

    [KernelSymbol("dma_frcd_fault_reason")]
    public static byte FaultReason(ulong hi) => (byte)(hi >> 32);

    /// <summary>T: true for a read (T = 1), false for a write (<c>dma_frcd_type</c>).</summary>
    [KernelSymbol("dma_frcd_type")]
    public static bool IsRead(ulong hi) => (hi & (1UL << 62)) != 0;

    [KernelSymbol("dma_frcd_page_addr")]
    public static ulong PageAddr(ulong lo) => lo & ~0xFFFUL;
}
