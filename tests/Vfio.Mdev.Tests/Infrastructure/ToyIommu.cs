using Iommu;
using Iommu.Devices;
using Iommu.Domains;
using Iommu.Groups;

namespace Vfio.Mdev.Tests.Infrastructure;

/// <summary>
/// Stand-in IOMMU until the VT-d driver lands (copied from samples/CoreTour/ToyIommu.cs): page tables
/// are dictionaries, aux domains get one PASID per domain, and — added here — it is also the DMA
/// remapping hardware, translating (requester, PASID, IOVA) through the domain attached for them.
/// </summary>
public sealed class ToyIommu(IommuCore core) : IIommuOps, IIommuAttachOps, IIommuMapPagesOps, IIommuDomainAttrOps, IIommuAuxOps, IIommuDevFeatureOps, IDmaRemapper
{
    private readonly Lock _lock = new();
    private readonly HashSet<Device> _auxEnabled = [];
    private readonly Dictionary<(Device, uint), ToyDomain> _aux = [];
    private uint _lastPasid;

    public ulong PgsizeBitmap => Sizes.Page;

    public IDomain? DomainAlloc(DomainType type) =>
        type is DomainType.Unmanaged or DomainType.Dma or DomainType.Identity
            ? new ToyDomain { Geometry = new IommuDomainGeometry(0, (1UL << 48) - 1, true) }
            : null;

    public void DomainFree(IDomain domain)
    {
    }

    public Errno AttachDev(IDomain domain, Device device) => Errno.None;

    public void DetachDev(IDomain domain, Device device)
    {
    }

    public Errno MapPages(IDomain domain, ulong iova, ulong paddr, ulong pgsize, ulong pgcount, IommuProt prot, out ulong mapped)
    {
        var toy = (ToyDomain)domain;
        mapped = 0;
        lock (toy.Pages)
        {
            for (ulong i = 0; i < pgcount; i++)
            {
                if (!toy.Pages.TryAdd(iova + (i * pgsize), (paddr + (i * pgsize), prot)))
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
            for (ulong i = 0; i < pgcount && toy.Pages.Remove(iova + (i * pgsize)); i++)
            {
                unmapped += pgsize;
            }
        }

        return unmapped;
    }

    public ulong IovaToPhys(IDomain domain, ulong iova)
    {
        var toy = (ToyDomain)domain;
        lock (toy.Pages)
        {
            return toy.Pages.TryGetValue(iova & ~(Sizes.Page - 1), out var e) ? e.Pa + (iova & (Sizes.Page - 1)) : 0;
        }
    }

    public Errno DeviceGroup(Device device, out IommuGroup? group) => core.GenericDeviceGroup(device, out group);

    public Errno GetDevAttr(Device device, IommuDevAttr attr, out bool value)
    {
        lock (_lock)
        {
            value = attr switch
            {
                IommuDevAttr.AuxdCapability => device is PciDevice { HasPasidCapability: true, HasScalableIovDvsec: true },
                IommuDevAttr.AuxdEnabled => _auxEnabled.Contains(device),
                _ => false,
            };
        }

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
        lock (_lock)
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

            _aux[(device, toy.Pasid)] = toy;
            return Errno.None;
        }
    }

    public void AuxDetachDev(IDomain domain, Device device)
    {
        lock (_lock)
        {
            _aux.Remove((device, ((ToyDomain)domain).Pasid));
        }
    }

    public int AuxGetPasid(IDomain domain, Device device) =>
        ((ToyDomain)domain).Pasid is uint p and > 0 ? (int)p : Errno.EINVAL.ToKernelReturn();

    public Errno DomainGetAttr(IDomain domain, DomainAttr attr, out ulong value)
    {
        value = ((ToyDomain)domain).Pasid;
        return attr == DomainAttr.AuxdId && value != 0 ? Errno.None : ErrorDetail.Fail(Errno.EINVAL, "no aux PASID yet");
    }

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
            (ulong Pa, IommuProt Prot) e = default;
            bool ok = false;
            if (domain is not null)
            {
                lock (domain.Pages)
                {
                    ok = domain.Pages.TryGetValue(a & ~(Sizes.Page - 1), out e) && e.Prot.HasFlag(need);
                }
            }

            if (!ok)
            {
                return new DmaResult(DmaStatus.Fault, (ulong)done, a & ~(Sizes.Page - 1), new DmaFaultReason(1, "ToyNotMapped"));
            }

            int n = (int)Math.Min((ulong)(length - done), Sizes.Page - (a & (Sizes.Page - 1)));
            move(e.Pa + (a & (Sizes.Page - 1)), done, n);
            done += n;
        }

        return new DmaResult(DmaStatus.Ok, (ulong)length, iova, DmaFaultReason.None);
    }

    // probe_device: every device on the bus is behind this IOMMU; nothing to set up or release.
    public Errno AddDevice(Device device) => Errno.None;

    public void RemoveDevice(Device device)
    {
    }

    private sealed class ToyDomain : IommuDomain
    {
        public Dictionary<ulong, (ulong Pa, IommuProt Prot)> Pages { get; } = [];

        public uint Pasid { get; set; }
    }
}
