namespace Iommu.VtD.Diagnostics;

/// <summary>What a chunk of an exported image holds, as the walk that reached it interprets it.</summary>
public enum VtdImageChunkKind
{
    /// <summary>The root table (4 KiB, 256 root entries indexed by bus).</summary>
    RootTable = 0,

    /// <summary>A legacy context table (4 KiB, 256 entries of 16 bytes indexed by devfn).</summary>
    LegacyContextTable = 1,

    /// <summary>A scalable-mode context table (4 KiB, 128 entries of 32 bytes; lower or upper half of a bus).</summary>
    ScalableContextTable = 2,

    /// <summary>A PASID directory (2^(PDTS+7) entries of 8 bytes).</summary>
    PasidDirectory = 3,

    /// <summary>A scalable-mode PASID table (4 KiB, 64 entries of 64 bytes).</summary>
    PasidTable = 4,

    /// <summary>A second-level paging structure (4 KiB, 512 entries); <see cref="VtdImageChunk.Level"/> says which level.</summary>
    PageTable = 5,

    /// <summary>
    /// A first-level (IA-32e) paging structure a PGTT = 001 PASID entry reaches from FLPTR (4 KiB, 512
    /// entries); <see cref="VtdImageChunk.Level"/> says which level (5 = PML5 … 1 = page table).
    /// </summary>
    FirstLevelTable = 6,

    /// <summary>
    /// A first-level paging structure of a nested (PGTT = 011) PASID entry, stored at the host address
    /// the second level (SLPTPTR) gives its guest-physical address; its pointers are guest-physical.
    /// </summary>
    NestedFirstLevelTable = 7,
}
