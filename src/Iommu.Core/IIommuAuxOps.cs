using Iommu.Devices;
using Iommu.Domains;

namespace Iommu;

/// <summary>
/// The optional auxiliary-domain callbacks of <see cref="IIommuOps"/> (<c>aux_attach_dev</c>,
/// <c>aux_detach_dev</c>, <c>aux_get_pasid</c>; 5.1 to 5.15): without them an aux attach and
/// <c>iommu_aux_get_pasid</c> are -ENODEV and an aux detach calls nothing.
/// </summary>
/// <remarks>5.15 SVA's <c>sva_bind</c>/<c>sva_unbind</c>/<c>sva_get_pasid</c> will be a separate
/// optional interface beside this one, not members of it.</remarks>
public interface IIommuAuxOps
{
    /// <summary>Attaches <paramref name="domain"/> to <paramref name="device"/> in auxiliary (PASID) mode (<c>aux_attach_dev</c>).</summary>
    /// <param name="domain">The domain.</param>
    /// <param name="device">The physical device.</param>
    /// <returns>0 or an errno.</returns>
    [KernelSymbol("iommu_ops.aux_attach_dev")]
    Errno AuxAttachDev(IDomain domain, Device device);

    /// <summary>Detaches an auxiliary domain (<c>aux_detach_dev</c>).</summary>
    /// <param name="domain">The domain.</param>
    /// <param name="device">The physical device.</param>
    [KernelSymbol("iommu_ops.aux_detach_dev")]
    void AuxDetachDev(IDomain domain, Device device);

    /// <summary>The PASID <paramref name="domain"/> uses on <paramref name="device"/>, or a negative errno (<c>aux_get_pasid</c>).</summary>
    /// <param name="domain">The domain.</param>
    /// <param name="device">The physical device.</param>
    /// <returns>PASID (&gt; 0) or -errno.</returns>
    [KernelSymbol("iommu_ops.aux_get_pasid")]
    int AuxGetPasid(IDomain domain, Device device);
}
