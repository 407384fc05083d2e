namespace Iommu.Faults;

/// <summary>Direction of a reported fault (<c>IOMMU_FAULT_READ</c>/<c>IOMMU_FAULT_WRITE</c>).</summary>
[System.Diagnostics.CodeAnalysis.SuppressMessage("Design", "CA1027", Justification = "Kernel values: READ = 0, WRITE = 1.")]
public enum IommuFaultAccess
{
    /// <summary>The faulting access was a read (<c>IOMMU_FAULT_READ</c> = 0).</summary>
    Read = 0,

    /// <summary>The faulting access was a write (<c>IOMMU_FAULT_WRITE</c> = 1).</summary>
    Write = 1,
}
