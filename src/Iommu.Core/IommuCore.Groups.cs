using Iommu.Memory;
using Iommu.Devices;
using Iommu.Domains;
using Iommu.Groups;
using Iommu.Internal;

namespace Iommu;

public sealed partial class IommuCore
{
    /// <summary>Allocates a new empty group with the lowest free id, holding one reference for the caller (<c>iommu_group_alloc</c>).</summary>
    /// <returns>The group.</returns>
    [KernelSymbol("iommu_group_alloc")]
    public IommuGroup GroupAlloc()
    {
        using PhysicalMemory.AccessScope guard = Platform.Memory.EnterAccess();
        lock (_idLock)
        {
            int id = _groupsById.IndexOf(null);
            if (id < 0)
            {
                id = _groupsById.Count;
                _groupsById.Add(null);
            }

            var group = new IommuGroup(this, id);
            _groupsById[id] = group;
            return group;
        }
    }

    /// <summary>The group of <paramref name="device"/> with an extra reference, or null (<c>iommu_group_get</c>).</summary>
    /// <param name="device">The device.</param>
    /// <returns>The group or null.</returns>
    [KernelSymbol("iommu_group_get")]
    public IommuGroup? GroupGet(Device device)
    {
        using PhysicalMemory.AccessScope guard = Platform.Memory.EnterAccess();
        ArgumentNullException.ThrowIfNull(device);
        IommuGroup? group = device.IommuGroup;
        if (group is null)
        {
            return null;
        }

        lock (_idLock)
        {
            // The device left the group meanwhile and its last reference is gone: the group is being released, and a
            // reference taken now would hand it out and run its release a second time. (5.15 takes the reference
            // unconditionally; there the device core keeps a removal from racing the device's own lookups.)
            if (group.RefCount == 0)
            {
                return null;
            }

            group.RefCount++;
        }

        return group;
    }

    /// <summary>Takes an extra reference on <paramref name="group"/> (<c>iommu_group_ref_get</c>).</summary>
    /// <param name="group">The group.</param>
    /// <returns>The same group.</returns>
    [KernelSymbol("iommu_group_ref_get")]
    public IommuGroup GroupRefGet(IommuGroup group)
    {
        using PhysicalMemory.AccessScope guard = Platform.Memory.EnterAccess();
        ArgumentNullException.ThrowIfNull(group);
        lock (_idLock)
        {
            if (group.IsReleased)
            {
                ThrowHelper.GroupReleased(group);
            }

            group.RefCount++;
        }

        return group;
    }

    /// <summary>Drops a reference; the last one releases the group (<c>iommu_group_put</c>).</summary>
    /// <param name="group">The group, or null (no-op).</param>
    [KernelSymbol("iommu_group_put")]
    public void GroupPut(IommuGroup? group)
    {
        using PhysicalMemory.AccessScope guard = Platform.Memory.EnterAccess();
        if (group is null)
        {
            return;
        }

        lock (_idLock)
        {
            if (group.RefCount <= 0)
            {
                ThrowHelper.GroupRefUnderflow(group);
            }

            if (--group.RefCount != 0)
            {
                return;
            }

            _groupsById[group.Id] = null;
        }

        // iommu_group_release: owner data, then the default domain.
        group.Release();
        IDomain? def = group.DefaultDomain;
        group.DefaultDomain = null;
        group.Domain = null;
        if (def is not null)
        {
            if (IsAGroupsDefaultDomain(def))
            {
                // A driver's static domain handed out to several groups (VT-d's si_domain) that another group still
                // uses as its default domain: the driver keeps it (intel_iommu_domain_free ignores si_domain), so the
                // core must not mark it dying or freed either, or that group's calls on it would throw.
                def.Ops?.DomainFree(def);
            }
            else
            {
                DomainFree(def);
            }
        }
    }

    private bool IsAGroupsDefaultDomain(IDomain domain)
    {
        foreach (IommuGroup g in Groups)
        {
            if (ReferenceEquals(g.DefaultDomain, domain))
            {
                return true;
            }
        }

        return false;
    }

    /// <summary>The live group with <paramref name="id"/> with an extra reference, or null (<c>iommu_group_get_by_id</c>).</summary>
    /// <param name="id">Group id.</param>
    /// <returns>The group or null.</returns>
    [KernelSymbol("iommu_group_get_by_id")]
    public IommuGroup? GroupGetById(int id)
    {
        using PhysicalMemory.AccessScope guard = Platform.Memory.EnterAccess();
        lock (_idLock)
        {
            if (id < 0 || id >= _groupsById.Count || _groupsById[id] is not IommuGroup g)
            {
                return null;
            }

            g.RefCount++;
            return g;
        }
    }

    /// <summary>
    /// Adds <paramref name="device"/> to <paramref name="group"/> (<c>iommu_group_add_device</c>): links
    /// it, attaches it to the group's current domain if there is one (rolling the add back if that
    /// fails) and sends <see cref="IommuGroupNotification.AddDevice"/>.
    /// </summary>
    /// <param name="group">The group.</param>
    /// <param name="device">A device in no group.</param>
    /// <returns>0 or the attach error.</returns>
    /// <exception cref="ArgumentNullException"><paramref name="group"/> or <paramref name="device"/> is null.</exception>
    /// <exception cref="InvalidOperationException">
    /// <paramref name="device"/> is already in a group (5.15 would overwrite <c>dev->iommu_group</c> and leave the device
    /// on both groups' lists), or <paramref name="group"/> was released; nothing changes.
    /// </exception>
    [KernelSymbol("iommu_group_add_device")]
    public Errno GroupAddDevice(IommuGroup group, Device device)
    {
        using PhysicalMemory.AccessScope guard = Platform.Memory.EnterAccess();
        ArgumentNullException.ThrowIfNull(group);
        ArgumentNullException.ThrowIfNull(device);
        if (device.IommuGroup is not null)
        {
            ThrowHelper.DeviceAlreadyInGroup(device);
        }

        GroupRefGet(group);
        device.IommuGroup = group;
        Errno ret = Errno.None;
        lock (group.Mutex)
        {
            group.DeviceList.Add(device);
            if (group.Domain is IDomain domain)
            {
                ret = AttachDeviceInternal(domain, device);
            }

            if (ret != Errno.None)
            {
                group.DeviceList.Remove(device);
            }
        }

        if (ret != Errno.None)
        {
            device.IommuGroup = null;
            GroupPut(group);
            Log.AddDeviceFailed(_log, device.Name, group.Id, ret);
            return ret;
        }

        group.Notify(IommuGroupNotification.AddDevice, device);
        Log.AddedToGroup(_log, device.Name, group.Id);
        return Errno.None;
    }

    /// <summary>
    /// Removes <paramref name="device"/> from its group (<c>iommu_group_remove_device</c>): sends
    /// <see cref="IommuGroupNotification.DelDevice"/> first, unlinks it and drops its reference. The
    /// device is not detached from the group's domain, as in the kernel.
    /// </summary>
    /// <param name="device">The device.</param>
    [KernelSymbol("iommu_group_remove_device")]
    public void GroupRemoveDevice(Device device)
    {
        using PhysicalMemory.AccessScope guard = Platform.Memory.EnterAccess();
        ArgumentNullException.ThrowIfNull(device);
        IommuGroup? group = device.IommuGroup;
        if (group is null)
        {
            return;
        }

        group.Notify(IommuGroupNotification.DelDevice, device);
        bool removed;
        lock (group.Mutex)
        {
            removed = group.DeviceList.Remove(device);
        }

        if (!removed)
        {
            return;
        }

        Log.RemovedFromGroup(_log, device.Name, group.Id);
        device.IommuGroup = null;
        GroupPut(group);
    }

    /// <summary>
    /// The group policy for PCI devices (<c>pci_device_group</c>): devices share a group with any DMA
    /// alias (including the PCIe-to-PCI bridge they sit behind), with the first bridge above them
    /// whose path to the root lacks ACS, and, for multifunction devices without ACS, with the other
    /// functions of their slot. Otherwise a new group.
    /// </summary>
    /// <param name="device">A PCI device.</param>
    /// <param name="group">The group, with a reference for the caller.</param>
    /// <returns>-EINVAL for a device that is not PCI.</returns>
    [KernelSymbol("pci_device_group")]
    public Errno PciDeviceGroup(Device device, out IommuGroup? group)
    {
        using PhysicalMemory.AccessScope guard = Platform.Memory.EnterAccess();
        ArgumentNullException.ThrowIfNull(device);
        group = null;
        if (device is not PciDevice pdev)
        {
            return Fail(Errno.EINVAL, $"{device.Name} is not a PCI device");
        }

        // pci_for_each_dma_alias + get_pci_alias_or_group: the device itself, then up through
        // PCIe-to-PCI bridges (whose requester ID the device's DMA carries).
        group = GroupGet(pdev);
        if (group is not null)
        {
            return Errno.None;
        }

        for (PciDevice? up = pdev.Upstream; up is not null; up = up.Upstream)
        {
            if (!up.IsPcieToPciBridge)
            {
                continue;
            }

            pdev = up;
            group = GroupGet(up);
            if (group is not null)
            {
                return Errno.None;
            }
        }

        // Continue upstream to where ACS protects from peer-to-peer DMA.
        for (PciDevice? up = pdev.Upstream; up is not null; up = up.Upstream)
        {
            if (up.AcsPathEnabled)
            {
                break;
            }

            pdev = up;
            group = GroupGet(up);
            if (group is not null)
            {
                return Errno.None;
            }
        }

        IReadOnlyList<Device> all = pdev.Bus?.Devices ?? [];
        Span<ulong> devfns = stackalloc ulong[4];
        group = GetPciAliasGroup(pdev, all, devfns) ?? GetPciFunctionAliasGroup(pdev, all, devfns) ?? GroupAlloc();
        return Errno.None;
    }

    /// <summary>The group policy that gives every device its own group (<c>generic_device_group</c>).</summary>
    /// <param name="device">The device.</param>
    /// <param name="group">A new group.</param>
    /// <returns>Always 0.</returns>
    [KernelSymbol("generic_device_group")]
    public Errno GenericDeviceGroup(Device device, out IommuGroup? group)
    {
        using PhysicalMemory.AccessScope guard = Platform.Memory.EnterAccess();
        ArgumentNullException.ThrowIfNull(device);
        group = GroupAlloc();
        return Errno.None;
    }

    private IommuGroup? GetPciAliasGroup(PciDevice pdev, IReadOnlyList<Device> all, Span<ulong> devfns)
    {
        if (TestAndSet(devfns, pdev.DevFn))
        {
            return null;
        }

        IommuGroup? group = GroupGet(pdev);
        if (group is not null)
        {
            return group;
        }

        foreach (Device d in all)
        {
            if (d is not PciDevice tmp || tmp == pdev || tmp.BusNumber != pdev.BusNumber || !pdev.IsDmaAliasOf(tmp))
            {
                continue;
            }

            group = GetPciAliasGroup(tmp, all, devfns) ?? GetPciFunctionAliasGroup(tmp, all, devfns);
            if (group is not null)
            {
                return group;
            }
        }

        return null;
    }

    private IommuGroup? GetPciFunctionAliasGroup(PciDevice pdev, IReadOnlyList<Device> all, Span<ulong> devfns)
    {
        if (!pdev.Multifunction || pdev.AcsEnabled)
        {
            return null;
        }

        foreach (Device d in all)
        {
            if (d is not PciDevice tmp || tmp == pdev || tmp.BusNumber != pdev.BusNumber
                || tmp.Address.Device != pdev.Address.Device || tmp.AcsEnabled)
            {
                continue;
            }

            IommuGroup? group = GetPciAliasGroup(tmp, all, devfns);
            if (group is not null)
            {
                return group;
            }
        }

        return null;
    }

    private static bool TestAndSet(Span<ulong> bits, byte index)
    {
        ulong mask = 1UL << (index & 63);
        bool was = (bits[index >> 6] & mask) != 0;
        bits[index >> 6] |= mask;
        return was;
    }
}
