using Iommu.Devices;
using Iommu.Domains;
using Iommu.Groups;

namespace Iommu.Core.Tests.Infrastructure;

/// <summary>
/// A fast hand-written fake driver for property tests: records every map/unmap request as a run
/// (iova, paddr, pgsize, count) and always succeeds. <see cref="Create"/> gives one with either the
/// batched or the one-page callbacks; it has no other optional callbacks and is never probed.
/// </summary>
public class RecordingIommuOps : IIommuOps
{
    private RecordingIommuOps(ulong pgsizeBitmap) => PgsizeBitmap = pgsizeBitmap;

    public ulong PgsizeBitmap { get; }

    public List<(ulong Iova, ulong Paddr, ulong Pgsize, ulong Count)> Maps { get; } = [];

    public List<(ulong Iova, ulong Pgsize, ulong Count)> Unmaps { get; } = [];

    /// <summary>A driver with map_pages/unmap_pages (<paramref name="batched"/>) or with map/unmap.</summary>
    public static RecordingIommuOps Create(bool batched, ulong pgsizeBitmap) =>
        batched ? new Batched(pgsizeBitmap) : new OnePage(pgsizeBitmap);

    public IDomain? DomainAlloc(DomainType type) => new IommuDomain();

    public void DomainFree(IDomain domain)
    {
    }

    // The recorded runs are not a page table: nothing translates.
    public ulong IovaToPhys(IDomain domain, ulong iova) => 0;

    public Errno AddDevice(Device device) => Errno.ENODEV;

    public void RemoveDevice(Device device)
    {
    }

    public Errno DeviceGroup(Device device, out IommuGroup? group)
    {
        group = null;
        return Errno.ENODEV;
    }

    private sealed class Batched(ulong pgsizeBitmap) : RecordingIommuOps(pgsizeBitmap), IIommuMapPagesOps
    {
        public Errno MapPages(IDomain domain, ulong iova, ulong paddr, ulong pgsize, ulong pgcount, IommuProt prot, out ulong mapped)
        {
            Maps.Add((iova, paddr, pgsize, pgcount));
            mapped = pgsize * pgcount;
            return Errno.None;
        }

        public ulong UnmapPages(IDomain domain, ulong iova, ulong pgsize, ulong pgcount, ref IommuIotlbGather gather)
        {
            Unmaps.Add((iova, pgsize, pgcount));
            return pgsize * pgcount;
        }
    }

    private sealed class OnePage(ulong pgsizeBitmap) : RecordingIommuOps(pgsizeBitmap), IIommuMapOps
    {
        public Errno Map(IDomain domain, ulong iova, ulong paddr, ulong size, IommuProt prot)
        {
            Maps.Add((iova, paddr, size, 1));
            return Errno.None;
        }

        public ulong Unmap(IDomain domain, ulong iova, ulong size, ref IommuIotlbGather gather)
        {
            Unmaps.Add((iova, size, 1));
            return size;
        }
    }
}
