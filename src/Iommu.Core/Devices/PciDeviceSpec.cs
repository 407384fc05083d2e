namespace Iommu.Devices;

/// <summary>What a PCI function looks like to the IOMMU stack: its address and the capabilities that matter.</summary>
/// <remarks>Pass to <see cref="PciBus.AddDevice(PciDeviceSpec)"/>.</remarks>
public sealed record PciDeviceSpec
{
    /// <summary>Describes the function at <paramref name="address"/> (<c>SSSS:BB:DD.F</c>).</summary>
    /// <param name="address">PCI address text.</param>
    public PciDeviceSpec(string address)
        : this(PciAddress.Parse(address, System.Globalization.CultureInfo.InvariantCulture))
    {
    }

    /// <summary>Describes the function at <paramref name="address"/>.</summary>
    /// <param name="address">PCI address.</param>
    public PciDeviceSpec(PciAddress address)
    {
        Address = address;
    }

    /// <summary>The PCI address.</summary>
    public PciAddress Address { get; init; }

    /// <summary>PCI vendor ID (default Intel, 0x8086).</summary>
    public ushort VendorId { get; init; } = 0x8086;

    /// <summary>PCI device ID.</summary>
    public ushort DeviceId { get; init; }

    /// <summary>
    /// Class code (<c>pdev-&gt;class</c>): base class, sub-class and programming interface in 24 bits, say
    /// 0x0C0330 for an xHCI USB controller, 0x030000 for a VGA controller, 0x060100 for an ISA bridge.
    /// Default 0. The IOMMU stack reads it where 5.15 does: the RMRRs of USB and graphics devices are
    /// relaxable (<see cref="PciDevice.RmrrRelaxable"/>), and an ISA bridge gets the floppy workaround's
    /// direct region.
    /// </summary>
    public uint ClassCode { get; init; }

    /// <summary>
    /// Width in bits of the PASIDs the device supports (PASID capability, Max PASID Width); 0 means
    /// the device has no PASID capability. At most 20.
    /// </summary>
    public int PasidWidth { get; init; }

    /// <summary>Address Translation Services capability.</summary>
    public bool Ats { get; init; }

    /// <summary>Page Request Interface capability.</summary>
    public bool Pri { get; init; }

    /// <summary>
    /// Intel Scalable IOV DVSEC: a Designated Vendor-Specific Extended Capability (id 0x23) with
    /// vendor 0x8086 and DVSEC id 5, which marks a device that can carry several assignable interfaces.
    /// </summary>
    public bool ScalableIov { get; init; }

    /// <summary>The device is named in an RMRR (firmware-reserved DMA), so its domain cannot be changed by an API user.</summary>
    public bool RmrrLocked { get; init; }

    /// <summary>ACS isolation (source validation, request/completion redirect, upstream forwarding) is enabled on this function or port.</summary>
    public bool Acs { get; init; }

    /// <summary>The device is multifunction (header type bit 7). Functions of a multifunction device without ACS share a group.</summary>
    public bool Multifunction { get; init; }

    /// <summary>Other devfns on the same bus this function is known to use as DMA aliases (<c>pci_add_dma_alias</c> quirks).</summary>
    public IReadOnlyList<byte> DmaAliases { get; init; } = [];

    /// <summary>The bridge or root port above this device (must already be on the bus), or null for a device on a root bus.</summary>
    public PciAddress? Upstream { get; init; }

    /// <summary>This function is a bridge (PCIe port or PCI bridge) that other devices can sit behind.</summary>
    public bool IsBridge { get; init; }

    /// <summary>
    /// This function is a PCIe-to-PCI(-X) bridge: devices behind it reach the IOMMU with the
    /// requester ID the bridge gives what it forwards, (secondary bus, 00.0) (<see cref="PciDevice.DmaRequesterId"/>),
    /// so they alias each other and share one group.
    /// </summary>
    public bool IsPcieToPciBridge { get; init; }
}
