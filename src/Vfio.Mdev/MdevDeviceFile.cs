using Iommu.Memory;
using Iommu;
using Vfio.Mdev.Internal;

namespace Vfio.Mdev;

/// <summary>
/// An open file of a mediated device: the vfio-mdev bridge (<c>drivers/vfio/mdev/vfio_mdev.c</c>)
/// that forwards read/write/ioctl/mmap to the vendor's <see cref="IMdevParentOps"/>.
/// </summary>
/// <remarks>
/// <para>5.15 results for a missing vendor callback: read, write and mmap return -EINVAL; ioctl
/// returns 0 (5.10 returned -EINVAL for every missing callback).</para>
/// <para>Offsets encode the region as the vendor defines it (vfio-pci convention: region index in
/// bits 40 and up). Thread safety: calls are forwarded as they come, concurrently if the caller does
/// so; the vendor serialises its device state. Disposing closes the file (the last close calls
/// <c>close_device</c>).</para>
/// </remarks>
public sealed class MdevDeviceFile : IDisposable
{
    private int _closed;

    internal MdevDeviceFile(MdevDevice device)
    {
        Device = device;
    }

    /// <summary>The device.</summary>
    public MdevDevice Device { get; }

    private IMdevParentOps Ops => Device.Parent.Ops;

    /// <summary>Reads at <paramref name="offset"/> (<c>vfio_mdev_read</c>).</summary>
    /// <param name="buffer">Receives the bytes.</param>
    /// <param name="offset">File offset.</param>
    /// <returns>Bytes read or a negative errno; -EINVAL without a vendor <c>read</c>.</returns>
    [KernelSymbol("vfio_mdev_read")]
    public long Read(Span<byte> buffer, long offset)
    {
        using PhysicalMemory.AccessScope guard = Device.Core.Platform.Memory.EnterAccess();
        ThrowIfClosed();
        return Ops is IMdevReadWriteOps rw
            ? rw.Read(Device, buffer, offset)
            : Missing("read");
    }

    /// <summary>Writes at <paramref name="offset"/> (<c>vfio_mdev_write</c>).</summary>
    /// <param name="buffer">The bytes.</param>
    /// <param name="offset">File offset.</param>
    /// <returns>Bytes written or a negative errno; -EINVAL without a vendor <c>write</c>.</returns>
    [KernelSymbol("vfio_mdev_write")]
    public long Write(ReadOnlySpan<byte> buffer, long offset)
    {
        using PhysicalMemory.AccessScope guard = Device.Core.Platform.Memory.EnterAccess();
        ThrowIfClosed();
        return Ops is IMdevReadWriteOps rw
            ? rw.Write(Device, buffer, offset)
            : Missing("write");
    }

    /// <summary>A device ioctl (<c>vfio_mdev_unlocked_ioctl</c>).</summary>
    /// <param name="cmd">The ioctl number.</param>
    /// <param name="arg">The argument bytes.</param>
    /// <returns>The vendor's result; 0 without a vendor <c>ioctl</c> (5.15).</returns>
    [KernelSymbol("vfio_mdev_unlocked_ioctl")]
    public long Ioctl(uint cmd, Span<byte> arg)
    {
        using PhysicalMemory.AccessScope guard = Device.Core.Platform.Memory.EnterAccess();
        ThrowIfClosed();
        return Ops is IMdevIoctlOps ioctlOps ? ioctlOps.Ioctl(Device, cmd, arg) : 0;
    }

    /// <summary>Maps a region (<c>vfio_mdev_mmap</c>).</summary>
    /// <param name="vma">The mapping.</param>
    /// <returns>The vendor's result; -EINVAL without a vendor <c>mmap</c>.</returns>
    [KernelSymbol("vfio_mdev_mmap")]
    public Errno Mmap(VmArea vma)
    {
        using PhysicalMemory.AccessScope guard = Device.Core.Platform.Memory.EnterAccess();
        ArgumentNullException.ThrowIfNull(vma);
        ThrowIfClosed();
        return Ops is IMdevMmapOps mmapOps
            ? mmapOps.Mmap(Device, vma)
            : ErrorDetail.Fail(Errno.EINVAL, $"vendor driver {Ops.DriverName} has no mmap for {Device.Name}");
    }

    /// <summary>Closes the file (<c>vfio_mdev_close_device</c> on the last close).</summary>
    [KernelSymbol("vfio_mdev_close_device")]
    public void Dispose()
    {
        if (Interlocked.Exchange(ref _closed, 1) == 0)
        {
            Device.Close();
        }
    }

    private long Missing(string op) =>
        ErrorDetail.Fail(Errno.EINVAL, $"vendor driver {Ops.DriverName} has no {op} for {Device.Name}").ToKernelReturn();

    private void ThrowIfClosed()
    {
        if (Volatile.Read(ref _closed) != 0)
        {
            ThrowHelper.DeviceFileClosed(this);
        }
    }
}
