using Iommu.Devices;
using Iommu.Domains;
using Iommu.Groups;

namespace Iommu.Core.Tests.Infrastructure;

/// <summary>
/// A minimal IOMMU driver for group-formation tests: it groups PCI devices with the core's
/// pci_device_group (or generic_device_group for others) and records attaches. It has attach/detach
/// and no other optional callbacks.
/// </summary>
internal sealed class GroupingDriver(IommuCore core) : IIommuOps, IIommuAttachOps
{
    public List<(IDomain Domain, Device Device)> Attaches { get; } = [];

    public ulong PgsizeBitmap => 0x1000;

    public IDomain? DomainAlloc(DomainType type) => type == DomainType.Blocked ? null : new IommuDomain();

    public void DomainFree(IDomain domain)
    {
    }

    public Errno AttachDev(IDomain domain, Device device)
    {
        Attaches.Add((domain, device));
        return Errno.None;
    }

    public void DetachDev(IDomain domain, Device device)
    {
    }

    public Errno DeviceGroup(Device device, out IommuGroup? group) =>
        device is PciDevice ? core.PciDeviceGroup(device, out group) : core.GenericDeviceGroup(device, out group);

    // Nothing is ever mapped: no map callbacks.
    public ulong IovaToPhys(IDomain domain, ulong iova) => 0;

    public Errno AddDevice(Device device) => Errno.None;

    public void RemoveDevice(Device device)
    {
    }
}
