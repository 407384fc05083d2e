using Iommu;
using Iommu.Devices;
using Iommu.Mm;
using Vfio.Mdev;
using Vfio.Type1.Memory;

namespace Vfio.Type1;

/// <summary>An open VFIO device descriptor (from <c>VFIO_GROUP_GET_DEVICE_FD</c>); it keeps the group in its container.</summary>
/// <remarks>Thread safety: closing is idempotent per descriptor and safe from any thread.</remarks>
public sealed class VfioDeviceFile : VfioFile
{
    private readonly MdevDeviceFile? _mdevFile;

    internal VfioDeviceFile(VfioGroup group, Device device, ProcessAddressSpace owner, MdevDeviceFile? mdevFile)
    {
        Group = group;
        Device = device;
        Owner = owner;
        _mdevFile = mdevFile;
        OpenFileRef();
    }

    /// <summary>The group.</summary>
    public VfioGroup Group { get; }

    /// <summary>The device.</summary>
    public Device Device { get; }

    /// <summary>The process that holds the descriptor.</summary>
    public ProcessAddressSpace Owner { get; }

    /// <summary>For an mdev: the vendor driver's open file (read/write/ioctl go there).</summary>
    public MdevDeviceFile? MdevFile => _mdevFile;

    /// <summary>The descriptor in <see cref="Owner"/>'s table.</summary>
    public int Fd { get; internal set; }

    /// <summary>Closes the descriptor.</summary>
    /// <returns>0 or -EBADF.</returns>
    public Errno Close() => Owner.Close(Fd);

    private protected override (ProcessAddressSpace? Owner, int Fd) OpenedAs => (Owner, Fd);

    private protected override void Release()
    {
        _mdevFile?.Dispose();
        Group.DropContainerUser();
    }
}
