namespace Iommu;

/// <summary>Direction of a streaming DMA mapping (<c>enum dma_data_direction</c>), with the kernel's values.</summary>
[KernelSymbol("enum dma_data_direction")]
public enum DmaDataDirection
{
    /// <summary>The device reads and writes (<c>DMA_BIDIRECTIONAL</c>): IOMMU_READ | IOMMU_WRITE.</summary>
    [KernelSymbol("DMA_BIDIRECTIONAL")]
    Bidirectional = 0,

    /// <summary>The device reads memory (<c>DMA_TO_DEVICE</c>): IOMMU_READ.</summary>
    [KernelSymbol("DMA_TO_DEVICE")]
    ToDevice = 1,

    /// <summary>The device writes memory (<c>DMA_FROM_DEVICE</c>): IOMMU_WRITE.</summary>
    [KernelSymbol("DMA_FROM_DEVICE")]
    FromDevice = 2,

    /// <summary>No direction (<c>DMA_NONE</c>); not valid for a mapping (the kernel's <c>BUG_ON(!valid_dma_direction(dir))</c>).</summary>
    [KernelSymbol("DMA_NONE")]
    None = 3,
}
