namespace Iommu.Domains;

/// <summary>IOMMU domain types with the kernel's values (built from the <c>__IOMMU_DOMAIN_*</c> feature bits).</summary>
[System.Diagnostics.CodeAnalysis.SuppressMessage("Design", "CA1027", Justification = "Values are kernel constants, combinations of feature bits.")]
public enum DomainType
{
    /// <summary>All DMA is blocked (0).</summary>
    [KernelSymbol("IOMMU_DOMAIN_BLOCKED")]
    Blocked = 0,

    /// <summary>Mappings managed by an API user such as VFIO (<c>__IOMMU_DOMAIN_PAGING</c> = 1).</summary>
    [KernelSymbol("IOMMU_DOMAIN_UNMANAGED")]
    Unmanaged = DomainFeatures.Paging,

    /// <summary>Kernel DMA-API default domain (PAGING | DMA_API = 3).</summary>
    [KernelSymbol("IOMMU_DOMAIN_DMA")]
    Dma = DomainFeatures.Paging | DomainFeatures.DmaApi,

    /// <summary>IOVA equals physical address (<c>__IOMMU_DOMAIN_PT</c> = 4).</summary>
    [KernelSymbol("IOMMU_DOMAIN_IDENTITY")]
    Identity = DomainFeatures.PassThrough,

    /// <summary>5.15: DMA-API domain with a flush queue (PAGING | DMA_API | DMA_FQ = 11).</summary>
    [KernelSymbol("IOMMU_DOMAIN_DMA_FQ")]
    DmaFq = DomainFeatures.Paging | DomainFeatures.DmaApi | DomainFeatures.FlushQueue,
}

/// <summary>The <c>__IOMMU_DOMAIN_*</c> feature bits that domain types are made of.</summary>
[Flags]
public enum DomainFeatures
{
    /// <summary>No feature.</summary>
    None = 0,

    /// <summary><c>__IOMMU_DOMAIN_PAGING</c>: supports map/unmap.</summary>
    Paging = 1 << 0,

    /// <summary><c>__IOMMU_DOMAIN_DMA_API</c>: used by the DMA API.</summary>
    DmaApi = 1 << 1,

    /// <summary><c>__IOMMU_DOMAIN_PT</c>: identity (pass-through).</summary>
    PassThrough = 1 << 2,

    /// <summary><c>__IOMMU_DOMAIN_DMA_FQ</c> (5.15): flush queue.</summary>
    FlushQueue = 1 << 3,
}

/// <summary>Helpers over <see cref="DomainType"/>.</summary>
public static class DomainTypeExtensions
{
    /// <summary>Whether the type has <c>__IOMMU_DOMAIN_PAGING</c> (map/unmap allowed).</summary>
    /// <param name="type">Domain type.</param>
    /// <returns>True for UNMANAGED, DMA and DMA_FQ.</returns>
    public static bool IsPaging(this DomainType type) => ((DomainFeatures)type & DomainFeatures.Paging) != 0;

    /// <summary>Whether the type is used by the DMA API (<c>iommu_is_dma_domain</c>).</summary>
    /// <param name="type">Domain type.</param>
    /// <returns>True for DMA and DMA_FQ.</returns>
    [KernelSymbol("iommu_is_dma_domain")]
    public static bool IsDmaApi(this DomainType type) => ((DomainFeatures)type & DomainFeatures.DmaApi) != 0;
}
