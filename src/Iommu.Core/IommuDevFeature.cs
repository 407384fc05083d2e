namespace Iommu;

/// <summary>Per-device features of the merged API (<c>enum iommu_dev_features</c>).</summary>
[KernelSymbol("enum iommu_dev_features")]
public enum IommuDevFeature
{
    /// <summary>Auxiliary domains (<c>IOMMU_DEV_FEAT_AUX</c>).</summary>
    Aux = 0,

    /// <summary>Shared virtual addressing (<c>IOMMU_DEV_FEAT_SVA</c>); 5.15 value. Enable it after <see cref="Iopf"/>.</summary>
    Sva = 1,

    /// <summary>I/O page faults (<c>IOMMU_DEV_FEAT_IOPF</c>, 5.15 value); enabled before and disabled after <see cref="Sva"/>.</summary>
    Iopf = 2,
}
