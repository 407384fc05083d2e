using Iommu;

namespace Vfio.Mdev;

/// <summary>
/// The optional <c>open_device</c>/<c>close_device</c> callbacks of <see cref="IMdevParentOps"/> (5.15;
/// <c>open</c>/<c>release</c> in 5.10): without them opening the device file succeeds and the last
/// close calls nothing.
/// </summary>
public interface IMdevOpenDeviceOps
{
    /// <summary>The first device file was opened (<c>open_device</c>).</summary>
    /// <param name="mdev">The device.</param>
    /// <returns>0 or an errno (the open then fails).</returns>
    [KernelSymbol("mdev_parent_ops.open_device")]
    Errno OpenDevice(IMdevDevice mdev);

    /// <summary>The last device file was closed (<c>close_device</c>).</summary>
    /// <param name="mdev">The device.</param>
    [KernelSymbol("mdev_parent_ops.close_device")]
    void CloseDevice(IMdevDevice mdev);
}
