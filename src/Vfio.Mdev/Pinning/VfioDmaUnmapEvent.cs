using Iommu;

namespace Vfio.Mdev.Pinning;

/// <summary>The data of a DMA-unmap event (<c>struct vfio_iommu_type1_dma_unmap</c>: the range being unmapped).</summary>
/// <param name="Iova">First IOVA.</param>
/// <param name="Size">Length in bytes.</param>
[KernelSymbol("struct vfio_iommu_type1_dma_unmap")]
public readonly record struct VfioDmaUnmapEvent(ulong Iova, ulong Size);
