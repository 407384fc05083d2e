using Iommu.Devices;
using Iommu.Domains;

namespace Iommu;

/// <summary>
/// The optional <c>attach_dev</c>/<c>detach_dev</c> callbacks of <see cref="IIommuOps"/>: a driver whose
/// ops lack them cannot attach (the core returns -ENODEV) and detaching calls nothing.
/// </summary>
public interface IIommuAttachOps
{
    /// <summary>Makes <paramref name="device"/>'s requester ID translate through <paramref name="domain"/> (<c>attach_dev</c>).</summary>
    /// <param name="domain">The domain.</param>
    /// <param name="device">The device.</param>
    /// <returns>0 or an errno.</returns>
    [KernelSymbol("iommu_ops.attach_dev")]
    Errno AttachDev(IDomain domain, Device device);

    /// <summary>Undoes <see cref="AttachDev"/>; cannot fail (<c>detach_dev</c>).</summary>
    /// <param name="domain">The domain.</param>
    /// <param name="device">The device.</param>
    [KernelSymbol("iommu_ops.detach_dev")]
    void DetachDev(IDomain domain, Device device);
}
