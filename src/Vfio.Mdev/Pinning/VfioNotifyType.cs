using Iommu;

namespace Vfio.Mdev.Pinning;

/// <summary>Notifier chains of a VFIO device (<c>enum vfio_notify_type</c>).</summary>
[KernelSymbol("enum vfio_notify_type")]
public enum VfioNotifyType
{
    /// <summary>IOMMU events of the container (<c>VFIO_IOMMU_NOTIFY</c>).</summary>
    [KernelSymbol("VFIO_IOMMU_NOTIFY")]
    Iommu = 0,

    /// <summary>Group events (<c>VFIO_GROUP_NOTIFY</c>, e.g. SET_KVM).</summary>
    [KernelSymbol("VFIO_GROUP_NOTIFY")]
    Group = 1,
}
