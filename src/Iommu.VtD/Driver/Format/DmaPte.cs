using System.Runtime.CompilerServices;

namespace Iommu.VtD.Driver;

/// <summary>
/// The driver's view of a second-level page-table entry (<c>struct dma_pte</c> in intel-iommu.h):
/// R bit 0, W bit 1, superpage bit 7, SNP bit 11, address bits 51:12.
/// </summary>
/// <remarks>
/// The driver keeps its own copy of these constants, as Linux does in its headers; the hardware
/// model decodes entries with its own code, so a disagreement shows up as a failing translation.
/// It lives beside the driver's other typed entries (<c>Driver/Format</c>) but keeps the
/// <c>Iommu.VtD.Driver</c> namespace, where users already find it; the page-table walker reads it
/// through <c>SecondLevelFormat</c>.
/// </remarks>
public static class DmaPte
{
    /// <summary>Read permission (<c>DMA_PTE_READ</c>).</summary>
    [KernelSymbol("DMA_PTE_READ")]
    public const ulong Read = 1UL << 0;

    /// <summary>Write permission (<c>DMA_PTE_WRITE</c>).</summary>
    [KernelSymbol("DMA_PTE_WRITE")]
    public const ulong Write = 1UL << 1;

    /// <summary>Superpage leaf at level 2 (2 MiB) or 3 (1 GiB) (<c>DMA_PTE_LARGE_PAGE</c>).</summary>
    [KernelSymbol("DMA_PTE_LARGE_PAGE")]
    public const ulong LargePage = 1UL << 7;

    /// <summary>Snoop behaviour for force-snoop domains (<c>DMA_PTE_SNP</c>).</summary>
    [KernelSymbol("DMA_PTE_SNP")]
    public const ulong Snoop = 1UL << 11;

    /// <summary>Address bits 51:12 (<c>VTD_PAGE_MASK</c> within the host address width).</summary>
    public const ulong AddressMask = 0x000F_FFFF_FFFF_F000UL;

    /// <summary>VT-d page shift (<c>VTD_PAGE_SHIFT</c>).</summary>
    [KernelSymbol("VTD_PAGE_SHIFT")]
    public const int PageShift = 12;

    /// <summary>
    /// The page-frame bits of a table pointer, 63:12 (<c>VTD_PAGE_MASK</c>): what the root, context and
    /// PASID-entry setters keep of an address.
    /// </summary>
    [KernelSymbol("VTD_PAGE_MASK")]
    internal const ulong PageMask = ~0UL << PageShift;

    /// <summary>Index bits per level (<c>VTD_STRIDE_SHIFT</c>).</summary>
    [KernelSymbol("VTD_STRIDE_SHIFT")]
    public const int StrideShift = 9;

    /// <summary>Whether the entry is present: R or W set (<c>dma_pte_present</c>).</summary>
    /// <param name="pte">The entry.</param>
    /// <returns>True when present.</returns>
    [KernelSymbol("dma_pte_present")]
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static bool IsPresent(ulong pte) => (pte & (Read | Write)) != 0;

    /// <summary>Whether the entry is a superpage leaf (<c>dma_pte_superpage</c>).</summary>
    /// <param name="pte">The entry.</param>
    /// <returns>True when bit 7 is set.</returns>
    [KernelSymbol("dma_pte_superpage")]
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static bool IsSuperpage(ulong pte) => (pte & LargePage) != 0;

    /// <summary>The physical address the entry points to (<c>dma_pte_addr</c>).</summary>
    /// <param name="pte">The entry.</param>
    /// <returns>Bits 51:12.</returns>
    [KernelSymbol("dma_pte_addr")]
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static ulong Address(ulong pte) => pte & AddressMask;

    /// <summary>Bytes covered by one entry at <paramref name="level"/> (1 = 4 KiB, 2 = 2 MiB, 3 = 1 GiB …).</summary>
    /// <param name="level">Page-table level, 1-based.</param>
    /// <returns>4 KiB × 512^(level−1).</returns>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static ulong LevelSize(int level) => 1UL << (PageShift + (StrideShift * (level - 1)));

    /// <summary>Index of <paramref name="iova"/> in a table of <paramref name="level"/> (<c>pfn_level_offset</c>).</summary>
    /// <param name="iova">The IOVA.</param>
    /// <param name="level">Page-table level.</param>
    /// <returns>0–511.</returns>
    [KernelSymbol("pfn_level_offset")]
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static int Index(ulong iova, int level) => (int)((iova >> (PageShift + (StrideShift * (level - 1)))) & 511);
}
