namespace Iommu.Faults;

/// <summary>Per-device fault handler (<c>iommu_dev_fault_handler_t</c>).</summary>
/// <param name="fault">The fault.</param>
/// <param name="data">The data given at registration.</param>
/// <returns><see cref="Errno.None"/> when handled, else an errno.</returns>
[KernelSymbol("iommu_dev_fault_handler_t")]
public delegate Errno IommuDeviceFaultHandler(IommuFault fault, object? data);
