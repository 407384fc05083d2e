using Iommu.Faults;
using Iommu.Groups;

namespace Iommu.Devices;

/// <summary>
/// A device as the IOMMU core sees it (<c>struct device</c>): a name, the bus it sits on, its IOMMU
/// group and the per-device IOMMU data (<c>dev->iommu</c>).
/// </summary>
/// <remarks>
/// Thread safety: the IOMMU fields are written by <see cref="IommuCore"/> under the group lock;
/// reading them concurrently with a probe or a release is a race, as in the kernel.
/// </remarks>
[KernelSymbol("struct device")]
public class Device
{
    /// <summary>Creates a device that is on no bus yet; add it with <see cref="Bus.AddDevice(Device)"/>.</summary>
    /// <param name="name">The device name (<c>dev_name</c>).</param>
    public Device(string name)
    {
        ArgumentException.ThrowIfNullOrEmpty(name);
        Name = name;
    }

    /// <summary>The device name (<c>dev_name</c>), e.g. <c>0000:00:02.0</c> for a PCI function.</summary>
    [KernelSymbol("dev_name")]
    public string Name { get; }

    /// <summary>The bus the device sits on, or null before it is added.</summary>
    public Bus? Bus { get; internal set; }

    /// <summary>The platform of the device's bus, or null before it is added to a bus.</summary>
    public Platform? Platform => Bus?.Platform;

    /// <summary>The IOMMU group the device belongs to (<c>dev->iommu_group</c>), or null.</summary>
    [KernelSymbol("device.iommu_group")]
    public IommuGroup? IommuGroup { get; internal set; }

    /// <summary>
    /// Whether the device has per-device IOMMU data (<c>dev->iommu</c>): true from the start of an
    /// IOMMU probe until the device is released.
    /// </summary>
    [KernelSymbol("device.iommu")]
    public bool HasIommu { get; internal set; }

    /// <summary>
    /// The ops of the IOMMU driver that probed the device (<c>dev->iommu->iommu_dev->ops</c>), or
    /// null for a device no IOMMU driver handles. The 5.15 per-device feature calls dispatch here.
    /// </summary>
    public IIommuOps? IommuOps { get; internal set; }

    /// <summary>IOMMU-driver private data (<c>dev_iommu_priv_get</c>/<c>dev_iommu_priv_set</c>).</summary>
    [KernelSymbol("dev_iommu_priv_get")]
    [KernelSymbol("dev_iommu_priv_set")]
    public object? IommuPriv { get; set; }

    /// <summary>Driver data of the driver bound to the device (<c>dev_get_drvdata</c>/<c>dev_set_drvdata</c>).</summary>
    [KernelSymbol("dev_get_drvdata")]
    [KernelSymbol("dev_set_drvdata")]
    public object? DriverData { get; set; }

    internal DeviceFaultParam? FaultParam { get; set; }

    // dev->iommu->lock: orders registering and unregistering the fault handler with reports to it.
    internal Lock IommuParamLock { get; } = new();

    /// <inheritdoc/>
    public override string ToString() => Name;
}
