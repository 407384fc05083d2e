namespace Iommu;

/// <summary>Bus-wide IOMMU capabilities (<c>enum iommu_cap</c>).</summary>
[KernelSymbol("enum iommu_cap")]
public enum IommuCap
{
    /// <summary>The IOMMU can enforce cache-coherent DMA (<c>IOMMU_CAP_CACHE_COHERENCY</c>).</summary>
    CacheCoherency = 0,

    /// <summary>Interrupt remapping is enabled (<c>IOMMU_CAP_INTR_REMAP</c>).</summary>
    IntrRemap = 1,

    /// <summary>The IOMMU can forbid instruction fetch (<c>IOMMU_CAP_NOEXEC</c>).</summary>
    NoExec = 2,
}
