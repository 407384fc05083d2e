using Iommu.Devices;
using Iommu.Domains;
using Iommu.Groups;

namespace Iommu.Core.Tests.Infrastructure;

/// <summary>A small platform with a PCI bus and a <see cref="MockIommu"/> driver (not yet registered).</summary>
public sealed class CoreBed : IDisposable
{
    public CoreBed(OptionalOps optional = OptionalOps.All, ulong pgsizeBitmap = MockIommu.Bitmap4K2M1G, DomainType defaultDomainType = DomainType.Dma, Microsoft.Extensions.Logging.ILoggerFactory? loggerFactory = null)
    {
        Platform = new Platform(
            new PlatformOptions
            {
                MemorySize = 1UL << 30,
                TableMemorySize = 16UL << 20,
                DefaultDomainType = defaultDomainType,
            },
            loggerFactory);
        Pci = Platform.AddPciBus();
        Driver = new MockIommu(optional, pgsizeBitmap);

        // Default grouping: every device alone (generic_device_group).
        Driver.DeviceGroupBehaviour = (Device d, out IommuGroup? g) => Core.GenericDeviceGroup(d, out g);
    }

    public Platform Platform { get; }

    public IommuCore Core => Platform.Iommu;

    public PciBus Pci { get; }

    public MockIommu Driver { get; }

    /// <summary>Registers the mock driver on the PCI bus (bus_set_iommu) and asserts success.</summary>
    public CoreBed WithIommu()
    {
        Assert.Equal(Errno.None, Pci.SetIommuOps(Driver.Ops));
        return this;
    }

    public PciDevice AddPci(string address, bool multifunction = false) =>
        Pci.AddDevice(new PciDeviceSpec(address) { Multifunction = multifunction });

    /// <summary>Puts every device named in <paramref name="names"/> into one shared group.</summary>
    public void UseSharedGroupFor(params string[] names)
    {
        IommuGroup? shared = null;
        var set = new HashSet<string>(names);
        Driver.DeviceGroupBehaviour = (Device d, out IommuGroup? g) =>
        {
            if (!set.Contains(d.Name))
            {
                return Core.GenericDeviceGroup(d, out g);
            }

            if (shared is null || shared.IsReleased)
            {
                shared = Core.GroupAlloc();
                g = shared;
                return Errno.None;
            }

            g = Core.GroupRefGet(shared);
            return Errno.None;
        };
    }

    public void Dispose()
    {
        Platform.Dispose();
    }
}
