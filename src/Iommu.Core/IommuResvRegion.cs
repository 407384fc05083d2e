namespace Iommu;

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
