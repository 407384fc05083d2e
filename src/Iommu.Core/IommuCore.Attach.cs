using Iommu.Memory;
using Iommu.Devices;
using Iommu.Domains;
using Iommu.Groups;
using Iommu.Internal;

namespace Iommu;

public sealed partial class IommuCore
{
    /// <summary>
    /// Allocates an UNMANAGED domain from the bus's IOMMU driver (<c>iommu_domain_alloc</c>).
    /// </summary>
    /// <param name="bus">The bus whose driver allocates.</param>
    /// <returns>The domain, or null when the bus has no IOMMU ops or the driver refuses (no errno, as in the kernel; VFIO turns it into -EIO).</returns>
    [KernelSymbol("iommu_domain_alloc")]
    public IDomain? DomainAlloc(Bus bus)
    {
        using PhysicalMemory.AccessScope guard = Platform.Memory.EnterAccess();
        ArgumentNullException.ThrowIfNull(bus);
        return DomainAllocType(bus, DomainType.Unmanaged);
    }

    /// <summary>
    /// Allocates a domain of any type (<c>__iommu_domain_alloc</c>): the driver allocates, then the
    /// core sets <see cref="IDomain.Ops"/>, <see cref="IDomain.Type"/> and the default page sizes.
    /// </summary>
    /// <param name="bus">The bus whose driver allocates.</param>
    /// <param name="type">Domain type.</param>
    /// <returns>The domain or null.</returns>
    [KernelSymbol("__iommu_domain_alloc")]
    public IDomain? DomainAllocType(Bus bus, DomainType type)
    {
        using PhysicalMemory.AccessScope guard = Platform.Memory.EnterAccess();
        ArgumentNullException.ThrowIfNull(bus);
        IIommuOps? ops = bus.IommuOps;
        if (ops is null)
        {
            return null;
        }

        IDomain? domain = ops.DomainAlloc(type);
        if (domain is null)
        {
            return null;
        }

        if (domain is IommuDomain owned)
        {
            owned.Ops = ops;
            owned.Type = type;
            owned.Freed = false; // a driver may hand a freed static domain out again (identity)
            Volatile.Write(ref owned.Dying, 0);
        }
        else if (domain.Ops != ops || domain.Type != type)
        {
            // The core cannot set them on a foreign IDomain: one reporting other values is a driver bug.
            ops.DomainFree(domain);
            ThrowHelper.ForeignDomainMismatch(ops, type, domain);
        }

        domain.PgsizeBitmap = ops.PgsizeBitmap;
        TrackDomain(domain);
        return domain;
    }

    /// <summary>Frees a domain through its driver (<c>iommu_domain_free</c>).</summary>
    /// <param name="domain">A domain no group uses.</param>
    /// <remarks>
    /// <para>5.15 drops the DMA-API cookie first (<c>iommu_put_dma_cookie</c>): a flush queue's timer is
    /// disarmed and the page-table pages its entries held are freed without a flush, as
    /// <c>fq_destroy_all_entries</c> does (no device uses the domain any more).</para>
    /// <para>A freed domain is dead, as after <c>kfree</c>: freeing it again, attaching it, mapping
    /// into it or unmapping from it throws <see cref="ObjectDisposedException"/> (a use after free in
    /// the kernel). Calls on other threads that were already using the domain when the free began
    /// (map, unmap, the IOTLB syncs, the DMA API, attach) finish first: the free
    /// waits for them before the driver gives the tables back, so a late map never writes into a frame
    /// another domain has been given. Calls that start once the free has begun throw.
    /// <c>iova_to_phys</c>, which only reads, is not waited for on memory the library owns: it checks
    /// after its walk whether the free began, and then throws as a later call does, so it answers what
    /// the domain mapped before the free or throws, never what a reused frame holds.</para>
    /// </remarks>
    /// <exception cref="InvalidOperationException">A group still uses the domain, as its current or its default domain (a caller bug in the kernel; a group's default domain is freed only by the group's release).</exception>
    /// <exception cref="ObjectDisposedException">The domain was already freed.</exception>
    [KernelSymbol("iommu_domain_free")]
    public void DomainFree(IDomain domain)
    {
        using PhysicalMemory.AccessScope guard = Platform.Memory.EnterAccess();
        ArgumentNullException.ThrowIfNull(domain);
        ThrowIfFreed(domain);
        ThrowIfStillAttached(domain);
        if (domain is IommuDomain dying)
        {
            // From here on no call enters the domain; wait for those that entered before (a map still
            // walking the tables would write into frames the driver is about to free and another domain
            // may get), then check the attachments again (an attach that was in flight has landed).
            if (Interlocked.CompareExchange(ref dying.Dying, 1, 0) != 0)
            {
                ThrowHelper.DomainFreed(dying.Type);
            }

            Platform.Memory.WaitForDomainUsers(Platform.Memory.SerialOf(dying), guard.Slot);
            var spin = default(SpinWait);
            while (Volatile.Read(ref dying.InFlight) != 0)
            {
                spin.SpinOnce();
            }

            try
            {
                ThrowIfStillAttached(domain);
            }
            catch
            {
                Volatile.Write(ref dying.Dying, 0);
                throw;
            }
        }

        UntrackDomain(domain);
        PutDmaCookie(domain);
        domain.Ops?.DomainFree(domain);
        if (domain is IommuDomain owned)
        {
            owned.Freed = true;
            owned.PgsizeBitmap = 0;
        }
    }

    // Enters a call that uses the domain's tables (see IommuDomain.Serial): throws when the domain is being freed or
    // was freed. Dispose leaves. The common case costs two plain stores and a volatile read, on the calling thread's
    // own slot: concurrent users of one domain share no cache line.
    internal readonly ref struct DomainUse
    {
        private readonly PhysicalMemory.Slot? _slot;
        private readonly long _previous;
        private readonly IommuDomain? _counted;

        [System.Runtime.CompilerServices.MethodImpl(System.Runtime.CompilerServices.MethodImplOptions.AggressiveInlining)]
        public DomainUse(in PhysicalMemory.AccessScope scope, IDomain domain)
        {
            if (domain is not IommuDomain d)
            {
                return;
            }

            PhysicalMemory.Slot slot = scope.Slot!;
            long current = slot.DomainInUse, serial = d.Serial;
            if (serial == 0)
            {
                serial = scope.Memory!.SerialOf(d);
            }

            if (current == 0 || current == serial)
            {
                // Store, then load: the freer's process-wide barrier orders them against its own store of Dying and
                // read of the slots, so either this read sees Dying or the freer sees this slot.
                Volatile.Write(ref slot.DomainInUse, serial);
                (_slot, _previous) = (slot, current);
            }
            else
            {
                Interlocked.Increment(ref d.InFlight); // nested in a call on another domain; a full fence
                _counted = d;
            }

            if (Volatile.Read(ref d.Dying) != 0)
            {
                Dispose();
                ThrowHelper.DomainFreed(d.Type);
            }
        }

        [System.Runtime.CompilerServices.MethodImpl(System.Runtime.CompilerServices.MethodImplOptions.AggressiveInlining)]
        public void Dispose()
        {
            if (_slot is not null)
            {
                Volatile.Write(ref _slot.DomainInUse, _previous);
            }
            else if (_counted is not null)
            {
                Interlocked.Decrement(ref _counted.InFlight);
            }
        }
    }

    private void ThrowIfStillAttached(IDomain domain)
    {
        foreach (IommuGroup g in Groups)
        {
            // A group's default domain is in use as long as the group holds it (its devices translate
            // through it, or go back to it on detach, and the DMA API maps into it): only the group's
            // release frees it, after dropping it.
            if (ReferenceEquals(g.Domain, domain) || ReferenceEquals(g.DefaultDomain, domain))
            {
                ThrowHelper.DomainStillAttached(g);
            }

            lock (g.Mutex)
            {
                foreach (IDomain held in g.PasidArray.Values)
                {
                    if (ReferenceEquals(held, domain))
                    {
                        ThrowHelper.DomainStillAttached(g);
                    }
                }
            }
        }
    }

    // A freed domain passed back in: the kernel's use after free, a caller bug (cold: attach, free,
    // and the map/unmap paths a freed domain's zero page sizes already send to their slow branch).
    private static void ThrowIfFreed(IDomain domain)
    {
        if (domain is IommuDomain { Freed: true })
        {
            ThrowHelper.DomainFreed(domain.Type);
        }
    }

    /// <summary>
    /// Attaches <paramref name="domain"/> to the single-device group of <paramref name="device"/>
    /// (<c>iommu_attach_device</c>).
    /// </summary>
    /// <param name="domain">The domain.</param>
    /// <param name="device">The device.</param>
    /// <returns>
    /// -ENODEV (no group, or the driver has no <c>attach_dev</c>), -EINVAL (the group has more than
    /// one device), -EBUSY (the group uses a non-default domain already, the same one included, or has
    /// PASIDs attached with <see cref="AttachDevicePasid"/>), or the driver's error.
    /// </returns>
    /// <exception cref="ObjectDisposedException">The domain was freed (<see cref="DomainFree"/>).</exception>
    [KernelSymbol("iommu_attach_device")]
    public Errno AttachDevice(IDomain domain, Device device)
    {
        using PhysicalMemory.AccessScope guard = Platform.Memory.EnterAccess();
        ArgumentNullException.ThrowIfNull(domain);
        ThrowIfFreed(domain);
        using DomainUse use = new(guard, domain);
        ArgumentNullException.ThrowIfNull(device);
        IommuGroup? group = device.IommuGroup;
        if (group is null)
        {
            return Fail(Errno.ENODEV, $"{device.Name} has no IOMMU group");
        }

        lock (group.Mutex)
        {
            if (group.DeviceList.Count != 1)
            {
                return Fail(Errno.EINVAL, $"{group} of {device.Name} has {group.DeviceList.Count} devices; use iommu_attach_group");
            }

            return AttachGroupLocked(domain, group);
        }
    }

    /// <summary>Detaches <paramref name="device"/>'s single-device group from <paramref name="domain"/> (<c>iommu_detach_device</c>).</summary>
    /// <param name="domain">The domain.</param>
    /// <param name="device">The device; a device without a group, or in a group of several, is left alone (the kernel WARNs).</param>
    [KernelSymbol("iommu_detach_device")]
    public void DetachDevice(IDomain domain, Device device)
    {
        using PhysicalMemory.AccessScope guard = Platform.Memory.EnterAccess();
        ArgumentNullException.ThrowIfNull(domain);
        ArgumentNullException.ThrowIfNull(device);
        IommuGroup? group = device.IommuGroup;
        if (group is null)
        {
            return;
        }

        lock (group.Mutex)
        {
            if (group.DeviceList.Count != 1)
            {
                Log.DetachMultiDeviceGroup(_log, device.Name, group.Id, group.DeviceList.Count);
                return;
            }

            DetachGroupLocked(domain, group);
        }
    }

    /// <summary>Attaches <paramref name="domain"/> to every device of <paramref name="group"/> (<c>iommu_attach_group</c>).</summary>
    /// <param name="domain">The domain.</param>
    /// <param name="group">The group.</param>
    /// <returns>-EBUSY (a non-default domain in use, or PASIDs attached with <see cref="AttachDevicePasid"/>), -ENODEV or the first driver error (devices attached before it are not rolled back, as in the kernel).</returns>
    /// <exception cref="ObjectDisposedException">The domain was freed (<see cref="DomainFree"/>).</exception>
    [KernelSymbol("iommu_attach_group")]
    public Errno AttachGroup(IDomain domain, IommuGroup group)
    {
        using PhysicalMemory.AccessScope guard = Platform.Memory.EnterAccess();
        ArgumentNullException.ThrowIfNull(domain);
        ThrowIfFreed(domain);
        using DomainUse use = new(guard, domain);
        ArgumentNullException.ThrowIfNull(group);
        lock (group.Mutex)
        {
            return AttachGroupLocked(domain, group);
        }
    }

    /// <summary>
    /// Detaches <paramref name="group"/> (<c>iommu_detach_group</c>): a group with a default domain
    /// goes back to it; a group without one is detached from <paramref name="domain"/> and left
    /// with no domain. The kernel does not check that <paramref name="domain"/> is the group's domain.
    /// </summary>
    /// <param name="domain">The domain.</param>
    /// <param name="group">The group.</param>
    [KernelSymbol("iommu_detach_group")]
    public void DetachGroup(IDomain domain, IommuGroup group)
    {
        using PhysicalMemory.AccessScope guard = Platform.Memory.EnterAccess();
        ArgumentNullException.ThrowIfNull(domain);
        ArgumentNullException.ThrowIfNull(group);
        lock (group.Mutex)
        {
            DetachGroupLocked(domain, group);
        }
    }

    /// <summary>The domain <paramref name="device"/>'s group currently uses (<c>iommu_get_domain_for_dev</c>), or null.</summary>
    /// <param name="device">The device.</param>
    /// <returns>The domain or null.</returns>
    [KernelSymbol("iommu_get_domain_for_dev")]
    public IDomain? GetDomainForDev(Device device)
    {
        using PhysicalMemory.AccessScope guard = Platform.Memory.EnterAccess();
        ArgumentNullException.ThrowIfNull(device);
        return device.IommuGroup?.Domain;
    }

    /// <summary>The default (DMA-API) domain of <paramref name="device"/>'s group (<c>iommu_get_dma_domain</c>), or null.</summary>
    /// <param name="device">The device.</param>
    /// <returns>The domain or null.</returns>
    [KernelSymbol("iommu_get_dma_domain")]
    public IDomain? GetDmaDomain(Device device)
    {
        using PhysicalMemory.AccessScope guard = Platform.Memory.EnterAccess();
        ArgumentNullException.ThrowIfNull(device);
        return device.IommuGroup?.DefaultDomain;
    }

    // __iommu_attach_group
    private Errno AttachGroupLocked(IDomain domain, IommuGroup group)
    {
        if (group.DefaultDomain is not null && !ReferenceEquals(group.Domain, group.DefaultDomain))
        {
            return Fail(Errno.EBUSY, $"{group} is already attached to a non-default domain; detach it first");
        }

        // 6.x refuses a DMA-ownership claim (VFIO's, before it attaches its domain) while PASIDs are
        // attached (__iommu_take_dma_ownership); the model has no claim, so the attach itself refuses.
        if (group.PasidArray.Count != 0)
        {
            return Fail(Errno.EBUSY, $"{group} has {group.PasidArray.Count} PASID(s) attached with iommu_attach_device_pasid; detach them first");
        }

        foreach (Device d in group.DeviceList)
        {
            Errno ret = AttachDeviceInternal(domain, d);
            if (ret != Errno.None)
            {
                return ret;
            }
        }

        group.Domain = domain;
        return Errno.None;
    }

    // __iommu_detach_group
    private void DetachGroupLocked(IDomain domain, IommuGroup group)
    {
        if (group.DefaultDomain is null)
        {
            foreach (Device d in group.DeviceList)
            {
                DetachDeviceInternal(domain, d);
            }

            group.Domain = null;
            return;
        }

        if (ReferenceEquals(group.Domain, group.DefaultDomain))
        {
            return;
        }

        foreach (Device d in group.DeviceList)
        {
            if (AttachDeviceInternal(group.DefaultDomain, d) != Errno.None)
            {
                // The kernel WARNs and leaves group->domain unchanged.
                Log.ReattachDefaultFailed(_log, d.Name, group.Id);
                return;
            }
        }

        group.Domain = group.DefaultDomain;
    }

    // __iommu_attach_device
    private Errno AttachDeviceInternal(IDomain domain, Device device)
    {
        if (domain.Ops is not IIommuAttachOps ops)
        {
            return Fail(Errno.ENODEV, $"the domain's IOMMU driver cannot attach devices ({device.Name})");
        }

        ErrorDetail.Clear();
        Errno ret = ops.AttachDev(domain, device);
        if (ret != Errno.None)
        {
            Log.AttachFailed(_log, device.Name, ret);
            KeepOrFail(ret, $"IOMMU driver refused to attach {device.Name}");
        }

        return ret;
    }

    // __iommu_detach_device
    private static void DetachDeviceInternal(IDomain domain, Device device)
    {
        if (domain.Ops is IIommuAttachOps ops)
        {
            ops.DetachDev(domain, device);
        }
    }
}
