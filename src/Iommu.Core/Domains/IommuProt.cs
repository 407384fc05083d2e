namespace Iommu.Domains;

/// <summary>Protection flags of a mapping (<c>IOMMU_READ</c> …).</summary>
[Flags]
public enum IommuProt
{
    /// <summary>No access.</summary>
    None = 0,

    /// <summary>Device may read (<c>IOMMU_READ</c>).</summary>
    [KernelSymbol("IOMMU_READ")]
    Read = 1 << 0,

    /// <summary>Device may write (<c>IOMMU_WRITE</c>).</summary>
    [KernelSymbol("IOMMU_WRITE")]
    Write = 1 << 1,

    /// <summary>Cache-coherent (snooped) DMA (<c>IOMMU_CACHE</c>).</summary>
    [KernelSymbol("IOMMU_CACHE")]
    Cache = 1 << 2,

    /// <summary>No instruction fetch (<c>IOMMU_NOEXEC</c>).</summary>
    [KernelSymbol("IOMMU_NOEXEC")]
    NoExec = 1 << 3,

    /// <summary>The target is MMIO (<c>IOMMU_MMIO</c>).</summary>
    [KernelSymbol("IOMMU_MMIO")]
    Mmio = 1 << 4,

    /// <summary>Privileged access (<c>IOMMU_PRIV</c>).</summary>
    [KernelSymbol("IOMMU_PRIV")]
    Priv = 1 << 5,
}
