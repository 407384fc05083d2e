namespace Iommu;

/// <summary>Events on an IOMMU group's notifier chain (<c>IOMMU_GROUP_NOTIFY_*</c>).</summary>
[KernelSymbol("IOMMU_GROUP_NOTIFY_ADD_DEVICE")]
public enum IommuGroupNotification
{
    /// <summary>A device was added (<c>IOMMU_GROUP_NOTIFY_ADD_DEVICE</c>).</summary>
    AddDevice = 1,

    /// <summary>A device is about to be removed (<c>IOMMU_GROUP_NOTIFY_DEL_DEVICE</c>).</summary>
    DelDevice = 2,

    /// <summary>A driver is about to bind (<c>IOMMU_GROUP_NOTIFY_BIND_DRIVER</c>).</summary>
    BindDriver = 3,

    /// <summary>A driver was bound (<c>IOMMU_GROUP_NOTIFY_BOUND_DRIVER</c>).</summary>
    BoundDriver = 4,

    /// <summary>A driver is about to unbind (<c>IOMMU_GROUP_NOTIFY_UNBIND_DRIVER</c>).</summary>
    UnbindDriver = 5,

    /// <summary>A driver was unbound (<c>IOMMU_GROUP_NOTIFY_UNBOUND_DRIVER</c>).</summary>
    UnboundDriver = 6,
}
