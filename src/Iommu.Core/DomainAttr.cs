namespace Iommu;

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
