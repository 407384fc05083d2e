using System.Runtime.CompilerServices;

namespace Iommu.VtD.Driver.Format;

/// <summary>
/// The driver's view of a first-level (IA-32e) paging entry as Linux writes it into a DMA or UNMANAGED
/// domain's own tables (<c>DMA_FL_PTE_*</c> in <c>intel-iommu.h</c>, as <c>__domain_mapping</c> and
/// <c>pfn_to_dma_pte</c> write them): P bit 0, R/W 1, U/S 2, A 5, D 6, PS 7, XD 63, address 51:12.
/// </summary>
/// <remarks>
/// <para>5.15 (to 6.10) leaf: <c>addr | P | R/W (write) | U/S | A | D (write) | XD [| PS] [| bit 11 snoop]</c>;
/// non-leaf: <c>addr | P | R/W | U/S | A | XD</c>. P is bit 0, the second level's R bit: Linux builds the
/// attribute from <c>DMA_PTE_READ</c>/<c>DMA_PTE_WRITE</c> and ORs P in, so a write-only request still
/// maps readable, and bit 11 (<c>DMA_PTE_SNP</c>) is left in for force-snoop domains, where the hardware
/// ignores it. 6.11 (e995fcde6070) stops writing XD; not modelled.</para>
/// <para>The hardware model decodes these entries with its own code.</para>
/// </remarks>
internal static class FirstLevelPte
{
    /// <summary>P, present (<c>DMA_FL_PTE_PRESENT</c>).</summary>
    [KernelSymbol("DMA_FL_PTE_PRESENT")]
    public const ulong Present = 1UL << 0;

    /// <summary>R/W, writes allowed (<c>DMA_PTE_WRITE</c>, the same bit in both formats).</summary>
    public const ulong Write = 1UL << 1;

    /// <summary>U/S, user requests allowed (<c>DMA_FL_PTE_US</c>; 5.8: set in every entry of DMA domains).</summary>
    [KernelSymbol("DMA_FL_PTE_US")]
    public const ulong User = 1UL << 2;

    /// <summary>A, accessed (<c>DMA_FL_PTE_ACCESS</c>): set by Linux up front, so the unit need not write it back.</summary>
    [KernelSymbol("DMA_FL_PTE_ACCESS")]
    public const ulong Accessed = 1UL << 5;

    /// <summary>D, dirty, in leaves of writable mappings (<c>DMA_FL_PTE_DIRTY</c>).</summary>
    [KernelSymbol("DMA_FL_PTE_DIRTY")]
    public const ulong Dirty = 1UL << 6;

    /// <summary>PS, a 2 MiB (level 2) or 1 GiB (level 3) leaf (<c>DMA_PTE_LARGE_PAGE</c>, the same bit in both formats).</summary>
    public const ulong PageSize = 1UL << 7;

    /// <summary>Bit 11, which Linux leaves set for force-snoop mappings (<c>DMA_PTE_SNP</c>); ignored by first-level walks.</summary>
    public const ulong Snoop = 1UL << 11;

    /// <summary>XD, execute-disable (<c>DMA_FL_PTE_XD</c>).</summary>
    [KernelSymbol("DMA_FL_PTE_XD")]
    public const ulong ExecuteDisable = 1UL << 63;

    /// <summary>Address bits 51:12.</summary>
    public const ulong AddressMask = 0x000F_FFFF_FFFF_F000UL;

    /// <summary>The bits of a table pointer besides its address (<c>pfn_to_dma_pte</c>, first level).</summary>
    public const ulong TableBits = Present | Write | User | Accessed | ExecuteDisable;

    /// <summary>Whether the entry is present.</summary>
    /// <param name="pte">The entry.</param>
    /// <returns>P.</returns>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static bool IsPresent(ulong pte) => (pte & Present) != 0;

    /// <summary>The address the entry holds.</summary>
    /// <param name="pte">The entry.</param>
    /// <returns>Bits 51:12.</returns>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static ulong Address(ulong pte) => pte & AddressMask;

    /// <summary>
    /// A leaf's bits besides its address (<c>__domain_mapping</c>, first level), for the second-level style
    /// attribute <paramref name="attr"/> (<see cref="DmaPte.Read"/>, <see cref="DmaPte.Write"/>,
    /// <see cref="DmaPte.Snoop"/>) at <paramref name="level"/>.
    /// </summary>
    /// <param name="attr">The mapping's attribute.</param>
    /// <param name="level">1 (4 KiB), 2 (2 MiB) or 3 (1 GiB).</param>
    /// <returns>P | U/S | A | XD, R/W and D for writes, PS above level 1, bit 11 as asked.</returns>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static ulong LeafBits(ulong attr, int level) =>
        Present | User | Accessed | ExecuteDisable
        | ((attr & DmaPte.Write) != 0 ? Write | Dirty : 0)
        | (attr & DmaPte.Snoop)
        | (level > 1 ? PageSize : 0);
}
