using Iommu;
using Iommu.Devices;
using Iommu.Domains;
using Iommu.Groups;

namespace CoreTour;

/// <summary>
/// A teaching stand-in for an IOMMU driver: page tables are a dictionary, and every call the core
/// makes is written to <see cref="Calls"/> so the tour can show what the kernel's core asks of a
/// driver. It is NOT the product: the real driver (Iommu.VtD) writes VT-d tables into physical memory.
/// </summary>
internal sealed class ToyIommu(IommuCore core) : IIommuOps, IIommuAttachOps, IIommuMapPagesOps, IIommuDomainAttrOps, IIommuAuxOps, IIommuDevFeatureOps
{
    private readonly HashSet<Device> _auxEnabled = [];

    public List<string> Calls { get; } = [];

    public ulong PgsizeBitmap => Sizes.Page | (2 * Sizes.MiB) | Sizes.GiB;

    public IDomain? DomainAlloc(DomainType type) =>
        type is DomainType.Unmanaged or DomainType.Dma or DomainType.Identity
            ? new ToyDomain { Geometry = new IommuDomainGeometry(0, (1UL << 48) - 1, true) }
            : null;

    public void DomainFree(IDomain domain)
    {
    }

    public Errno AttachDev(IDomain domain, Device device)
    {
        if (_auxEnabled.Contains(device) && domain.Type == DomainType.Unmanaged)
        {
            return ErrorDetail.Fail(Errno.EPERM, $"{device.Name} is in aux mode; attach UNMANAGED domains with iommu_attach_device_aux");
        }

        Calls.Add($"attach_dev({device.Name})");
        return Errno.None;
    }

    public void DetachDev(IDomain domain, Device device) => Calls.Add($"detach_dev({device.Name})");

    public Errno MapPages(IDomain domain, ulong iova, ulong paddr, ulong pgsize, ulong pgcount, IommuProt prot, out ulong mapped)
    {
        var toy = (ToyDomain)domain;
        Calls.Add($"map_pages(iova=0x{iova:x}, pgsize={Size(pgsize)}, count={pgcount})");
        mapped = 0;
        for (ulong i = 0; i < pgcount; i++)
        {
            if (toy.Pages.ContainsKey(iova + (i * pgsize)))
            {
                return ErrorDetail.Fail(Errno.EEXIST, $"iova 0x{iova + (i * pgsize):x} is already mapped");
            }

            toy.Pages[iova + (i * pgsize)] = (paddr + (i * pgsize), pgsize);
            mapped += pgsize;
        }

        return Errno.None;
    }

    public ulong UnmapPages(IDomain domain, ulong iova, ulong pgsize, ulong pgcount, ref IommuIotlbGather gather)
    {
        var toy = (ToyDomain)domain;
        ulong unmapped = 0;
        for (ulong i = 0; i < pgcount; i++)
        {
            if (!Lookup(toy, iova + unmapped, out ulong page, out _, out ulong size))
            {
                break;
            }

            toy.Pages.Remove(page);
            unmapped += size;
        }

        Calls.Add($"unmap_pages(iova=0x{iova:x}, pgsize={Size(pgsize)}, count={pgcount}) -> {Size(unmapped)}");
        return unmapped;
    }

    public ulong IovaToPhys(IDomain domain, ulong iova) =>
        Lookup((ToyDomain)domain, iova, out ulong page, out ulong pa, out _) ? pa + (iova - page) : 0;

    public Errno DeviceGroup(Device device, out IommuGroup? group) => core.PciDeviceGroup(device, out group);

    public Errno GetDevAttr(Device device, IommuDevAttr attr, out bool value)
    {
        value = attr switch
        {
            IommuDevAttr.AuxdCapability => device is PciDevice { HasPasidCapability: true, HasScalableIovDvsec: true },
            IommuDevAttr.AuxdEnabled => _auxEnabled.Contains(device),
            _ => false,
        };
        return Errno.None;
    }

    public Errno SetDevAttr(Device device, IommuDevAttr attr)
    {
        if (device is not PciDevice { HasPasidCapability: true, HasScalableIovDvsec: true })
        {
            return ErrorDetail.Fail(Errno.EINVAL, $"{device.Name} has no PASID capability or Scalable-IOV DVSEC");
        }

        if (attr == IommuDevAttr.AuxdEnable)
        {
            _auxEnabled.Add(device);
        }
        else
        {
            _auxEnabled.Remove(device);
        }

        return Errno.None;
    }

    public Errno AuxAttachDev(IDomain domain, Device device)
    {
        if (!_auxEnabled.Contains(device) || domain.Type != DomainType.Unmanaged)
        {
            return ErrorDetail.Fail(Errno.EPERM, $"aux mode is not enabled on {device.Name}");
        }

        var toy = (ToyDomain)domain;
        if (toy.Pasid == 0)
        {
            toy.Pasid = ++_lastPasid;
        }

        Calls.Add($"aux_attach_dev({device.Name}) pasid={toy.Pasid}");
        return Errno.None;
    }

    public void AuxDetachDev(IDomain domain, Device device) => Calls.Add($"aux_detach_dev({device.Name})");

    public int AuxGetPasid(IDomain domain, Device device) =>
        ((ToyDomain)domain).Pasid is uint p and > 0 ? (int)p : Errno.EINVAL.ToKernelReturn();

    public Errno DomainGetAttr(IDomain domain, DomainAttr attr, out ulong value)
    {
        value = ((ToyDomain)domain).Pasid;
        return attr == DomainAttr.AuxdId && value != 0 ? Errno.None : ErrorDetail.Fail(Errno.EINVAL, "no aux PASID yet");
    }

    private uint _lastPasid;

    private static bool Lookup(ToyDomain d, ulong iova, out ulong page, out ulong pa, out ulong size)
    {
        foreach (ulong s in new[] { Sizes.Page, 2 * Sizes.MiB, Sizes.GiB })
        {
            page = iova & ~(s - 1);
            if (d.Pages.TryGetValue(page, out var e) && e.Size == s)
            {
                (pa, size) = e;
                return true;
            }
        }

        page = pa = size = 0;
        return false;
    }

    private static string Size(ulong bytes) => bytes switch
    {
        >= 1UL << 30 when bytes % (1UL << 30) == 0 => $"{bytes >> 30}G",
        >= 1UL << 20 when bytes % (1UL << 20) == 0 => $"{bytes >> 20}M",
        _ => $"{bytes >> 10}K",
    };

    // probe_device: every device on the bus is behind this IOMMU; nothing to set up or release.
    public Errno AddDevice(Device device) => Errno.None;

    public void RemoveDevice(Device device)
    {
    }

    private sealed class ToyDomain : IommuDomain
    {
        public Dictionary<ulong, (ulong Pa, ulong Size)> Pages { get; } = [];

        public uint Pasid { get; set; }
    }
}
