namespace Iommu.VtD.Driver;

/// <summary>Which domains the driver gives first-level (IA-32e) page tables instead of second-level ones (<see cref="IntelIommuOptions.FirstLevel"/>).</summary>
/// <remarks>
/// First level needs every unit in scalable mode; a first-level domain's aperture ends at
/// <c>2^(gaw−1) − 1</c>, it gets 1 GiB pages only when every unit has CAP.FL1GP, and its IOTLB is
/// flushed with PASID-based invalidations (<c>domain_flush_piotlb</c>). Units without ECAP.FLTS (every preset
/// before first-level support) give second-level domains under both rules.
/// </remarks>
public enum FirstLevelPolicy
{
    /// <summary>
    /// 6.1+ <c>first_level_by_default(type)</c>: legacy mode → second level; ECAP.FLTS on every unit xor
    /// ECAP.SLTS on every unit → the one present; both → first level for DMA and DMA_FQ domains, second
    /// level for UNMANAGED (VFIO/KVM) domains.
    /// </summary>
    [KernelSymbol("first_level_by_default", Version = "6.1")]
    FirstLevelByDefault,

    /// <summary>
    /// 5.15 <c>alloc_domain</c>: every domain (DMA, DMA_FQ and UNMANAGED) is first level iff every unit is
    /// in scalable mode with ECAP.FLTS (<c>intel_cap_flts_sanity</c>).
    /// </summary>
    [KernelSymbol("intel_cap_flts_sanity")]
    AllWhenEveryUnitHasFlts,
}
