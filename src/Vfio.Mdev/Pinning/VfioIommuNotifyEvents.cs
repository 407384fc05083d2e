using Iommu;

namespace Vfio.Mdev.Pinning;

/// <summary>IOMMU notifier events.</summary>
[Flags]
[System.Diagnostics.CodeAnalysis.SuppressMessage("Design", "CA1028", Justification = "Mirrors the kernel's unsigned long event mask.")]
public enum VfioIommuNotifyEvents : ulong
{
    /// <summary>No event.</summary>
    None = 0,

    /// <summary>A range of IOVA is being unmapped (<c>VFIO_IOMMU_NOTIFY_DMA_UNMAP</c>, bit 0).</summary>
    [KernelSymbol("VFIO_IOMMU_NOTIFY_DMA_UNMAP")]
    DmaUnmap = 1,
}
