using Iommu;

namespace Vfio.Mdev;

/// <summary>
/// The optional <c>read</c>/<c>write</c> callbacks of <see cref="IMdevParentOps"/>: without them a read or
/// write of the device file fails with -EINVAL.
/// </summary>
public interface IMdevReadWriteOps
{
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
}
