using Iommu.Devices;
using Iommu.Domains;
using Iommu.Groups;

namespace Iommu;

/// <summary>
/// An IOMMU driver as the core sees it (<c>struct iommu_ops</c>): the callbacks the 5.15 core calls
/// without a NULL check. Everything a driver may leave NULL is an interface of its own that the
/// driver's ops object also implements, and the core asks for it with <c>is</c> where the kernel
/// tests the function pointer.
/// </summary>
/// <remarks>
/// <para>The optional groups: <see cref="IIommuAttachOps"/> (<c>attach_dev</c>/<c>detach_dev</c>),
/// <see cref="IIommuMapPagesOps"/> (5.15 <c>map_pages</c>/<c>unmap_pages</c>) or
/// <see cref="IIommuMapOps"/> (one-page <c>map</c>/<c>unmap</c>), <see cref="IIommuIotlbOps"/>
/// (<c>flush_iotlb_all</c>, <c>iotlb_sync</c>, <c>iotlb_sync_map</c>), <see cref="IIommuCapableOps"/>,
/// <see cref="IIommuResvRegionsOps"/>, <see cref="IIommuPageResponseOps"/>,
/// <see cref="IIommuDomainAttrOps"/> (5.10 <c>domain_get_attr</c>), <see cref="IIommuAuxOps"/>
/// (auxiliary domains) and <see cref="IIommuDevFeatureOps"/> (the seed's device attributes, merged
/// as <c>dev_enable_feat</c> and friends) and <see cref="IIommuPasidOps"/> (6.2's
/// <c>set_dev_pasid</c>/<c>remove_dev_pasid</c>). SVA (5.15's <c>sva_bind</c>/<c>sva_unbind</c>/
/// <c>sva_get_pasid</c>) will come as one more such interface, tested by the core the same way; a
/// driver without it is unchanged.</para>
/// <para>Errors are returned as <see cref="Errno"/>, never thrown. Thread safety is the driver's to
/// provide, as in the kernel: map/unmap/iova_to_phys may be called concurrently on one domain.</para>
/// </remarks>
[KernelSymbol("struct iommu_ops")]
public interface IIommuOps
{
    /// <summary>Default page sizes for new domains (<c>iommu_ops.pgsize_bitmap</c>).</summary>
    [KernelSymbol("iommu_ops.pgsize_bitmap")]
    ulong PgsizeBitmap { get; }

    /// <summary>Allocates a domain of <paramref name="type"/>, or returns null for a type the driver does not support (<c>domain_alloc</c>).</summary>
    /// <param name="type">Requested type.</param>
    /// <returns>The domain or null.</returns>
    [KernelSymbol("iommu_ops.domain_alloc")]
    IDomain? DomainAlloc(DomainType type);

    /// <summary>Frees a domain (<c>domain_free</c>).</summary>
    /// <param name="domain">A domain this driver allocated.</param>
    [KernelSymbol("iommu_ops.domain_free")]
    void DomainFree(IDomain domain);

    /// <summary>Translates an IOVA, 0 meaning "not mapped" (<c>iova_to_phys</c>).</summary>
    /// <param name="domain">The domain.</param>
    /// <param name="iova">IOVA.</param>
    /// <returns>Physical address including the offset within the page, or 0.</returns>
    [KernelSymbol("iommu_ops.iova_to_phys")]
    ulong IovaToPhys(IDomain domain, ulong iova);

    /// <summary>Driver-side probe of a device (<c>add_device</c>; 5.8+ <c>probe_device</c>).</summary>
    /// <param name="device">The device.</param>
    /// <returns>0; -ENODEV when the device is not behind this IOMMU (the core then skips it); or another errno.</returns>
    [KernelSymbol("iommu_ops.add_device", Version = "5.7")]
    [KernelSymbol("iommu_ops.probe_device")]
    Errno AddDevice(Device device);

    /// <summary>Driver-side release (<c>remove_device</c>; 5.8+ <c>release_device</c>).</summary>
    /// <param name="device">The device.</param>
    [KernelSymbol("iommu_ops.remove_device", Version = "5.7")]
    [KernelSymbol("iommu_ops.release_device")]
    void RemoveDevice(Device device);

    /// <summary>
    /// Finds or creates the group for <paramref name="device"/> (<c>device_group</c>), typically
    /// <see cref="IommuCore.PciDeviceGroup"/> or <see cref="IommuCore.GenericDeviceGroup"/>. The group
    /// is returned with a reference the core drops once the device is in it.
    /// </summary>
    /// <param name="device">The device.</param>
    /// <param name="group">The group.</param>
    /// <returns>0 or an errno.</returns>
    [KernelSymbol("iommu_ops.device_group")]
    Errno DeviceGroup(Device device, out IommuGroup? group);
}
