namespace Iommu.Faults;

/// <summary>Response code of a page response (<c>enum iommu_page_response_code</c>).</summary>
public enum IommuPageResponseCode
{
    /// <summary>Success.</summary>
    Success = 0,

    /// <summary>Invalid request.</summary>
    Invalid = 1,

    /// <summary>Failure.</summary>
    Failure = 2,
}
