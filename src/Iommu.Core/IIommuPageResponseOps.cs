using Iommu.Devices;
using Iommu.Faults;

namespace Iommu;

/// <summary>The optional <c>page_response</c> callback of <see cref="IIommuOps"/>: without it the core answers a page response with -ENODEV.</summary>
public interface IIommuPageResponseOps
{
    /// <summary>Answers a page request (<c>page_response</c>).</summary>
    /// <param name="device">The device.</param>
    /// <param name="fault">The pending request being answered.</param>
    /// <param name="response">The answer.</param>
    /// <returns>0 or an errno.</returns>
    [KernelSymbol("iommu_ops.page_response")]
    Errno PageResponse(Device device, IommuFault fault, IommuPageResponse response);
}
