using System.Numerics;
using Iommu.Devices;
using Iommu.Dma;
using Iommu.Domains;
using Iommu.Internal;

namespace Iommu;

// The DMA API's scatterlist maps and coherent buffers (kernel/dma/mapping.c, direct.c and drivers/iommu/dma-iommu.c,
// 5.15): dma_map_sg / dma_unmap_sg and dma_alloc_coherent / dma_free_coherent, over the same IOVA allocator, flush
// queue and dma-direct rules as DmaMapPage (IommuCore.Dma.cs).
public sealed partial class IommuCore
{
    // The coherent buffers handed out and not freed yet, by CPU (physical) address: dma_free_coherent is checked
    // against them, so a wrong address never frees frames someone else holds (page tables come from the same frames).
    private readonly Dictionary<ulong, CoherentBuffer> _coherent = [];
    private readonly Lock _coherentLock = new();

    /// <summary>
    /// Maps the buffers of <paramref name="sg"/> for DMA by <paramref name="device"/> (<c>dma_map_sg_attrs</c>
    /// → <c>iommu_dma_map_sg</c> or <c>dma_direct_map_sg</c>) and writes the DMA segments into the list.
    /// </summary>
    /// <param name="device">The device that will do the DMA.</param>
    /// <param name="sg">The list: each entry's <see cref="Scatterlist.Phys"/> and <see cref="Scatterlist.Length"/> (not 0).</param>
    /// <param name="dir">Direction, as for <see cref="DmaMapPage"/>.</param>
    /// <returns>
    /// The number of DMA segments, held by the first entries of <paramref name="sg"/>; 0 on failure (no errno, as
    /// in the kernel; <see cref="ErrorDetail"/> says why: ENOMEM when no IOVA range below the device's mask is free
    /// or the IOMMU driver ran out of memory, EINVAL when the list is empty, an entry has 0 bytes or wraps, an
    /// entry's IOVA length reaches 4 GiB (see below), or the IOMMU driver refused the map, EIO when the device has no DMA mask or, on the dma-direct path, an entry
    /// lies above its mask). On failure every entry's DMA fields are reset, except on the dma-direct path, where, as
    /// 5.15 <c>dma_direct_map_sg</c> leaves them, the failed entry's DMA address is <see cref="DmaMappingError"/>, the
    /// entries before it keep the DMA address and length they were given (<c>dma_direct_unmap_sg</c> changes neither)
    /// and the entries after it are not touched.
    /// </returns>
    /// <remarks>
    /// <para>IOMMU DMA domain (<c>iommu_dma_map_sg</c>): one IOVA range for the whole list. Each entry takes the
    /// granules its buffer touches, in list order, so an entry keeps its buffer's offset in the granule; where an
    /// entry would cross the device's segment boundary (<see cref="DmaGetSegBoundary"/>) the entry before it is
    /// padded up to the boundary, and, as in the kernel, that padding is mapped: the previous entry's mapping is
    /// extended over the physical pages that follow its buffer (a device can reach them through the padding's
    /// IOVAs). Physically contiguous pieces are mapped together (<c>__iommu_map_sg</c>), then one
    /// <c>iotlb_sync_map</c>. The DMA segments (<c>__finalise_sg</c>): an entry is merged into the segment before it
    /// when it starts on a granule, that segment ended on one, the join is not on a segment boundary and the
    /// merged segment stays within <see cref="DmaGetMaxSegSize"/> (callers build entries no longer than that; an
    /// entry that is longer stays whole and, by the kernel's unsigned arithmetic, the entries after it may join its
    /// segment). A map counts once in <c>iommu.map.operations</c>.</para>
    /// <para>Any other device (dma-direct): each entry is its own segment at its physical address; an entry above
    /// the device's DMA mask fails the whole map (the kernel bounces it through swiotlb where that is active).</para>
    /// <para>Where we differ from the kernel: an entry of 0 bytes is refused (EINVAL; the kernel maps it, and its
    /// unmap stops at the first segment of length 0, leaving what follows mapped), and so is an empty list (the
    /// kernel reads the first entry of an empty list). An entry whose IOVA length (its granules plus the boundary
    /// padding after it) reaches 4 GiB fails with EINVAL before anything is mapped: the kernel truncates that length
    /// to its unsigned int <c>s->length</c>, maps less than it allocated, and fails with -EINVAL leaving the part it
    /// mapped mapped. Entries are never rewritten in place: the granule offsets
    /// and padded lengths the kernel stashes in the buffer fields are kept in the DMA fields until the segments
    /// are written.</para>
    /// </remarks>
    /// <exception cref="ArgumentNullException"><paramref name="device"/> is null.</exception>
    /// <exception cref="ArgumentOutOfRangeException"><paramref name="dir"/> is NONE or not a direction.</exception>
    /// <exception cref="ObjectDisposedException">The device's DMA default domain was freed while the call ran (its group was released: the device was removed meanwhile, which the kernel's driver unbind rules out).</exception>
    [KernelSymbol("dma_map_sg_attrs")]
    public int DmaMapSg(Device device, Span<Scatterlist> sg, DmaDataDirection dir)
    {
        using Memory.PhysicalMemory.AccessScope guard = Platform.Memory.EnterAccess();
        ArgumentNullException.ThrowIfNull(device);
        IommuProt prot = DmaInfoToProt(dir);
        if (!device.HasDmaMask)
        {
            ErrorDetail.Fail(Errno.EIO, $"{device.Name} has no DMA mask (dev->dma_mask is NULL)");
            return 0;
        }

        if (SgInvalid(sg) is string invalid)
        {
            InvalidateSg(sg);
            ErrorDetail.Fail(Errno.EINVAL, invalid);
            return 0;
        }

        ulong mask = Volatile.Read(ref device.DmaMaskValue);
        IDomain? domain = device.IommuGroup?.DefaultDomain;
        if (domain is null || !domain.Type.IsDmaApi())
        {
            return DmaDirectMapSg(device, sg, mask);
        }

        using DomainUse use = new(guard, domain);
        IovaDomain? iovad = DmaInitDomain(domain, device);
        if (iovad is null)
        {
            InvalidateSg(sg);
            return 0;
        }

        // Lay the entries out in one IOVA range: each entry's granule-aligned length (plus the padding the next entry
        // needs to start on a segment boundary) is kept in its DmaAddress until __finalise_sg.
        ulong granuleMask = iovad.Granule - 1;
        ulong boundary = Volatile.Read(ref device.SegmentBoundaryMask);
        ulong iovaLen = 0;
        for (int i = 0; i < sg.Length; i++)
        {
            ulong off = sg[i].Phys & granuleMask;
            ulong sLength = (sg[i].Length + off + granuleMask) & ~granuleMask;
            ulong pad = (boundary - iovaLen + 1) & boundary;
            sg[i].DmaAddress = sLength;
            sg[i].DmaLength = 0;
            if (pad != 0 && pad < sLength - 1)
            {
                sg[i - 1].DmaAddress += pad; // pad != 0 only after the first entry (iovaLen > 0)
                iovaLen += pad;
            }

            iovaLen += sLength;
        }

        // The kernel keeps each entry's IOVA length (padding included) in s->length, an unsigned int: at 4 GiB or more
        // it truncates, __iommu_map_sg maps less than iova_len and the map fails with -EINVAL. Refuse before mapping.
        for (int i = 0; i < sg.Length; i++)
        {
            if (sg[i].DmaAddress > uint.MaxValue)
            {
                ulong iovaLength = sg[i].DmaAddress;
                InvalidateSg(sg);
                ErrorDetail.Fail(Errno.EINVAL, $"scatterlist entry {i} [0x{sg[i].Phys:x}, +0x{sg[i].Length:x}) takes 0x{iovaLength:x} bytes of IOVA space (granules and boundary padding): more than the kernel's unsigned int length holds");
                return 0;
            }
        }

        ulong iova = DmaAllocIova(domain, iovad, device, iovaLen, mask != 0 ? mask : Dma32BitLimit);
        if (iova == 0)
        {
            InvalidateSg(sg);
            ErrorDetail.Fail(Errno.ENOMEM, $"no free IOVA range of 0x{iovaLen:x} bytes for a scatterlist of {sg.Length} entries of {device.Name} in its {domain.Type} domain");
            return 0;
        }

        Errno err = MapSgPieces(domain, iova, sg, granuleMask, prot, out ulong mapped);
        if (err != Errno.None)
        {
            if (mapped != 0)
            {
                var core = domain as IommuDomain;
                CountUnmap(domain, core, guard.Slot!, UnmapAndSync(domain, core, iova, mapped)); // __iommu_map_sg's undo
            }

            // iommu_dma_free_iova without a gather: free_iova_fast.
            iovad.BeginFree(iova >> iovad.Shift, iovaLen >> iovad.Shift);
            iovad.FreeFast(iova >> iovad.Shift, iovaLen >> iovad.Shift);
            InvalidateSg(sg);
            ErrorDetail.Fail(err == Errno.ENOMEM ? Errno.ENOMEM : Errno.EINVAL, $"the IOMMU driver could not map the scatterlist of {device.Name} ({err})");
            return 0;
        }

        CountMap(domain, mapped);
        if (domain.Ops is IIommuIotlbOps iotlb)
        {
            iotlb.IotlbSyncMap(domain, iova, mapped);
        }

        RememberDmaDomain(device, domain);
        return FinaliseSg(device, sg, granuleMask, iova);
    }

    /// <summary>
    /// Undoes a <see cref="DmaMapSg"/> (<c>dma_unmap_sg_attrs</c> → <c>iommu_dma_unmap_sg</c>): unmaps the list's
    /// IOVA range and frees it, at once (DMA domain) or through the flush queue (DMA_FQ), as <see cref="DmaUnmapPage"/> does.
    /// </summary>
    /// <param name="device">The device the list was mapped for.</param>
    /// <param name="sg">The whole list given to <see cref="DmaMapSg"/> (every entry, not the returned count), as that map left it.</param>
    /// <param name="dir">The direction given to <see cref="DmaMapSg"/>.</param>
    /// <remarks>
    /// The range runs from the first segment's DMA address to the end of the last segment before the first entry
    /// of length 0 (the list's segments lie in one IOVA allocation). For dma-direct devices this does nothing.
    /// As <see cref="DmaUnmapPage"/> (a deliberate difference from 5.15), the list is unmapped from the DMA domain it
    /// was mapped in, also after the device left that domain's group.
    /// </remarks>
    /// <exception cref="ArgumentNullException"><paramref name="device"/> is null.</exception>
    /// <exception cref="ArgumentOutOfRangeException"><paramref name="dir"/> is NONE or not a direction.</exception>
    /// <exception cref="ArgumentException">
    /// The list is empty, or its segments are not one live mapping of the device's DMA domain (not mapped, unmapped
    /// already, or another list): the kernel would unmap whatever the addresses name; this refuses before touching anything.
    /// </exception>
    [KernelSymbol("dma_unmap_sg_attrs")]
    public void DmaUnmapSg(Device device, ReadOnlySpan<Scatterlist> sg, DmaDataDirection dir)
    {
        using Memory.PhysicalMemory.AccessScope guard = Platform.Memory.EnterAccess();
        ArgumentNullException.ThrowIfNull(device);
        DmaInfoToProt(dir);
        IDomain? domain = DmaUnmapDomain(device, sg.IsEmpty ? DmaMappingError : sg[0].DmaAddress);
        if (domain is null)
        {
            return; // dma_direct_unmap_sg: nothing to undo without swiotlb
        }

        if (sg.IsEmpty)
        {
            throw new ArgumentException($"dma_unmap_sg for {device.Name}: the scatterlist is empty.", nameof(sg));
        }

        int last = 0;
        for (int i = 1; i < sg.Length && sg[i].DmaLength != 0; i++)
        {
            last = i;
        }

        ulong start = sg[0].DmaAddress, end = sg[last].DmaAddress + sg[last].DmaLength;
        if (start == DmaMappingError || sg[last].DmaAddress == DmaMappingError || end <= start)
        {
            throw new ArgumentException($"dma_unmap_sg for {device.Name}: the scatterlist holds no mapped segments (DMA address 0x{start:x}).", nameof(sg));
        }

        try
        {
            using DomainUse use = new(guard, domain);
            IommuDmaUnmap(guard, device, domain, start, end - start, "dma_unmap_sg");
        }
        catch (ObjectDisposedException) when (domain is IommuDomain { Dying: not 0 })
        {
            // iommu_domain_free began meanwhile (the group's release): the mapping and its IOVA go with the domain.
        }
    }

    /// <summary>
    /// Allocates a zeroed buffer of <paramref name="size"/> bytes that <paramref name="device"/> and the CPU share
    /// (<c>dma_alloc_coherent</c> → <c>iommu_dma_alloc</c> or <c>dma_direct_alloc</c>).
    /// </summary>
    /// <param name="device">The device.</param>
    /// <param name="size">Bytes (rounded up to whole pages).</param>
    /// <param name="dmaHandle">The DMA address the device uses, or <see cref="DmaMappingError"/> on failure.</param>
    /// <returns>
    /// The buffer's CPU address, which in the model is its physical address (the kernel returns the linear-map
    /// address of the same pages); 0 on failure (the kernel's NULL; <see cref="ErrorDetail"/> says why: EINVAL for a
    /// size of 0, ENOMEM when no run of pages is free, none fits under the device's coherent mask on the
    /// dma-direct path, or no IOVA range below that mask is free).
    /// </returns>
    /// <remarks>
    /// <para>The pages are one physically contiguous block from <see cref="Platform.Frames"/> (on x86 the kernel's
    /// page allocator serves both page tables and coherent buffers, and <c>iommu_dma_alloc</c> takes a contiguous
    /// block: x86 has no <c>DMA_REMAP</c>): as <c>alloc_pages(get_order(size))</c>, a power of two of pages aligned
    /// to its size, held whole until the free, so the CPU address (and on the dma-direct path the DMA address) is
    /// aligned to the buffer's page order (an IOVA is aligned so by the IOVA allocator). IOMMU DMA domain: mapped read-write at an IOVA below the coherent
    /// mask (<see cref="Device.CoherentDmaMask"/>), as <c>__iommu_dma_map</c> does. Otherwise the DMA address is the
    /// physical address, which must lie under the coherent mask (the kernel retries from ZONE_DMA32 and ZONE_DMA;
    /// the model's frames come from one region, so it fails instead).</para>
    /// <para>Free it with <see cref="DmaFreeCoherent"/> with the same device, size, address and handle.</para>
    /// </remarks>
    /// <exception cref="ArgumentNullException"><paramref name="device"/> is null.</exception>
    /// <exception cref="ObjectDisposedException">The device's DMA default domain was freed while the call ran (its group was released: the device was removed meanwhile, which the kernel's driver unbind rules out).</exception>
    [KernelSymbol("dma_alloc_coherent")]
    public ulong DmaAllocCoherent(Device device, ulong size, out ulong dmaHandle)
    {
        using Memory.PhysicalMemory.AccessScope guard = Platform.Memory.EnterAccess();
        ArgumentNullException.ThrowIfNull(device);
        dmaHandle = DmaMappingError;
        ulong pageMask = Memory.PhysicalMemory.PageSize - 1;
        ulong alloc = (size + pageMask) & ~pageMask;
        if (size == 0 || alloc < size)
        {
            ErrorDetail.Fail(Errno.EINVAL, size == 0 ? "dma_alloc_coherent of 0 bytes" : $"dma_alloc_coherent of 0x{size:x} bytes wraps");
            return 0;
        }

        ulong pages = alloc >> Memory.PhysicalMemory.PageShift;
        if (pages > 1UL << 30 || !TryAllocateOrderBlock((int)BitOperations.RoundUpToPowerOf2(pages), out ulong phys))
        {
            ErrorDetail.Fail(Errno.ENOMEM, $"no free block of {(pages > 1UL << 30 ? pages : BitOperations.RoundUpToPowerOf2(pages))} pages for a coherent buffer of {device.Name}");
            return 0;
        }

        int block = (int)BitOperations.RoundUpToPowerOf2(pages);

        ulong mask = Volatile.Read(ref device.CoherentDmaMaskValue);
        IDomain? domain = device.IommuGroup?.DefaultDomain;
        ulong handle;
        if (domain is null || !domain.Type.IsDmaApi())
        {
            // dma_direct_alloc: dma_coherent_ok of PAGE_ALIGN(size), phys + alloc - 1 <= the coherent mask.
            handle = phys + alloc - 1 <= mask ? phys : DmaMappingError;
            if (handle == DmaMappingError)
            {
                ErrorDetail.Fail(Errno.ENOMEM, $"the coherent buffer's pages [0x{phys:x}, +0x{alloc:x}) lie above the coherent DMA mask 0x{mask:x} of {device.Name}");
            }

            domain = null;
        }
        else
        {
            using DomainUse use = new(guard, domain);
            handle = IommuDmaMapCoherent(domain, device, phys, size, mask);
        }

        if (handle == DmaMappingError)
        {
            Platform.Frames.FreeContiguous(phys, block);
            return 0;
        }

        lock (_coherentLock)
        {
            _coherent.Add(phys, new CoherentBuffer(device, size, handle, domain));
        }

        dmaHandle = handle;
        return phys;
    }

    /// <summary>
    /// Frees a buffer from <see cref="DmaAllocCoherent"/> (<c>dma_free_coherent</c> → <c>iommu_dma_free</c> or
    /// <c>dma_direct_free</c>): unmaps it from the device's DMA domain (strict or through the flush queue, as
    /// <see cref="DmaUnmapPage"/>) and gives its pages back.
    /// </summary>
    /// <param name="device">The device it was allocated for.</param>
    /// <param name="size">The size given to <see cref="DmaAllocCoherent"/>.</param>
    /// <param name="cpuAddress">The address <see cref="DmaAllocCoherent"/> returned.</param>
    /// <param name="dmaHandle">The DMA address it gave.</param>
    /// <remarks>
    /// The buffer is unmapped from the DMA domain it was mapped in, also when that is no longer the device's (the
    /// device was removed from a group whose domain other devices still use: left mapped, they could reach the freed
    /// pages); when that domain was freed (with its mappings) only the pages are given back. A
    /// <paramref name="cpuAddress"/> of 0 (what a failed <see cref="DmaAllocCoherent"/> returns) does nothing, as in
    /// the kernel (<c>dma_free_attrs</c>: <c>if (!cpu_addr) return;</c>).
    /// When a misdirected <see cref="DmaUnmapSg"/> or <see cref="DmaUnmapPage"/> of the device already unmapped the
    /// buffer's DMA range, only the pages are given back (5.15 <c>__iommu_dma_unmap</c> WARNs when nothing is unmapped
    /// and <c>__iommu_dma_free</c> frees the pages all the same).
    /// Where we differ from the kernel: in a DMA_FQ domain the pages wait in the flush queue with the IOVA and go back
    /// after the flush (5.15 frees them at once); here they come from the frames page tables use, so a device writing
    /// through a stale IOTLB entry in the deferred window would otherwise write a page table.
    /// </remarks>
    /// <exception cref="ArgumentNullException"><paramref name="device"/> is null.</exception>
    /// <exception cref="ArgumentException">
    /// No live coherent buffer of <paramref name="device"/> matches the address, size and handle (the kernel would free
    /// whatever pages the address names, page-table pages included); nothing changes.
    /// </exception>
    [KernelSymbol("dma_free_coherent")]
    public void DmaFreeCoherent(Device device, ulong size, ulong cpuAddress, ulong dmaHandle)
    {
        using Memory.PhysicalMemory.AccessScope guard = Platform.Memory.EnterAccess();
        ArgumentNullException.ThrowIfNull(device);
        if (cpuAddress == 0)
        {
            return;
        }

        CoherentBuffer buffer;
        lock (_coherentLock)
        {
            if (!_coherent.TryGetValue(cpuAddress, out buffer) || buffer.Device != device || buffer.Size != size || buffer.Handle != dmaHandle)
            {
                throw new ArgumentException($"dma_free_coherent of 0x{cpuAddress:x}+0x{size:x} (DMA 0x{dmaHandle:x}) for {device.Name}: no such coherent buffer of that device is live.", nameof(cpuAddress));
            }

            _coherent.Remove(cpuAddress);
        }

        ulong pages = ((size + Memory.PhysicalMemory.PageSize - 1) & ~(ulong)(Memory.PhysicalMemory.PageSize - 1)) >> Memory.PhysicalMemory.PageShift;
        int block = (int)BitOperations.RoundUpToPowerOf2(pages);
        bool deferred = false;

        // The domain the buffer was mapped in, while it lives (its cookie goes with iommu_domain_free), whether or not
        // it is still the device's.
        if (buffer.Domain is IDomain domain && CookieOf(domain) is IovaDomain iovad)
        {
            try
            {
                using DomainUse use = new(guard, domain);

                // Only a mapping of this buffer's own pages: a misdirected streaming unmap (a device that left its group
                // unmapping a stale handle) may have taken the buffer's range, and a later map reused the IOVA for
                // another buffer, which unmapping the handle would take (found by the chaos property, seed 7).
                if (domain.Ops?.IovaToPhys(domain, dmaHandle) == cpuAddress)
                {
                    // Lazy (DMA_FQ): the pages wait with the IOVA for the flush. Freed now (as 5.15 does) they could
                    // become page tables while a stale IOTLB entry still lets the device write them.
                    deferred = IommuDmaUnmap(guard, device, domain, dmaHandle, size, "dma_free_coherent", iovad.HasFlushQueue ? new CoherentPages(cpuAddress, block) : null);
                }
            }
            catch (ObjectDisposedException) when (domain is IommuDomain { Dying: not 0 })
            {
                // iommu_domain_free began meanwhile: the mapping goes with the domain; the pages still go back below.
            }
            catch (ArgumentException)
            {
                // The range is not live any more (another unmap named it; IommuDmaUnmap refuses before touching
                // anything): the buffer was already forgotten above, so its pages must still go back.
            }
        }

        if (!deferred)
        {
            Platform.Frames.FreeContiguous(cpuAddress, block);
        }
    }

    // alloc_pages(order): a block of `block` pages (a power of two) aligned to its size. Taken from a run of 2 * block - 1
    // frames, whose frames around the aligned block go straight back.
    private bool TryAllocateOrderBlock(int block, out ulong phys)
    {
        Memory.FrameAllocator frames = Platform.Frames;
        if (block == 1)
        {
            return frames.TryAllocate(out phys);
        }

        if (!frames.TryAllocateContiguous((2 * block) - 1, out ulong run))
        {
            phys = 0;
            return false;
        }

        ulong bytes = (ulong)block << Memory.PhysicalMemory.PageShift;
        phys = (run + bytes - 1) & ~(bytes - 1);
        int head = (int)((phys - run) >> Memory.PhysicalMemory.PageShift);
        int tail = block - 1 - head;
        if (head != 0)
        {
            frames.FreeContiguous(run, head);
        }

        if (tail != 0)
        {
            frames.FreeContiguous(phys + bytes, tail);
        }

        return true;
    }

    // An empty list, an entry of 0 bytes or one that wraps: the reason, or null.
    private static string? SgInvalid(ReadOnlySpan<Scatterlist> sg)
    {
        if (sg.IsEmpty)
        {
            return "dma_map_sg of an empty scatterlist";
        }

        for (int i = 0; i < sg.Length; i++)
        {
            Scatterlist s = sg[i];
            if (s.Length == 0 || s.Phys + s.Length - 1 < s.Phys)
            {
                return s.Length == 0 ? $"scatterlist entry {i} has 0 bytes" : $"scatterlist entry {i} [0x{s.Phys:x}, +0x{s.Length:x}) wraps the 64-bit physical address space";
            }
        }

        return null;
    }

    // __invalidate_sg: every entry's DMA fields reset.
    private static void InvalidateSg(Span<Scatterlist> sg)
    {
        for (int i = 0; i < sg.Length; i++)
        {
            sg[i].DmaAddress = DmaMappingError;
            sg[i].DmaLength = 0;
        }
    }

    // dma_direct_map_sg: each entry at its physical address; one above the mask fails the map with -EIO. As 5.15, the
    // failed entry's dma_address is DMA_MAPPING_ERROR and the entries before it are "unmapped" by dma_direct_unmap_sg,
    // which without swiotlb leaves their DMA fields as they are; its length and the entries after it are not touched.
    private static int DmaDirectMapSg(Device device, Span<Scatterlist> sg, ulong mask)
    {
        for (int i = 0; i < sg.Length; i++)
        {
            if (DmaDirectMapPage(device, sg[i].Phys, sg[i].Length, mask) == DmaMappingError)
            {
                sg[i].DmaAddress = DmaMappingError;
                ErrorDetail.Fail(Errno.EIO, $"scatterlist entry {i} [0x{sg[i].Phys:x}, +0x{sg[i].Length:x}) cannot be mapped for {device.Name}: {ErrorDetail.LastMessage}");
                return 0;
            }

            sg[i].DmaAddress = sg[i].Phys;
            sg[i].DmaLength = sg[i].Length;
        }

        return sg.Length;
    }

    // __iommu_map_sg: map the entries' granule-aligned (padded) ranges at consecutive IOVAs, physically contiguous
    // ones in one __iommu_map. `mapped` is what was mapped when an error stopped it.
    private Errno MapSgPieces(IDomain domain, ulong iova, ReadOnlySpan<Scatterlist> sg, ulong granuleMask, IommuProt prot, out ulong mapped)
    {
        IIommuOps? ops = domain.Ops;
        mapped = 0;
        ulong start = 0, len = 0;
        for (int i = 0; i <= sg.Length; i++)
        {
            bool atEnd = i == sg.Length;
            ulong sPhys = atEnd ? 0 : sg[i].Phys & ~granuleMask;
            if (len != 0 && (atEnd || sPhys != start + len))
            {
                Errno err = MapCore(domain, ops, iova + mapped, start, len, prot);
                if (err != Errno.None)
                {
                    return err;
                }

                mapped += len;
                len = 0;
            }

            if (atEnd)
            {
                break;
            }

            if (len != 0)
            {
                len += sg[i].DmaAddress; // the entry's padded IOVA length, stashed by DmaMapSg
            }
            else
            {
                len = sg[i].DmaAddress;
                start = sPhys;
            }
        }

        return Errno.None;
    }

    // __finalise_sg: turn the laid-out entries into DMA segments, merging where the device's limits allow. Lengths are
    // unsigned int as in the kernel.
    private static int FinaliseSg(Device device, Span<Scatterlist> sg, ulong granuleMask, ulong dmaAddr)
    {
        ulong segMask = Volatile.Read(ref device.SegmentBoundaryMask);
        uint maxLen = DmaGetMaxSegSize(device);
        uint curLen = 0;
        int cur = 0, count = 0;
        for (int i = 0; i < sg.Length; i++)
        {
            uint sIovaOff = (uint)(sg[i].Phys & granuleMask);
            uint sLength = sg[i].Length;
            ulong sIovaLen = sg[i].DmaAddress;
            sg[i].DmaAddress = DmaMappingError;
            sg[i].DmaLength = 0;
            if (curLen != 0 && sIovaOff == 0 && (dmaAddr & segMask) != 0 && unchecked(maxLen - curLen) >= sLength)
            {
                curLen = unchecked(curLen + sLength);
            }
            else
            {
                if (i > 0)
                {
                    cur++;
                }

                curLen = sLength;
                count++;
                sg[cur].DmaAddress = dmaAddr + sIovaOff;
            }

            sg[cur].DmaLength = curLen;
            dmaAddr += sIovaLen;
            if ((ulong)sLength + sIovaOff < sIovaLen)
            {
                curLen = 0;
            }
        }

        return count;
    }

    // __iommu_dma_map for iommu_dma_alloc: read-write, cached, at an IOVA below the coherent mask.
    private ulong IommuDmaMapCoherent(IDomain domain, Device device, ulong phys, ulong size, ulong mask)
    {
        IovaDomain? iovad = DmaInitDomain(domain, device);
        if (iovad is null)
        {
            return DmaMappingError;
        }

        // coherent_dma_mask as is (not dma_get_mask): 0 leaves no IOVA.
        return IommuDmaMap(domain, iovad, device, phys, (size + iovad.Granule - 1) & ~(iovad.Granule - 1), IommuProt.Cache | IommuProt.Read | IommuProt.Write, mask);
    }

    private readonly record struct CoherentBuffer(Device Device, ulong Size, ulong Handle, IDomain? Domain);

    // A coherent buffer's block of pages waiting in a DMA_FQ flush queue (IovaDomain.Queue's payload).
    private sealed record CoherentPages(ulong Phys, int Count);
}
