using Iommu.Devices;
using Iommu.Domains;
using Iommu.Faults;
using Iommu.Groups;

namespace Iommu;

/// <summary>
/// An IOMMU driver as the core sees it (<c>struct iommu_ops</c>), in the seed form: the 5.10 layout
/// with the seed's device attributes, plus the 5.15 batched <c>map_pages</c>/<c>unmap_pages</c>.
/// </summary>
/// <remarks>
/// <para>Optional callbacks: C drivers leave a callback NULL; here <see cref="Callbacks"/> says which
/// ones are implemented and the core never calls one whose bit is clear. Methods for an absent
/// callback may throw <see cref="NotSupportedException"/>.</para>
/// <para>Errors are returned as <see cref="Errno"/>, never thrown. Thread safety is the driver's to
/// provide, as in the kernel: map/unmap/iova_to_phys may be called concurrently on one domain.</para>
/// </remarks>
[KernelSymbol("struct iommu_ops")]
public interface IIommuOps
{
    /// <summary>Which optional callbacks are implemented (the non-NULL function pointers).</summary>
    IommuCallbacks Callbacks { get; }

    /// <summary>Default page sizes for new domains (<c>iommu_ops.pgsize_bitmap</c>).</summary>
    [KernelSymbol("iommu_ops.pgsize_bitmap")]
    ulong PgsizeBitmap { get; }

    /// <summary>Bus-wide capability test (<c>capable</c>).</summary>
    /// <param name="cap">The capability.</param>
    /// <returns>Whether the IOMMU provides it.</returns>
    [KernelSymbol("iommu_ops.capable")]
    bool Capable(IommuCap cap);

    /// <summary>Allocates a domain of <paramref name="type"/>, or returns null for a type the driver does not support (<c>domain_alloc</c>).</summary>
    /// <param name="type">Requested type.</param>
    /// <returns>The domain or null.</returns>
    [KernelSymbol("iommu_ops.domain_alloc")]
    IDomain? DomainAlloc(DomainType type);

    /// <summary>Frees a domain (<c>domain_free</c>).</summary>
    /// <param name="domain">A domain this driver allocated.</param>
    [KernelSymbol("iommu_ops.domain_free")]
    void DomainFree(IDomain domain);

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

    /// <summary>
    /// Maps exactly one page of <paramref name="size"/> bytes, a size in the domain's bitmap with
    /// <paramref name="iova"/> and <paramref name="paddr"/> aligned to it (<c>map</c>).
    /// </summary>
    /// <param name="domain">The domain.</param>
    /// <param name="iova">IOVA.</param>
    /// <param name="paddr">Physical address.</param>
    /// <param name="size">Page size.</param>
    /// <param name="prot">Protection.</param>
    /// <returns>0 or an errno.</returns>
    [KernelSymbol("iommu_ops.map")]
    Errno Map(IDomain domain, ulong iova, ulong paddr, ulong size, IommuProt prot);

    /// <summary>
    /// Maps <paramref name="pgcount"/> pages of <paramref name="pgsize"/> (<c>map_pages</c>, 5.15),
    /// reporting in <paramref name="mapped"/> the bytes actually mapped, also when it fails.
    /// </summary>
    /// <param name="domain">The domain.</param>
    /// <param name="iova">First IOVA, aligned to <paramref name="pgsize"/>.</param>
    /// <param name="paddr">First physical address, aligned to <paramref name="pgsize"/>.</param>
    /// <param name="pgsize">Page size, one of the domain's.</param>
    /// <param name="pgcount">Number of pages.</param>
    /// <param name="prot">Protection.</param>
    /// <param name="mapped">Bytes mapped.</param>
    /// <returns>0 or an errno.</returns>
    [KernelSymbol("iommu_ops.map_pages")]
    Errno MapPages(IDomain domain, ulong iova, ulong paddr, ulong pgsize, ulong pgcount, IommuProt prot, out ulong mapped);

    /// <summary>
    /// Unmaps one page (<c>unmap</c>); returns the bytes unmapped, which may exceed
    /// <paramref name="size"/> when a larger page was there, or 0 when nothing could be unmapped.
    /// </summary>
    /// <param name="domain">The domain.</param>
    /// <param name="iova">IOVA.</param>
    /// <param name="size">Page size.</param>
    /// <param name="gather">Range to flush later.</param>
    /// <returns>Bytes unmapped.</returns>
    [KernelSymbol("iommu_ops.unmap")]
    ulong Unmap(IDomain domain, ulong iova, ulong size, ref IommuIotlbGather gather);

    /// <summary>Unmaps <paramref name="pgcount"/> pages of <paramref name="pgsize"/> (<c>unmap_pages</c>, 5.15).</summary>
    /// <param name="domain">The domain.</param>
    /// <param name="iova">First IOVA.</param>
    /// <param name="pgsize">Page size.</param>
    /// <param name="pgcount">Number of pages.</param>
    /// <param name="gather">Range to flush later.</param>
    /// <returns>Bytes unmapped.</returns>
    [KernelSymbol("iommu_ops.unmap_pages")]
    ulong UnmapPages(IDomain domain, ulong iova, ulong pgsize, ulong pgcount, ref IommuIotlbGather gather);

    /// <summary>Flushes everything the domain may have cached (<c>flush_iotlb_all</c>).</summary>
    /// <param name="domain">The domain.</param>
    [KernelSymbol("iommu_ops.flush_iotlb_all")]
    void FlushIotlbAll(IDomain domain);

    /// <summary>Flushes the gathered range after an unmap (<c>iotlb_sync</c>).</summary>
    /// <param name="domain">The domain.</param>
    /// <param name="gather">What was unmapped.</param>
    [KernelSymbol("iommu_ops.iotlb_sync")]
    void IotlbSync(IDomain domain, ref IommuIotlbGather gather);

    /// <summary>Flush after a successful map (<c>iotlb_sync_map</c>, 5.15 form with the range).</summary>
    /// <param name="domain">The domain.</param>
    /// <param name="iova">First IOVA mapped.</param>
    /// <param name="size">Bytes mapped.</param>
    [KernelSymbol("iommu_ops.iotlb_sync_map")]
    void IotlbSyncMap(IDomain domain, ulong iova, ulong size);

    /// <summary>Translates an IOVA, 0 meaning "not mapped" (<c>iova_to_phys</c>).</summary>
    /// <param name="domain">The domain.</param>
    /// <param name="iova">IOVA.</param>
    /// <returns>Physical address including the offset within the page, or 0.</returns>
    [KernelSymbol("iommu_ops.iova_to_phys")]
    ulong IovaToPhys(IDomain domain, ulong iova);

    /// <summary>Driver-side probe of a device (<c>add_device</c>; 5.8+ <c>probe_device</c>).</summary>
    /// <param name="device">The device.</param>
    /// <returns>0; -ENODEV when the device is not behind this IOMMU (the core then skips it); or another errno.</returns>
    [KernelSymbol("iommu_ops.add_device")]
    Errno AddDevice(Device device);

    /// <summary>Driver-side release (<c>remove_device</c>; 5.8+ <c>release_device</c>).</summary>
    /// <param name="device">The device.</param>
    [KernelSymbol("iommu_ops.remove_device")]
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

    /// <summary>Reads a driver-specific domain attribute (<c>domain_get_attr</c>, ≤ 5.10 and the seed).</summary>
    /// <param name="domain">The domain.</param>
    /// <param name="attr">The attribute (the core answers GEOMETRY and PAGING itself).</param>
    /// <param name="value">The value.</param>
    /// <returns>0 or an errno.</returns>
    [KernelSymbol("iommu_ops.domain_get_attr", Version = "5.10")]
    Errno DomainGetAttr(IDomain domain, DomainAttr attr, out ulong value);

    /// <summary>Adds the device's reserved IOVA regions to <paramref name="regions"/> (<c>get_resv_regions</c>).</summary>
    /// <param name="device">The device.</param>
    /// <param name="regions">Where to add them.</param>
    [KernelSymbol("iommu_ops.get_resv_regions")]
    void GetResvRegions(Device device, IList<IommuResvRegion> regions);

    /// <summary>Answers a page request (<c>page_response</c>).</summary>
    /// <param name="device">The device.</param>
    /// <param name="fault">The pending request being answered.</param>
    /// <param name="response">The answer.</param>
    /// <returns>0 or an errno.</returns>
    [KernelSymbol("iommu_ops.page_response")]
    Errno PageResponse(Device device, IommuFault fault, IommuPageResponse response);
}
