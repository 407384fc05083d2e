using Iommu;

namespace Vfio.Mdev;

/// <summary>
/// The optional <c>request</c> callback of <see cref="IMdevParentOps"/> (5.15): without it, removing a
/// device with files open waits for them to close without asking, logging once.
/// </summary>
public interface IMdevRequestOps
{
    /// <summary>The device is being removed while files are open: ask user space to close them (<c>request</c>).</summary>
    /// <param name="mdev">The device.</param>
    /// <param name="count">How many times this removal has asked so far (0 the first time).</param>
    [KernelSymbol("mdev_parent_ops.request")]
    void Request(IMdevDevice mdev, uint count);
}
