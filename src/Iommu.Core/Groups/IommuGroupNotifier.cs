using Iommu.Devices;

namespace Iommu.Groups;

/// <summary>Callback on a group's notifier chain (<c>iommu_group_register_notifier</c>).</summary>
/// <param name="action">What happened.</param>
/// <param name="device">The device it happened to.</param>
public delegate void IommuGroupNotifier(IommuGroupNotification action, Device device);
