using Iommu;

namespace Vfio.Mdev;

/// <summary>Which members of <c>struct mdev_parent_ops</c> a vendor driver provides (its non-NULL function pointers).</summary>
[Flags]
public enum MdevParentCallbacks
{
    /// <summary>None.</summary>
    None = 0,

    /// <summary><c>create</c> (mandatory).</summary>
    [KernelSymbol("mdev_parent_ops.create")]
    Create = 1 << 0,

    /// <summary><c>remove</c> (mandatory).</summary>
    [KernelSymbol("mdev_parent_ops.remove")]
    Remove = 1 << 1,

    /// <summary><c>open_device</c> (5.15; <c>open</c> in 5.10).</summary>
    [KernelSymbol("mdev_parent_ops.open_device")]
    OpenDevice = 1 << 2,

    /// <summary><c>close_device</c> (5.15; <c>release</c> in 5.10).</summary>
    [KernelSymbol("mdev_parent_ops.close_device")]
    CloseDevice = 1 << 3,

    /// <summary><c>read</c>.</summary>
    [KernelSymbol("mdev_parent_ops.read")]
    Read = 1 << 4,

    /// <summary><c>write</c>.</summary>
    [KernelSymbol("mdev_parent_ops.write")]
    Write = 1 << 5,

    /// <summary><c>ioctl</c>.</summary>
    [KernelSymbol("mdev_parent_ops.ioctl")]
    Ioctl = 1 << 6,

    /// <summary><c>mmap</c>.</summary>
    [KernelSymbol("mdev_parent_ops.mmap")]
    Mmap = 1 << 7,

    /// <summary><c>request</c> (5.15).</summary>
    [KernelSymbol("mdev_parent_ops.request")]
    Request = 1 << 8,

    /// <summary>Every callback.</summary>
    All = Create | Remove | OpenDevice | CloseDevice | Read | Write | Ioctl | Mmap | Request,
}
