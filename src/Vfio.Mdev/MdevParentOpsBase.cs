using Iommu;

namespace Vfio.Mdev;

/// <summary>
/// A base for vendor drivers: write <see cref="DriverName"/>, <see cref="SupportedTypeGroups"/>,
/// <see cref="Create"/> and <see cref="Remove"/>, and add to the class's base list the optional-callback
/// interfaces the device has (<see cref="IMdevOpenDeviceOps"/>, <see cref="IMdevReadWriteOps"/>,
/// <see cref="IMdevIoctlOps"/>, <see cref="IMdevMmapOps"/>, <see cref="IMdevRequestOps"/>). An interface
/// left out is absent exactly as a NULL member of <c>struct mdev_parent_ops</c> is.
/// </summary>
/// <remarks>
/// <para>What the mdev core does for an absent callback: opening the device file succeeds without
/// <c>open_device</c>, closing it calls nothing; <c>read</c>, <c>write</c> and <c>mmap</c> fail with
/// -EINVAL; <c>ioctl</c> returns 0; unregistering with files open waits without <c>request</c>,
/// logging once.</para>
/// <para>Thread safety: as <see cref="IMdevParentOps"/>; the base holds no state.</para>
/// </remarks>
public abstract class MdevParentOpsBase : IMdevParentOps
{
    /// <inheritdoc/>
    public abstract string DriverName { get; }

    /// <inheritdoc/>
    public abstract IReadOnlyList<MdevTypeGroup>? SupportedTypeGroups { get; }

    /// <inheritdoc/>
    public abstract Errno Create(IMdevDevice mdev);

    /// <inheritdoc/>
    public abstract Errno Remove(IMdevDevice mdev);
}
