using Iommu.Memory;
using Iommu.Devices;
using Iommu.Domains;
using Iommu.Groups;
using Iommu.Internal;

namespace Iommu;

public sealed partial class IommuCore
{
    /// <summary>
    /// Probes a device on a bus with IOMMU ops (<c>iommu_probe_device</c>, the hot-plug path): driver
    /// probe (<c>add_device</c>), group (<c>device_group</c> + <c>iommu_group_add_device</c>), default
    /// domain for a new group, and attach of the default domain.
    /// </summary>
    /// <param name="device">A device on a bus.</param>
    /// <returns>0; -ENODEV without IOMMU ops or when the driver does not handle the device; the driver's or attach error (the device is then released).</returns>
    /// <remarks>
    /// Follows the 5.8+ shape (the core calls <c>device_group</c> after the driver probe) with the
    /// seed's callback names. As in 5.15 the default domain is attached once more after the group
    /// add, so a device joining a group whose current domain is the default one sees two
    /// <c>attach_dev</c> calls. Where we differ from 5.15: a device joining a group whose current domain is
    /// another one (a VFIO or other unmanaged domain) stays in that domain, as later kernels keep it (6.0 skips the
    /// default domain for a claimed group, 6.6 attaches the group's domain); 5.15 moves it into the default
    /// domain, so it DMAs apart from its group, through the host's DMA mappings.
    /// </remarks>
    [KernelSymbol("iommu_probe_device")]
    public Errno ProbeDevice(Device device)
    {
        using PhysicalMemory.AccessScope guard = Platform.Memory.EnterAccess();
        ArgumentNullException.ThrowIfNull(device);
        Errno ret = ProbeDeviceCore(device, newGroups: null);
        if (ret != Errno.None)
        {
            return ret;
        }

        IommuGroup group = device.IommuGroup!;
        lock (group.Mutex)
        {
            if (group.DefaultDomain is null)
            {
                AllocDefaultDomain(device.Bus!, group);
            }

            // 5.15 attaches the default domain whatever the group's current domain is, so a device probed into a group
            // attached elsewhere (assigned to a VM through VFIO) lands in the host's DMA domain, apart from its group.
            // As the later fix (6.0 skips a claimed group; 6.6 attaches group->domain), it stays in the group's domain,
            // which iommu_group_add_device attached it to.
            if (group.DefaultDomain is IDomain def && (group.Domain is null || ReferenceEquals(group.Domain, def)))
            {
                ret = AttachDeviceInternal(def, device);
            }

            if (ret == Errno.None)
            {
                CreateDeviceDirectMappings(group, device);
            }
        }

        if (ret != Errno.None)
        {
            ReleaseDevice(device);
        }

        return ret;
    }

    /// <summary>
    /// Releases a probed device (<c>iommu_release_device</c>): driver release, then removal from the group.
    /// </summary>
    /// <param name="device">The device; a device never probed is ignored.</param>
    [KernelSymbol("iommu_release_device")]
    public void ReleaseDevice(Device device)
    {
        using PhysicalMemory.AccessScope guard = Platform.Memory.EnterAccess();
        ArgumentNullException.ThrowIfNull(device);
        if (!device.HasIommu)
        {
            return;
        }

        device.IommuOps?.RemoveDevice(device);

        GroupRemoveDevice(device);
        device.IommuOps = null;
        device.HasIommu = false;
        device.FaultParam = null;
    }

    /// <summary>
    /// The bus probe of <c>bus_set_iommu</c> (<c>iommu_bus_init</c> → <c>bus_iommu_probe</c>): every
    /// device into a group first, then per new group a default domain attached to all its devices.
    /// </summary>
    internal Errno BusInit(Bus bus, IReadOnlyList<Device> devices)
    {
        var newGroups = new List<IommuGroup>();
        Errno ret = Errno.None;
        foreach (Device d in devices)
        {
            if (d.IommuGroup is not null)
            {
                continue;
            }

            ret = ProbeDeviceCore(d, newGroups);
            if (ret == Errno.ENODEV)
            {
                ret = Errno.None;
            }

            if (ret != Errno.None)
            {
                break;
            }
        }

        if (ret == Errno.None)
        {
            foreach (IommuGroup group in newGroups)
            {
                lock (group.Mutex)
                {
                    AllocDefaultDomain(bus, group);
                    if (group.DefaultDomain is not IDomain def)
                    {
                        continue;
                    }

                    // iommu_group_create_direct_mappings: before the attach, so the device never runs
                    // in the new domain without its firmware-reserved (RMRR) ranges.
                    foreach (Device d in group.DeviceList)
                    {
                        CreateDeviceDirectMappings(group, d);
                    }

                    foreach (Device d in group.DeviceList)
                    {
                        ret = AttachDeviceInternal(def, d);
                        if (ret != Errno.None)
                        {
                            break;
                        }
                    }
                }

                if (ret != Errno.None)
                {
                    break;
                }
            }
        }

        if (ret != Errno.None)
        {
            // iommu_bus_init's error path: remove_iommu_group on every device of the bus.
            foreach (Device d in devices)
            {
                ReleaseDevice(d);
            }
        }

        return ret;
    }

    // __iommu_probe_device: driver probe, then group. newGroups collects groups still without a default domain.
    private Errno ProbeDeviceCore(Device device, List<IommuGroup>? newGroups)
    {
        IIommuOps? ops = device.Bus?.IommuOps;
        if (ops is null)
        {
            return Fail(Errno.ENODEV, $"{device.Name}: its bus has no IOMMU ops");
        }

        if (device.IommuGroup is not null)
        {
            return Errno.None;
        }

        device.HasIommu = true;
        Errno err = ops.AddDevice(device);
        if (err != Errno.None)
        {
            device.HasIommu = false;
            return err == Errno.ENODEV
                ? Fail(err, $"{device.Name} is not handled by the bus's IOMMU driver")
                : Fail(err, $"IOMMU driver probe of {device.Name} failed");
        }

        device.IommuOps = ops;
        Errno ret = ops.DeviceGroup(device, out IommuGroup? group);
        if (ret == Errno.None && group is null)
        {
            ret = Fail(Errno.EINVAL, $"IOMMU driver returned no group for {device.Name}");
        }

        if (ret == Errno.None)
        {
            ret = GroupAddDevice(group!, device);
            if (ret == Errno.None && newGroups is not null && group!.DefaultDomain is null && !newGroups.Contains(group))
            {
                newGroups.Add(group);
            }

            GroupPut(group);
        }

        if (ret != Errno.None)
        {
            ops.RemoveDevice(device);

            device.IommuOps = null;
            device.HasIommu = false;
        }

        return ret;
    }

    // iommu_create_device_direct_mappings: identity-maps the device's DIRECT and DIRECT_RELAXABLE reserved
    // regions into a DMA-API default domain (an identity domain maps everything already, an UNMANAGED one
    // is its user's business). Pages some other device of the group already had mapped are skipped, the
    // rest is mapped in runs. Errors are ignored by its callers, as in 5.15. The kernel flushes the IOTLB
    // even when nothing was mapped; here only after a map (a flush of a fresh domain changes nothing).
    private void CreateDeviceDirectMappings(IommuGroup group, Device device)
    {
        IDomain? domain = group.DefaultDomain;
        if (domain is null || (domain.Type & DomainType.Dma) != DomainType.Dma
            || device.IommuOps is not IIommuResvRegionsOps resvOps)
        {
            return;
        }

        ulong bitmap = domain.PgsizeBitmap;
        if (bitmap == 0)
        {
            return;
        }

        ulong pgSize = 1UL << System.Numerics.BitOperations.TrailingZeroCount(bitmap);
        var regions = new List<IommuResvRegion>();
        resvOps.GetResvRegions(device, regions);
        bool mapped = false;
        foreach (IommuResvRegion entry in regions)
        {
            if (entry.Type is not (IommuResvType.Direct or IommuResvType.DirectRelaxable) || entry.Length == 0)
            {
                continue;
            }

            // ALIGN() both ends up: a partial first page is left out, a partial last page is mapped whole.
            ulong start = AlignUp(entry.Start, pgSize);
            ulong end = AlignUp(entry.Start + entry.Length, pgSize);
            ulong mapSize = 0;
            for (ulong addr = start; addr <= end; addr += pgSize)
            {
                if (addr != end && IovaToPhys(domain, addr) == 0)
                {
                    mapSize += pgSize;
                    continue;
                }

                if (mapSize != 0)
                {
                    if (Map(domain, addr - mapSize, addr - mapSize, mapSize, entry.Prot) != Errno.None)
                    {
                        return; // 5.15 gives up without the flush
                    }

                    mapped = true;
                    mapSize = 0;
                }

                if (addr == end)
                {
                    break;
                }
            }
        }

        if (mapped)
        {
            FlushIotlbAll(domain);
        }

        static ulong AlignUp(ulong value, ulong align) => (value + align - 1) & ~(align - 1);
    }

    // iommu_group_alloc_default_domain: the configured type, falling back to DMA; failure leaves none.
    private void AllocDefaultDomain(Bus bus, IommuGroup group)
    {
        if (group.DefaultDomain is not null)
        {
            return;
        }

        DomainType type = DefaultDomainType;
        IDomain? dom = DomainAllocType(bus, type);
        if (dom is null && type != DomainType.Dma)
        {
            dom = DomainAllocType(bus, DomainType.Dma);
            if (dom is not null)
            {
                Log.DefaultDomainFallback(_log, type, group.Id);
            }
        }

        if (dom is null)
        {
            Log.NoDefaultDomain(_log, group.Id);
            return;
        }

        group.DefaultDomain = dom;
        group.Domain ??= dom;
    }
}
