namespace Iommu.VtD.Diagnostics;

/// <summary>One entry a request reads on its way through an image (see <see cref="VtdImage.Path"/>).</summary>
/// <param name="Kind">The structure the entry belongs to.</param>
/// <param name="Level">Paging level for page-table entries; 0 otherwise.</param>
/// <param name="Address">Physical address of the entry's first word.</param>
/// <param name="Value">The entry's first 64-bit word.</param>
public readonly record struct VtdImageEntry(VtdImageChunkKind Kind, int Level, ulong Address, ulong Value)
{
    /// <summary>
    /// For an entry of a <see cref="VtdImageChunkKind.NestedFirstLevelTable"/>: the guest-physical
    /// address the walk read, which the second level translated to <see cref="Address"/>; null otherwise.
    /// </summary>
    public ulong? GuestAddress { get; init; }
}
