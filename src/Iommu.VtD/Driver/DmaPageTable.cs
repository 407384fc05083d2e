using System.Diagnostics.CodeAnalysis;
using System.Runtime.CompilerServices;
using System.Runtime.Intrinsics;
using System.Runtime.Intrinsics.X86;
using Iommu.Memory;

namespace Iommu.VtD.Driver;

/// <summary>
/// A domain's VT-d second-level page table, living in <see cref="PhysicalMemory"/> exactly as the
/// hardware walks it: 4 KiB tables of 512 64-bit entries, 3 to 5 levels, 2 MiB and 1 GiB superpages.
/// This is the page-table engine of <c>struct dmar_domain</c> (<c>__domain_mapping</c>,
/// <c>domain_unmap</c>, <c>pfn_to_dma_pte</c>).
/// </summary>
/// <remarks>
/// <para>Map, unmap and iova_to_phys allocate nothing on the GC heap: they walk <see cref="Span{T}"/>
/// views of the tables. Intermediate tables are installed with
/// <see cref="Interlocked.CompareExchange(ref ulong, ulong, ulong)"/> (the loser of a race frees its
/// table), and entries are read with <see cref="Volatile"/>, so concurrent maps and unmaps of
/// disjoint ranges and concurrent translations are safe, as in the kernel. Overlapping concurrent
/// calls race as they would in the kernel.</para>
/// <para>Tables freed by an unmap are not reused at once: they wait on a pending list (threaded
/// through the frames themselves, whose links read as not-present entries) until the caller has
/// flushed the IOTLB and calls <see cref="ReleasePendingFrees"/>, the kernel's freelist handed to
/// <c>iotlb_sync</c>.</para>
/// <para>Dispose: the tables live in the frame allocator's region of the platform's memory. Each
/// public member checks the memory's disposed flag (one volatile read) and throws
/// <see cref="ObjectDisposedException"/> after it; that is all the engine pays. It does not itself keep
/// the memory alive against a dispose that starts during a call: its callers do, by holding an access
/// scope (<see cref="PhysicalMemory.EnterAccess"/>) — <see cref="IommuCore"/> holds one around every map,
/// unmap and iova_to_phys that reaches this table through the driver. A direct user that may race the
/// platform's dispose holds one too.</para>
/// </remarks>
public sealed unsafe class DmaPageTable
{
    private const ulong NoFrame = 0;

    private readonly PhysicalMemory _memory;
    private readonly FrameAllocator _frames;
    private readonly ContiguousRegion _region;
    private readonly byte* _base;       // the region's native base: walks are C-style pointer arithmetic
    private readonly ulong _start;
    private readonly ulong _lastTable;
    private ulong _pendingFree = NoFrame;
    private long _tables;
    private int _levels;
    private ulong _maxIova;

    private DmaPageTable(PhysicalMemory memory, FrameAllocator frames, ulong root, int levels)
    {
        _memory = memory;
        _frames = frames;
        _region = frames.Region;
        _base = _region.BasePointer;
        _start = _region.Start;
        _lastTable = _region.Size - PhysicalMemory.PageSize;
        Root = root;
        SetLevels(levels);
        _tables = 1;
    }

    /// <summary>Physical address of the top-level table (<c>dmar_domain->pgd</c>).</summary>
    public ulong Root { get; private set; }

    /// <summary>Number of levels (3 for 39-bit, 4 for 48-bit, 5 for 57-bit; <c>agaw + 2</c>).</summary>
    public int Levels => _levels;

    /// <summary>Address width the table covers: 12 + 9 × levels bits (capped at 64).</summary>
    public int AddressWidth => Math.Min(12 + (9 * _levels), 64);

    /// <summary>Whether tables wait on the pending-free list (an unmap freed tables since the last release).</summary>
    public int PendingFrees => Volatile.Read(ref _pendingFree) == NoFrame ? 0 : 1;

    /// <summary>Table frames currently owned (including those waiting on the pending-free list).</summary>
    public long TableFrames => Interlocked.Read(ref _tables);

    /// <summary>Allocates the top-level table of a new page table (<c>alloc_pgtable_page</c> for the pgd).</summary>
    /// <param name="memory">Where the tables live.</param>
    /// <param name="frames">Where table frames come from.</param>
    /// <param name="levels">3, 4 or 5.</param>
    /// <param name="table">The new page table.</param>
    /// <returns>-ENOMEM when no frame is left.</returns>
    public static Errno Create(PhysicalMemory memory, FrameAllocator frames, int levels, out DmaPageTable? table)
    {
        ArgumentNullException.ThrowIfNull(memory);
        ArgumentNullException.ThrowIfNull(frames);
        ArgumentOutOfRangeException.ThrowIfLessThan(levels, 2);
        ArgumentOutOfRangeException.ThrowIfGreaterThan(levels, 6);
        table = null;
        if (!frames.TryAllocate(out ulong root))
        {
            return ErrorDetail.Fail(Errno.ENOMEM, "no frame left for a page-table root");
        }

        table = new DmaPageTable(memory, frames, root, levels);
        return Errno.None;
    }

    /// <summary>
    /// Maps <paramref name="size"/> bytes (<c>__domain_mapping</c>): at each step the largest page that
    /// the alignment of <paramref name="iova"/> | <paramref name="paddr"/>, the remaining size and
    /// <paramref name="superpageLevels"/> allow (tables left under a new superpage are freed), and
    /// 4 KiB entries up to the end of each table otherwise.
    /// </summary>
    /// <param name="iova">First IOVA, 4 KiB aligned.</param>
    /// <param name="paddr">First physical address, 4 KiB aligned.</param>
    /// <param name="size">Bytes, a multiple of 4 KiB.</param>
    /// <param name="attr">Entry bits: <see cref="DmaPte.Read"/>, <see cref="DmaPte.Write"/>, <see cref="DmaPte.Snoop"/>.</param>
    /// <param name="superpageLevels">Superpage levels allowed (<c>iommu_superpage</c>: 0 none, 1 = 2 MiB, 2 = 1 GiB too).</param>
    /// <param name="mapped">Bytes whose entries this call wrote (or found already set) before it stopped.</param>
    /// <returns>
    /// -EINVAL without R or W, or when <paramref name="iova"/>, <paramref name="paddr"/> or
    /// <paramref name="size"/> is not a multiple of 4 KiB (the kernel counts in pages and cannot get
    /// one); -ENOMEM when a table frame cannot be allocated. An entry that is already present is
    /// left as it is and counted as mapped (the kernel WARNs and returns 0).
    /// </returns>
    /// <remarks>
    /// Like the kernel, a superpage replaces any table under it, with whatever that table mapped;
    /// callers (the IOMMU core users) never map over live mappings. Unlike the kernel, a superpage
    /// already mapped above the target level is left alone instead of being walked into as a table.
    /// </remarks>
    [KernelSymbol("__domain_mapping")]
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public Errno Map(ulong iova, ulong paddr, ulong size, ulong attr, int superpageLevels, out ulong mapped)
    {
        _memory.ThrowIfDisposed();
        // The common case, inlined into callers: iommu_map of one 4 KiB page on a 48-bit unit whose
        // tables already exist. Installing a table, superpages and errors go to MapRange, so no
        // local here lives across a call.
        if (size == DmaPte.LevelSize(1) && _levels == 4 && (attr & (DmaPte.Read | DmaPte.Write)) != 0 && ((iova | paddr) & (DmaPte.LevelSize(1) - 1)) == 0)
        {
            ulong* slot = LeafSlot4(iova);
            if (slot != null)
            {
                if (Volatile.Read(ref *slot) == 0)
                {
                    Volatile.Write(ref *slot, paddr | (attr & (DmaPte.Read | DmaPte.Write | DmaPte.Snoop)));
                }

                mapped = size;
                return Errno.None;
            }
        }

        return MapRange(iova, paddr, size, attr, superpageLevels, out mapped);
    }

    // __domain_mapping for everything but one 4 KiB page on 4 levels.
    private Errno MapRange(ulong iova, ulong paddr, ulong size, ulong attr, int superpageLevels, out ulong mapped)
    {
        mapped = 0;
        if ((attr & (DmaPte.Read | DmaPte.Write)) == 0)
        {
            return ErrorDetail.Fail(Errno.EINVAL, "a mapping needs read or write permission");
        }

        if (((iova | paddr | size) & (DmaPte.LevelSize(1) - 1)) != 0)
        {
            return Unaligned(iova, paddr, size);
        }

        attr &= DmaPte.Read | DmaPte.Write | DmaPte.Snoop;

        // A run of 4 KiB pages inside one existing leaf table (iommu_map of up to 2 MiB - 4 KiB, the
        // common scatter-gather case): one walk, then the leaves. Less than 2 MiB never takes a
        // superpage, so this is what the general loop below would write.
        ulong run = size >> DmaPte.PageShift;
        if (_levels == 4 && run - 1 < 511 && ((iova >> DmaPte.PageShift) & 511) + run <= 512)
        {
            ulong* slot = LeafSlot4(iova);
            if (slot != null)
            {
                SetLeaves(slot, (int)run, paddr, attr);
                mapped = run << DmaPte.PageShift;
                return Errno.None;
            }
        }

        while (size != 0)
        {
            int level = LargepageLevel(iova, paddr, size, superpageLevels);
            ulong table = WalkAlloc(iova, level, out int stoppedAt);
            if (table == NoFrame)
            {
                if (stoppedAt == 0)
                {
                    return OutOfTableFrames(iova);
                }

                // A superpage above the target level already covers iova: leave it (the kernel would
                // walk into the data page; it only WARNs for already-set entries).
                ulong skip = Math.Min(size, DmaPte.LevelSize(stoppedAt) - (iova & (DmaPte.LevelSize(stoppedAt) - 1)));
                iova += skip;
                paddr += skip;
                size -= skip;
                mapped += skip;
                continue;
            }

            ulong step = DmaPte.LevelSize(level);
            ulong leafBits = attr | (level > 1 ? DmaPte.LargePage : 0);
            ulong* entries = TablePointer(table);
            int i = DmaPte.Index(iova, level);

            // Entries up to the end of this table (or of the run): one table, one pointer.
            ulong pages = size >> (DmaPte.PageShift + (DmaPte.StrideShift * (level - 1)));
            int count = pages < (ulong)(512 - i) ? (int)pages : 512 - i;
            if (level == 1)
            {
                SetLeaves(entries + i, count, paddr, leafBits);
                paddr += (ulong)count * step;
            }
            else
            {
                for (int n = 0; n < count; n++, paddr += step)
                {
                    ref ulong slot = ref entries[i + n];
                    FreeSubtableUnder(ref slot, level);
                    if (Volatile.Read(ref slot) == 0)
                    {
                        Volatile.Write(ref slot, paddr | leafBits);
                    }
                }
            }

            ulong done = (ulong)count * step;
            iova += done;
            size -= done;
            mapped += done;
        }

        return Errno.None;
    }

    /// <summary>
    /// Removes every leaf (4 KiB, 2 MiB or 1 GiB page) that overlaps <c>[iova, iova + size)</c>, each
    /// one whole (<c>intel_iommu_unmap</c> → <c>domain_unmap</c>): the "unmap more than asked" contract.
    /// Tables whose whole span lies inside the range are unlinked and put on the pending-free list.
    /// </summary>
    /// <param name="iova">First IOVA, 4 KiB aligned.</param>
    /// <param name="size">Bytes, a multiple of 4 KiB.</param>
    /// <returns>The total size of the leaves removed: possibly more than asked when a superpage
    /// overlaps either end, less when the range has holes, 0 when nothing in it was mapped.</returns>
    /// <remarks>
    /// 5.15 grows the range to the size of the leaf that maps <paramref name="iova"/>, counted from
    /// <paramref name="iova"/> itself: a 4 KiB unmap inside a 2 MiB page then reaches into the next
    /// 2 MiB page, and the size it reports is not what it removed. We remove exactly the leaves that
    /// overlap the range and report their total; nothing outside them changes. 5.10/5.15 also report a
    /// size for an unmapped IOVA; we report 0, the generic contract.
    /// </remarks>
    [KernelSymbol("intel_iommu_unmap")]
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public ulong Unmap(ulong iova, ulong size)
    {
        // One present 4 KiB page on a 48-bit unit, without the span the overload below reports (its
        // out parameters would live on the caller's stack). Everything else goes there.
        if (size == DmaPte.LevelSize(1) && _levels == 4 && iova <= _maxIova)
        {
            _memory.ThrowIfDisposed();
            ulong* slot = LeafSlot4(iova);
            if (slot != null && DmaPte.IsPresent(*slot))
            {
                Volatile.Write(ref *slot, 0);
                return size;
            }
        }

        return Unmap(iova, size, out _, out _);
    }

    /// <summary>
    /// <see cref="Unmap(ulong, ulong)"/>, also giving the span the removed leaves lie in, which is
    /// what an IOTLB flush must cover (wider than the range when a superpage overlaps an end).
    /// </summary>
    /// <param name="iova">First IOVA, 4 KiB aligned.</param>
    /// <param name="size">Bytes, a multiple of 4 KiB.</param>
    /// <param name="spanStart">First IOVA of the span.</param>
    /// <param name="spanEnd">IOVA just past the span (0 when it ends at 2^64).</param>
    /// <returns>The total size of the leaves removed, as for <see cref="Unmap(ulong, ulong)"/>.</returns>
    [KernelSymbol("domain_unmap")]
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public ulong Unmap(ulong iova, ulong size, out ulong spanStart, out ulong spanEnd)
    {
        _memory.ThrowIfDisposed();
        spanStart = iova;
        spanEnd = iova + size;
        if (iova > _maxIova || size == 0)
        {
            return 0;
        }

        // The common cases on a 48-bit unit whose tables reach iova: one present 4 KiB page is one
        // store; a run of 4 KiB pages that ends in the same leaf table without covering all of it
        // (which would free the table) is cleared from its first slot, as UnmapWalk would clear it.
        // Holes above the leaves, superpages, wider ranges and other level counts take the walk.
        if (_levels == 4)
        {
            const int TableShift = DmaPte.PageShift + DmaPte.StrideShift;
            ulong last = iova + size - 1;
            if (size == DmaPte.LevelSize(1))
            {
                ulong* slot = LeafSlot4(iova);
                if (slot != null && DmaPte.IsPresent(*slot))
                {
                    Volatile.Write(ref *slot, 0);
                    return size;
                }
            }
            else if (((iova | size) & (DmaPte.LevelSize(1) - 1)) == 0 && last > iova && (last >> TableShift) == (iova >> TableShift) && size != DmaPte.LevelSize(2))
            {
                ulong* slot = LeafSlot4(iova);
                if (slot != null)
                {
                    return (ulong)ClearLeaves(slot, (int)(size >> DmaPte.PageShift)) << DmaPte.PageShift;
                }
            }
        }

        return UnmapWalk(iova, size, ref spanStart, ref spanEnd);
    }

    // Unmap of anything but one mapped 4 KiB page on 4 levels.
    private ulong UnmapWalk(ulong iova, ulong size, ref ulong spanStart, ref ulong spanEnd)
    {
        ulong last = iova + size - 1;
        if (last < iova || last > _maxIova)
        {
            last = _maxIova;
        }

        byte* b = _base;
        ulong start = _start, lastTable = _lastTable, table = Root;
        int shift = TopShift;
        ulong* slot;
        while (true)
        {
            ulong offset = table - start;
            if (offset > lastTable)
            {
                ThrowForeign(table);
            }

            slot = (ulong*)(b + offset + (((iova >> shift) & 511) * sizeof(ulong)));
            ulong pte = Volatile.Read(ref *slot);
            if (!DmaPte.IsPresent(pte))
            {
                // A hole that holds the whole range: nothing to remove.
                if ((iova >> shift) == (last >> shift))
                {
                    return 0;
                }

                return UnmapRange(iova, last, ref spanStart, ref spanEnd);
            }

            if (shift == DmaPte.PageShift || DmaPte.IsSuperpage(pte))
            {
                break;
            }

            table = DmaPte.Address(pte);
            shift -= DmaPte.StrideShift;
        }

        ulong leaf = 1UL << shift;
        if ((iova >> shift) == (last >> shift))
        {
            // The range lies inside the leaf that maps iova: that leaf is all that goes.
            Volatile.Write(ref *slot, 0);
            spanStart = iova & ~(leaf - 1);
            spanEnd = spanStart + leaf;
            return leaf;
        }

        // A 4 KiB run that ends in the same leaf table without covering all of it (which would free
        // the table): clear from the slot found, as ClearLevel would at level 1.
        const int TableShift = DmaPte.PageShift + DmaPte.StrideShift;
        const ulong IndexBits = ((1UL << TableShift) - 1) & ~((1UL << DmaPte.PageShift) - 1);
        if (shift == DmaPte.PageShift && (last >> TableShift) == (iova >> TableShift) && ((iova | ~last) & IndexBits) != 0)
        {
            int present = ClearLeaves(slot, (int)((last >> DmaPte.PageShift) - (iova >> DmaPte.PageShift)) + 1);
            return (ulong)present << DmaPte.PageShift;
        }

        return UnmapRange(iova, last, ref spanStart, ref spanEnd);
    }

    /// <summary>Translates <paramref name="iova"/> (<c>intel_iommu_iova_to_phys</c>).</summary>
    /// <param name="iova">The IOVA.</param>
    /// <returns>The physical address including the offset in the page, or 0 when not mapped.</returns>
    [KernelSymbol("intel_iommu_iova_to_phys")]
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public ulong IovaToPhys(ulong iova)
    {
        _memory.ThrowIfDisposed();
        if (iova > _maxIova)
        {
            return 0;
        }

        if (_levels == 4)
        {
            return Lookup4(iova);
        }

        // Locals, not fields: the acquire reads below would make the JIT reload fields every level.
        byte* b = _base;
        ulong start = _start, lastTable = _lastTable, table = Root;
        for (int shift = TopShift; ; shift -= DmaPte.StrideShift)
        {
            ulong offset = table - start;
            if (offset > lastTable)
            {
                ThrowForeign(table);
            }

            ulong pte = Volatile.Read(ref *(ulong*)(b + offset + (((iova >> shift) & 511) * sizeof(ulong))));
            if (!DmaPte.IsPresent(pte))
            {
                return 0;
            }

            if (shift == DmaPte.PageShift || DmaPte.IsSuperpage(pte))
            {
                ulong mask = (1UL << shift) - 1;
                return (DmaPte.Address(pte) & ~mask) | (iova & mask);
            }

            table = DmaPte.Address(pte);
        }
    }

    // domain_unmap over [first, last]: every leaf that intersects it goes, whole.
    private ulong UnmapRange(ulong first, ulong last, ref ulong spanStart, ref ulong spanEnd)
    {
        var removed = new Removed { Low = first, High = last };
        ClearLevel(Root, _levels, 0, first, last, ref removed);
        spanStart = removed.Low;
        spanEnd = removed.High + 1;
        return removed.Bytes;
    }

    /// <summary>
    /// Drops the top level while the table has more levels than <paramref name="levels"/>: entry 0 of
    /// the top table, if present, becomes the new top and the old top is freed (the agaw adjustment
    /// of <c>prepare_domain_attach_device</c>). The caller has checked nothing is mapped above.
    /// </summary>
    /// <param name="levels">The level count of the unit being attached.</param>
    public void ReduceLevels(int levels)
    {
        _memory.ThrowIfDisposed();
        while (_levels > levels)
        {
            ulong top = _region.Table(Root)[0];
            if (DmaPte.IsPresent(top))
            {
                ulong old = Root;
                Root = DmaPte.Address(top);
                _frames.Free(old);
                Interlocked.Decrement(ref _tables);
            }

            SetLevels(_levels - 1);
        }
    }

    /// <summary>
    /// Frees the tables that unmaps put on the pending list. Call after the IOTLB flush that
    /// covers those unmaps (the kernel frees its freelist in <c>iotlb_sync</c>).
    /// </summary>
    /// <returns>Number of frames freed.</returns>
    public int ReleasePendingFrees()
    {
        _memory.ThrowIfDisposed();
        ulong head = Interlocked.Exchange(ref _pendingFree, NoFrame);
        int n = 0;
        while (head != NoFrame)
        {
            ulong next = _region.Entry(head);
            _frames.Free(head);
            head = next;
            n++;
        }

        Interlocked.Add(ref _tables, -n);
        return n;
    }

    /// <summary>
    /// Moves the tables waiting on the pending list onto the front of <paramref name="freelist"/>, a
    /// chain in the form of <see cref="IommuIotlbGather.Freelist"/>: from then on the chain's owner frees
    /// them (<see cref="FrameAllocator.FreeList"/>) after the flush that covers the unmaps that freed
    /// them, and <see cref="TableFrames"/> no longer counts them (the 5.15 <c>gather->freelist</c> a DMA
    /// flush queue keeps until its flush).
    /// </summary>
    /// <param name="freelist">The chain to extend (0 when empty).</param>
    /// <returns>Number of frames moved.</returns>
    public int TakePendingFrees(ref ulong freelist)
    {
        _memory.ThrowIfDisposed();
        ulong head = Interlocked.Exchange(ref _pendingFree, NoFrame);
        if (head == NoFrame)
        {
            return 0;
        }

        int n = 1;
        ulong tail = head;
        for (ulong next = _region.Entry(tail); next != NoFrame; next = _region.Entry(tail))
        {
            tail = next;
            n++;
        }

        _region.Entry(tail) = freelist;
        freelist = head;
        Interlocked.Add(ref _tables, -n);
        return n;
    }

    /// <summary>Frees every table, the root included (<c>domain_exit</c>). The page table must not be used afterwards.</summary>
    public void FreeAll()
    {
        _memory.ThrowIfDisposed();
        FreeTree(Root, _levels);
        ReleasePendingFrees();
        Root = NoFrame;
    }

    /// <summary>Calls <paramref name="visit"/> for every present leaf: (IOVA, physical address, page size, entry).</summary>
    /// <param name="visit">The callback.</param>
    /// <remarks>For inspection and tests (the kernel's debugfs dump); allocates.</remarks>
    public void ForEachLeaf(Action<ulong, ulong, ulong, ulong> visit)
    {
        _memory.ThrowIfDisposed();
        ArgumentNullException.ThrowIfNull(visit);
        Visit(Root, _levels, 0, visit);
    }

    private int TopShift => DmaPte.PageShift + (DmaPte.StrideShift * (_levels - 1));

    private void SetLevels(int levels)
    {
        _levels = levels;
        int width = 12 + (9 * levels);
        _maxIova = width >= 64 ? ulong.MaxValue : (1UL << width) - 1;
    }

    // hardware_largepage_caps: the largest level whose alignment and remaining size fit.
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static int LargepageLevel(ulong iova, ulong paddr, ulong size, int support)
    {
        int level = 1;
        ulong merge = (iova | paddr) >> DmaPte.PageShift;
        ulong pages = size >> DmaPte.PageShift;
        while (support > 0 && (merge & 511) == 0)
        {
            pages >>= DmaPte.StrideShift;
            if (pages == 0)
            {
                break;
            }

            merge >>= DmaPte.StrideShift;
            level++;
            support--;
        }

        return level;
    }

    // pfn_to_dma_pte with a target level: the table holding iova's entry at targetLevel, allocating
    // missing tables on the way. Returns 0 with stoppedAt = 0 on allocation failure, or with the
    // level of a superpage leaf found above the target.
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private ulong WalkAlloc(ulong iova, int targetLevel, out int stoppedAt)
    {
        stoppedAt = 0;
        byte* b = _base;
        ulong start = _start, lastTable = _lastTable, table = Root;
        int targetShift = DmaPte.PageShift + (DmaPte.StrideShift * (targetLevel - 1));
        for (int shift = TopShift; shift > targetShift; shift -= DmaPte.StrideShift)
        {
            ulong offset = table - start;
            if (offset > lastTable)
            {
                ThrowForeign(table);
            }

            ref ulong slot = ref *(ulong*)(b + offset + (((iova >> shift) & 511) * sizeof(ulong)));
            ulong pte = Volatile.Read(ref slot);
            if (!DmaPte.IsPresent(pte))
            {
                pte = InstallTable(ref slot);
                if (pte == NoFrame)
                {
                    return NoFrame;
                }
            }
            else if (DmaPte.IsSuperpage(pte))
            {
                stoppedAt = 1 + ((shift - DmaPte.PageShift) / DmaPte.StrideShift);
                return NoFrame;
            }

            table = DmaPte.Address(pte);
        }

        return table;
    }

    // The 4 KiB entry slot for iova on 4 levels when every table above it exists (no superpage on
    // the way), else null. Plain reads: see Lookup4.
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private ulong* LeafSlot4(ulong iova)
    {
        ulong pte = *EntryPointer(Root, iova, 39);
        if (!IsTable(pte))
        {
            return null;
        }

        pte = *EntryPointer(DmaPte.Address(pte), iova, 30);
        if (!IsTable(pte))
        {
            return null;
        }

        pte = *EntryPointer(DmaPte.Address(pte), iova, 21);
        return IsTable(pte) ? EntryPointer(DmaPte.Address(pte), iova, 12) : null;
    }

    // 4 KiB leaves of one table. Disjoint ranges never share a leaf entry, so a plain check-and-store
    // is enough; an entry already present is kept (the kernel's cmpxchg64 + WARN). Eight, four (or
    // two) entries per aligned vector store, like the kernel's memset64 of contiguous PTEs: an aligned
    // 16-byte vector access is atomic on x86 CPUs with AVX and is two 8-byte single-copy-atomic
    // accesses on ARMv8, an aligned 32-byte store is two such halves, and an AVX-512 masked store
    // writes each selected 8-byte lane whole, so a concurrent hardware walk never sees a torn PTE. Order among the entries of a run does not matter; against later
    // steps it comes from x86's ordered stores, or on ARM from the interlocked operations of the
    // IOTLB flush that follows every unmap before its tables are freed (full fences in .NET).
    // Static with few locals so the loops stay in registers.
    private static void SetLeaves(ulong* entries, int count, ulong paddr, ulong bits)
    {
        const ulong Page = 1UL << DmaPte.PageShift;
        int n = 0;
        if (Avx512F.IsSupported && Vector512.IsHardwareAccelerated && count >= 16)
        {
            // Eight entries per aligned 64-byte store, masked to the lanes that are still zero (what
            // gcc makes of the C floor's loop): entries already present are never written, as in the
            // scalar SetLeaf; each 8-byte lane is written whole, as in the 32-byte stores below.
            for (; ((nuint)(entries + n) & 63) != 0; n++, paddr += Page)
            {
                SetLeaf(entries + n, paddr | bits);
            }

            ulong* p = entries + n;
            ulong* last = entries + count - 8;
            Vector512<ulong> v = (Vector512.Create(paddr) + Vector512.Create(0, Page, 2 * Page, 3 * Page, 4 * Page, 5 * Page, 6 * Page, 7 * Page)) | Vector512.Create(bits);
            Vector512<ulong> step = Vector512.Create(8 * Page);
            for (; p <= last; p += 8, v += step)
            {
                Avx512F.MaskStoreAligned(p, Vector512.Equals(Vector512.LoadAligned(p), Vector512<ulong>.Zero), v);
            }

            int done = (int)(p - entries);
            paddr += (ulong)(done - n) * Page;
            n = done;
        }
        else if (Vector256.IsHardwareAccelerated && count >= 8)
        {
            for (; ((nuint)(entries + n) & 31) != 0; n++, paddr += Page)
            {
                SetLeaf(entries + n, paddr | bits);
            }

            Vector256<ulong> v = Vector256.Create(paddr, paddr + Page, paddr + (2 * Page), paddr + (3 * Page)) | Vector256.Create(bits);
            for (; n + 4 <= count; n += 4, paddr += 4 * Page, v += Vector256.Create(4 * Page))
            {
                ulong* p = entries + n;
                if (Vector256.LoadAligned(p) == Vector256<ulong>.Zero)
                {
                    Vector256.StoreAligned(v, p);
                }
                else
                {
                    for (int k = 0; k < 4; k++)
                    {
                        SetLeaf(p + k, (paddr + ((ulong)k * Page)) | bits);
                    }
                }
            }
        }
        else if (Vector128.IsHardwareAccelerated && count >= 4)
        {
            if (((nuint)entries & 15) != 0)
            {
                SetLeaf(entries, paddr | bits);
                n = 1;
                paddr += Page;
            }

            Vector128<ulong> v = Vector128.Create(paddr | bits, (paddr + Page) | bits);
            for (; n + 2 <= count; n += 2, paddr += 2 * Page, v += Vector128.Create(2 * Page))
            {
                ulong* p = entries + n;
                if (Vector128.LoadAligned(p) == Vector128<ulong>.Zero)
                {
                    Vector128.StoreAligned(v, p);
                }
                else
                {
                    SetLeaf(p, paddr | bits);
                    SetLeaf(p + 1, (paddr + Page) | bits);
                }
            }
        }

        for (; n < count; n++, paddr += Page)
        {
            SetLeaf(entries + n, paddr | bits);
        }
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void SetLeaf(ulong* entry, ulong pte)
    {
        if (Volatile.Read(ref *entry) == 0)
        {
            Volatile.Write(ref *entry, pte);
        }
    }

    // Clears count 4 KiB leaves of one table with aligned vector stores (see SetLeaves); returns how
    // many were present. Each vector is loaded before it is stored (the line is being written anyway)
    // and its absent lanes (R and W clear: all ones from the compare) are subtracted from a running
    // count; by pointer, one 64-byte vector (or two 32-byte ones) per step, the loop stays near the
    // store-only one.
    private static int ClearLeaves(ulong* entries, int count)
    {
        ulong* p = entries, end = entries + count;
        int present = 0;
        if (Vector512.IsHardwareAccelerated && count >= 16)
        {
            for (; ((nuint)p & 63) != 0; p++)
            {
                present += ClearLeaf(p);
            }

            ulong* first = p;
            Vector512<ulong> absent = Vector512<ulong>.Zero, rw = Vector512.Create(DmaPte.Read | DmaPte.Write);
            for (; p + 8 <= end; p += 8)
            {
                absent -= Vector512.Equals(Vector512.LoadAligned(p) & rw, Vector512<ulong>.Zero);
                Vector512.StoreAligned(Vector512<ulong>.Zero, p);
            }

            present += (int)(p - first) - (int)Vector512.Sum(absent);
        }
        else if (Vector256.IsHardwareAccelerated && count >= 8)
        {
            for (; ((nuint)p & 31) != 0; p++)
            {
                present += ClearLeaf(p);
            }

            ulong* first = p;
            Vector256<ulong> absent = Vector256<ulong>.Zero, rw = Vector256.Create(DmaPte.Read | DmaPte.Write);
            for (; p + 8 <= end; p += 8)
            {
                Vector256<ulong> lo = Vector256.Equals(Vector256.LoadAligned(p) & rw, Vector256<ulong>.Zero);
                Vector256<ulong> hi = Vector256.Equals(Vector256.LoadAligned(p + 4) & rw, Vector256<ulong>.Zero);
                absent -= lo + hi;
                Vector256.StoreAligned(Vector256<ulong>.Zero, p);
                Vector256.StoreAligned(Vector256<ulong>.Zero, p + 4);
            }

            present += (int)(p - first) - (int)Vector256.Sum(absent);
        }
        else if (Vector128.IsHardwareAccelerated && count >= 4)
        {
            if (((nuint)p & 15) != 0)
            {
                present += ClearLeaf(p++);
            }

            ulong* first = p;
            Vector128<ulong> absent = Vector128<ulong>.Zero, rw = Vector128.Create(DmaPte.Read | DmaPte.Write);
            for (; p + 4 <= end; p += 4)
            {
                Vector128<ulong> lo = Vector128.Equals(Vector128.LoadAligned(p) & rw, Vector128<ulong>.Zero);
                Vector128<ulong> hi = Vector128.Equals(Vector128.LoadAligned(p + 2) & rw, Vector128<ulong>.Zero);
                absent -= lo + hi;
                Vector128.StoreAligned(Vector128<ulong>.Zero, p);
                Vector128.StoreAligned(Vector128<ulong>.Zero, p + 2);
            }

            present += (int)(p - first) - (int)Vector128.Sum(absent);
        }

        for (; p < end; p++)
        {
            present += ClearLeaf(p);
        }

        return present;
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static int ClearLeaf(ulong* entry)
    {
        int present = DmaPte.IsPresent(Volatile.Read(ref *entry)) ? 1 : 0;
        Volatile.Write(ref *entry, 0);
        return present;
    }

    // How many of count entries (a whole table being freed) are present.
    private static int CountPresent(ulong* entries, int count)
    {
        int n = 0, present = 0;
        if (Vector256.IsHardwareAccelerated)
        {
            Vector256<ulong> absent = Vector256<ulong>.Zero, rw = Vector256.Create(DmaPte.Read | DmaPte.Write);
            for (; n + 4 <= count; n += 4)
            {
                absent -= Vector256.Equals(Vector256.Load(entries + n) & rw, Vector256<ulong>.Zero);
            }

            present = n - (int)Vector256.Sum(absent);
        }

        for (; n < count; n++)
        {
            present += DmaPte.IsPresent(entries[n]) ? 1 : 0;
        }

        return present;
    }

    // What an unmap removed: the leaves' total and the span they lie in.
    private struct Removed
    {
        public ulong Bytes;
        public ulong Low;
        public ulong High;
    }

    // A present entry that points to a next-level table (not a superpage).
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static bool IsTable(ulong pte) => DmaPte.IsPresent(pte) && !DmaPte.IsSuperpage(pte);

    [MethodImpl(MethodImplOptions.NoInlining)]
    private static Errno Unaligned(ulong iova, ulong paddr, ulong size) =>
        ErrorDetail.Fail(Errno.EINVAL, $"iova 0x{iova:x}, paddr 0x{paddr:x} and size 0x{size:x} must all be multiples of 4 KiB");

    [MethodImpl(MethodImplOptions.NoInlining)]
    private static Errno OutOfTableFrames(ulong iova) =>
        ErrorDetail.Fail(Errno.ENOMEM, $"no frame left for a page table while mapping iova 0x{iova:x}");

    // iova_to_phys for 4 levels, unrolled; inlined into callers of IovaToPhys. Plain reads are
    // enough: a table is published by a compare-exchange after it was zeroed, and dependent loads
    // are ordered in .NET.
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private ulong Lookup4(ulong iova)
    {
        byte* b = _base;
        ulong start = _start, last = _lastTable;
        ulong pte = *EntryPointer(b, start, last, Root, iova, 39);
        if (!DmaPte.IsPresent(pte))
        {
            return 0;
        }

        pte = *EntryPointer(b, start, last, DmaPte.Address(pte), iova, 30);
        if (!DmaPte.IsPresent(pte))
        {
            return 0;
        }

        if (DmaPte.IsSuperpage(pte))
        {
            return (DmaPte.Address(pte) & ~((1UL << 30) - 1)) | (iova & ((1UL << 30) - 1));
        }

        pte = *EntryPointer(b, start, last, DmaPte.Address(pte), iova, 21);
        if (!DmaPte.IsPresent(pte))
        {
            return 0;
        }

        if (DmaPte.IsSuperpage(pte))
        {
            return (DmaPte.Address(pte) & ~((1UL << 21) - 1)) | (iova & ((1UL << 21) - 1));
        }

        pte = *EntryPointer(b, start, last, DmaPte.Address(pte), iova, 12);
        return DmaPte.IsPresent(pte) ? DmaPte.Address(pte) | (iova & 0xFFF) : 0;
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static ulong* EntryPointer(byte* b, ulong start, ulong last, ulong table, ulong iova, int shift)
    {
        ulong offset = table - start;
        if (offset > last)
        {
            ThrowForeign(table);
        }

        return (ulong*)(b + offset + (((iova >> shift) & 511) * sizeof(ulong)));
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private ulong* EntryPointer(ulong table, ulong iova, int shift)
    {
        ulong offset = table - _start;
        if (offset > _lastTable)
        {
            ThrowForeign(table);
        }

        return (ulong*)(_base + offset + (((iova >> shift) & 511) * sizeof(ulong)));
    }

    // Not NoInlining: the JIT must look at the body to see it never returns, so the walks treat the
    // check as a cold throw block instead of keeping their locals alive (spilled) across a call.
    [DoesNotReturn]
    private static void ThrowForeign(ulong table) =>
        throw new InvalidOperationException($"Page-table pointer 0x{table:x} lies outside the translation-structure region: the tables are corrupt.");

    [MethodImpl(MethodImplOptions.NoInlining)]
    private ulong InstallTable(ref ulong slot)
    {
        if (!_frames.TryAllocate(out ulong fresh))
        {
            return NoFrame;
        }

        ulong pte = fresh | DmaPte.Read | DmaPte.Write;
        ulong prev = Interlocked.CompareExchange(ref slot, pte, 0);
        if (prev != 0)
        {
            _frames.Free(fresh); // someone else installed one first; use theirs
            return prev;
        }

        Interlocked.Increment(ref _tables);
        return pte;
    }

    // Before a superpage goes into slot (at level): a table already there is unlinked and freed with
    // its subtree, mappings included, as dma_pte_free_pagetable does in __domain_mapping.
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private void FreeSubtableUnder(ref ulong slot, int level)
    {
        ulong pte = Volatile.Read(ref slot);
        if (DmaPte.IsPresent(pte) && !DmaPte.IsSuperpage(pte) && Interlocked.CompareExchange(ref slot, 0, pte) == pte)
        {
            PendTree(DmaPte.Address(pte), level - 1);
        }
    }

    // dma_pte_clear_level: clear entries of [start, last] in the table at level; unlink tables whose
    // whole span is inside the range. A superpage only partly inside the range is cleared whole (the
    // kernel would walk into the data page), and widens the span to flush. Counts what it removes.
    private void ClearLevel(ulong table, int level, ulong addr, ulong start, ulong last, ref Removed removed)
    {
        ulong* entries = TablePointer(table);
        ulong span = DmaPte.LevelSize(level);
        ulong from = Math.Max(start, addr);
        int i = DmaPte.Index(from, level);

        // Entries of this table that intersect [from, last].
        ulong tableSpan = span << DmaPte.StrideShift;
        ulong tableEnd = (from & ~(tableSpan - 1)) + tableSpan - 1;
        int end = last >= tableEnd ? 512 : DmaPte.Index(last, level) + 1;
        if (level == 1)
        {
            removed.Bytes += (ulong)ClearLeaves(entries + i, end - i) << DmaPte.PageShift;
            return;
        }

        ulong at = from & ~(span - 1);
        for (; i < end; i++, at += span)
        {
            ref ulong slot = ref entries[i];
            ulong pte = Volatile.Read(ref slot);
            if (!DmaPte.IsPresent(pte))
            {
                continue;
            }

            if (DmaPte.IsSuperpage(pte))
            {
                Volatile.Write(ref slot, 0);
                removed.Bytes += span;
                removed.Low = Math.Min(removed.Low, at);
                removed.High = Math.Max(removed.High, at + span - 1);
            }
            else if (start <= at && last >= at + span - 1)
            {
                Volatile.Write(ref slot, 0);
                removed.Bytes += PendTree(DmaPte.Address(pte), level - 1);
            }
            else
            {
                ClearLevel(DmaPte.Address(pte), level - 1, at, start, last, ref removed);
            }
        }
    }

    // The native address of a table of the region (tables always come from our frame allocator).
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private ulong* TablePointer(ulong table)
    {
        ulong offset = table - _start;
        if (offset > _lastTable)
        {
            ThrowForeign(table);
        }

        return (ulong*)(_base + offset);
    }

    // Puts a table of the given level and every table under it on the pending-free list; returns
    // the bytes its leaves mapped.
    private ulong PendTree(ulong table, int level)
    {
        ulong bytes;
        if (level > 1)
        {
            bytes = 0;
            ulong span = DmaPte.LevelSize(level);
            Span<ulong> entries = _region.Table(table);
            for (int i = 0; i < 512; i++)
            {
                ulong pte = entries[i];
                if (DmaPte.IsPresent(pte))
                {
                    bytes += DmaPte.IsSuperpage(pte) ? span : PendTree(DmaPte.Address(pte), level - 1);
                }
            }
        }
        else
        {
            bytes = (ulong)CountPresent(TablePointer(table), 512) << DmaPte.PageShift;
        }

        Pend(table);
        return bytes;
    }

    private void Pend(ulong frame)
    {
        ulong head;
        do
        {
            head = Volatile.Read(ref _pendingFree);
            _region.Entry(frame) = head;
        }
        while (Interlocked.CompareExchange(ref _pendingFree, frame, head) != head);
    }

    private void FreeTree(ulong table, int level)
    {
        if (level > 1)
        {
            Span<ulong> entries = _region.Table(table);
            for (int i = 0; i < 512; i++)
            {
                ulong pte = entries[i];
                if (DmaPte.IsPresent(pte) && !DmaPte.IsSuperpage(pte))
                {
                    FreeTree(DmaPte.Address(pte), level - 1);
                }
            }
        }

        _frames.Free(table);
        Interlocked.Decrement(ref _tables);
    }

    private void Visit(ulong table, int level, ulong baseIova, Action<ulong, ulong, ulong, ulong> visit)
    {
        ulong span = DmaPte.LevelSize(level);
        for (int i = 0; i < 512; i++)
        {
            ulong pte = Volatile.Read(ref _region.Table(table)[i]);
            if (!DmaPte.IsPresent(pte))
            {
                continue;
            }

            ulong iova = baseIova + ((ulong)i * span);
            if (level == 1 || DmaPte.IsSuperpage(pte))
            {
                visit(iova, DmaPte.Address(pte) & ~(span - 1), span, pte);
            }
            else
            {
                Visit(DmaPte.Address(pte), level - 1, iova, visit);
            }
        }
    }
}
