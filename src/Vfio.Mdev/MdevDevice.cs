using Iommu.Memory;
using Iommu;
using Iommu.Devices;
using Iommu.Domains;
using Vfio.Mdev.Internal;

namespace Vfio.Mdev;

/// <summary>
/// A mediated device (<c>struct mdev_device</c>): named by its lowercase UUID, a child of its parent,
/// on the platform's <c>mdev</c> bus, alone in a fresh IOMMU group that no IOMMU driver stands behind.
/// </summary>
/// <remarks>
/// <para>Created by <see cref="MdevCore.Create(MdevType, Guid, out MdevDevice?)"/>, removed by
/// <see cref="MdevCore.Remove(MdevDevice)"/> or by unregistering the parent.</para>
/// <para>Thread safety: the IOMMU hooks and drvdata are plain stores (the kernel takes no lock either);
/// set them from <c>create</c> or under the caller's own serialisation. Opening and closing device
/// files is serialised per device.</para>
/// </remarks>
[KernelSymbol("struct mdev_device")]
public sealed class MdevDevice : Device, IMdevDevice
{
    private readonly object _openGate = new();
    private object? _drvdata;
    private Device? _iommuDevice;
    private IDomain? _iommuDomain;
    private int _openCount;

    internal MdevDevice(MdevCore core, MdevType type, Guid uuid)
        : base(uuid.ToString("D"), hasDmaMask: false) // mdev_device_create gives the mdev's struct device no dma_mask
    {
        Core = core;
        Type = type;
        Uuid = uuid;
    }

    /// <summary>The mdev core this device belongs to.</summary>
    public MdevCore Core { get; }

    /// <summary>The UUID (<c>mdev_uuid</c>).</summary>
    [KernelSymbol("mdev_uuid")]
    public Guid Uuid { get; }

    /// <summary>The type (the <c>mdev_type</c> link in sysfs).</summary>
    public MdevType Type { get; }

    /// <summary>The parent.</summary>
    public MdevParent Parent => Type.Parent;

    /// <summary>The physical parent device (<c>mdev_parent_dev</c>).</summary>
    [KernelSymbol("mdev_parent_dev")]
    public Device ParentDevice => Type.Parent.Device;

    /// <summary>The type's index in the parent's groups (<c>mdev_get_type_group_id</c>).</summary>
    [KernelSymbol("mdev_get_type_group_id")]
    public int TypeGroupId => Type.TypeGroupId;

    /// <summary>Whether the device is live (<c>mdev->active</c>): true once creation completed, false as soon as a removal starts.</summary>
    public bool Active { get; internal set; }

    /// <summary>Number of open device files.</summary>
    public int OpenCount
    {
        get
        {
            lock (_openGate)
            {
                return _openCount;
            }
        }
    }

    Device IMdevDevice.Device => this;

    /// <summary>The device itself (<c>mdev_dev</c>), for symmetry with the kernel helper.</summary>
    /// <returns>This device.</returns>
    [KernelSymbol("mdev_dev")]
    public Device GetDevice() => this;

    /// <summary>The mdev behind <paramref name="device"/>, or null when it is not a mediated device (<c>mdev_from_dev</c>).</summary>
    /// <param name="device">Any device, or null.</param>
    /// <returns>The mdev or null.</returns>
    [KernelSymbol("mdev_from_dev")]
    public static MdevDevice? FromDevice(Device? device) => device as MdevDevice;

    /// <summary>The vendor's private data (<c>mdev_get_drvdata</c>).</summary>
    /// <returns>The data or null.</returns>
    [KernelSymbol("mdev_get_drvdata")]
    public object? GetDrvdata() => Volatile.Read(ref _drvdata);

    /// <summary>Stores the vendor's private data (<c>mdev_set_drvdata</c>).</summary>
    /// <param name="data">The data.</param>
    [KernelSymbol("mdev_set_drvdata")]
    public void SetDrvdata(object? data) => Volatile.Write(ref _drvdata, data);

    /// <summary>Records the physical device that represents this mdev in IOMMU scope (<c>mdev_set_iommu_device</c>); null means vendor-defined isolation.</summary>
    /// <param name="iommuDevice">The physical device, or null.</param>
    /// <remarks>5.15 form (void, 5.13+). 5.1–5.12 took a <c>struct device *</c> for the mdev and always returned 0.</remarks>
    [KernelSymbol("mdev_set_iommu_device")]
    public void SetIommuDevice(Device? iommuDevice) => Volatile.Write(ref _iommuDevice, iommuDevice);

    /// <summary>The physical device recorded by <c>mdev_set_iommu_device</c>, or null (<c>mdev_get_iommu_device</c>).</summary>
    /// <returns>The device or null.</returns>
    [KernelSymbol("mdev_get_iommu_device")]
    public Device? GetIommuDevice() => Volatile.Read(ref _iommuDevice);

    /// <summary>Stores the domain attached to the mdev's IOMMU device on its behalf (the seed's <c>mdev_set_iommu_domain</c>): no checks, no reference.</summary>
    /// <param name="domain">The domain or null.</param>
    /// <remarks>Seed v4 (2018; re-posted 2020), never merged.</remarks>
    [KernelSymbol("mdev_set_iommu_domain", Version = "seed v4")]
    public void SetIommuDomain(IDomain? domain) => Volatile.Write(ref _iommuDomain, domain);

    /// <summary>The domain stored by <c>mdev_set_iommu_domain</c>, or null (the seed's <c>mdev_get_iommu_domain</c>).</summary>
    /// <returns>The domain or null.</returns>
    [KernelSymbol("mdev_get_iommu_domain", Version = "seed v4")]
    public IDomain? GetIommuDomain() => Volatile.Read(ref _iommuDomain);

    /// <summary>
    /// Opens a device file (what <c>VFIO_GROUP_GET_DEVICE_FD</c> hands out): the first open calls the
    /// vendor's <c>open_device</c> (<c>vfio_mdev_open_device</c>); a missing callback succeeds.
    /// </summary>
    /// <param name="file">The file, or null on error.</param>
    /// <returns>0; -ENODEV for a device that is not (or no longer) active; the vendor's error.</returns>
    /// <remarks>5.15: <c>open_device</c> only for the first open file. 5.10 called <c>open</c> on every open and failed with -EINVAL when it was missing.</remarks>
    [KernelSymbol("vfio_mdev_open_device")]
    public Errno Open(out MdevDeviceFile? file)
    {
        using PhysicalMemory.AccessScope guard = Core.Platform.Memory.EnterAccess();
        file = null;
        lock (_openGate)
        {
            if (!Active)
            {
                return ErrorDetail.Fail(Errno.ENODEV, $"mdev {Name} is not active");
            }

            if (_openCount == 0 && Parent.Ops is IMdevOpenDeviceOps openOps)
            {
                ErrorDetail.Clear();
                Errno ret = openOps.OpenDevice(this);
                if (ret != Errno.None)
                {
                    return VendorErrors.KeepOrFail(ret, $"vendor driver {Parent.Ops.DriverName} refused to open {Name}");
                }
            }

            _openCount++;
            file = new MdevDeviceFile(this);
            return Errno.None;
        }
    }

    internal void Close()
    {
        lock (_openGate)
        {
            if (--_openCount == 0)
            {
                if (Parent.Ops is IMdevOpenDeviceOps openOps)
                {
                    openOps.CloseDevice(this);
                }

                Monitor.PulseAll(_openGate);
            }
        }
    }

    /// <summary>vfio_unregister_group_dev: wait until every file is closed, asking the vendor (<c>request</c>) meanwhile.</summary>
    internal void WaitForFilesClosed(Microsoft.Extensions.Logging.ILogger log)
    {
        lock (_openGate)
        {
            uint count = 0;
            while (_openCount > 0)
            {
                if (Parent.Ops is IMdevRequestOps requestOps)
                {
                    // The vendor may close a file from inside request: release the gate meanwhile.
                    Monitor.Exit(_openGate);
                    try
                    {
                        requestOps.Request(this, count++);
                    }
                    finally
                    {
                        Monitor.Enter(_openGate);
                    }
                }
                else if (count++ == 0)
                {
                    Internal.Log.NoRequestCallback(log, Name);
                }

                if (_openCount > 0)
                {
                    Monitor.Wait(_openGate, TimeSpan.FromSeconds(10));
                }
            }
        }
    }
}
