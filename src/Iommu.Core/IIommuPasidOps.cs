using Iommu.Devices;
using Iommu.Domains;

namespace Iommu;

/// <summary>
/// The optional PASID-attach callbacks of <see cref="IIommuOps"/> (6.2): <c>set_dev_pasid</c>, which
/// 6.2 puts in the domain's ops (<c>iommu_domain_ops</c>), and <c>remove_dev_pasid</c>, an
/// <c>iommu_ops</c> member. Without them <see cref="IommuCore.AttachDevicePasid"/> is -EOPNOTSUPP.
/// </summary>
/// <remarks>
/// <para>The core asks the domain's ops (<see cref="IDomain.Ops"/>) for <see cref="SetDevPasid"/> and
/// the device's ops (<see cref="Device.IommuOps"/>, the kernel's <c>dev_iommu_ops</c>) for
/// <see cref="RemoveDevPasid"/>. Both are called under the group mutex, once per group device.</para>
/// <para>Version: Linux 6.2 (not in the modelled 5.15); the aux-domain callbacks
/// (<see cref="IIommuAuxOps"/>) stay beside them, sharing the device's PASID space.</para>
/// </remarks>
public interface IIommuPasidOps
{
    /// <summary>Makes <paramref name="domain"/> translate DMA of <paramref name="device"/> tagged with <paramref name="pasid"/> (<c>set_dev_pasid</c>).</summary>
    /// <param name="domain">The domain.</param>
    /// <param name="device">One device of the group.</param>
    /// <param name="pasid">The PASID, as the caller gave it (6.2/6.3 validate nothing).</param>
    /// <returns>0 or an errno; on failure the driver leaves the device as it was.</returns>
    [KernelSymbol("iommu_domain_ops.set_dev_pasid", Version = "6.2")]
    Errno SetDevPasid(IDomain domain, Device device, uint pasid);

    /// <summary>
    /// Stops DMA of <paramref name="device"/> with <paramref name="pasid"/> (<c>remove_dev_pasid</c>).
    /// Called also for devices whose <see cref="SetDevPasid"/> failed or was never called (the core's
    /// unwind covers every group device), so it must accept a PASID it never set.
    /// </summary>
    /// <param name="device">One device of the group.</param>
    /// <param name="pasid">The PASID.</param>
    [KernelSymbol("iommu_ops.remove_dev_pasid", Version = "6.2")]
    void RemoveDevPasid(Device device, uint pasid);

    /// <summary>
    /// How many PASIDs the IOMMU instance serving <paramref name="device"/> translates (<c>iommu_device.max_pasids</c>):
    /// 0 when it has none. The device's own limit is the core's to apply (<see cref="IommuCore.AllocGlobalPasid"/>).
    /// </summary>
    /// <param name="device">A device the driver serves.</param>
    /// <returns>The count; by default <see cref="uint.MaxValue"/>, no limit beyond the device's.</returns>
    /// <remarks>Version: Linux 6.2 (set by the driver when the unit is registered).</remarks>
    [KernelSymbol("iommu_device.max_pasids", Version = "6.2")]
    uint MaxPasids(Device device) => uint.MaxValue;
}
