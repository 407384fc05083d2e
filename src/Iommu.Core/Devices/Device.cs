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
        : this(name, hasDmaMask: true)
    {
    }

    /// <summary>Creates a device that is on no bus yet, with or without a DMA mask.</summary>
    /// <param name="name">The device name (<c>dev_name</c>).</param>
    /// <param name="hasDmaMask">
    /// Whether the device's bus gives it a DMA mask (<c>dev->dma_mask</c> set): true for PCI and platform
    /// devices; false for a device no DMA API call may serve, such as an mdev (the kernel WARNs and fails
    /// those calls).
    /// </param>
    protected Device(string name, bool hasDmaMask)
    {
        ArgumentException.ThrowIfNullOrEmpty(name);
        Name = name;
        HasDmaMask = hasDmaMask;
        CoherentDmaMaskValue = hasDmaMask ? ulong.MaxValue : 0; // an mdev's struct device is zeroed
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

    /// <summary>
    /// The DMA mask (<c>*dev->dma_mask</c>): the highest DMA address the device can drive for streaming
    /// mappings (<see cref="IommuCore.DmaMapPage"/>, <see cref="IommuCore.DmaMapSg"/>); null for a device that
    /// has none (an mdev). Starts at 64 bits; set it with <see cref="IommuCore.DmaSetMask"/>.
    /// </summary>
    /// <remarks>
    /// Where we differ from the kernel: PCI's probe starts every function at 32 bits
    /// (<c>pci_setup_device</c>) and nearly every driver raises it to 64 with <c>dma_set_mask_and_coherent</c>
    /// before its first mapping; the model starts at 64 bits, the state those drivers leave.
    /// </remarks>
    [KernelSymbol("device.dma_mask")]
    public ulong? DmaMask => HasDmaMask ? Volatile.Read(ref DmaMaskValue) : null;

    /// <summary>
    /// The coherent DMA mask (<c>dev->coherent_dma_mask</c>): the highest DMA address of a coherent buffer
    /// (<see cref="IommuCore.DmaAllocCoherent"/>). Starts at 64 bits (see <see cref="DmaMask"/>); set it with
    /// <see cref="IommuCore.DmaSetCoherentMask"/>.
    /// </summary>
    [KernelSymbol("device.coherent_dma_mask")]
    public ulong CoherentDmaMask => Volatile.Read(ref CoherentDmaMaskValue);

    // dev->dma_mask is not NULL, and *dev->dma_mask.
    internal readonly bool HasDmaMask;

    internal ulong DmaMaskValue = ulong.MaxValue;

    internal ulong CoherentDmaMaskValue;

    // dev->dma_parms (PCI devices have them, set by pci_setup_device): max_segment_size and segment_boundary_mask.
    internal bool HasDmaParms;

    internal uint MaxSegmentSize = 65536;

    internal ulong SegmentBoundaryMask = ulong.MaxValue;

    internal DeviceFaultParam? FaultParam { get; set; }

    // The DMA-API domains this device made mappings in (dma_map_page, dma_map_sg, dma_alloc_coherent), so that an
    // unmap still reaches the domain its map was made in after the device left that domain's group. Copy-on-write
    // under DmaMapDomainsLock, read without it; a freed domain is dropped when the next one is added.
    internal Domains.IDomain[] DmaMapDomains = [];

    internal Lock DmaMapDomainsLock { get; } = new();

    // dev->iommu->lock: orders registering and unregistering the fault handler with reports to it.
    internal Lock IommuParamLock { get; } = new();

    /// <inheritdoc/>
    public override string ToString() => Name;
}
