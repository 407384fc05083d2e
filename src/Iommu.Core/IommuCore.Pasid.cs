using Iommu.Devices;
using Iommu.Domains;
using Iommu.Groups;
using Iommu.Internal;
using Iommu.Memory;

namespace Iommu;

// The 6.2 PASID attach API (iommu_attach_device_pasid and friends) and the ≈6.4 global PASID
// allocator. Not in the modelled 5.15: the auxiliary-domain API stays beside it, and both draw on
// one PASID namespace per platform (PasidIda).
public sealed partial class IommuCore
{
    /// <summary>The invalid PASID (<c>IOMMU_PASID_INVALID</c>, <c>(ioasid_t)-1</c>) that <see cref="AllocGlobalPasid"/> returns when it has none to give.</summary>
    [KernelSymbol("IOMMU_PASID_INVALID", Version = "6.4")]
    public const uint PasidInvalid = uint.MaxValue;

    /// <summary>The platform's PASID namespace: aux-domain PASIDs (5.15 ioasid) and global PASIDs (≈6.4 IDA) alike.</summary>
    internal PasidIda PasidIda { get; } = new();

    /// <summary>
    /// Attaches <paramref name="domain"/> to <paramref name="pasid"/> of every device in
    /// <paramref name="device"/>'s group (<c>iommu_attach_device_pasid</c>).
    /// </summary>
    /// <param name="domain">The domain.</param>
    /// <param name="device">A device of the group.</param>
    /// <param name="pasid">The PASID; the caller chooses it (normally from <see cref="AllocGlobalPasid"/>).</param>
    /// <returns>
    /// In the order 6.3 checks: -EOPNOTSUPP when the domain's driver has no <c>set_dev_pasid</c>
    /// (<see cref="IIommuPasidOps"/>); -ENODEV when the device has no group; -EBUSY when the group's
    /// slot for <paramref name="pasid"/> holds a domain (the same one included); otherwise the first
    /// error of the driver's <c>set_dev_pasid</c>, called for every group device in list order.
    /// </returns>
    /// <remarks>
    /// <para>Version: Linux 6.2 (6.3 read). On a driver failure <c>remove_dev_pasid</c> is called on
    /// <em>every</em> group device, those never set included, and the slot is erased, as 6.3 does;
    /// the group is then as before.</para>
    /// <para>PASID validation: like 6.2/6.3, the core checks neither <c>pasid == 0</c> nor the
    /// devices' PASID width (≈6.8 adds -EINVAL for both, and for a device without IOMMU). The driver
    /// refuses what its tables cannot hold: intel-iommu answers -EBUSY for PASID 0 (the RID2PASID
    /// entry is present), -ENODEV for a PASID beyond the device's PASID table (its
    /// <c>intel_pasid_get_entry</c> lookup) and -EOPNOTSUPP for a device without PASID support. So an
    /// out-of-range PASID fails cleanly and changes nothing.</para>
    /// <para>PASID space: the PASID is reserved in the platform's PASID namespace while attached, so
    /// neither <see cref="AllocGlobalPasid"/> nor an aux domain's PASID allocation hands it out. A
    /// PASID an aux domain already uses on a group device is refused by the driver with -EBUSY (its
    /// PASID entry is present).</para>
    /// <para>While the group's PASID array is not empty, attaching the group to another domain
    /// (<see cref="AttachGroup"/>, <see cref="AttachDevice"/> — the model's stand-in for 6.x's DMA
    /// ownership claim by VFIO) fails with -EBUSY. The RID (PASID 0) attachment is independent.</para>
    /// </remarks>
    /// <exception cref="ObjectDisposedException">The domain was freed (<see cref="DomainFree"/>).</exception>
    [KernelSymbol("iommu_attach_device_pasid", Version = "6.2")]
    public Errno AttachDevicePasid(IDomain domain, Device device, uint pasid)
    {
        using PhysicalMemory.AccessScope guard = Platform.Memory.EnterAccess();
        ArgumentNullException.ThrowIfNull(domain);
        ThrowIfFreed(domain);
        using DomainUse use = new(guard, domain);
        ArgumentNullException.ThrowIfNull(device);
        if (domain.Ops is not IIommuPasidOps ops)
        {
            return Fail(Errno.EOPNOTSUPP, $"the domain's IOMMU driver has no set_dev_pasid ({device.Name}, PASID {pasid})");
        }

        IommuGroup? group = device.IommuGroup;
        if (group is null)
        {
            return Fail(Errno.ENODEV, $"{device.Name} has no IOMMU group");
        }

        lock (group.Mutex)
        {
            if (group.PasidArray.ContainsKey(pasid))
            {
                return Fail(Errno.EBUSY, $"PASID {pasid} of {group} is already attached to a domain; detach it first");
            }

            group.PasidArray.Add(pasid, domain);
            Errno ret = SetGroupPasidLocked(ops, domain, group, pasid);
            if (ret != Errno.None)
            {
                using (ErrorDetail.PreserveWhileUnwinding())
                {
                    RemoveGroupPasidLocked(group, pasid);
                }

                group.PasidArray.Remove(pasid);
                return ret;
            }

            PasidIda.Reserve(pasid);
            return Errno.None;
        }
    }

    /// <summary>
    /// Detaches <paramref name="pasid"/> of every device in <paramref name="device"/>'s group
    /// (<c>iommu_detach_device_pasid</c>): <c>remove_dev_pasid</c> on each device, then the slot is
    /// erased. Cannot fail.
    /// </summary>
    /// <param name="domain">The domain the caller attached.</param>
    /// <param name="device">A device of the group.</param>
    /// <param name="pasid">The PASID.</param>
    /// <remarks>
    /// Version: Linux 6.2. As in 6.3 the devices' PASID is removed and the slot erased whatever it
    /// held; a slot that did not hold <paramref name="domain"/> (empty, or another domain) is the
    /// kernel's WARN, logged here as a warning. A device without a group is left alone with a warning
    /// (6.3 would dereference NULL).
    /// </remarks>
    [KernelSymbol("iommu_detach_device_pasid", Version = "6.2")]
    public void DetachDevicePasid(IDomain domain, Device device, uint pasid)
    {
        using PhysicalMemory.AccessScope guard = Platform.Memory.EnterAccess();
        ArgumentNullException.ThrowIfNull(domain);
        ArgumentNullException.ThrowIfNull(device);
        IommuGroup? group = device.IommuGroup;
        if (group is null)
        {
            Log.DetachPasidNoGroup(_log, device.Name, pasid);
            return;
        }

        lock (group.Mutex)
        {
            RemoveGroupPasidLocked(group, pasid);
            if (group.PasidArray.Remove(pasid, out IDomain? held))
            {
                PasidIda.Unreserve(pasid);
            }

            if (!ReferenceEquals(held, domain))
            {
                Log.DetachPasidMismatch(_log, device.Name, pasid, group.Id);
            }
        }
    }

    /// <summary>The domain attached to <paramref name="pasid"/> of <paramref name="device"/>'s group (<c>iommu_get_domain_for_dev_pasid</c>).</summary>
    /// <param name="device">The device.</param>
    /// <param name="pasid">The PASID.</param>
    /// <param name="type">
    /// A type filter: <see cref="DomainType.Blocked"/> (0, as in the kernel) accepts any domain; another
    /// value must equal the stored domain's type.
    /// </param>
    /// <param name="domain">The domain, or null (no group, empty slot, or a type mismatch).</param>
    /// <returns>0 (with <paramref name="domain"/> null when nothing is attached or the device has no
    /// group), or -EBUSY when a domain of another type holds the slot (the kernel's
    /// <c>ERR_PTR(-EBUSY)</c>).</returns>
    /// <remarks>Version: Linux 6.2. The kernel returns the domain, NULL or an error pointer; here the
    /// error is the return value and the domain an out parameter.</remarks>
    [KernelSymbol("iommu_get_domain_for_dev_pasid", Version = "6.2")]
    public Errno GetDomainForDevPasid(Device device, uint pasid, DomainType type, out IDomain? domain)
    {
        using PhysicalMemory.AccessScope guard = Platform.Memory.EnterAccess();
        ArgumentNullException.ThrowIfNull(device);
        domain = null;
        IommuGroup? group = device.IommuGroup;
        if (group is null)
        {
            return Errno.None;
        }

        lock (group.Mutex)
        {
            if (!group.PasidArray.TryGetValue(pasid, out IDomain? held))
            {
                return Errno.None;
            }

            if (type != DomainType.Blocked && held.Type != type)
            {
                return Fail(Errno.EBUSY, $"PASID {pasid} of {group} holds a {held.Type} domain, not {type}");
            }

            domain = held;
            return Errno.None;
        }
    }

    /// <summary>
    /// Allocates a PASID for <paramref name="device"/> from the platform-wide namespace
    /// (<c>iommu_alloc_global_pasid</c>): the lowest free number in [1, the device's <c>max_pasids</c>).
    /// </summary>
    /// <param name="device">The device that will use it.</param>
    /// <returns>The PASID, or <see cref="PasidInvalid"/> when the device has no PASIDs (not probed by an
    /// IOMMU driver, or no PASID capability) or none is free.</returns>
    /// <remarks>
    /// <para>Version: ≈6.4 (idxd uses it from ≈6.5 for its kernel PASID). <c>max_pasids</c> is the
    /// device's PASID capability size capped by its IOMMU's (<see cref="IIommuPasidOps.MaxPasids"/>, 6.2's
    /// <c>dev_iommu_get_max_pasids</c>): a device behind an IOMMU without PASID support gets none.</para>
    /// <para>The namespace is the one aux domains draw their PASID from (5.15's global ioasid set), so
    /// a global PASID never equals an aux domain's PASID; PASIDs attached with
    /// <see cref="AttachDevicePasid"/> are skipped as well.</para>
    /// </remarks>
    [KernelSymbol("iommu_alloc_global_pasid", Version = "6.4")]
    public uint AllocGlobalPasid(Device device)
    {
        using PhysicalMemory.AccessScope guard = Platform.Memory.EnterAccess();
        ArgumentNullException.ThrowIfNull(device);
        long max = device.HasIommu && device is PciDevice { HasPasidCapability: true } pci ? pci.MaxPasids : 0;
        if (max != 0 && device.IommuOps is IIommuPasidOps ops)
        {
            // dev_iommu_get_max_pasids (6.2): the device's width capped by its IOMMU's (0 without PASID support).
            max = Math.Min(max, ops.MaxPasids(device));
        }

        if (max == 0)
        {
            Fail(Errno.EOPNOTSUPP, $"{device.Name} has no PASIDs (max_pasids 0)");
            return PasidInvalid;
        }

        uint pasid = PasidIda.Allocate(1, (uint)max - 1);
        if (pasid == 0)
        {
            Fail(Errno.ENOSPC, $"no free PASID in [1, 0x{max - 1:x}] for {device.Name}");
            return PasidInvalid;
        }

        return pasid;
    }

    /// <summary>Returns a PASID from <see cref="AllocGlobalPasid"/> (<c>iommu_free_global_pasid</c>).</summary>
    /// <param name="pasid">The PASID; <see cref="PasidInvalid"/> is ignored (the kernel WARNs), as is a number never allocated.</param>
    /// <remarks>Version: ≈6.4. Freeing a PASID that is still attached does not detach it; it stays reserved until detached.
    /// The PASID of a process bound by SVA is ignored with a warning (model addition: not the caller's to free).</remarks>
    [KernelSymbol("iommu_free_global_pasid", Version = "6.4")]
    public void FreeGlobalPasid(uint pasid)
    {
        using PhysicalMemory.AccessScope guard = Platform.Memory.EnterAccess();
        if (pasid == PasidInvalid)
        {
            Log.FreeInvalidPasid(_log);
            return;
        }

        // Model addition: the PASID of an SVA process (iommu_sva_alloc_pasid, same namespace) is not a global PASID.
        // Freed here, it would be handed to another process while the first keeps it, and the driver's PASID → svm
        // lookup would make the second process's bind join the first one's svm (its notifier never registered).
        lock (_mmPasids)
        {
            foreach ((uint Pasid, int Refs) e in _mmPasids.Values)
            {
                if (e.Pasid == pasid)
                {
                    Log.FreeSvaPasid(_log, pasid);
                    return;
                }
            }

            PasidIda.Free(pasid);
        }
    }

    // __iommu_set_group_pasid (6.3): every device in list order, stopping at the first failure.
    private Errno SetGroupPasidLocked(IIommuPasidOps ops, IDomain domain, IommuGroup group, uint pasid)
    {
        foreach (Device d in group.DeviceList)
        {
            ErrorDetail.Clear();
            Errno ret = ops.SetDevPasid(domain, d, pasid);
            if (ret != Errno.None)
            {
                return KeepOrFail(ret, $"IOMMU driver refused PASID {pasid} of {d.Name}");
            }
        }

        return Errno.None;
    }

    // __iommu_remove_group_pasid (6.3): remove_dev_pasid of each device's own driver, on every device.
    private static void RemoveGroupPasidLocked(IommuGroup group, uint pasid)
    {
        foreach (Device d in group.DeviceList)
        {
            if (d.IommuOps is IIommuPasidOps ops)
            {
                ops.RemoveDevPasid(d, pasid);
            }
        }
    }
}
