using Iommu.Memory;
using Iommu;
using Iommu.Devices;
using Iommu.Groups;
using Microsoft.Extensions.Logging;
using Vfio.Mdev.Internal;

namespace Vfio.Mdev;

/// <summary>
/// The mdev core of one <see cref="Iommu.Platform"/> (<c>drivers/vfio/mdev</c>): parent registration,
/// the per-parent supported types, creation and removal of mediated devices by UUID, and the
/// platform's <c>mdev</c> bus on which every mdev sits in its own IOMMU group.
/// </summary>
/// <remarks>
/// <para>Reference behaviour is Linux 5.15; members say where 5.10 or the seed differ. Failures the
/// kernel reports as errno are returned (with a detail in <see cref="ErrorDetail"/>), never thrown.</para>
/// <para>Nothing is global: the UUID namespace, the parent list and the bus belong to this instance,
/// so several platforms (each with its own <see cref="MdevCore"/>) coexist in a process.</para>
/// <para>Thread safety, as in the kernel: a parent-list lock (<c>parent_list_lock</c>) and an mdev-list
/// lock (<c>mdev_list_lock</c>) protect the lists; each parent's <c>unreg_sem</c> is taken for read
/// with a <em>trylock</em> by create and remove and for write by unregistration. A create or remove
/// that overlaps an unregistration therefore fails at once with -ENODEV instead of waiting, and an
/// unregistration waits for creates and removes already in progress, then removes every child.</para>
/// </remarks>
public sealed class MdevCore
{
    private readonly Lock _parentLock = new();
    private readonly Lock _mdevLock = new();
    private readonly List<MdevParent> _parents = [];
    private readonly List<MdevParent> _sysfsParents = [];
    private readonly List<MdevDevice> _mdevs = [];
    private readonly ILogger _log;

    /// <summary>Creates an mdev core of <paramref name="platform"/> and its bus (<c>mdev_init</c>).</summary>
    /// <param name="platform">The platform.</param>
    /// <remarks>
    /// A kernel has one mdev core, and a platform usually has one too: its bus is named <c>mdev</c>.
    /// A second core of the same platform (a second test fixture, a second vendor stack) is an
    /// independent core: its own bus, named <c>mdev1</c>, <c>mdev2</c>, … (<see cref="Bus"/> says
    /// which), its own parents and its own UUID namespace. Mdevs of either core get their own IOMMU
    /// groups from the platform and attach to VFIO alike.
    /// </remarks>
    /// <exception cref="ObjectDisposedException">The platform is disposed.</exception>
    public MdevCore(Platform platform)
    {
        ArgumentNullException.ThrowIfNull(platform);
        platform.Memory.ThrowIfDisposed();
        Platform = platform;
        Bus = AddMdevBus(platform);
        _log = platform.LoggerFactory.CreateLogger("Vfio.Mdev");
    }

    /// <summary>The platform.</summary>
    public Platform Platform { get; }

    // "mdev", or the first free "mdevN" when another core of this platform has it. AddBus checks
    // names under the platform's lock: a core created concurrently that took the name first makes
    // this one try the next.
    private static Bus AddMdevBus(Platform platform)
    {
        for (int n = 0; ; n++)
        {
            string name = n == 0 ? "mdev" : string.Create(System.Globalization.CultureInfo.InvariantCulture, $"mdev{n}");
            bool taken = false;
            foreach (Bus b in platform.Buses)
            {
                taken |= b.Name == name;
            }

            if (taken)
            {
                continue;
            }

            try
            {
                return platform.AddBus(name);
            }
            catch (ArgumentException)
            {
                // Taken between the look and the add: try the next name.
            }
        }
    }

    /// <summary>The <c>mdev</c> bus (<c>mdev_bus_type</c>); it has no IOMMU driver.</summary>
    [KernelSymbol("mdev_bus_type")]
    public Bus Bus { get; }

    /// <summary>The registered parents (<c>/sys/class/mdev_bus/</c>), in registration order; a parent being unregistered is no longer listed.</summary>
    public IReadOnlyList<MdevParent> Parents
    {
        get
        {
            lock (_parentLock)
            {
                return [.. _parents];
            }
        }
    }

    /// <summary>Every live mdev (<c>/sys/bus/mdev/devices/</c>), in creation order.</summary>
    public IReadOnlyList<MdevDevice> Devices
    {
        get
        {
            lock (_mdevLock)
            {
                var list = new List<MdevDevice>(_mdevs.Count);
                foreach (MdevDevice m in _mdevs)
                {
                    if (m.Active)
                    {
                        list.Add(m);
                    }
                }

                return list;
            }
        }
    }

    /// <summary>The registered parent of <paramref name="device"/>, or null.</summary>
    /// <param name="device">A physical device.</param>
    /// <returns>The parent or null.</returns>
    public MdevParent? FindParent(Device device)
    {
        using PhysicalMemory.AccessScope guard = Platform.Memory.EnterAccess();
        ArgumentNullException.ThrowIfNull(device);
        lock (_parentLock)
        {
            return FindIn(_parents, device);
        }
    }

    /// <summary>The live mdev named <paramref name="uuid"/> (<c>/sys/bus/mdev/devices/&lt;uuid&gt;</c>), or null.</summary>
    /// <param name="uuid">The UUID.</param>
    /// <returns>The mdev or null.</returns>
    public MdevDevice? FindDevice(Guid uuid)
    {
        using PhysicalMemory.AccessScope guard = Platform.Memory.EnterAccess();
        lock (_mdevLock)
        {
            foreach (MdevDevice m in _mdevs)
            {
                if (m.Uuid == uuid && m.Active)
                {
                    return m;
                }
            }

            return null;
        }
    }

    /// <summary>
    /// Registers <paramref name="parent"/> as an mdev parent (<c>mdev_register_device</c>): creates its
    /// <c>mdev_supported_types/&lt;driver&gt;-&lt;group&gt;/</c> directories.
    /// </summary>
    /// <param name="parent">The physical device.</param>
    /// <param name="ops">The vendor driver.</param>
    /// <returns>
    /// 0; -EINVAL when <paramref name="ops"/> is null, has no <c>supported_type_groups</c> (null; an
    /// empty list is an empty <c>mdev_supported_types/</c>, as in 5.15), lacks <c>create</c> or
    /// <c>remove</c>, or has no driver name; -EEXIST when the device is already registered (or still
    /// being unregistered: its sysfs directory still exists), checked before the groups; then -EINVAL
    /// when a group's name is null ("" is a name) and -EEXIST when two groups have the same name.
    /// </returns>
    /// <remarks>5.15 accepts missing create/remove when <c>device_driver</c> is set; that field is not modelled, so both are always mandatory (the 5.10 rule).</remarks>
    [KernelSymbol("mdev_register_device")]
    public Errno RegisterDevice(Device parent, IMdevParentOps? ops)
    {
        using PhysicalMemory.AccessScope guard = Platform.Memory.EnterAccess();
        ArgumentNullException.ThrowIfNull(parent);
        if (ops is null)
        {
            return ErrorDetail.Fail(Errno.EINVAL, $"mdev_register_device({parent.Name}): no parent ops");
        }

        IReadOnlyList<MdevTypeGroup>? groups = ops.SupportedTypeGroups;
        if (groups is null)
        {
            return ErrorDetail.Fail(Errno.EINVAL, $"mdev_register_device({parent.Name}): vendor driver has no supported_type_groups");
        }

        if (string.IsNullOrEmpty(ops.DriverName))
        {
            return ErrorDetail.Fail(Errno.EINVAL, $"mdev_register_device({parent.Name}): vendor driver has no name");
        }

        lock (_parentLock)
        {
            // 5.15 order: the duplicate check, then parent_create_sysfs_files (the type directories).
            if (FindIn(_sysfsParents, parent) is not null)
            {
                return ErrorDetail.Fail(Errno.EEXIST, $"{parent.Name} is already registered as an mdev parent");
            }

            var names = new HashSet<string>(StringComparer.Ordinal);
            for (int i = 0; i < groups.Count; i++)
            {
                // add_mdev_supported_type: a NULL name is -EINVAL; "" is a name (the directory "<driver>-").
                string? name = groups[i]?.Name;
                if (name is null)
                {
                    return ErrorDetail.Fail(Errno.EINVAL, $"mdev_register_device({parent.Name}): supported type group {i} has no name");
                }

                if (!names.Add(name))
                {
                    return ErrorDetail.Fail(Errno.EEXIST, $"mdev_register_device({parent.Name}): type {ops.DriverName}-{name} is declared twice");
                }
            }

            var p = new MdevParent(this, parent, ops, groups);
            _parents.Add(p);
            _sysfsParents.Add(p);
        }

        Log.Registered(_log, parent.Name);
        return Errno.None;
    }

    /// <summary>
    /// Unregisters <paramref name="parent"/> (<c>mdev_unregister_device</c>): takes it off the parent
    /// list, waits for creates and removes in progress, removes every child (vendor <c>remove</c>
    /// errors are only logged) and then its sysfs directories. Unknown devices are ignored.
    /// </summary>
    /// <param name="parent">The physical device.</param>
    /// <remarks>Creates and removes that start while this runs fail with -ENODEV (the <c>unreg_sem</c> trylock).</remarks>
    [KernelSymbol("mdev_unregister_device")]
    public void UnregisterDevice(Device parent)
    {
        using PhysicalMemory.AccessScope guard = Platform.Memory.EnterAccess();
        ArgumentNullException.ThrowIfNull(parent);
        MdevParent? p;
        lock (_parentLock)
        {
            p = FindIn(_parents, parent);
            if (p is null)
            {
                return;
            }

            _parents.Remove(p);
            p.Unregistering = true;
        }

        Log.Unregistering(_log, parent.Name);
        p.UnregSem.DownWrite();
        try
        {
            foreach (MdevDevice child in p.Children)
            {
                lock (_mdevLock)
                {
                    child.Active = false;
                }

                RemoveCommon(child);
            }

            lock (_parentLock)
            {
                p.SysfsPresent = false;
                _sysfsParents.Remove(p);
            }
        }
        finally
        {
            p.UnregSem.UpWrite();
        }
    }

    /// <summary>Creates an mdev by parent, type name and UUID (<c>mdev_device_create</c> reached through the type directory); otherwise as the <see cref="MdevType"/> overload.</summary>
    /// <param name="parent">The physical parent device.</param>
    /// <param name="typeName">Full type name, e.g. <c>mtty-2</c>.</param>
    /// <param name="uuid">The new device's UUID.</param>
    /// <param name="mdev">The device, or null on error.</param>
    /// <returns>-ENOENT when the parent has no such type directory (not registered, or no such type); otherwise as <see cref="Create(MdevType, Guid, out MdevDevice?)"/>.</returns>
    public Errno Create(Device parent, string typeName, Guid uuid, out MdevDevice? mdev)
    {
        using PhysicalMemory.AccessScope guard = Platform.Memory.EnterAccess();
        mdev = null;
        Errno ret = LookupType(parent, typeName, out MdevType? type);
        return ret != Errno.None ? ret : Create(type!, uuid, out mdev);
    }

    /// <summary>
    /// Creates an mdev from the text written to <c>.../mdev_supported_types/&lt;type&gt;/create</c>
    /// (<c>create_store</c>): 36 or 37 bytes, a UUID in either case, optionally followed by one byte
    /// (the newline of <c>echo</c>; the kernel does not look at it).
    /// </summary>
    /// <param name="parent">The physical parent device.</param>
    /// <param name="typeName">Full type name.</param>
    /// <param name="text">What user space wrote.</param>
    /// <param name="mdev">The device, or null on error.</param>
    /// <returns>-ENOENT for a missing type directory; -EINVAL for a length other than 36 or 37 bytes or an unparsable UUID; otherwise as <see cref="Create(MdevType, Guid, out MdevDevice?)"/>.</returns>
    [KernelSymbol("create_store")]
    public Errno Create(Device parent, string typeName, string text, out MdevDevice? mdev)
    {
        using PhysicalMemory.AccessScope guard = Platform.Memory.EnterAccess();
        ArgumentNullException.ThrowIfNull(text);
        mdev = null;
        Errno ret = LookupType(parent, typeName, out MdevType? type);
        if (ret != Errno.None)
        {
            return ret;
        }

        int count = SysfsText.ByteCount(text);
        if (count is < SysfsText.UuidStringLength or > SysfsText.UuidStringLength + 1)
        {
            return ErrorDetail.Fail(Errno.EINVAL, $"{type}/create: {count} bytes written, a UUID takes 36 (or 37 with a newline)");
        }

        if (!SysfsText.TryParseGuid(text, out Guid uuid))
        {
            return ErrorDetail.Fail(Errno.EINVAL, $"{type}/create: '{text.TrimEnd('\n')}' is not a UUID");
        }

        return Create(type!, uuid, out mdev);
    }

    /// <summary>
    /// Creates an mdev of <paramref name="type"/> (<c>mdev_device_create</c>): reserves the UUID in the
    /// core's namespace, calls the vendor's <c>create</c>, adds the device to the <c>mdev</c> bus, gives
    /// it a fresh singleton IOMMU group and lists it under the type's <c>devices/</c>.
    /// </summary>
    /// <param name="type">A type of a registered parent.</param>
    /// <param name="uuid">The new device's UUID.</param>
    /// <param name="mdev">The device, or null on error.</param>
    /// <returns>
    /// 0; -EEXIST when any mdev of this core (under any parent) already has the UUID, including one
    /// still being created or removed; -ENODEV when the parent is being (or has been) unregistered;
    /// the vendor's <c>create</c> error, unchanged; the IOMMU group error (the vendor's <c>remove</c> is
    /// then called).
    /// </returns>
    /// <remarks>5.15 form (<c>mdev_device_create(type, uuid)</c>). The vendor's <c>create</c> runs before the group exists, which is where a parent calls <see cref="IMdevDevice.SetIommuDevice"/>.</remarks>
    [KernelSymbol("mdev_device_create")]
    public Errno Create(MdevType type, Guid uuid, out MdevDevice? mdev)
    {
        using PhysicalMemory.AccessScope guard = Platform.Memory.EnterAccess();
        ArgumentNullException.ThrowIfNull(type);
        mdev = null;
        MdevParent parent = type.Parent;
        if (!parent.SysfsPresent)
        {
            return ErrorDetail.Fail(Errno.ENODEV, $"{type}/create: parent {parent.Device.Name} is no longer registered");
        }

        var dev = new MdevDevice(this, type, uuid);
        lock (_mdevLock)
        {
            foreach (MdevDevice m in _mdevs)
            {
                if (m.Uuid == uuid)
                {
                    return ErrorDetail.Fail(Errno.EEXIST, $"mdev {dev.Name} already exists under {m.ParentDevice.Name}");
                }
            }

            _mdevs.Add(dev);
        }

        if (!parent.UnregSem.TryDownRead())
        {
            Release(dev);
            return ErrorDetail.Fail(Errno.ENODEV, $"cannot create {dev.Name}: parent {parent.Device.Name} is being unregistered");
        }

        try
        {
            if (!parent.SysfsPresent)
            {
                Release(dev);
                return ErrorDetail.Fail(Errno.ENODEV, $"cannot create {dev.Name}: parent {parent.Device.Name} was unregistered");
            }

            ErrorDetail.Clear();
            Errno ret = parent.Ops.Create(dev);
            if (ret != Errno.None)
            {
                using (ErrorDetail.PreserveWhileUnwinding())
                {
                    Release(dev);
                }

                return VendorErrors.KeepOrFail(ret, $"vendor driver {parent.Ops.DriverName} failed to create {dev.Name} of type {type}");
            }

            // device_add, then the mdev bus probe (mdev_attach_iommu): a fresh singleton group.
            Bus.AddDevice(dev);
            IommuCore iommu = Platform.Iommu;
            IommuGroup group = iommu.GroupAlloc();
            ret = iommu.GroupAddDevice(group, dev);
            iommu.GroupPut(group);
            if (ret != Errno.None)
            {
                string detail = ErrorDetail.LastMessage ?? "group add failed";
                Bus.RemoveDevice(dev);
                parent.Ops.Remove(dev);
                Release(dev);
                return ErrorDetail.Fail(ret, $"cannot put {dev.Name} in an IOMMU group: {detail}");
            }

            type.AddDevice(dev);
            parent.AddChild(dev);
            lock (_mdevLock)
            {
                dev.Active = true;
            }

            Log.Created(_log, dev.Name, type.Name, group.Id);
            mdev = dev;
            return Errno.None;
        }
        finally
        {
            parent.UnregSem.UpRead();
        }
    }

    /// <summary>
    /// Removes <paramref name="mdev"/> (<c>mdev_device_remove</c>): takes it out of sysfs and off the bus
    /// (its IOMMU group goes with it), waiting for open device files to close, then calls the vendor's
    /// <c>remove</c> (an error is only logged).
    /// </summary>
    /// <param name="mdev">The device.</param>
    /// <returns>
    /// 0; -ENODEV when the device is no longer in the core's list (already removed) or its parent is
    /// being unregistered; -EAGAIN when a removal of it is already in progress.
    /// </returns>
    /// <remarks>
    /// As in 5.15 the device is marked inactive before the <c>unreg_sem</c> trylock, so after a removal
    /// that failed with -ENODEV because of a concurrent unregistration, later removals answer -EAGAIN.
    /// There is no "in use" error: like <c>vfio_unregister_group_dev</c>, removal blocks until open files
    /// are closed, calling the vendor's <c>request</c> (5.15) to ask for it, and then (through the IOMMU
    /// group's DEL_DEVICE notifier of a <c>VfioCore</c> the mdev is registered with) until its VFIO group
    /// has left its container.
    /// </remarks>
    [KernelSymbol("mdev_device_remove")]
    public Errno Remove(MdevDevice mdev)
    {
        using PhysicalMemory.AccessScope guard = Platform.Memory.EnterAccess();
        ArgumentNullException.ThrowIfNull(mdev);
        lock (_mdevLock)
        {
            if (!_mdevs.Contains(mdev))
            {
                return ErrorDetail.Fail(Errno.ENODEV, $"mdev {mdev.Name} does not exist");
            }

            if (!mdev.Active)
            {
                return ErrorDetail.Fail(Errno.EAGAIN, $"mdev {mdev.Name} is already being created or removed");
            }

            mdev.Active = false;
        }

        MdevParent parent = mdev.Parent;
        if (!parent.UnregSem.TryDownRead())
        {
            return ErrorDetail.Fail(Errno.ENODEV, $"cannot remove {mdev.Name}: parent {parent.Device.Name} is being unregistered");
        }

        try
        {
            // The parent's unregistration can run whole between the active check above and the
            // trylock, removing this mdev with the other children. The kernel leans on the sysfs
            // attribute's self-removal (kernfs) for that window; the model has no kernfs, so it looks
            // again under the read side, where no unregistration can run.
            lock (_mdevLock)
            {
                if (!_mdevs.Contains(mdev))
                {
                    return ErrorDetail.Fail(Errno.ENODEV, $"mdev {mdev.Name} was removed with its parent {parent.Device.Name}");
                }
            }

            RemoveCommon(mdev);
        }
        finally
        {
            parent.UnregSem.UpRead();
        }

        return Errno.None;
    }

    /// <summary>
    /// Removes <paramref name="mdev"/> from the text written to <c>/sys/bus/mdev/devices/&lt;uuid&gt;/remove</c>
    /// (<c>remove_store</c>): a number as <c>kstrtoul(buf, 0)</c> reads it; 0 does nothing.
    /// </summary>
    /// <param name="mdev">The device.</param>
    /// <param name="text">What user space wrote.</param>
    /// <returns>-EINVAL for text that is not a number; 0 for zero; -ENODEV once a removal of the device has started or finished (its <c>remove</c> attribute is gone); otherwise as <see cref="Remove(MdevDevice)"/> (never -EAGAIN).</returns>
    [KernelSymbol("remove_store")]
    public Errno Remove(MdevDevice mdev, string text)
    {
        using PhysicalMemory.AccessScope guard = Platform.Memory.EnterAccess();
        ArgumentNullException.ThrowIfNull(mdev);
        ArgumentNullException.ThrowIfNull(text);
        if (!SysfsText.TryParseKstrtoul(text, out ulong value))
        {
            return ErrorDetail.Fail(Errno.EINVAL, $"{mdev.Name}/remove: '{text.TrimEnd('\n')}' is not a number");
        }

        if (value == 0)
        {
            return Errno.None;
        }

        // device_remove_file_self: the first removal took the 'remove' attribute away, so a write that
        // comes after it meets a removed kernfs node (-ENODEV); one that raced in with it finds the
        // self-removal taken (false) and returns count. mdev_device_remove's -EAGAIN never reaches sysfs.
        lock (_mdevLock)
        {
            if (!mdev.Active)
            {
                return ErrorDetail.Fail(Errno.ENODEV, $"{mdev.Name}/remove: the attribute is gone (the device is being or has been removed)");
            }
        }

        Errno ret = Remove(mdev);
        return ret == Errno.EAGAIN ? Errno.None : ret;
    }

    private static MdevParent? FindIn(List<MdevParent> list, Device device)
    {
        foreach (MdevParent p in list)
        {
            if (p.Device == device)
            {
                return p;
            }
        }

        return null;
    }

    private Errno LookupType(Device parent, string typeName, out MdevType? type)
    {
        ArgumentNullException.ThrowIfNull(parent);
        ArgumentNullException.ThrowIfNull(typeName);
        type = null;
        MdevParent? p;
        lock (_parentLock)
        {
            p = FindIn(_sysfsParents, parent);
        }

        if (p is null)
        {
            return ErrorDetail.Fail(Errno.ENOENT, $"{parent.Name} has no mdev_supported_types (not an mdev parent)");
        }

        type = p.FindType(typeName);
        return type is null
            ? ErrorDetail.Fail(Errno.ENOENT, $"{parent.Name} has no mdev type '{typeName}'")
            : Errno.None;
    }

    // mdev_device_remove_common: sysfs, device_del (vfio unregister + group removal), vendor remove, release.
    private void RemoveCommon(MdevDevice mdev)
    {
        MdevParent parent = mdev.Parent;
        mdev.Type.RemoveDevice(mdev);
        parent.RemoveChild(mdev);
        mdev.WaitForFilesClosed(_log);
        Platform.Iommu.GroupRemoveDevice(mdev);
        Bus.RemoveDevice(mdev);
        Errno ret = parent.Ops.Remove(mdev);
        if (ret != Errno.None)
        {
            Log.VendorRemoveFailed(_log, mdev.Name, ret);
        }

        Release(mdev);
        Log.Removed(_log, mdev.Name);
    }

    private void Release(MdevDevice mdev)
    {
        lock (_mdevLock)
        {
            _mdevs.Remove(mdev);
        }
    }
}
