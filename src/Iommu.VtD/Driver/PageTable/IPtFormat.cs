namespace Iommu.VtD.Driver;

/// <summary>
/// A page-table format for <see cref="PageTable{TFormat}"/>: how entries are read and written, what
/// makes one present, a leaf or a table pointer, and how an address splits into indexes (Linux
/// <c>drivers/iommu/generic_pt</c>: the format a compile-time parameter of one walk algorithm).
/// </summary>
/// <remarks>
/// <para>Every member is static and the implementations are structs, so the JIT compiles the walker
/// once per format with each call inlined: the bit tests become constants of that copy, and with the
/// level count constant the walk loop is unrolled.</para>
/// <para>Formats: <see cref="SecondLevelFormat"/> (VT-d second-level, <c>struct dma_pte</c>) and
/// <see cref="FirstLevelFormat"/> (IA-32e entries as Linux writes them for DMA and UNMANAGED domains:
/// <see cref="PresentMask"/> = P, <see cref="IsLeaf"/> = PS at levels 2 and 3, <see cref="LeafBits"/> = P | U/S |
/// A | XD, R/W and D for writes, PS above level 1; <see cref="TableBits"/> = P | R/W | U/S | A | XD), used as
/// <c>PageTable&lt;FirstLevelFormat&gt;</c> with 4 or 5 levels; the walker is the same.</para>
/// </remarks>
internal interface IPtFormat
{
    /// <summary>log2 of the smallest page (12).</summary>
    static abstract int PageShift { get; }

    /// <summary>Index bits per level (9: 512 entries of 8 bytes per 4 KiB table).</summary>
    static abstract int StrideShift { get; }

    /// <summary>Bits of which at least one is set in a present entry, and none in an absent one.</summary>
    static abstract ulong PresentMask { get; }

    /// <summary>Whether <paramref name="attr"/> asks for an access the format can map (a mapping needs one).</summary>
    static abstract bool IsMappable(ulong attr);

    /// <summary>Whether a present <paramref name="pte"/> at <paramref name="level"/> maps a page rather than pointing to a table.</summary>
    static abstract bool IsLeaf(ulong pte, int level);

    /// <summary>The table or page address a present entry holds.</summary>
    static abstract ulong Address(ulong pte);

    /// <summary>A leaf's bits besides its address, for <paramref name="attr"/> at <paramref name="level"/>; a leaf is <c>paddr | LeafBits</c>.</summary>
    static abstract ulong LeafBits(ulong attr, int level);

    /// <summary>A table pointer's bits besides its address; a table entry is <c>table | TableBits</c>.</summary>
    static abstract ulong TableBits { get; }

    /// <summary>Reads an entry (acquire: a walk may race a map installing tables).</summary>
    static abstract unsafe ulong Load(ulong* entry);

    /// <summary>
    /// Reads entry <paramref name="index"/> of <paramref name="table"/>, as <see cref="Load(ulong*)"/>: the
    /// walker's form, whose address the JIT folds into the load (a computed entry pointer passed to
    /// <see cref="Load(ulong*)"/> becomes a temporary and costs an instruction on the chain of
    /// dependent loads).
    /// </summary>
    static abstract unsafe ulong Load(ulong* table, ulong index);

    /// <summary>Writes an entry (release: the hardware may walk it at once).</summary>
    static abstract unsafe void Store(ulong* entry, ulong value);
}
