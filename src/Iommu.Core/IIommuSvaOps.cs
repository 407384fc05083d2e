using Iommu.Devices;
using Iommu.Mm;

namespace Iommu;

/// <summary>
/// The optional SVA callbacks of <see cref="IIommuOps"/> (5.15 <c>sva_bind</c>, <c>sva_unbind</c>,
/// <c>sva_get_pasid</c>) and the SVA/IOPF half of <c>dev_enable_feat</c>/<c>dev_disable_feat</c>.
/// Without them the core answers the SVA calls with its no-driver results.
/// </summary>
public interface IIommuSvaOps
{
    /// <summary>Enables <see cref="IommuDevFeature.Sva"/> or <see cref="IommuDevFeature.Iopf"/> (<c>dev_enable_feat</c>).</summary>
    /// <param name="device">The physical device.</param>
    /// <param name="feature">SVA or IOPF.</param>
    /// <returns>0 or an errno.</returns>
    [KernelSymbol("iommu_ops.dev_enable_feat")]
    Errno SvaEnableFeature(Device device, IommuDevFeature feature);

    /// <summary>Disables <see cref="IommuDevFeature.Sva"/> or <see cref="IommuDevFeature.Iopf"/> (<c>dev_disable_feat</c>).</summary>
    /// <param name="device">The physical device.</param>
    /// <param name="feature">SVA or IOPF.</param>
    /// <returns>0 or an errno.</returns>
    [KernelSymbol("iommu_ops.dev_disable_feat")]
    Errno SvaDisableFeature(Device device, IommuDevFeature feature);

    /// <summary>Binds <paramref name="mm"/> to <paramref name="device"/> with the mm's PASID (<c>sva_bind</c>).</summary>
    /// <param name="device">The physical device.</param>
    /// <param name="mm">The process.</param>
    /// <param name="pasid">The mm's PASID, allocated (and referenced for this bind) by the core.</param>
    /// <param name="drvdata">The caller's driver data (5.15: a pointer to SVM flags; no flag is modelled).</param>
    /// <param name="handle">The bind's handle; the same handle when the pair is already bound.</param>
    /// <returns>0 or an errno.</returns>
    [KernelSymbol("iommu_ops.sva_bind")]
    Errno SvaBind(Device device, ProcessAddressSpace mm, uint pasid, object? drvdata, out IommuSva? handle);

    /// <summary>Drops one bind of the handle (<c>sva_unbind</c>); the last one tears the PASID entry down.</summary>
    /// <param name="handle">A handle from <see cref="SvaBind"/>.</param>
    /// <returns>True when the handle was a live bind of this driver (its PASID reference is then dropped by the core).</returns>
    [KernelSymbol("iommu_ops.sva_unbind")]
    bool SvaUnbind(IommuSva handle);

    /// <summary>The PASID of a bind (<c>sva_get_pasid</c>).</summary>
    /// <param name="handle">A handle from <see cref="SvaBind"/>.</param>
    /// <returns>The PASID, or <see cref="IommuCore.PasidInvalid"/>.</returns>
    [KernelSymbol("iommu_ops.sva_get_pasid")]
    uint SvaGetPasid(IommuSva handle);
}
