using Iommu.Memory;
using Iommu.Internal;

namespace Iommu.Devices;

/// <summary>
/// A bus (<c>struct bus_type</c>) with its devices and, once an IOMMU driver registers, its
/// <c>iommu_ops</c>.
/// </summary>
/// <remarks>
/// Thread safety: adding and removing devices and setting the ops are serialised by a per-bus lock;
/// enumerating <see cref="Devices"/> returns a snapshot.
/// </remarks>
[KernelSymbol("struct bus_type")]
public class Bus
{
    private readonly List<Device> _devices = [];

    /// <summary>Creates a bus on <paramref name="platform"/>; use <see cref="Iommu.Platform.AddBus(string)"/>.</summary>
    /// <param name="platform">The owning platform.</param>
    /// <param name="name">Bus name, e.g. <c>pci</c> or <c>mdev</c>.</param>
    protected internal Bus(Platform platform, string name)
    {
        ArgumentNullException.ThrowIfNull(platform);
        ArgumentException.ThrowIfNullOrEmpty(name);
        Platform = platform;
        Name = name;
    }

    /// <summary>The platform the bus belongs to.</summary>
    public Platform Platform { get; }

    /// <summary>Bus name.</summary>
    public string Name { get; }

    /// <summary>The IOMMU driver's ops for this bus (<c>bus->iommu_ops</c>), or null.</summary>
    [KernelSymbol("bus_type.iommu_ops")]
    public IIommuOps? IommuOps { get; private set; }

    /// <summary>Serialises bus membership and ops changes.</summary>
    protected Lock SyncRoot { get; } = new();

    /// <summary>A snapshot of the devices on the bus, in the order they were added.</summary>
    public IReadOnlyList<Device> Devices
    {
        get
        {
            lock (SyncRoot)
            {
                return [.. _devices];
            }
        }
    }

    /// <summary>
    /// Registers the IOMMU driver for this bus and probes every device already on it
    /// (<c>bus_set_iommu</c>); devices added later are probed as they arrive. Null unregisters.
    /// </summary>
    /// <param name="ops">The driver, or null to clear.</param>
    /// <returns>
    /// -EBUSY when the bus already has ops; a probe error other than -ENODEV, in which case every
    /// device probed so far is released again and the bus is left without ops, as the kernel does.
    /// </returns>
    [KernelSymbol("bus_set_iommu")]
    public Errno SetIommuOps(IIommuOps? ops)
    {
        using PhysicalMemory.AccessScope guard = Platform.Memory.EnterAccess();
        lock (SyncRoot)
        {
            if (ops is null)
            {
                IommuOps = null;
                return Errno.None;
            }

            if (IommuOps is not null)
            {
                return ErrorDetail.Fail(Errno.EBUSY, $"bus '{Name}' already has IOMMU ops");
            }

            IommuOps = ops;
            Errno err = Platform.Iommu.BusInit(this, [.. _devices]);
            if (err != Errno.None)
            {
                IommuOps = null;
            }

            return err;
        }
    }

    /// <summary>
    /// Adds <paramref name="device"/> to the bus (<c>device_add</c>). When the bus has IOMMU ops the
    /// device is probed (<c>iommu_probe_device</c>); as with the kernel's bus notifier, a probe
    /// failure does not fail the add (the device is then simply left without a group).
    /// </summary>
    /// <param name="device">A device on no bus.</param>
    /// <returns>The probe result, for callers that want it (<see cref="Errno.None"/> without IOMMU ops).</returns>
    [KernelSymbol("device_add")]
    public Errno AddDevice(Device device)
    {
        using PhysicalMemory.AccessScope guard = Platform.Memory.EnterAccess();
        ArgumentNullException.ThrowIfNull(device);
        lock (SyncRoot)
        {
            if (device.Bus is not null)
            {
                ThrowHelper.DeviceAlreadyOnBus(device);
            }

            OnAdding(device);
            device.Bus = this;
            _devices.Add(device);
            return IommuOps is null ? Errno.None : Platform.Iommu.ProbeDevice(device);
        }
    }

    /// <summary>Removes <paramref name="device"/> from the bus (<c>device_del</c>), releasing it from its IOMMU group first.</summary>
    /// <param name="device">A device on this bus.</param>
    [KernelSymbol("device_del")]
    public void RemoveDevice(Device device)
    {
        using PhysicalMemory.AccessScope guard = Platform.Memory.EnterAccess();
        ArgumentNullException.ThrowIfNull(device);
        lock (SyncRoot)
        {
            if (device.Bus != this)
            {
                ThrowHelper.DeviceNotOnBus(device, Name);
            }

            Platform.Iommu.ReleaseDevice(device);
            _devices.Remove(device);
            device.Bus = null;
        }
    }

    /// <summary>Lets a derived bus validate a device before it is linked (called under the bus lock).</summary>
    /// <param name="device">The device being added.</param>
    protected virtual void OnAdding(Device device)
    {
    }
}
