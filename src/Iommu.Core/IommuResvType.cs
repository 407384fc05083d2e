namespace Iommu;

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
