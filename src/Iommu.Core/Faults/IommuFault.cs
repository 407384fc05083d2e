namespace Iommu.Faults;

/// <summary>Kind of a per-device fault (<c>enum iommu_fault_type</c>).</summary>
public enum IommuFaultType
{
    /// <summary>Unrecoverable DMA fault (<c>IOMMU_FAULT_DMA_UNRECOV</c> = 1).</summary>
    DmaUnrecoverable = 1,

    /// <summary>Recoverable page request (<c>IOMMU_FAULT_PAGE_REQ</c> = 2).</summary>
    PageRequest = 2,
}

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

/// <summary>A per-device fault (<c>struct iommu_fault</c>, with the page-request and unrecoverable parts flattened).</summary>
[KernelSymbol("struct iommu_fault")]
public sealed record IommuFault
{
    /// <summary>Fault kind.</summary>
    public IommuFaultType Type { get; init; }

    /// <summary>Page-request flags (page requests only).</summary>
    public PageRequestFlags Flags { get; init; }

    /// <summary>Unrecoverable fault reason (driver-specific, e.g. a VT-d fault reason).</summary>
    public uint Reason { get; init; }

    /// <summary>PASID of the request.</summary>
    public uint Pasid { get; init; }

    /// <summary>Page request group index.</summary>
    public uint GroupId { get; init; }

    /// <summary>Requested permissions.</summary>
    public uint Perm { get; init; }

    /// <summary>Faulting address.</summary>
    public ulong Address { get; init; }
}

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

/// <summary>Per-device fault state (<c>struct iommu_fault_param</c>).</summary>
internal sealed class DeviceFaultParam
{
    public DeviceFaultParam(IommuDeviceFaultHandler handler, object? data)
    {
        Handler = handler;
        Data = data;
    }

    public IommuDeviceFaultHandler Handler { get; }

    public object? Data { get; }

    public List<IommuFault> Pending { get; } = [];

    public Lock Lock { get; } = new();
}
