namespace Iommu.Faults;

/// <summary>Kind of a per-device fault (<c>enum iommu_fault_type</c>).</summary>
public enum IommuFaultType
{
    /// <summary>Unrecoverable DMA fault (<c>IOMMU_FAULT_DMA_UNRECOV</c> = 1).</summary>
    DmaUnrecoverable = 1,

    /// <summary>Recoverable page request (<c>IOMMU_FAULT_PAGE_REQ</c> = 2).</summary>
    PageRequest = 2,
}
