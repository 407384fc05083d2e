namespace Iommu.Faults;

/// <summary>Flags of a page request (<c>IOMMU_FAULT_PAGE_REQUEST_*</c>).</summary>
[Flags]
[System.Diagnostics.CodeAnalysis.SuppressMessage("Naming", "CA1711", Justification = "Mirrors IOMMU_FAULT_PAGE_REQUEST_* flags.")]
public enum PageRequestFlags
{
    /// <summary>None.</summary>
    None = 0,

    /// <summary>The PASID field is valid.</summary>
    PasidValid = 1 << 0,

    /// <summary>Last page of the page request group: a response is expected.</summary>
    LastPage = 1 << 1,

    /// <summary>Private data is valid.</summary>
    PrivData = 1 << 2,

    /// <summary>The response must carry the PASID (<c>IOMMU_FAULT_PAGE_RESPONSE_NEEDS_PASID</c>).</summary>
    ResponseNeedsPasid = 1 << 3,
}
