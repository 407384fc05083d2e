namespace Iommu.Faults;

/// <summary>Answer to a page request (<c>struct iommu_page_response</c>).</summary>
[KernelSymbol("struct iommu_page_response")]
public sealed record IommuPageResponse
{
    /// <summary>The only version defined (<c>IOMMU_PAGE_RESP_VERSION_1</c>).</summary>
    public const uint Version1 = 1;

    /// <summary>Flag: <see cref="Pasid"/> is valid (<c>IOMMU_PAGE_RESP_PASID_VALID</c>).</summary>
    public const uint FlagPasidValid = 1;

    /// <summary>Structure version.</summary>
    public uint Version { get; init; } = Version1;

    /// <summary>Flags.</summary>
    public uint Flags { get; init; }

    /// <summary>PASID.</summary>
    public uint Pasid { get; init; }

    /// <summary>Page request group index.</summary>
    public uint GroupId { get; init; }

    /// <summary>Response code.</summary>
    public IommuPageResponseCode Code { get; init; }
}
