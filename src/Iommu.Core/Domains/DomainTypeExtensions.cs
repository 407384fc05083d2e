namespace Iommu.Domains;

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
