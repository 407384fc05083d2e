using Iommu.Devices;
using Iommu.Domains;
using Iommu.Faults;
using Iommu.Groups;

namespace Iommu.Core.Tests.Infrastructure;

/// <summary>
/// A minimal IOMMU driver for group-formation tests: it groups PCI devices with the core's
/// pci_device_group (or generic_device_group for others) and records attaches.
/// </summary>
internal sealed class GroupingDriver(IommuCore core) : IIommuOps
{
    public List<(IDomain Domain, Device Device)> Attaches { get; } = [];

    public IommuCallbacks Callbacks => IommuCallbacks.AttachDev | IommuCallbacks.DetachDev | IommuCallbacks.DeviceGroup;

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

    public bool Capable(IommuCap cap) => throw new NotSupportedException();

    public Errno Map(IDomain domain, ulong iova, ulong paddr, ulong size, IommuProt prot) => throw new NotSupportedException();

    public Errno MapPages(IDomain domain, ulong iova, ulong paddr, ulong pgsize, ulong pgcount, IommuProt prot, out ulong mapped) => throw new NotSupportedException();

    public ulong Unmap(IDomain domain, ulong iova, ulong size, ref IommuIotlbGather gather) => throw new NotSupportedException();

    public ulong UnmapPages(IDomain domain, ulong iova, ulong pgsize, ulong pgcount, ref IommuIotlbGather gather) => throw new NotSupportedException();

    public void FlushIotlbAll(IDomain domain) => throw new NotSupportedException();

    public void IotlbSync(IDomain domain, ref IommuIotlbGather gather) => throw new NotSupportedException();

    public void IotlbSyncMap(IDomain domain, ulong iova, ulong size) => throw new NotSupportedException();

    public ulong IovaToPhys(IDomain domain, ulong iova) => throw new NotSupportedException();

    public Errno AddDevice(Device device) => throw new NotSupportedException();

    public void RemoveDevice(Device device) => throw new NotSupportedException();

    public Errno GetDevAttr(Device device, IommuDevAttr attr, out bool value) => throw new NotSupportedException();

    public Errno SetDevAttr(Device device, IommuDevAttr attr) => throw new NotSupportedException();

    public Errno AuxAttachDev(IDomain domain, Device device) => throw new NotSupportedException();

    public void AuxDetachDev(IDomain domain, Device device) => throw new NotSupportedException();

    public int AuxGetPasid(IDomain domain, Device device) => throw new NotSupportedException();

    public Errno DomainGetAttr(IDomain domain, DomainAttr attr, out ulong value) => throw new NotSupportedException();

    public void GetResvRegions(Device device, IList<IommuResvRegion> regions) => throw new NotSupportedException();

    public Errno PageResponse(Device device, IommuFault fault, IommuPageResponse response) => throw new NotSupportedException();
}
