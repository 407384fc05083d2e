namespace Iommu.Domains;

/// <summary>The IOVA window of a domain (<c>struct iommu_domain_geometry</c>).</summary>
/// <param name="ApertureStart">First IOVA that can be mapped.</param>
/// <param name="ApertureEnd">Last IOVA that can be mapped (inclusive).</param>
/// <param name="ForceAperture">DMA outside the aperture is impossible.</param>
[KernelSymbol("struct iommu_domain_geometry")]
public readonly record struct IommuDomainGeometry(ulong ApertureStart, ulong ApertureEnd, bool ForceAperture);
