using Iommu;

namespace Vfio.Mdev;

/// <summary>The optional <c>mmap</c> callback of <see cref="IMdevParentOps"/>: without it an mmap of the device file fails with -EINVAL.</summary>
public interface IMdevMmapOps
{
    /// <summary>Maps a device region (<c>mmap</c>).</summary>
    /// <param name="mdev">The device.</param>
    /// <param name="vma">The mapping being set up.</param>
    /// <returns>0 or an errno.</returns>
    [KernelSymbol("mdev_parent_ops.mmap")]
    Errno Mmap(IMdevDevice mdev, VmArea vma);
}
