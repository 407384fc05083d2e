namespace Vfio.Type1;

/// <summary>
/// Module parameters of <c>vfio_iommu_type1</c> and the platform facts type1 asks about, one set per
/// <see cref="VfioCore"/> (no global state).
/// </summary>
/// <remarks>Thread safety: <see cref="DmaEntryLimit"/> may be changed at any time (it is read once per container, at SET_IOMMU); the other settings are read at attach/map time.</remarks>
public sealed class VfioType1Options
{
    private volatile uint _dmaEntryLimit = 65535;

    /// <summary><c>dma_entry_limit</c> (default 65535): mapping slots per container, sampled at SET_IOMMU.</summary>
    [Iommu.KernelSymbol("dma_entry_limit")]
    public uint DmaEntryLimit { get => _dmaEntryLimit; set => _dmaEntryLimit = value; }

    /// <summary><c>allow_unsafe_interrupts</c> (default false): attach even without MSI isolation.</summary>
    /// <remarks>
    /// Not needed where the IOMMU remaps interrupts (<c>iommu_capable(IOMMU_CAP_INTR_REMAP)</c>: a VT-d unit
    /// with ECAP.IR, as <c>VtdConfig.ScalableMode48Bit</c> and <c>VtdConfig.Legacy48Bit</c> have) or when
    /// <see cref="MsiRemap"/> is set. Without either, attaching a group to a container fails with -EPERM
    /// unless this is true, as on a host without interrupt remapping.
    /// </remarks>
    [Iommu.KernelSymbol("allow_unsafe_interrupts")]
    public bool AllowUnsafeInterrupts { get; set; }

    /// <summary><c>disable_hugepages</c> (default false): pin and map one page at a time.</summary>
    [Iommu.KernelSymbol("disable_hugepages")]
    public bool DisableHugepages { get; set; }

    /// <summary>Whether the platform's MSI controller isolates interrupts (<c>irq_domain_check_msi_remap()</c>); default false.</summary>
    [Iommu.KernelSymbol("irq_domain_check_msi_remap")]
    public bool MsiRemap { get; set; }
}
