using Iommu;

namespace Vfio.Mdev;

/// <summary>
/// A vendor (parent) driver as the mdev core sees it (<c>struct mdev_parent_ops</c>): its name, the
/// supported type groups, and create/remove of mediated devices, which 5.15 requires. The device-file
/// callbacks a driver may leave NULL are interfaces of their own, which the ops object also
/// implements when the device has them: <see cref="IMdevOpenDeviceOps"/>,
/// <see cref="IMdevReadWriteOps"/>, <see cref="IMdevIoctlOps"/>, <see cref="IMdevMmapOps"/> and
/// <see cref="IMdevRequestOps"/>; the core tests for them with <c>is</c> where the kernel tests the
/// function pointer.
/// </summary>
/// <remarks>
/// <para>A vendor driver may derive from <see cref="MdevParentOpsBase"/> instead.</para>
/// <para>Follows 5.15: <c>create</c> takes only the mdev (the type is found through
/// <see cref="IMdevDevice.TypeGroupId"/>), and the device is opened/closed with
/// <c>open_device</c>/<c>close_device</c> on the first open and last close. 5.15's optional
/// <c>device_driver</c> (which makes create/remove optional) is not modelled.</para>
/// <para>Thread safety: <c>create</c> and <c>remove</c> run with the parent's unregistration
/// semaphore held for read and may run concurrently for different mdevs; the vendor protects its
/// own shared state (budgets, lists), as mtty does with its own mutex.</para>
/// </remarks>
[KernelSymbol("struct mdev_parent_ops")]
public interface IMdevParentOps
{
    /// <summary>The name of the parent device's driver (<c>dev_driver_string</c>): the prefix of every type name, <c>"&lt;driver&gt;-&lt;group&gt;"</c>.</summary>
    [KernelSymbol("dev_driver_string")]
    string DriverName { get; }

    /// <summary>The supported type groups (<c>supported_type_groups</c>); each group's name is a type name suffix. Null or empty is refused.</summary>
    [KernelSymbol("mdev_parent_ops.supported_type_groups")]
    IReadOnlyList<MdevTypeGroup>? SupportedTypeGroups { get; }

    /// <summary>Allocates the vendor state of a new mdev (<c>create</c>); its error is returned to the creator unchanged.</summary>
    /// <param name="mdev">The new device (not yet on the bus, no IOMMU group yet).</param>
    /// <returns>0 or an errno.</returns>
    [KernelSymbol("mdev_parent_ops.create")]
    Errno Create(IMdevDevice mdev);

    /// <summary>Frees the vendor state (<c>remove</c>); an error is only logged.</summary>
    /// <param name="mdev">The device.</param>
    /// <returns>0 or an errno.</returns>
    [KernelSymbol("mdev_parent_ops.remove")]
    Errno Remove(IMdevDevice mdev);
}
