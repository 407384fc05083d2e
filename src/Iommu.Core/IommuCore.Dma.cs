using System.Numerics;
using System.Runtime.CompilerServices;
using Iommu.Devices;
using Iommu.Dma;
using Iommu.Domains;
using Iommu.Internal;

namespace Iommu;

// The DMA API over IOMMU domains (drivers/iommu/dma-iommu.c and iova.c, 5.15): what a kernel driver
// calls to give its device a DMA address for a buffer. The member remarks of DmaMapPage and DmaUnmapPage
// say what is modelled, where it differs from the kernel, and what the deferred window of DMA_FQ is.
public sealed partial class IommuCore
{
    /// <summary>The DMA address that means "mapping failed" (<c>DMA_MAPPING_ERROR</c>, <c>~(dma_addr_t)0</c>).</summary>
    [KernelSymbol("DMA_MAPPING_ERROR")]
    public const ulong DmaMappingError = ulong.MaxValue;

    /// <summary>Slots in a DMA_FQ domain's flush queue (<c>IOVA_FQ_SIZE</c>); the ring holds one fewer entries.</summary>
    [KernelSymbol("IOVA_FQ_SIZE")]
    public const int IovaFqSize = IovaDomain.FqSize;

    private const ulong Dma32BitLimit = 0xFFFF_FFFF; // DMA_BIT_MASK(32)

    private readonly ConditionalWeakTable<IDomain, IovaDomain> _foreignCookies = [];
    private readonly Lock _dmaInitLock = new();
    private int _defDomainType; // a DomainType, read and swapped atomically

    /// <summary>How long a DMA_FQ domain's flush-queue timer runs (<c>IOVA_FQ_TIMEOUT</c>, 10 ms of the platform's clock).</summary>
    [KernelSymbol("IOVA_FQ_TIMEOUT")]
    public static TimeSpan IovaFqTimeout => IovaDomain.FqTimeout;

    /// <summary>
    /// The type new groups' default domains get (<c>iommu_def_domain_type</c>): <c>PlatformOptions.DefaultDomainType</c>,
    /// turned from DMA_FQ into DMA by <see cref="SetDmaStrict"/>.
    /// </summary>
    [KernelSymbol("iommu_def_domain_type")]
    public DomainType DefaultDomainType => (DomainType)Volatile.Read(ref _defDomainType);

    /// <summary>
    /// Makes DMA domains strict from now on (<c>iommu_set_dma_strict</c>): a default domain type of
    /// DMA_FQ becomes DMA. The Intel driver calls it when a unit has caching mode ("IOMMU batching
    /// disallowed due to virtualization"). Default domains that already exist keep their type.
    /// </summary>
    [KernelSymbol("iommu_set_dma_strict")]
    public void SetDmaStrict()
    {
        using Memory.PhysicalMemory.AccessScope guard = Platform.Memory.EnterAccess();
        Interlocked.CompareExchange(ref _defDomainType, (int)DomainType.Dma, (int)DomainType.DmaFq);
    }

    /// <summary>
    /// Maps <paramref name="size"/> bytes at <paramref name="phys"/> for DMA by <paramref name="device"/>
    /// (<c>dma_map_page_attrs</c> → <c>iommu_dma_map_page</c>) and returns the DMA address the device uses.
    /// </summary>
    /// <param name="device">The device that will do the DMA.</param>
    /// <param name="phys">Physical address of the buffer (any alignment: the offset in the page is kept).</param>
    /// <param name="size">Bytes.</param>
    /// <param name="dir">Direction: the device reads (TO_DEVICE), writes (FROM_DEVICE) or both.</param>
    /// <returns>
    /// The DMA address, or <see cref="DmaMappingError"/> (no errno, as in the kernel; <see cref="ErrorDetail"/>
    /// says why: ENOMEM when the IOVA space below the limit is exhausted, EINVAL for a size that wraps or, through
    /// an IOMMU domain, a size of 0, the IOMMU driver's error when the map fails, EFAULT when the domain's IOVA space
    /// cannot be set up, EIO when the device has no DMA mask or a dma-direct buffer ends above it: as
    /// <c>dma_capable</c>, whose end of a 0-byte buffer is <paramref name="phys"/> − 1, so one at 0 fails below a
    /// 64-bit mask).
    /// </returns>
    /// <remarks>
    /// <para>A device whose group's default domain is DMA or DMA_FQ gets an IOVA from that domain's
    /// allocator and a mapping in it (<c>iommu_dma_map_page</c>): the IOVA range is <paramref name="size"/>
    /// plus the offset of <paramref name="phys"/> in its page, rounded up to the domain's smallest page,
    /// allocated aligned to its size rounded up to a power of two (up to 32 pages also reserve that power
    /// of two), below 4 GiB first for PCI devices (the kernel's SAC rule), never in a reserved region (the
    /// interrupt window); the mapping has IOMMU_CACHE and the permissions of <paramref name="dir"/>. Any other
    /// device (an IDENTITY default domain, no IOMMU, no default domain) is served by dma-direct: its DMA
    /// address is <paramref name="phys"/>. As in the kernel the DMA API always uses the default domain
    /// (<c>iommu_get_dma_domain</c>), also while the group is attached to another domain. See
    /// <see cref="DmaUnmapPage"/> for what unmapping does in DMA and DMA_FQ domains.</para>
    /// <para>The IOVA lies below the device's DMA mask (<see cref="DmaSetMask"/>; 64 bits until set, see
    /// <see cref="Device.DmaMask"/>); on the dma-direct path a buffer above the mask fails (EIO), and a device
    /// without a mask (an mdev) fails every map (EIO; the kernel WARNs). Scatterlists: <see cref="DmaMapSg"/>;
    /// coherent buffers: <see cref="DmaAllocCoherent"/>.</para>
    /// <para>Where we differ from the kernel: every device is cache-coherent (x86), there is no bounce
    /// buffering (swiotlb, for untrusted devices or buffers above a dma-direct device's mask); the IOVA domain is set up at the first map through the domain (the kernel sets it up at probe,
    /// <c>iommu_setup_dma_ops</c>) with the reserved regions of that first device (as 5.15, which reserves
    /// only the first device's); the host bridge windows are not reserved (the model has none).</para>
    /// <para>Thread safety: maps and unmaps may run concurrently, also on one domain; the domain's
    /// allocator and flush queue take one lock, the page-table work takes none. Allocates nothing on the
    /// GC heap once the domain's allocator has warmed up (its tree's array and dictionary have grown to
    /// the most ranges held at once), and an IOVA costs a few steps of the kernel's search from its cached
    /// node however many mappings are live.</para>
    /// </remarks>
    /// <exception cref="ArgumentNullException"><paramref name="device"/> is null.</exception>
    /// <exception cref="ArgumentOutOfRangeException"><paramref name="dir"/> is NONE or not a direction (the kernel's <c>BUG_ON</c>).</exception>
    /// <exception cref="ObjectDisposedException">The device's DMA default domain was freed while the call ran (its group was released: the device was removed meanwhile, which the kernel's driver unbind rules out).</exception>
    [KernelSymbol("dma_map_page_attrs")]
    public ulong DmaMapPage(Device device, ulong phys, ulong size, DmaDataDirection dir)
    {
        using Memory.PhysicalMemory.AccessScope guard = Platform.Memory.EnterAccess();
        ArgumentNullException.ThrowIfNull(device);
        IommuProt prot = DmaInfoToProt(dir);
        if (!device.HasDmaMask)
        {
            ErrorDetail.Fail(Errno.EIO, $"{device.Name} has no DMA mask (dev->dma_mask is NULL)");
            return DmaMappingError;
        }

        ulong mask = Volatile.Read(ref device.DmaMaskValue);

        IDomain? domain = device.IommuGroup?.DefaultDomain;
        if (domain is null || !domain.Type.IsDmaApi())
        {
            return DmaDirectMapPage(device, phys, size, mask);
        }

        using DomainUse use = new(guard, domain);
        IovaDomain? iovad = DmaInitDomain(domain, device);
        if (iovad is null)
        {
            return DmaMappingError;
        }

        ulong offset = phys & (iovad.Granule - 1);
        ulong len = (size + offset + iovad.Granule - 1) & ~(iovad.Granule - 1);
        // A physical range that wraps past the top is refused as on the dma-direct path (dma_capable):
        // mapped, its tail page would be physical page 0, a page the device was never given.
        if (size == 0 || len < size || phys + size - 1 < phys)
        {
            ErrorDetail.Fail(Errno.EINVAL, size == 0 ? "dma_map of 0 bytes"
                : len < size ? $"size 0x{size:x} at offset 0x{offset:x} wraps"
                : $"[0x{phys:x}, +0x{size:x}) wraps the 64-bit physical address space");
            return DmaMappingError;
        }

        return IommuDmaMap(domain, iovad, device, phys, len, prot, mask != 0 ? mask : Dma32BitLimit); // dma_get_mask
    }

    // __iommu_dma_map: the granules of [phys, +len) (len already rounded out to the granule from phys's page) at an IOVA
    // below dmaLimit (none when it is 0), then iommu_map_atomic (__iommu_map and iotlb_sync_map). The DMA address keeps
    // phys's offset in the granule; DmaMappingError (ENOMEM or the driver's error in ErrorDetail) on failure.
    private ulong IommuDmaMap(IDomain domain, IovaDomain iovad, Device device, ulong phys, ulong len, IommuProt prot, ulong dmaLimit)
    {
        ulong offset = phys & (iovad.Granule - 1);
        ulong iova = dmaLimit == 0 ? 0 : DmaAllocIova(domain, iovad, device, len, dmaLimit);
        if (iova == 0)
        {
            ErrorDetail.Fail(Errno.ENOMEM, $"no free IOVA range of 0x{len:x} bytes below 0x{dmaLimit:x} for {device.Name} in its {domain.Type} domain");
            return DmaMappingError;
        }

        IIommuOps? ops = domain.Ops;
        if (MapCore(domain, ops, iova, phys - offset, len, prot) != Errno.None)
        {
            // iommu_dma_free_iova without a gather: free_iova_fast (the failed map unwound itself).
            iovad.BeginFree(iova >> iovad.Shift, len >> iovad.Shift);
            iovad.FreeFast(iova >> iovad.Shift, len >> iovad.Shift);
            return DmaMappingError;
        }

        CountMap(domain, len);
        if (ops is IIommuIotlbOps iotlb)
        {
            iotlb.IotlbSyncMap(domain, iova, len);
        }

        RememberDmaDomain(device, domain);
        return iova + offset;
    }

    /// <summary>
    /// Undoes a <c>DmaMapPage</c> (<c>dma_unmap_page_attrs</c> → <c>iommu_dma_unmap_page</c>):
    /// unmaps the range and frees its IOVA — at once after an IOTLB sync in a DMA domain, through the
    /// flush queue in a DMA_FQ domain.
    /// </summary>
    /// <param name="device">The device the mapping was made for.</param>
    /// <param name="dmaHandle">The DMA address <see cref="DmaMapPage"/> returned.</param>
    /// <param name="size">The size given to <see cref="DmaMapPage"/>.</param>
    /// <param name="dir">The direction given to <see cref="DmaMapPage"/>.</param>
    /// <remarks>
    /// <para><c>__iommu_dma_unmap</c>: <c>iommu_unmap_fast</c> with a gather marked queued when the domain
    /// has a flush queue; then either <c>iommu_iotlb_sync</c> and <c>free_iova_fast</c>, or <c>queue_iova</c>
    /// with the page-table pages the unmap freed. For dma-direct devices this does nothing.</para>
    /// <para>Strict (DMA domain): the unmap waits for the IOTLB invalidation of its range and the IOVA is
    /// free for reuse when it returns. Lazy (DMA_FQ, 5.15 <c>IOMMU_DOMAIN_DMA_FQ</c>, the x86 default unless
    /// <c>iommu.strict=1</c>): no invalidation; the IOVA waits in the domain's flush queue, and the domain's
    /// whole IOTLB is flushed once (<c>flush_iotlb_all</c>) when an unmap finds <see cref="IovaFqSize"/> - 1
    /// entries waiting (it flushes before queueing itself), or when the platform's clock passes
    /// <see cref="IovaFqTimeout"/> after the first entry queued while the timer was off
    /// (<see cref="PlatformClock.Advance"/>); a flush frees every entry queued before it started. As in
    /// 5.15, an unmap that <c>iommu_unmap_fast</c> splits into pieces of different page sizes (a range
    /// that holds a whole 2 MiB page and more) is strict even in a DMA_FQ domain:
    /// <c>iommu_iotlb_gather_add_page</c> syncs the gather between the pieces, which clears its queued
    /// mark, so that unmap is flushed and its IOVA freed before it returns.</para>
    /// <para>The deferred window is the kernel's: until that flush a device may still reach the unmapped
    /// IOVA through a stale IOTLB entry (at the old physical address, with the old permissions), but the
    /// IOVA is handed out to nobody and the page-table pages the unmap freed stay allocated until the flush
    /// has completed. The data pages are the caller's again as soon as the unmap returns, as in the kernel:
    /// that is the exposure lazy mode accepts.</para>
    /// <para>Where we differ from the kernel: unmapping a DMA address that is not mapped, or with another
    /// size, throws before anything changes (the kernel WARNs and corrupts its IOVA caches).</para>
    /// <para>Deliberately unlike 5.15 (which unbinds the driver, and so unmaps, before a device leaves its group):
    /// the unmap goes to the DMA domain the map was made in, also when that is no longer the device's (it was
    /// removed from a group whose domain other devices still use, or moved to another group). Left mapped, the
    /// page would stay reachable by the old group's other devices after the unmap returned and its IOVA would
    /// leak; looked up in the device's new domain, the same DMA address could name another device's mapping
    /// there. The domain is the one where a live range mapped for this device starts at
    /// <paramref name="dmaHandle"/>'s page (the device's current domain first); when there is none, the current
    /// domain, as before. When that domain was freed, or is being freed meanwhile, the mapping went with it and
    /// the unmap does nothing.</para>
    /// </remarks>
    /// <exception cref="ArgumentNullException"><paramref name="device"/> is null.</exception>
    /// <exception cref="ArgumentOutOfRangeException"><paramref name="dir"/> is NONE or not a direction.</exception>
    /// <exception cref="ArgumentException">
    /// No live mapping starts at <paramref name="dmaHandle"/>'s page in the device's DMA domain (never
    /// mapped, or unmapped already), or it was mapped with another size (the kernel WARNs and corrupts
    /// its IOVA caches; this refuses before touching anything).
    /// </exception>
    [KernelSymbol("dma_unmap_page_attrs")]
    public void DmaUnmapPage(Device device, ulong dmaHandle, ulong size, DmaDataDirection dir)
    {
        using Memory.PhysicalMemory.AccessScope guard = Platform.Memory.EnterAccess();
        ArgumentNullException.ThrowIfNull(device);
        DmaInfoToProt(dir);
        IDomain? domain = DmaUnmapDomain(device, dmaHandle);
        if (domain is null)
        {
            return; // dma_direct_unmap_page: nothing to undo without swiotlb
        }

        try
        {
            using DomainUse use = new(guard, domain);
            IommuDmaUnmap(guard, device, domain, dmaHandle, size, "dma_unmap");
        }
        catch (ObjectDisposedException) when (domain is IommuDomain { Dying: not 0 })
        {
            // iommu_domain_free began meanwhile (the group's release): the mapping and its IOVA go with the domain.
        }
    }

    // The domain a streaming unmap of dmaHandle by device goes to: the one where a live range handed out for this device
    // starts at dmaHandle's page, the device's current DMA domain first, then the others it mapped in (it left their
    // groups); else its current DMA domain (where the unmap refuses an unknown range, or undoes another device's map
    // of the group as the kernel would); null for a dma-direct device.
    private IDomain? DmaUnmapDomain(Device device, ulong dmaHandle)
    {
        IDomain? current = device.IommuGroup?.DefaultDomain;
        if (current is not null && !current.Type.IsDmaApi())
        {
            current = null;
        }

        // The common case, a device that never mapped in another domain: the current one, without the lookup's
        // round of the IOVA domain's lock.
        IDomain[] seen = Volatile.Read(ref device.DmaMapDomains);
        if (seen.Length == 0 || (seen.Length == 1 && ReferenceEquals(seen[0], current)))
        {
            return current;
        }

        if (current is not null && HoldsLiveFor(current, device, dmaHandle))
        {
            return current;
        }

        foreach (IDomain d in seen)
        {
            if (!ReferenceEquals(d, current) && HoldsLiveFor(d, device, dmaHandle))
            {
                return d;
            }
        }

        return current;
    }

    private bool HoldsLiveFor(IDomain domain, Device device, ulong dmaHandle) =>
        CookieOf(domain) is IovaDomain iovad && iovad.IsLiveFor(dmaHandle >> iovad.Shift, device);

    // Notes that device has mappings in domain (see Device.DmaMapDomains); allocates only when the domain is new to it.
    private void RememberDmaDomain(Device device, IDomain domain)
    {
        foreach (IDomain d in Volatile.Read(ref device.DmaMapDomains))
        {
            if (ReferenceEquals(d, domain))
            {
                return;
            }
        }

        lock (device.DmaMapDomainsLock)
        {
            IDomain[] seen = device.DmaMapDomains;
            if (Array.IndexOf(seen, domain) >= 0)
            {
                return;
            }

            var next = new List<IDomain>(seen.Length + 1) { domain };
            foreach (IDomain d in seen)
            {
                if (CookieOf(d) is not null)
                {
                    next.Add(d); // a freed domain's mappings went with it
                }
            }

            Volatile.Write(ref device.DmaMapDomains, next.ToArray());
        }
    }

    // dma_direct_map_page without swiotlb: the bus address is the physical address, if the device can drive it (dma_capable:
    // not DMA_MAPPING_ERROR, and the last byte, phys + size - 1, under the mask; for 0 bytes that is phys - 1, which wraps to
    // 2^64 - 1 at phys 0). Stricter than dma_capable, which tests only the end: a range that wraps past 2^64 is refused.
    private static ulong DmaDirectMapPage(Device device, ulong phys, ulong size, ulong mask)
    {
        if (phys == DmaMappingError)
        {
            ErrorDetail.Fail(Errno.EIO, $"DMA address 0x{phys:x} of {device.Name} is DMA_MAPPING_ERROR itself");
            return DmaMappingError;
        }

        ulong end = phys + size - 1;
        if (size != 0 && end < phys)
        {
            ErrorDetail.Fail(Errno.EINVAL, $"[0x{phys:x}, +0x{size:x}) wraps the 64-bit DMA space");
            return DmaMappingError;
        }

        if (end > mask)
        {
            ErrorDetail.Fail(Errno.EIO, $"[0x{phys:x}, +0x{size:x}) ends at 0x{end:x}, above the DMA mask 0x{mask:x} of {device.Name} (no swiotlb to bounce it)");
            return DmaMappingError;
        }

        return phys;
    }

    // __iommu_dma_unmap: unmap [dmaHandle, +size) rounded out to the granule and free its IOVA, at once (strict, after
    // the IOTLB sync) or through the flush queue; refuses (throws) a range that is not exactly one live allocation.
    // afterFlush: what to release only after the flush that covers this unmap when it is queued (a coherent buffer's
    // pages); returns whether it went with the queued entry.
    private bool IommuDmaUnmap(in Memory.PhysicalMemory.AccessScope guard, Device device, IDomain domain, ulong dmaHandle, ulong size, string what, CoherentPages? afterFlush = null)
    {
        IovaDomain? iovad = CookieOf(domain);
        ulong offset = iovad is null ? 0 : dmaHandle & (iovad.Granule - 1);
        ulong iova = dmaHandle - offset;
        ulong len = iovad is null ? 0 : (size + offset + iovad.Granule - 1) & ~(iovad.Granule - 1);
        string? problem = iovad is null ? "nothing was ever mapped through that domain"
            : size == 0 || len < size ? $"size 0x{size:x} is not a size dma_map accepts"
            : iovad.BeginFree(iova >> iovad.Shift, len >> iovad.Shift);
        if (problem is not null)
        {
            throw new ArgumentException($"{what} of 0x{dmaHandle:x}+0x{size:x} for {device.Name}: {problem}.", nameof(dmaHandle));
        }

        var gather = default(IommuIotlbGather);
        gather.Queued = iovad!.HasFlushQueue;
        var core = domain as IommuDomain;
        ulong unmapped = UnmapCore(domain, core, iova, len, ref gather);
        CountUnmap(domain, core, guard.Slot!, unmapped);
        if (unmapped != len)
        {
            Log.DmaUnmapShort(_log, iova, len, unmapped);
        }

        if (!gather.Queued)
        {
            if (domain.Ops is IIommuIotlbOps ops)
            {
                ops.IotlbSync(domain, ref gather);
            }

            iovad.FreeFast(iova >> iovad.Shift, len >> iovad.Shift);
            return false;
        }

        iovad.Queue(iova >> iovad.Shift, len >> iovad.Shift, gather.Freelist, afterFlush);
        return afterFlush is not null;
    }

    // dma_info_to_prot for a coherent device (x86); BUG_ON(!valid_dma_direction(dir)).
    private static IommuProt DmaInfoToProt(DmaDataDirection dir) => dir switch
    {
        DmaDataDirection.Bidirectional => IommuProt.Cache | IommuProt.Read | IommuProt.Write,
        DmaDataDirection.ToDevice => IommuProt.Cache | IommuProt.Read,
        DmaDataDirection.FromDevice => IommuProt.Cache | IommuProt.Write,
        _ => throw new ArgumentOutOfRangeException(nameof(dir), dir, "Not a valid DMA direction for a mapping (BUG_ON(!valid_dma_direction(dir))."),
    };

    private IovaDomain? CookieOf(IDomain domain) =>
        domain is IommuDomain d ? Volatile.Read(ref d.IovaCookie) : _foreignCookies.TryGetValue(domain, out IovaDomain? c) ? c : null;

    // iommu_dma_init_domain (base 0, no limit): the allocator at the domain's smallest page, starting at
    // the aperture (never at 0), the flush queue for DMA_FQ (falling back to DMA when it cannot be set
    // up), and the device's reserved regions. Once per domain, as 5.15 (later devices add nothing).
    private IovaDomain? DmaInitDomain(IDomain domain, Device device)
    {
        if (CookieOf(domain) is IovaDomain existing)
        {
            return existing;
        }

        lock (_dmaInitLock)
        {
            if (CookieOf(domain) is IovaDomain raced)
            {
                return raced;
            }

            ulong bitmap = domain.PgsizeBitmap;
            int order = BitOperations.TrailingZeroCount(bitmap);
            if (bitmap == 0 || order > 12)
            {
                ErrorDetail.Fail(Errno.EFAULT, $"the {domain.Type} domain's smallest page (bitmap 0x{bitmap:x}) cannot back the DMA API's 4 KiB granule");
                return null;
            }

            ulong basePfn = 1;
            IommuDomainGeometry geometry = domain.Geometry;
            if (geometry.ForceAperture)
            {
                basePfn = Math.Max(basePfn, geometry.ApertureStart >> order);
            }

            var iovad = new IovaDomain(1UL << order, basePfn);
            if (domain.Type == DomainType.DmaFq && DmaInitFq(domain, iovad) != Errno.None)
            {
                // "if the FQ fails we can simply fall back to strict mode"; a foreign IDomain keeps its
                // reported type (the cookie without a flush queue is strict either way).
                if (domain is IommuDomain owned)
                {
                    owned.Type = DomainType.Dma;
                }
            }

            if (device.IommuOps is IIommuResvRegionsOps devOps)
            {
                var regions = new List<IommuResvRegion>();
                devOps.GetResvRegions(device, regions);
                foreach (IommuResvRegion r in regions)
                {
                    if (r.Type != IommuResvType.SwMsi && r.Length != 0)
                    {
                        iovad.Reserve(r.Start >> order, r.End >> order); // we ARE the software that manages SW_MSI
                    }
                }
            }

            if (domain is IommuDomain d)
            {
                Volatile.Write(ref d.IovaCookie, iovad);
            }
            else
            {
                _foreignCookies.AddOrUpdate(domain, iovad);
            }

            return iovad;
        }
    }

    // iommu_dma_init_fq: the flush callback is the driver's flush_iotlb_all (iommu_dma_flush_iotlb_all),
    // the entry destructor frees the entry's page-table pages (iommu_dma_entry_dtor). -ENODEV when the
    // driver has no flush_iotlb_all. (A method of its own: the lambda's closure would otherwise be
    // allocated on every call of the method that holds it.)
    private Errno DmaInitFq(IDomain domain, IovaDomain iovad)
    {
        if (domain.Ops is not IIommuIotlbOps ops)
        {
            return Errno.ENODEV;
        }

        iovad.InitFlushQueue(Platform.Clock, () => ops.FlushIotlbAll(domain), FreeAfterFlush);
        return Errno.None;
    }

    // iommu_dma_alloc_iova: round small sizes up to a power of two (so the range caches stay exact), try
    // below 4 GiB first for PCI devices whose limit (the DMA mask, the aperture) is above it, then up to the limit.
    private static ulong DmaAllocIova(IDomain domain, IovaDomain iovad, Device device, ulong size, ulong dmaLimit)
    {
        int shift = iovad.Shift;
        ulong mapped = size >> shift;
        ulong len = mapped < (1UL << (IovaDomain.RangeCacheMaxSize - 1)) ? BitOperations.RoundUpToPowerOf2(mapped) : mapped;
        IommuDomainGeometry geometry = domain.Geometry;
        if (geometry.ForceAperture)
        {
            dmaLimit = Math.Min(dmaLimit, geometry.ApertureEnd);
        }

        ulong pfn = 0;
        if (dmaLimit > Dma32BitLimit && device is PciDevice)
        {
            pfn = iovad.AllocFast(len, mapped, Dma32BitLimit >> shift, flushRcache: false, device);
        }

        if (pfn == 0)
        {
            pfn = iovad.AllocFast(len, mapped, dmaLimit >> shift, flushRcache: true, device);
        }

        return pfn << shift;
    }

    // iommu_dma_entry_dtor: the page-table pages of a flushed queue entry go back to the allocator, and so do the pages of
    // a coherent buffer freed with it (DmaFreeCoherent).
    private void FreeAfterFlush(ulong freelist, object? payload)
    {
        if (freelist != 0)
        {
            Platform.Frames.FreeList(freelist);
        }

        if (payload is CoherentPages pages)
        {
            Platform.Frames.FreeContiguous(pages.Phys, pages.Count);
        }
    }

    // iommu_put_dma_cookie, from iommu_domain_free.
    private void PutDmaCookie(IDomain domain)
    {
        IovaDomain? iovad = domain is IommuDomain d ? Interlocked.Exchange(ref d.IovaCookie, null)
            : _foreignCookies.TryGetValue(domain, out IovaDomain? c) && _foreignCookies.Remove(domain) ? c : null;
        iovad?.Put();
    }
}
