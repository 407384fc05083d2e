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
