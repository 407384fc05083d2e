namespace Iommu.Core.Tests.Infrastructure;

/// <summary>Which optional-callback interfaces a <see cref="MockIommu"/>'s ops object implements.</summary>
[Flags]
public enum OptionalOps
{
    None = 0,

    /// <summary><see cref="IIommuAttachOps"/>.</summary>
    Attach = 1 << 0,

    /// <summary><see cref="IIommuMapOps"/> (one-page map/unmap).</summary>
    Map = 1 << 1,

    /// <summary><see cref="IIommuMapPagesOps"/> (map_pages/unmap_pages).</summary>
    MapPages = 1 << 2,

    /// <summary><see cref="IIommuIotlbOps"/>.</summary>
    Iotlb = 1 << 3,

    /// <summary><see cref="IIommuCapableOps"/>.</summary>
    Capable = 1 << 4,

    /// <summary><see cref="IIommuResvRegionsOps"/>.</summary>
    ResvRegions = 1 << 5,

    /// <summary><see cref="IIommuPageResponseOps"/>.</summary>
    PageResponse = 1 << 6,

    /// <summary><see cref="IIommuDomainAttrOps"/>.</summary>
    DomainAttr = 1 << 7,

    /// <summary><see cref="IIommuAuxOps"/>.</summary>
    Aux = 1 << 8,

    /// <summary><see cref="IIommuDevFeatureOps"/>.</summary>
    DevFeature = 1 << 9,

    /// <summary><see cref="IIommuPasidOps"/> (6.2 set_dev_pasid/remove_dev_pasid).</summary>
    Pasid = 1 << 10,

    All = (1 << 11) - 1,
}
