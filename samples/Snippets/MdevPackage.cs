// snippet-begin: vfio-mdev-package
using Iommu;
using Iommu.Devices;
using Vfio.Mdev;
// snippet-end: vfio-mdev-package

namespace Snippets;

/// <summary>src/Vfio.Mdev/PACKAGE.md.</summary>
internal static class MdevPackage
{
    public static (MdevDevice Mdev, Device? IommuDevice) Run()
    {
        // snippet-begin: vfio-mdev-package
        using var platform = new Platform(new PlatformOptions { MemorySize = 4 * Sizes.GiB });
        PciDevice parentDevice = platform.AddPciBus(segment: 0).AddDevice(new PciDeviceSpec("0000:00:04.0"));

        var mdevCore = new MdevCore(platform);                                       // one per Platform
        mdevCore.RegisterDevice(parentDevice, new MyVendorDriver(parentDevice)).ThrowIfError();  // mdev_register_device()

        // echo $uuid > /sys/.../mdev_supported_types/my_driver-wq/create
        mdevCore.Create(parentDevice, "my_driver-wq", Guid.NewGuid(), out MdevDevice? mdev).ThrowIfError();
        Console.WriteLine($"{mdev!.Name}: group {mdev.IommuGroup!.Id}, IOMMU device {mdev.GetIommuDevice()?.Name}");
        // snippet-end: vfio-mdev-package
        return (mdev, mdev.GetIommuDevice());
    }
}

// snippet-begin: vfio-mdev-package

// A vendor driver writes the type groups, create and remove, and adds the optional-callback
// interfaces (IMdevReadWriteOps, ...) its device has: here none.
sealed class MyVendorDriver(PciDevice parent) : MdevParentOpsBase
{
    public override string DriverName => "my_driver";

    public override IReadOnlyList<MdevTypeGroup> SupportedTypeGroups { get; } =
        [MdevTypeGroup.Conventional("wq", _ => 8, "vfio-pci")];

    public override Errno Create(IMdevDevice mdev)
    {
        // Isolated by the IOMMU through the parent: VFIO type1 attaches the mdev's domain to it, as an
        // aux domain when AUX is enabled on the parent, else to the whole parent.
        mdev.SetIommuDevice(parent);
        return Errno.None;
    }

    public override Errno Remove(IMdevDevice mdev) => Errno.None;
}
// snippet-end: vfio-mdev-package
