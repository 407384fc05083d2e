namespace Iommu.Faults;

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
