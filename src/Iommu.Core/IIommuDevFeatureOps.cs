using Iommu.Devices;

namespace Iommu;

/// <summary>
/// The optional per-device feature callbacks of <see cref="IIommuOps"/>: the seed's
/// <c>get_dev_attr</c>/<c>set_dev_attr</c>, merged as <c>dev_has_feat</c>, <c>dev_feat_enabled</c>,
/// <c>dev_enable_feat</c> and <c>dev_disable_feat</c>. Without them the core answers the device
/// attribute and feature calls with its no-driver results (-ENODEV; -EBUSY for disable; false).
/// </summary>
public interface IIommuDevFeatureOps
{
    /// <summary>Reads a per-device attribute (the seed's <c>get_dev_attr</c>; merged: <c>dev_has_feat</c>/<c>dev_feat_enabled</c>).</summary>
    /// <param name="device">The (physical) device.</param>
    /// <param name="attr"><see cref="IommuDevAttr.AuxdCapability"/> or <see cref="IommuDevAttr.AuxdEnabled"/>.</param>
    /// <param name="value">The attribute's value.</param>
    /// <returns>0 or an errno.</returns>
    [KernelSymbol("iommu_ops.get_dev_attr", Version = "seed v4")]
    Errno GetDevAttr(Device device, IommuDevAttr attr, out bool value);

    /// <summary>Changes a per-device attribute (the seed's <c>set_dev_attr</c>; merged: <c>dev_enable_feat</c>/<c>dev_disable_feat</c>).</summary>
    /// <param name="device">The (physical) device.</param>
    /// <param name="attr"><see cref="IommuDevAttr.AuxdEnable"/> or <see cref="IommuDevAttr.AuxdDisable"/>.</param>
    /// <returns>0 or an errno.</returns>
    [KernelSymbol("iommu_ops.set_dev_attr", Version = "seed v4")]
    Errno SetDevAttr(Device device, IommuDevAttr attr);
}
