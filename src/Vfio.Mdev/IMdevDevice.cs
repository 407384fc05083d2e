using Iommu;
using Iommu.Devices;
using Iommu.Domains;

namespace Vfio.Mdev;

/// <summary>
/// What a vendor driver sees of a mediated device (<c>struct mdev_device</c> through the mdev
/// helpers). <see cref="MdevDevice"/> implements it; vendor drivers take this interface so they can
/// be unit-tested with a mock.
/// </summary>
[KernelSymbol("struct mdev_device")]
public interface IMdevDevice
{
    /// <summary>The UUID (<c>mdev_uuid</c>).</summary>
    [KernelSymbol("mdev_uuid")]
    Guid Uuid { get; }

    /// <summary>The device itself (<c>mdev_dev</c>): what <c>vfio_pin_pages</c> and friends take.</summary>
    [KernelSymbol("mdev_dev")]
    Device Device { get; }

    /// <summary>The physical parent device (<c>mdev_parent_dev</c>).</summary>
    [KernelSymbol("mdev_parent_dev")]
    Device ParentDevice { get; }

    /// <summary>Index of the mdev's type in the parent's <c>supported_type_groups</c> (<c>mdev_get_type_group_id</c>, 5.13+).</summary>
    [KernelSymbol("mdev_get_type_group_id")]
    int TypeGroupId { get; }

    /// <summary>The vendor's private data (<c>mdev_get_drvdata</c>).</summary>
    /// <returns>The data or null.</returns>
    [KernelSymbol("mdev_get_drvdata")]
    object? GetDrvdata();

    /// <summary>Stores the vendor's private data (<c>mdev_set_drvdata</c>).</summary>
    /// <param name="data">The data.</param>
    [KernelSymbol("mdev_set_drvdata")]
    void SetDrvdata(object? data);

    /// <summary>
    /// Records the physical device that represents this mdev in IOMMU scope (<c>mdev_set_iommu_device</c>);
    /// a parent calls it from <c>create</c> when its subdevice is isolated by the IOMMU (e.g. PASID-tagged).
    /// Null (the default) means vendor-defined isolation.
    /// </summary>
    /// <param name="iommuDevice">The physical device, or null.</param>
    /// <remarks>5.15 form (void, 5.13+). 5.1–5.12 took a <c>struct device *</c> for the mdev and always returned 0.</remarks>
    [KernelSymbol("mdev_set_iommu_device")]
    void SetIommuDevice(Device? iommuDevice);

    /// <summary>The physical device recorded by <c>mdev_set_iommu_device</c>, or null (<c>mdev_get_iommu_device</c>).</summary>
    /// <returns>The device or null.</returns>
    [KernelSymbol("mdev_get_iommu_device")]
    Device? GetIommuDevice();

    /// <summary>
    /// Stores the domain attached to the mdev's IOMMU device on its behalf (the seed's
    /// <c>mdev_set_iommu_domain</c>): no checks, no reference. VFIO type1 sets it after a successful
    /// aux attach and clears it (null) on detach.
    /// </summary>
    /// <param name="domain">The domain or null.</param>
    /// <remarks>Seed v4 (2018; re-posted 2020), never merged. The 2020 repost's "only a single domain per mdev" check (-EINVAL) is type1's, not this setter's.</remarks>
    [KernelSymbol("mdev_set_iommu_domain", Version = "seed v4")]
    void SetIommuDomain(IDomain? domain);

    /// <summary>The domain stored by <c>mdev_set_iommu_domain</c>, or null (the seed's <c>mdev_get_iommu_domain</c>).</summary>
    /// <returns>The domain or null.</returns>
    [KernelSymbol("mdev_get_iommu_domain", Version = "seed v4")]
    IDomain? GetIommuDomain();
}
