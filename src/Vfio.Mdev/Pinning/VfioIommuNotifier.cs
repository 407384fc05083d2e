namespace Vfio.Mdev.Pinning;

/// <summary>An IOMMU notifier callback (<c>notifier_block.notifier_call</c>).</summary>
/// <param name="action">The event (<see cref="VfioIommuNotifyEvents.DmaUnmap"/>).</param>
/// <param name="unmap">The range.</param>
/// <returns><see cref="NotifyResult.Ok"/> or another notifier result.</returns>
public delegate int VfioIommuNotifier(VfioIommuNotifyEvents action, VfioDmaUnmapEvent unmap);
