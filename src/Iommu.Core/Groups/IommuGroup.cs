using Iommu.Memory;
using Iommu.Devices;
using Iommu.Domains;

namespace Iommu.Groups;

/// <summary>
/// The smallest set of devices the IOMMU can isolate from each other (<c>struct iommu_group</c>):
/// members, the default domain given at probe and the domain currently in use.
/// </summary>
/// <remarks>
/// <para>Ids are the lowest free on the platform (the kernel's IDA, per platform here).</para>
/// <para>Lifetime follows the kernel's reference count: each member device holds a reference, as do
/// callers of <see cref="IommuCore.GroupGet"/>; at zero the group is released (its id freed, its
/// IOMMU data released, its default domain freed).</para>
/// <para>Thread safety: membership and domain changes happen under the group's mutex
/// (<c>group->mutex</c>); the notifier chain has its own lock and runs callbacks outside it.</para>
/// </remarks>
[KernelSymbol("struct iommu_group")]
public sealed class IommuGroup
{
    private readonly List<Device> _devices = [];
    private readonly List<IommuGroupNotifier> _notifiers = [];
    private Action<object?>? _iommuDataRelease;

    internal IommuGroup(IommuCore core, int id)
    {
        Core = core;
        Id = id;
        RefCount = 1;
    }

    /// <summary>The group number (<c>iommu_group_id</c>), as in <c>/sys/kernel/iommu_groups/N</c> and <c>/dev/vfio/N</c>.</summary>
    [KernelSymbol("iommu_group_id")]
    public int Id { get; }

    /// <summary>Optional name (<c>iommu_group_set_name</c>).</summary>
    [KernelSymbol("iommu_group_set_name")]
    public string? Name { get; set; }

    /// <summary>A snapshot of the member devices, in the order they joined.</summary>
    public IReadOnlyList<Device> Devices
    {
        get
        {
            lock (Mutex)
            {
                return [.. _devices];
            }
        }
    }

    /// <summary>Number of member devices (<c>iommu_group_device_count</c>).</summary>
    [KernelSymbol("iommu_group_device_count")]
    public int DeviceCount
    {
        get
        {
            lock (Mutex)
            {
                return _devices.Count;
            }
        }
    }

    /// <summary>The domain allocated for the group at probe (<c>group->default_domain</c>), or null.</summary>
    public IDomain? DefaultDomain { get; internal set; }

    /// <summary>The domain the group's devices currently translate through (<c>group->domain</c>), or null.</summary>
    public IDomain? Domain { get; internal set; }

    /// <summary>Owner-private data (<c>iommu_group_get_iommudata</c>).</summary>
    [KernelSymbol("iommu_group_get_iommudata")]
    public object? IommuData { get; private set; }

    /// <summary>Whether the last reference was dropped and the group released.</summary>
    public bool IsReleased { get; private set; }

    internal IommuCore Core { get; }

    internal Lock Mutex { get; } = new();

    internal int RefCount { get; set; }

    internal List<Device> DeviceList => _devices;

    /// <summary>PASID → domain attached with <c>iommu_attach_device_pasid</c> (6.2 <c>group->pasid_array</c>); under <see cref="Mutex"/>.</summary>
    internal Dictionary<uint, IDomain> PasidArray { get; } = [];

    /// <summary>Sets owner-private data and the callback run when the group is released (<c>iommu_group_set_iommudata</c>).</summary>
    /// <param name="data">The data.</param>
    /// <param name="release">Called with <paramref name="data"/> at release, or null.</param>
    [KernelSymbol("iommu_group_set_iommudata")]
    public void SetIommuData(object? data, Action<object?>? release)
    {
        using PhysicalMemory.AccessScope guard = Core.Platform.Memory.EnterAccess();
        IommuData = data;
        _iommuDataRelease = release;
    }

    /// <summary>
    /// Calls <paramref name="fn"/> for each member under the group mutex, stopping at the first
    /// non-zero result and returning it (<c>iommu_group_for_each_dev</c>).
    /// </summary>
    /// <param name="fn">The callback.</param>
    /// <returns>0 or the first non-zero result.</returns>
    [KernelSymbol("iommu_group_for_each_dev")]
    public int ForEachDevice(Func<Device, int> fn)
    {
        using PhysicalMemory.AccessScope guard = Core.Platform.Memory.EnterAccess();
        ArgumentNullException.ThrowIfNull(fn);
        lock (Mutex)
        {
            foreach (Device d in _devices)
            {
                int r = fn(d);
                if (r != 0)
                {
                    return r;
                }
            }

            return 0;
        }
    }

    /// <summary>Adds a callback to the group's notifier chain (<c>iommu_group_register_notifier</c>).</summary>
    /// <param name="notifier">The callback.</param>
    /// <returns>Always 0.</returns>
    [KernelSymbol("iommu_group_register_notifier")]
    public Errno RegisterNotifier(IommuGroupNotifier notifier)
    {
        using PhysicalMemory.AccessScope guard = Core.Platform.Memory.EnterAccess();
        ArgumentNullException.ThrowIfNull(notifier);
        lock (_notifiers)
        {
            _notifiers.Add(notifier);
        }

        return Errno.None;
    }

    /// <summary>Removes a callback (<c>iommu_group_unregister_notifier</c>).</summary>
    /// <param name="notifier">The callback.</param>
    /// <returns>-ENOENT when it was not registered.</returns>
    [KernelSymbol("iommu_group_unregister_notifier")]
    public Errno UnregisterNotifier(IommuGroupNotifier notifier)
    {
        using PhysicalMemory.AccessScope guard = Core.Platform.Memory.EnterAccess();
        ArgumentNullException.ThrowIfNull(notifier);
        lock (_notifiers)
        {
            return _notifiers.Remove(notifier)
                ? Errno.None
                : ErrorDetail.Fail(Errno.ENOENT, $"notifier is not registered on IOMMU group {Id}");
        }
    }

    /// <summary>Runs the notifier chain (<c>blocking_notifier_call_chain</c> on the group), for example for driver bind events.</summary>
    /// <param name="action">The event.</param>
    /// <param name="device">The device concerned.</param>
    /// <remarks>5.15 has no function of its own for this: <c>iommu_bus_notifier</c> republishes the bus's driver
    /// bind events to the group's chain, and this is that step.</remarks>
    [KernelSymbol("iommu_bus_notifier")]
    public void Notify(IommuGroupNotification action, Device device)
    {
        using PhysicalMemory.AccessScope guard = Core.Platform.Memory.EnterAccess();
        IommuGroupNotifier[] chain;
        lock (_notifiers)
        {
            chain = [.. _notifiers];
        }

        foreach (IommuGroupNotifier n in chain)
        {
            n(action, device);
        }
    }

    /// <inheritdoc/>
    public override string ToString() => $"iommu_group {Id}";

    internal void Release()
    {
        IsReleased = true;
        _iommuDataRelease?.Invoke(IommuData);
        _iommuDataRelease = null;
        IommuData = null;
    }
}
