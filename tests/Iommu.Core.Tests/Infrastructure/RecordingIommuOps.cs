using Iommu.Devices;
using Iommu.Domains;
using Iommu.Faults;
using Iommu.Groups;

namespace Iommu.Core.Tests.Infrastructure;

/// <summary>
/// A fast hand-written fake driver for property tests: records every map/unmap request as a run
/// (iova, paddr, pgsize, count) and always succeeds. Callbacks other than map/unmap are absent.
/// </summary>
public sealed class RecordingIommuOps : IIommuOps
{
    public RecordingIommuOps(bool batched, ulong pgsizeBitmap)
    {
        Callbacks = batched
            ? IommuCallbacks.MapPages | IommuCallbacks.UnmapPages
            : IommuCallbacks.Map | IommuCallbacks.Unmap;
        PgsizeBitmap = pgsizeBitmap;
    }

    public IommuCallbacks Callbacks { get; }

    public ulong PgsizeBitmap { get; }

    public List<(ulong Iova, ulong Paddr, ulong Pgsize, ulong Count)> Maps { get; } = [];

    public List<(ulong Iova, ulong Pgsize, ulong Count)> Unmaps { get; } = [];

    public Errno Map(IDomain domain, ulong iova, ulong paddr, ulong size, IommuProt prot)
    {
        Require(IommuCallbacks.Map);
        Maps.Add((iova, paddr, size, 1));
        return Errno.None;
    }

    public Errno MapPages(IDomain domain, ulong iova, ulong paddr, ulong pgsize, ulong pgcount, IommuProt prot, out ulong mapped)
    {
        Require(IommuCallbacks.MapPages);
        Maps.Add((iova, paddr, pgsize, pgcount));
        mapped = pgsize * pgcount;
        return Errno.None;
    }

    public ulong Unmap(IDomain domain, ulong iova, ulong size, ref IommuIotlbGather gather)
    {
        Require(IommuCallbacks.Unmap);
        Unmaps.Add((iova, size, 1));
        return size;
    }

    public ulong UnmapPages(IDomain domain, ulong iova, ulong pgsize, ulong pgcount, ref IommuIotlbGather gather)
    {
        Require(IommuCallbacks.UnmapPages);
        Unmaps.Add((iova, pgsize, pgcount));
        return pgsize * pgcount;
    }

    public bool Capable(IommuCap cap) => throw Null();

    public IDomain? DomainAlloc(DomainType type) => new IommuDomain();

    public void DomainFree(IDomain domain)
    {
    }

    public Errno AttachDev(IDomain domain, Device device) => throw Null();

    public void DetachDev(IDomain domain, Device device) => throw Null();

    public void FlushIotlbAll(IDomain domain) => throw Null();

    public void IotlbSync(IDomain domain, ref IommuIotlbGather gather) => throw Null();

    public void IotlbSyncMap(IDomain domain, ulong iova, ulong size) => throw Null();

    public ulong IovaToPhys(IDomain domain, ulong iova) => throw Null();

    public Errno AddDevice(Device device) => throw Null();

    public void RemoveDevice(Device device) => throw Null();

    public Errno DeviceGroup(Device device, out IommuGroup? group) => throw Null();

    public Errno GetDevAttr(Device device, IommuDevAttr attr, out bool value) => throw Null();

    public Errno SetDevAttr(Device device, IommuDevAttr attr) => throw Null();

    public Errno AuxAttachDev(IDomain domain, Device device) => throw Null();

    public void AuxDetachDev(IDomain domain, Device device) => throw Null();

    public int AuxGetPasid(IDomain domain, Device device) => throw Null();

    public Errno DomainGetAttr(IDomain domain, DomainAttr attr, out ulong value) => throw Null();

    public void GetResvRegions(Device device, IList<IommuResvRegion> regions) => throw Null();

    public Errno PageResponse(Device device, IommuFault fault, IommuPageResponse response) => throw Null();

    private static NotSupportedException Null() => new("The core called a NULL callback.");

    private void Require(IommuCallbacks flag)
    {
        if (!Callbacks.HasFlag(flag))
        {
            throw Null();
        }
    }
}
