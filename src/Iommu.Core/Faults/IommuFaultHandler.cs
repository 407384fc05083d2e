using Iommu.Devices;
using Iommu.Domains;

namespace Iommu.Faults;

/// <summary>
/// Legacy per-domain fault callback (<c>iommu_fault_handler_t</c>). Returns 0 when the fault was
/// handled, or a negative errno (typically -ENOSYS) to let the driver fall back to its default.
/// </summary>
/// <param name="domain">The domain the faulting DMA went through.</param>
/// <param name="device">The device that issued it.</param>
/// <param name="iova">The faulting IOVA.</param>
/// <param name="access">Read or write (<c>IOMMU_FAULT_READ</c>/<c>IOMMU_FAULT_WRITE</c>).</param>
/// <param name="token">The token given to <c>iommu_set_fault_handler</c>.</param>
/// <returns>0 or a negative errno.</returns>
[KernelSymbol("iommu_fault_handler_t")]
public delegate int IommuFaultHandler(IDomain domain, Device device, ulong iova, IommuFaultAccess access, object? token);
