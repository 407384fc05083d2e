namespace Iommu;

/// <summary>The seed's (v4, 2018) per-device attributes (<c>enum iommu_dev_attr</c>).</summary>
/// <remarks>
/// Seed only: merged kernels (5.1–5.15) express the same through
/// <c>iommu_dev_has_feature</c>/<c>iommu_dev_enable_feature</c>/… with <see cref="IommuDevFeature.Aux"/>;
/// <see cref="IommuCore"/> offers both forms over the same driver callbacks.
/// </remarks>
[KernelSymbol("enum iommu_dev_attr", Version = "seed v4")]
public enum IommuDevAttr
{
    /// <summary>GET: device and IOMMU can carry several (auxiliary) domains at once (<c>IOMMU_DEV_ATTR_AUXD_CAPABILITY</c>).</summary>
    AuxdCapability = 0,

    /// <summary>GET: the device is in auxiliary-domain mode (<c>IOMMU_DEV_ATTR_AUXD_ENABLED</c>).</summary>
    AuxdEnabled = 1,

    /// <summary>SET: switch the device to auxiliary-domain mode (<c>IOMMU_DEV_ATTR_AUXD_ENABLE</c>).</summary>
    AuxdEnable = 2,

    /// <summary>SET: switch the device back (<c>IOMMU_DEV_ATTR_AUXD_DISABLE</c>).</summary>
    AuxdDisable = 3,
}

/// <summary>Per-device features of the merged API (<c>enum iommu_dev_features</c>).</summary>
[KernelSymbol("enum iommu_dev_features")]
public enum IommuDevFeature
{
    /// <summary>Auxiliary domains (<c>IOMMU_DEV_FEAT_AUX</c>).</summary>
    Aux = 0,

    /// <summary>Shared virtual addressing (<c>IOMMU_DEV_FEAT_SVA</c>); not modelled.</summary>
    Sva = 1,

    /// <summary>I/O page faults (<c>IOMMU_DEV_FEAT_IOPF</c>, 5.15); not modelled.</summary>
    Iopf = 2,
}

/// <summary>Domain attributes (<c>enum iommu_attr</c>, 5.10 order, plus the seed's <c>DOMAIN_ATTR_AUXD_ID</c>).</summary>
/// <remarks>The attribute API was removed between 5.10 and 5.15; it is kept here because the seed uses it.</remarks>
[KernelSymbol("enum iommu_attr", Version = "5.10")]
public enum DomainAttr
{
    /// <summary>The aperture (<c>DOMAIN_ATTR_GEOMETRY</c>).</summary>
    Geometry = 0,

    /// <summary>Whether the domain can page (<c>DOMAIN_ATTR_PAGING</c>).</summary>
    Paging = 1,

    /// <summary>PAMU windows (<c>DOMAIN_ATTR_WINDOWS</c>).</summary>
    Windows = 2,

    /// <summary>PAMU stash (<c>DOMAIN_ATTR_FSL_PAMU_STASH</c>).</summary>
    FslPamuStash = 3,

    /// <summary>PAMU enable (<c>DOMAIN_ATTR_FSL_PAMU_ENABLE</c>).</summary>
    FslPamuEnable = 4,

    /// <summary>PAMU v1 (<c>DOMAIN_ATTR_FSL_PAMUV1</c>).</summary>
    FslPamuV1 = 5,

    /// <summary>Nested translation (<c>DOMAIN_ATTR_NESTING</c>).</summary>
    Nesting = 6,

    /// <summary>Flush queue (<c>DOMAIN_ATTR_DMA_USE_FLUSH_QUEUE</c>).</summary>
    DmaUseFlushQueue = 7,

    /// <summary>Seed: the ID (a PASID on VT-d) a device must tag its DMA with for this aux domain (<c>DOMAIN_ATTR_AUXD_ID</c>).</summary>
    AuxdId = 8,
}

/// <summary>Bus-wide IOMMU capabilities (<c>enum iommu_cap</c>).</summary>
[KernelSymbol("enum iommu_cap")]
public enum IommuCap
{
    /// <summary>The IOMMU can enforce cache-coherent DMA (<c>IOMMU_CAP_CACHE_COHERENCY</c>).</summary>
    CacheCoherency = 0,

    /// <summary>Interrupt remapping is enabled (<c>IOMMU_CAP_INTR_REMAP</c>).</summary>
    IntrRemap = 1,

    /// <summary>The IOMMU can forbid instruction fetch (<c>IOMMU_CAP_NOEXEC</c>).</summary>
    NoExec = 2,
}

/// <summary>Kinds of reserved IOVA regions (<c>enum iommu_resv_type</c>).</summary>
[KernelSymbol("enum iommu_resv_type")]
public enum IommuResvType
{
    /// <summary>Must be identity-mapped (e.g. an RMRR) (<c>IOMMU_RESV_DIRECT</c>).</summary>
    Direct = 0,

    /// <summary>Identity-mapped, but may be relaxed for device assignment (<c>IOMMU_RESV_DIRECT_RELAXABLE</c>).</summary>
    DirectRelaxable = 1,

    /// <summary>Must not be mapped (<c>IOMMU_RESV_RESERVED</c>).</summary>
    Reserved = 2,

    /// <summary>Hardware MSI window (<c>IOMMU_RESV_MSI</c>).</summary>
    Msi = 3,

    /// <summary>Software-managed MSI window (<c>IOMMU_RESV_SW_MSI</c>).</summary>
    SwMsi = 4,
}

/// <summary>A reserved IOVA region (<c>struct iommu_resv_region</c>).</summary>
/// <param name="Start">First IOVA.</param>
/// <param name="Length">Bytes.</param>
/// <param name="Prot">Protection for direct mappings.</param>
/// <param name="Type">Region kind.</param>
[KernelSymbol("struct iommu_resv_region")]
public readonly record struct IommuResvRegion(ulong Start, ulong Length, Domains.IommuProt Prot, IommuResvType Type)
{
    /// <summary>Last IOVA of the region (inclusive).</summary>
    public ulong End => Start + Length - 1;
}

/// <summary>Events on an IOMMU group's notifier chain (<c>IOMMU_GROUP_NOTIFY_*</c>).</summary>
[KernelSymbol("IOMMU_GROUP_NOTIFY_ADD_DEVICE")]
public enum IommuGroupNotification
{
    /// <summary>A device was added (<c>IOMMU_GROUP_NOTIFY_ADD_DEVICE</c>).</summary>
    AddDevice = 1,

    /// <summary>A device is about to be removed (<c>IOMMU_GROUP_NOTIFY_DEL_DEVICE</c>).</summary>
    DelDevice = 2,

    /// <summary>A driver is about to bind (<c>IOMMU_GROUP_NOTIFY_BIND_DRIVER</c>).</summary>
    BindDriver = 3,

    /// <summary>A driver was bound (<c>IOMMU_GROUP_NOTIFY_BOUND_DRIVER</c>).</summary>
    BoundDriver = 4,

    /// <summary>A driver is about to unbind (<c>IOMMU_GROUP_NOTIFY_UNBIND_DRIVER</c>).</summary>
    UnbindDriver = 5,

    /// <summary>A driver was unbound (<c>IOMMU_GROUP_NOTIFY_UNBOUND_DRIVER</c>).</summary>
    UnboundDriver = 6,
}
