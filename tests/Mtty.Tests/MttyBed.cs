using Iommu;
using Moq;
using Vfio.Mdev;
using Vfio.Mdev.Pinning;

namespace Mtty.Tests;

/// <summary>A platform with an mdev core and a registered mtty driver whose pinning service is a mock.</summary>
public sealed class MttyBed : IDisposable
{
    public MttyBed(bool enforceBudget = false, bool withPinning = true)
    {
        Platform = new Platform(new PlatformOptions { MemorySize = 1UL << 30, TableMemorySize = 16UL << 20 });
        Core = new MdevCore(Platform);
        Pinning = new Mock<IVfioPinning>(MockBehavior.Strict);
        Driver = new MttyDriver(Platform.Memory, withPinning ? Pinning.Object : null, enforceBudget);
        Assert.Equal(Errno.None, Driver.Register(Core));
    }

    public Platform Platform { get; }

    public MdevCore Core { get; }

    public Mock<IVfioPinning> Pinning { get; }

    public MttyDriver Driver { get; }

    public MdevType Type(string name) => Core.FindParent(Driver.ParentDevice)!.FindType(name)!;

    public string Available(string type)
    {
        Assert.Equal(Errno.None, Type(type).ReadAttribute("available_instances", out string v));
        return v;
    }

    public MdevDevice Create(string type)
    {
        Assert.Equal(Errno.None, Core.Create(Type(type), Guid.NewGuid(), out MdevDevice? m));
        return m!;
    }

    public void Dispose() => Platform.Dispose();
}
