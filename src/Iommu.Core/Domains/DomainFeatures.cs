namespace Iommu.Domains;

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
