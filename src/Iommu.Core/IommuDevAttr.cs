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
