using Iommu;
using Iommu.Devices;
using Vfio.Mdev;

namespace Vfio.Mdev.Tests.Infrastructure;

/// <summary>A platform with an mdev core and a couple of physical parent devices (no IOMMU needed).</summary>
public sealed class MdevBed : IDisposable
{
    public MdevBed()
    {
        Platform = new Platform(new PlatformOptions { MemorySize = 1UL << 30, TableMemorySize = 16UL << 20 });
        Pci = Platform.AddPciBus();
        Mdev = new MdevCore(Platform);
        ParentA = Pci.AddDevice(new PciDeviceSpec("0000:00:02.0"));
        ParentB = Pci.AddDevice(new PciDeviceSpec("0000:00:03.0"));
    }

    public Platform Platform { get; }

    public PciBus Pci { get; }

    public MdevCore Mdev { get; }

    public PciDevice ParentA { get; }

    public PciDevice ParentB { get; }

    public FakeVendor Register(Device parent, params string?[] groups)
    {
        var v = new FakeVendor(groups);
        Assert.Equal(Errno.None, Mdev.RegisterDevice(parent, v));
        return v;
    }

    public MdevDevice Create(Device parent, string type, Guid? uuid = null)
    {
        Errno ret = Mdev.Create(parent, type, uuid ?? Guid.NewGuid(), out MdevDevice? m);
        Assert.Equal(Errno.None, ret);
        return m!;
    }

    public static string Attr(MdevType type, string name)
    {
        Assert.Equal(Errno.None, type.ReadAttribute(name, out string v));
        return v;
    }

    public void Dispose() => Platform.Dispose();
}
