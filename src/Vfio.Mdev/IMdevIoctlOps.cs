using Iommu;

namespace Vfio.Mdev;

/// <summary>
/// The optional <c>ioctl</c> callback of <see cref="IMdevParentOps"/>: without it a device ioctl returns 0
/// (5.15's <c>vfio_mdev_unlocked_ioctl</c>).
/// </summary>
public interface IMdevIoctlOps
{
    /// <summary>A device ioctl (<c>ioctl</c>), with its argument as the bytes user space passed.</summary>
    /// <param name="mdev">The device.</param>
    /// <param name="cmd">The ioctl number.</param>
    /// <param name="arg">The argument buffer (read and written in place).</param>
    /// <returns>A non-negative result, or a negative errno.</returns>
    [KernelSymbol("mdev_parent_ops.ioctl")]
    long Ioctl(IMdevDevice mdev, uint cmd, Span<byte> arg);
}
