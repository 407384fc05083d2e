using Iommu;

namespace Vfio.Mdev;

/// <summary>
/// A vendor (parent) driver as the mdev core sees it (<c>struct mdev_parent_ops</c>): the supported
/// type groups, create/remove of mediated devices, and the device-file operations the vfio-mdev
/// bridge forwards.
/// </summary>
/// <remarks>
/// <para>Optional callbacks: <see cref="Callbacks"/> says which are implemented; the core never calls
/// one whose bit is clear (methods for an absent callback may throw <see cref="NotSupportedException"/>).
/// <c>create</c>, <c>remove</c> and <see cref="SupportedTypeGroups"/> are mandatory. A vendor driver
/// usually derives from <see cref="MdevParentOpsBase"/> instead, which writes the bitmask and the
/// absent callbacks for it.</para>
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
    /// <summary>Which optional callbacks are implemented.</summary>
    MdevParentCallbacks Callbacks { get; }

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

    /// <summary>The first device file was opened (<c>open_device</c>).</summary>
    /// <param name="mdev">The device.</param>
    /// <returns>0 or an errno (the open then fails).</returns>
    [KernelSymbol("mdev_parent_ops.open_device")]
    Errno OpenDevice(IMdevDevice mdev);

    /// <summary>The last device file was closed (<c>close_device</c>).</summary>
    /// <param name="mdev">The device.</param>
    [KernelSymbol("mdev_parent_ops.close_device")]
    void CloseDevice(IMdevDevice mdev);

    /// <summary>Reads device regions (<c>read</c>); the offset encodes the region as in vfio-pci.</summary>
    /// <param name="mdev">The device.</param>
    /// <param name="buffer">Receives the bytes.</param>
    /// <param name="offset">File offset.</param>
    /// <returns>Bytes read, or a negative errno.</returns>
    [KernelSymbol("mdev_parent_ops.read")]
    long Read(IMdevDevice mdev, Span<byte> buffer, long offset);

    /// <summary>Writes device regions (<c>write</c>).</summary>
    /// <param name="mdev">The device.</param>
    /// <param name="buffer">The bytes.</param>
    /// <param name="offset">File offset.</param>
    /// <returns>Bytes written, or a negative errno.</returns>
    [KernelSymbol("mdev_parent_ops.write")]
    long Write(IMdevDevice mdev, ReadOnlySpan<byte> buffer, long offset);

    /// <summary>A device ioctl (<c>ioctl</c>), with its argument as the bytes user space passed.</summary>
    /// <param name="mdev">The device.</param>
    /// <param name="cmd">The ioctl number.</param>
    /// <param name="arg">The argument buffer (read and written in place).</param>
    /// <returns>A non-negative result, or a negative errno.</returns>
    [KernelSymbol("mdev_parent_ops.ioctl")]
    long Ioctl(IMdevDevice mdev, uint cmd, Span<byte> arg);

    /// <summary>Maps a device region (<c>mmap</c>).</summary>
    /// <param name="mdev">The device.</param>
    /// <param name="vma">The mapping being set up.</param>
    /// <returns>0 or an errno.</returns>
    [KernelSymbol("mdev_parent_ops.mmap")]
    Errno Mmap(IMdevDevice mdev, VmArea vma);

    /// <summary>The device is being removed while files are open: ask user space to close them (<c>request</c>).</summary>
    /// <param name="mdev">The device.</param>
    /// <param name="count">How many times this removal has asked so far (0 the first time).</param>
    [KernelSymbol("mdev_parent_ops.request")]
    void Request(IMdevDevice mdev, uint count);
}
