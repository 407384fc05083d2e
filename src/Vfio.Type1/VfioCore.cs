using Iommu.Memory;
using System.Diagnostics;
using System.Diagnostics.Metrics;
using Iommu;
using Iommu.Devices;
using Iommu.Domains;
using Iommu.Groups;
using Iommu.Mm;
using Vfio.Mdev;
using Vfio.Mdev.Pinning;

namespace Vfio.Type1;

/// <summary>
/// The VFIO core of one platform (<c>drivers/vfio/vfio.c</c>): which devices are bound to VFIO, the
/// <see cref="VfioGroup"/> of each IOMMU group (<c>/dev/vfio/N</c>), new containers
/// (<c>/dev/vfio/vfio</c>), and the vendor-facing pinning front end (<c>vfio_pin_pages</c>, …).
/// </summary>
/// <remarks>
/// <para>Metrics: pinned pages and <c>dma_avail</c> of every container with a backend are published on
/// the platform's <c>Vfio.Type1</c> meter (<see cref="Platform.GetMeter"/>), tagged by <see cref="VfioContainer.Id"/>.</para>
/// <para>Thread safety: every member may be called concurrently; the group registry has its own lock, each container serialises its operations.</para>
/// </remarks>
public sealed class VfioCore : IVfioPinning
{
    private readonly Lock _lock = new();
    private readonly Dictionary<IommuGroup, VfioGroup> _groups = [];
    private readonly Dictionary<Device, bool> _bound = [];

    // Backends with SET_IOMMU done and not yet released: what the observable instruments read.
    private readonly Lock _backendsLock = new();
    private readonly List<VfioIommuType1> _backends = [];
    private int _lastContainerId;

    /// <summary>Creates the VFIO core of <paramref name="platform"/>.</summary>
    /// <param name="platform">The platform.</param>
    /// <param name="options">type1 module parameters.</param>
    public VfioCore(Platform platform, VfioType1Options? options = null)
    {
        ArgumentNullException.ThrowIfNull(platform);
        platform.Memory.ThrowIfDisposed();
        Platform = platform;
        Options = options ?? new VfioType1Options();
        PublishMetrics();
    }

    /// <summary>Name of the meter the VFIO core publishes through (<see cref="Platform.GetMeter"/>).</summary>
    public const string MeterName = "Vfio.Type1";

    /// <summary>The platform.</summary>
    public Platform Platform { get; }

    /// <summary>type1 module parameters.</summary>
    public VfioType1Options Options { get; }

    /// <summary>
    /// Binds a device to a VFIO driver (vfio-pci or vfio-mdev: <c>vfio_register_group_dev</c>); its group
    /// becomes openable as <c>/dev/vfio/N</c>.
    /// </summary>
    /// <param name="device">A device with an IOMMU group.</param>
    /// <returns>0, or -EINVAL if the device has no IOMMU group.</returns>
    [KernelSymbol("vfio_register_group_dev")]
    public Errno RegisterDevice(Device device)
    {
        using PhysicalMemory.AccessScope guard = Platform.Memory.EnterAccess();
        ArgumentNullException.ThrowIfNull(device);
        if (device.IommuGroup is null)
        {
            return ErrorDetail.Fail(Errno.EINVAL, $"{device.Name} has no IOMMU group");
        }

        IommuGroup iommuGroup = device.IommuGroup;
        VfioGroup? added = null;
        lock (_lock)
        {
            _bound[device] = true;
            if (!_groups.ContainsKey(iommuGroup))
            {
                added = new VfioGroup(this, iommuGroup);
                _groups[iommuGroup] = added;
            }
        }

        if (added is not null)
        {
            iommuGroup.RegisterNotifier((action, dev) =>
            {
                if (action == IommuGroupNotification.DelDevice)
                {
                    OnDelDevice(added, dev);
                }
            });
        }

        return Errno.None;
    }

    // vfio_unregister_group_dev (5.15): the device's files are closed by now (the mdev core waited for
    // them); when it is the group's last device, wait until the group has left its container
    // (wait_event(group->container_q, !group->container)), so that type1 detaches the group - for an
    // mdev, the aux domain on its IOMMU device - while the device is still in the group and its vendor
    // state (mdev_get_iommu_device) intact. Modelled for mdevs, whose removal reaches this through
    // iommu_group_remove_device (mdev_detach_iommu).
    private void OnDelDevice(VfioGroup group, Device device)
    {
        if (!IsMdev(device))
        {
            return;
        }

        lock (_lock)
        {
            if (!_bound.TryGetValue(device, out bool vfio) || !vfio)
            {
                return;
            }
        }

        foreach (Device d in group.IommuGroup.Devices)
        {
            if (d != device)
            {
                return;
            }
        }

        group.WaitForNoContainer();
    }

    /// <summary>Marks a device as bound to a non-VFIO driver (its group is then not viable) or unbinds it.</summary>
    /// <param name="device">The device.</param>
    /// <param name="bound">True: bound to another driver; false: unbound.</param>
    public void SetForeignDriver(Device device, bool bound)
    {
        using PhysicalMemory.AccessScope guard = Platform.Memory.EnterAccess();
        ArgumentNullException.ThrowIfNull(device);
        lock (_lock)
        {
            if (bound)
            {
                _bound[device] = false;
            }
            else
            {
                _bound.Remove(device);
            }
        }
    }

    /// <summary>The VFIO group of an IOMMU group, if a device of it is bound to VFIO.</summary>
    /// <param name="group">The IOMMU group.</param>
    /// <returns>The VFIO group or null.</returns>
    public VfioGroup? GetGroup(IommuGroup group)
    {
        using PhysicalMemory.AccessScope guard = Platform.Memory.EnterAccess();
        ArgumentNullException.ThrowIfNull(group);
        lock (_lock)
        {
            return _groups.TryGetValue(group, out VfioGroup? g) ? g : null;
        }
    }

    /// <summary>Opens a new container (<c>open("/dev/vfio/vfio")</c>) in <paramref name="process"/>.</summary>
    /// <param name="process">The opening process (its fd table receives the container).</param>
    /// <param name="fd">The new descriptor.</param>
    /// <returns>The container.</returns>
    /// <exception cref="InvalidOperationException"><paramref name="process"/> has exited (or is exiting); no container is opened.</exception>
    [KernelSymbol("vfio_fops_open")]
    public VfioContainer OpenContainer(ProcessAddressSpace process, out int fd)
    {
        using PhysicalMemory.AccessScope guard = Platform.Memory.EnterAccess();
        ArgumentNullException.ThrowIfNull(process);
        var c = new VfioContainer(this, process, Interlocked.Increment(ref _lastContainerId));
        fd = process.InstallFile(c);
        c.Fd = fd;
        return c;
    }

    /// <summary>Opens <c>/dev/vfio/<paramref name="groupId"/></c> in <paramref name="process"/> (<c>vfio_group_fops_open</c>).</summary>
    /// <param name="process">The opening process.</param>
    /// <param name="groupId">IOMMU group id.</param>
    /// <param name="group">The group.</param>
    /// <param name="fd">The new descriptor (-1 on error).</param>
    /// <returns>0; -ENOENT (no such VFIO group); -EBUSY (already open, or still in a container).</returns>
    /// <exception cref="InvalidOperationException"><paramref name="process"/> has exited (or is exiting); the group is left closed.</exception>
    [KernelSymbol("vfio_group_fops_open")]
    public Errno OpenGroup(ProcessAddressSpace process, int groupId, out VfioGroup? group, out int fd)
    {
        using PhysicalMemory.AccessScope guard = Platform.Memory.EnterAccess();
        ArgumentNullException.ThrowIfNull(process);
        fd = -1;
        group = null;
        // Only a lookup: the VFIO group is what the open holds (vfio_group_get_from_minor), not the IOMMU group.
        IommuGroup? ig = Platform.Iommu.GroupGetById(groupId);
        VfioGroup? g = ig is null ? null : GetGroup(ig);
        Platform.Iommu.GroupPut(ig);
        if (g is null)
        {
            return ErrorDetail.Fail(Errno.ENOENT, $"/dev/vfio/{groupId} does not exist");
        }

        Errno e = g.Open(process);
        if (e != Errno.None)
        {
            return e;
        }

        try
        {
            fd = process.InstallFile(g);
        }
        catch
        {
            // The process exited meanwhile: the open is undone (no descriptor will ever close it).
            g.PutFileRef();
            throw;
        }

        group = g;
        g.Fd = fd;
        return Errno.None;
    }

    internal void AddBackend(VfioIommuType1 backend)
    {
        lock (_backendsLock)
        {
            _backends.Add(backend);
        }
    }

    internal void RemoveBackend(VfioIommuType1 backend)
    {
        lock (_backendsLock)
        {
            _backends.Remove(backend);
        }
    }

    // Pinned pages and dma_avail of every live backend, read on collection only (the MAP_DMA and pin paths pay nothing).
    private void PublishMetrics()
    {
        Meter meter = Platform.GetMeter(MeterName);
        meter.CreateObservableUpDownCounter("vfio.type1.pinned.pages", () => Observe(static (b, tags) =>
        {
            (long mapDma, long external) = b.PinnedPages();
            return [With(mapDma, tags, "map_dma"), With(external, tags, "vfio_pin_pages")];
        }), "{page}", "Pages pinned now, by container and by who pinned them (MAP_DMA, or vfio_pin_pages for the external domain)");
        meter.CreateObservableUpDownCounter("vfio.type1.dma.available", () => Observe(static (b, tags) => [new Measurement<long>(b.DmaAvail, tags)]), "{mapping}", "Mapping slots left (dma_avail), by container");

        static Measurement<long> With(long value, TagList tags, string source)
        {
            tags.Add("source", source);
            return new Measurement<long>(value, tags);
        }
    }

    private List<Measurement<long>> Observe(Func<VfioIommuType1, TagList, Measurement<long>[]> observe)
    {
        var list = new List<Measurement<long>>();
        if (Platform.IsDisposed)
        {
            return list;
        }

        VfioIommuType1[] backends;
        lock (_backendsLock)
        {
            backends = [.. _backends];
        }

        // Each backend is read under its own lock, taken after the list lock is dropped (no lock order to keep).
        foreach (VfioIommuType1 b in backends)
        {
            TagList tags = Platform.MetricTags;
            tags.Add("container", b.Container.Id);
            list.AddRange(observe(b, tags));
        }

        return list;
    }

    internal bool IsBoundToVfio(Device d)
    {
        lock (_lock)
        {
            return _bound.TryGetValue(d, out bool b) && b;
        }
    }

    internal bool IsViable(IommuGroup group)
    {
        lock (_lock)
        {
            foreach (Device d in group.Devices)
            {
                if (_bound.TryGetValue(d, out bool b) && !b)
                {
                    return false;
                }
            }

            return true;
        }
    }

    // vfio_pin_pages front end: resolves the device's VFIO group and its container's backend.
    private Errno ResolveBackend(Device device, bool pin, out VfioIommuType1? backend, out VfioGroup? group)
    {
        backend = null;
        group = device.IommuGroup is null ? null : GetGroup(device.IommuGroup);
        if (group is null)
        {
            return ErrorDetail.Fail(Errno.ENODEV, $"{device.Name} has no VFIO group");
        }

        if (pin && group.IommuGroup.DeviceCount > 1)
        {
            return ErrorDetail.Fail(Errno.EINVAL, $"group {group.IommuGroup.Id} has more than one device");
        }

        // A container user (5.15 vfio_group_add_container_user) keeps the group in the container until the
        // caller's DropContainerUser: without it the group could leave between this look-up and the backend call.
        backend = group.AddContainerUser();
        if (backend is null)
        {
            return ErrorDetail.Fail(Errno.EINVAL, $"group {group.IommuGroup.Id} is not in a container with an IOMMU backend");
        }

        return Errno.None;
    }

    /// <inheritdoc/>
    [KernelSymbol("vfio_pin_pages")]
    public int PinPages(Device device, ulong[] userPfns, int npage, IommuProt prot, ulong[] physPfns)
    {
        using PhysicalMemory.AccessScope guard = Platform.Memory.EnterAccess();
        ArgumentNullException.ThrowIfNull(device);
        // 5.15 tests !npage only: a negative npage reaches type1, which pins nothing and returns 0.
        if (userPfns is null || physPfns is null || npage == 0)
        {
            return -(int)ErrorDetail.Fail(Errno.EINVAL, "vfio_pin_pages: null array or npage 0");
        }

        if (npage > userPfns.Length || npage > physPfns.Length)
        {
            // No C counterpart (the arrays are pointers there): refused before anything is pinned.
            return -(int)ErrorDetail.Fail(Errno.EINVAL, $"vfio_pin_pages: npage {npage} exceeds the arrays ({userPfns.Length}, {physPfns.Length})");
        }

        if (npage > IVfioPinning.PinPagesMaxEntries)
        {
            return -(int)ErrorDetail.Fail(Errno.E2BIG, $"vfio_pin_pages: {npage} > {IVfioPinning.PinPagesMaxEntries}");
        }

        Errno e = ResolveBackend(device, pin: true, out VfioIommuType1? backend, out VfioGroup? group);
        if (e != Errno.None)
        {
            return -(int)e;
        }

        try
        {
            return backend!.PinPages(group!, userPfns, npage, prot, physPfns);
        }
        finally
        {
            group!.DropContainerUser();
        }
    }

    /// <inheritdoc/>
    [KernelSymbol("vfio_unpin_pages")]
    public int UnpinPages(Device device, ulong[] userPfns, int npage)
    {
        using PhysicalMemory.AccessScope guard = Platform.Memory.EnterAccess();
        ArgumentNullException.ThrowIfNull(device);
        // 5.15 vfio_unpin_pages tests !npage; a negative npage is type1's -EINVAL, after the group look-up.
        if (userPfns is null || npage == 0)
        {
            return -(int)ErrorDetail.Fail(Errno.EINVAL, "vfio_unpin_pages: null array or npage 0");
        }

        if (npage > userPfns.Length)
        {
            return -(int)ErrorDetail.Fail(Errno.EINVAL, $"vfio_unpin_pages: npage {npage} exceeds the array ({userPfns.Length})");
        }

        if (npage > IVfioPinning.PinPagesMaxEntries)
        {
            return -(int)ErrorDetail.Fail(Errno.E2BIG, $"vfio_unpin_pages: {npage} > {IVfioPinning.PinPagesMaxEntries}");
        }

        Errno e = ResolveBackend(device, pin: false, out VfioIommuType1? backend, out VfioGroup? group);
        if (e != Errno.None)
        {
            return -(int)e;
        }

        try
        {
            return backend!.UnpinPages(userPfns, npage);
        }
        finally
        {
            group!.DropContainerUser();
        }
    }

    /// <inheritdoc/>
    [KernelSymbol("vfio_register_notifier")]
    public Errno RegisterNotifier(Device device, VfioNotifyType type, VfioIommuNotifyEvents events, VfioIommuNotifier notifier)
    {
        using PhysicalMemory.AccessScope guard = Platform.Memory.EnterAccess();
        ArgumentNullException.ThrowIfNull(device);
        if (notifier is null || events == VfioIommuNotifyEvents.None)
        {
            return ErrorDetail.Fail(Errno.EINVAL, "vfio_register_notifier: no notifier or no events");
        }

        if (type != VfioNotifyType.Iommu)
        {
            return ErrorDetail.Fail(Errno.EINVAL, $"vfio_register_notifier: type {type} is not modelled");
        }

        Errno e = ResolveBackend(device, pin: false, out VfioIommuType1? backend, out VfioGroup? group);
        if (e != Errno.None)
        {
            return e;
        }

        try
        {
            return backend!.RegisterNotifier(events, notifier);
        }
        finally
        {
            group!.DropContainerUser();
        }
    }

    /// <inheritdoc/>
    [KernelSymbol("vfio_unregister_notifier")]
    public Errno UnregisterNotifier(Device device, VfioNotifyType type, VfioIommuNotifier notifier)
    {
        using PhysicalMemory.AccessScope guard = Platform.Memory.EnterAccess();
        ArgumentNullException.ThrowIfNull(device);
        if (notifier is null)
        {
            return ErrorDetail.Fail(Errno.EINVAL, "vfio_unregister_notifier: no notifier");
        }

        Errno e = ResolveBackend(device, pin: false, out VfioIommuType1? backend, out VfioGroup? group);
        if (e != Errno.None)
        {
            return e;
        }

        try
        {
            return backend!.UnregisterNotifier(notifier);
        }
        finally
        {
            group!.DropContainerUser();
        }
    }

    /// <summary>
    /// <c>vfio_dma_rw</c> (5.8+): a vendor driver reads or writes guest memory by IOVA through the mapping
    /// process's mm (no pinning). 5.15 takes the device's group; here the device names it.
    /// </summary>
    /// <param name="device">A VFIO device whose group is in a container with a backend.</param>
    /// <param name="iova">First IOVA.</param>
    /// <param name="data">The kernel buffer (empty → -EINVAL).</param>
    /// <param name="write">True: copy <paramref name="data"/> into the guest memory (marks the pages dirty while tracking).</param>
    /// <param name="caller">The calling task's process; null for a kernel thread.</param>
    /// <returns>0 or the -errno of <c>vfio_iommu_type1_dma_rw</c>.</returns>
    [KernelSymbol("vfio_dma_rw")]
    public int DmaRw(Device device, ulong iova, Span<byte> data, bool write, ProcessAddressSpace? caller = null)
    {
        using PhysicalMemory.AccessScope guard = Platform.Memory.EnterAccess();
        ArgumentNullException.ThrowIfNull(device);
        if (data.IsEmpty)
        {
            return -(int)ErrorDetail.Fail(Errno.EINVAL, "vfio_dma_rw: no buffer or len 0");
        }

        Errno e = ResolveBackend(device, pin: false, out VfioIommuType1? backend, out VfioGroup? group);
        if (e != Errno.None)
        {
            return -(int)e;
        }

        try
        {
            return backend!.DmaRw(caller, iova, data, write);
        }
        finally
        {
            group!.DropContainerUser();
        }
    }

    internal static bool IsMdev(Device d) => MdevDevice.FromDevice(d) is not null;
}
