namespace SiovAccel;

/// <summary>How the accelerator gets each ADI's PASID and its translation.</summary>
public enum SiovAccelMode
{
    /// <summary>
    /// The 2018 design (5.1–5.15): AUX is enabled on the parent, the mdev names the parent as its IOMMU
    /// device, VFIO aux-attaches its domain and the driver asks that domain's PASID
    /// (<c>iommu_aux_get_pasid</c>).
    /// </summary>
    Aux,

    /// <summary>
    /// The 6.2+ way, as idxd does for its kernel PASID (≈6.5): the parent allocates each ADI's PASID
    /// (<c>iommu_alloc_global_pasid</c>) and attaches the mdev's domain to it on the parent
    /// (<c>iommu_attach_device_pasid</c>); no AUX feature, no IOMMU device on the mdev.
    /// </summary>
    PasidAttach,
}
