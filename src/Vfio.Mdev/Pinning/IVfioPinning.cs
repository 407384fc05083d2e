using Iommu;
using Iommu.Devices;
using Iommu.Domains;

namespace Vfio.Mdev.Pinning;

/// <summary>
/// The page-pinning service a vendor driver of a vendor-isolated mdev (no IOMMU device) uses to DMA
/// into guest memory (<c>vfio_pin_pages</c>, <c>vfio_unpin_pages</c>, <c>vfio_register_notifier</c>,
/// <c>vfio_unregister_notifier</c> — the 5.1–5.19 forms of <c>include/linux/vfio.h</c>). The VFIO
/// type1 container implements it (its "external domain"); declaring it here lets vendor drivers be
/// written and unit-tested against a mock before type1 exists.
/// </summary>
/// <remarks>
/// <para>Arrays and counts mirror the C pointers and <c>npage</c> so implementations can reproduce
/// every front-end check (null array, <c>npage</c> 0, more than <see cref="PinPagesMaxEntries"/>).
/// Page frame numbers are IOVA &gt;&gt; 12 on input and host physical address &gt;&gt; 12 on output.</para>
/// <para>Contract (<c>vfio_pin_pages</c>, <c>vfio_unpin_pages</c> and <c>vfio_register_notifier</c>,
/// 5.15): the vendor registers for <see cref="VfioIommuNotifyEvents.DmaUnmap"/>
/// before pinning (type1 refuses to pin otherwise, -EINVAL); when user space unmaps an IOVA range,
/// the notifier is called and the vendor must unpin every page it holds in that range before
/// returning. The 6.0+ replacements (<c>vfio_pin_pages(vdev, iova, npage, prot, pages)</c> and
/// <c>vfio_device_ops.dma_unmap</c>) are not modelled. Implementations must be thread-safe.</para>
/// </remarks>
public interface IVfioPinning
{
    /// <summary>Most pages one call may pin or unpin (<c>VFIO_PIN_PAGES_MAX_ENTRIES</c> = PAGE_SIZE / sizeof(long)).</summary>
    [KernelSymbol("VFIO_PIN_PAGES_MAX_ENTRIES")]
    const int PinPagesMaxEntries = 512;

    /// <summary>Pins the pages behind <paramref name="userPfns"/> and returns their physical frames (<c>vfio_pin_pages</c>).</summary>
    /// <param name="device">The mdev (<c>mdev_dev</c>).</param>
    /// <param name="userPfns">IOVA page frame numbers; the first <paramref name="npage"/> are used.</param>
    /// <param name="npage">How many.</param>
    /// <param name="prot">Access needed (<see cref="IommuProt.Read"/> and/or <see cref="IommuProt.Write"/>); must be a subset of the mapping's.</param>
    /// <param name="physPfns">Receives the host physical page frame numbers.</param>
    /// <returns>
    /// <paramref name="npage"/> on success, else a negative errno: -EINVAL (null array, <paramref name="npage"/> 0,
    /// an IOVA with no mapping, no notifier registered, group not in a container or with several devices),
    /// -E2BIG (more than <see cref="PinPagesMaxEntries"/>), -ENODEV (no VFIO group), -EPERM (prot not allowed),
    /// -EACCES (container not v2), -ENOTTY (backend cannot pin), -ENOMEM (locked-memory limit). On error nothing stays pinned.
    /// </returns>
    [KernelSymbol("vfio_pin_pages")]
    int PinPages(Device device, ulong[] userPfns, int npage, IommuProt prot, ulong[] physPfns);

    /// <summary>Drops one pin of each page behind <paramref name="userPfns"/> (<c>vfio_unpin_pages</c>).</summary>
    /// <param name="device">The mdev.</param>
    /// <param name="userPfns">IOVA page frame numbers.</param>
    /// <param name="npage">How many.</param>
    /// <returns>
    /// The number of entries processed (it stops at the first IOVA with no mapping), or a negative errno:
    /// -EINVAL (null array, <paramref name="npage"/> ≤ 0, or the very first IOVA has no mapping), -E2BIG,
    /// -ENODEV, -EACCES, -ENOTTY. Unpinning a mapped but unpinned page is a silent no-op.
    /// </returns>
    [KernelSymbol("vfio_unpin_pages")]
    int UnpinPages(Device device, ulong[] userPfns, int npage);

    /// <summary>Registers <paramref name="notifier"/> for IOMMU events of the device's container (<c>vfio_register_notifier</c>).</summary>
    /// <param name="device">The mdev.</param>
    /// <param name="type">Must be <see cref="VfioNotifyType.Iommu"/> for DMA-unmap events.</param>
    /// <param name="events">Requested events; bits the backend does not know make it fail.</param>
    /// <param name="notifier">The callback.</param>
    /// <returns>0; -EINVAL (no events, unknown event bits, group not in a container); -ENODEV (no VFIO group); -ENOTTY (backend without notifiers).</returns>
    [KernelSymbol("vfio_register_notifier")]
    Errno RegisterNotifier(Device device, VfioNotifyType type, VfioIommuNotifyEvents events, VfioIommuNotifier notifier);

    /// <summary>Unregisters a notifier (<c>vfio_unregister_notifier</c>); mandatory before the last external group leaves the container.</summary>
    /// <param name="device">The mdev.</param>
    /// <param name="type">The type it was registered with.</param>
    /// <param name="notifier">The callback.</param>
    /// <returns>0; -ENOENT (not registered); or -EINVAL / -ENODEV as for registration.</returns>
    [KernelSymbol("vfio_unregister_notifier")]
    Errno UnregisterNotifier(Device device, VfioNotifyType type, VfioIommuNotifier notifier);
}
