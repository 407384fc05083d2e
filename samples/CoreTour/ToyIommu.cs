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
/// <remarks>
/// It is also its own DMA-remapping hardware (<see cref="IDmaRemapper"/>), translating (requester,
/// PASID, IOVA) through the domain attached for them, so that device samples can run on it (the mdev
/// tests use it for SiovAccel). Safe for concurrent DMA; the tour does not DMA.
/// </remarks>
internal sealed class ToyIommu(IommuCore core)
    : IIommuOps, IIommuAttachOps, IIommuMapPagesOps, IIommuDomainAttrOps, IIommuAuxOps, IIommuDevFeatureOps, IDmaRemapper
{
    private readonly Lock _lock = new();
    private readonly HashSet<Device> _auxEnabled = [];
    private readonly Dictionary<(Device Device, uint Pasid), ToyDomain> _aux = [];

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
        if (AuxEnabled(device) && domain.Type == DomainType.Unmanaged)
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
        lock (toy.Pages)
        {
            for (ulong i = 0; i < pgcount; i++)
            {
                if (!toy.Pages.TryAdd(iova + (i * pgsize), (paddr + (i * pgsize), pgsize, prot)))
                {
                    return ErrorDetail.Fail(Errno.EEXIST, $"iova 0x{iova + (i * pgsize):x} is already mapped");
                }

                mapped += pgsize;
            }
        }

        return Errno.None;
    }

    public ulong UnmapPages(IDomain domain, ulong iova, ulong pgsize, ulong pgcount, ref IommuIotlbGather gather)
    {
        var toy = (ToyDomain)domain;
        ulong unmapped = 0;
        lock (toy.Pages)
        {
            for (ulong i = 0; i < pgcount; i++)
            {
                if (!Lookup(toy, iova + unmapped, out ulong page, out _, out ulong size, out _))
                {
                    break;
                }

                toy.Pages.Remove(page);
                unmapped += size;
            }
        }

        Calls.Add($"unmap_pages(iova=0x{iova:x}, pgsize={Size(pgsize)}, count={pgcount}) -> {Size(unmapped)}");
        return unmapped;
    }

    public ulong IovaToPhys(IDomain domain, ulong iova)
    {
        var toy = (ToyDomain)domain;
        lock (toy.Pages)
        {
            return Lookup(toy, iova, out ulong page, out ulong pa, out _, out _) ? pa + (iova - page) : 0;
        }
    }

    public Errno DeviceGroup(Device device, out IommuGroup? group) => core.PciDeviceGroup(device, out group);

    public Errno GetDevAttr(Device device, IommuDevAttr attr, out bool value)
    {
        value = attr switch
        {
            IommuDevAttr.AuxdCapability => device is PciDevice { HasPasidCapability: true, HasScalableIovDvsec: true },
            IommuDevAttr.AuxdEnabled => AuxEnabled(device),
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

        lock (_lock)
        {
            if (attr == IommuDevAttr.AuxdEnable)
            {
                _auxEnabled.Add(device);
            }
            else
            {
                _auxEnabled.Remove(device);
            }
        }

        return Errno.None;
    }

    public Errno AuxAttachDev(IDomain domain, Device device)
    {
        var toy = (ToyDomain)domain;
        lock (_lock)
        {
            if (!_auxEnabled.Contains(device) || domain.Type != DomainType.Unmanaged)
            {
                return ErrorDetail.Fail(Errno.EPERM, $"aux mode is not enabled on {device.Name}");
            }

            if (toy.Pasid == 0)
            {
                toy.Pasid = ++_lastPasid;
            }

            _aux[(device, toy.Pasid)] = toy;
        }

        Calls.Add($"aux_attach_dev({device.Name}) pasid={toy.Pasid}");
        return Errno.None;
    }

    public void AuxDetachDev(IDomain domain, Device device)
    {
        lock (_lock)
        {
            _aux.Remove((device, ((ToyDomain)domain).Pasid));
        }

        Calls.Add($"aux_detach_dev({device.Name})");
    }

    public int AuxGetPasid(IDomain domain, Device device) =>
        ((ToyDomain)domain).Pasid is uint p and > 0 ? (int)p : Errno.EINVAL.ToKernelReturn();

    public Errno DomainGetAttr(IDomain domain, DomainAttr attr, out ulong value)
    {
        value = ((ToyDomain)domain).Pasid;
        return attr == DomainAttr.AuxdId && value != 0 ? Errno.None : ErrorDetail.Fail(Errno.EINVAL, "no aux PASID yet");
    }

    // The device's DMA: through the aux domain of its PASID, or the domain its group is attached to.
    public DmaResult DmaRead(PciDevice device, uint? pasid, ulong iova, Span<byte> destination)
    {
        byte[] buffer = new byte[destination.Length];
        DmaResult r = Dma(device, pasid, iova, buffer.Length, IommuProt.Read, (pa, off, n) => core.Platform.Memory.Read(pa, buffer.AsSpan(off, n)));
        buffer.AsSpan(0, (int)r.Transferred).CopyTo(destination);
        return r;
    }

    public DmaResult DmaWrite(PciDevice device, uint? pasid, ulong iova, ReadOnlySpan<byte> source)
    {
        byte[] copy = source.ToArray();
        return Dma(device, pasid, iova, copy.Length, IommuProt.Write, (pa, off, n) => core.Platform.Memory.Write(pa, copy.AsSpan(off, n)));
    }

    private uint _lastPasid;

    private bool AuxEnabled(Device device)
    {
        lock (_lock)
        {
            return _auxEnabled.Contains(device);
        }
    }

    private DmaResult Dma(PciDevice device, uint? pasid, ulong iova, int length, IommuProt need, Action<ulong, int, int> move)
    {
        ToyDomain? domain;
        lock (_lock)
        {
            domain = pasid is uint p ? _aux.GetValueOrDefault((device, p)) : device.IommuGroup?.Domain as ToyDomain;
        }

        int done = 0;
        while (done < length)
        {
            ulong a = iova + (ulong)done;
            ulong page = 0, pa = 0, size = 0;
            bool ok = false;
            if (domain is not null)
            {
                lock (domain.Pages)
                {
                    ok = Lookup(domain, a, out page, out pa, out size, out IommuProt prot) && prot.HasFlag(need);
                }
            }

            if (!ok)
            {
                return new DmaResult(DmaStatus.Fault, (ulong)done, a & ~(Sizes.Page - 1), new DmaFaultReason(1, "ToyNotMapped"));
            }

            int n = (int)Math.Min((ulong)(length - done), size - (a - page));
            move(pa + (a - page), done, n);
            done += n;
        }

        return new DmaResult(DmaStatus.Ok, (ulong)length, iova, DmaFaultReason.None);
    }

    private static bool Lookup(ToyDomain d, ulong iova, out ulong page, out ulong pa, out ulong size, out IommuProt prot)
    {
        foreach (ulong s in new[] { Sizes.Page, 2 * Sizes.MiB, Sizes.GiB })
        {
            page = iova & ~(s - 1);
            if (d.Pages.TryGetValue(page, out var e) && e.Size == s)
            {
                (pa, size, prot) = e;
                return true;
            }
        }

        page = pa = size = 0;
        prot = IommuProt.None;
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
        public Dictionary<ulong, (ulong Pa, ulong Size, IommuProt Prot)> Pages { get; } = [];

        public uint Pasid { get; set; }
    }
}
