using System.Diagnostics.CodeAnalysis;
using System.Runtime.CompilerServices;
using System.Runtime.Intrinsics;
using System.Runtime.Intrinsics.X86;
using Iommu.Memory;

namespace Iommu.VtD.Driver;

/// <summary>
/// The page-table engine, generic over its entry format (Linux <c>generic_pt</c>): map, unmap and
/// iova_to_phys over 4 KiB tables of 512 64-bit entries in a <see cref="ContiguousRegion"/>, with
/// superpages, the pending-free list and lock-free table installation. <see cref="DmaPageTable"/> is its
/// public face for VT-d second-level tables.
/// </summary>
/// <remarks>
/// <para>One walker: <see cref="Walk{TLevel}"/> descends from the top table to a target level
/// (installing missing tables when asked) and every operation that looks up one address goes through
/// it; specialised per level (<see cref="IPtLevel"/>) and inlined, a 4-level walk is the straight-line
/// code the hand-unrolled 4-level copies used to be. <see cref="ClearLevel"/> walks a range and
/// <see cref="VisitTree"/> a whole subtree. A new format is a struct implementing <see cref="IPtFormat"/>
/// (see its remarks for first-level); nothing here changes.</para>
/// <para>A mutable struct: it lives as a field of its owner and is only ever used in place (its address
/// is stable because the owner is a class), so its fields are one load away like a class's own.</para>
/// </remarks>
/// <typeparam name="TFormat">The entry format.</typeparam>
internal unsafe struct PageTable<TFormat>
    where TFormat : struct, IPtFormat
{
    private const ulong NoFrame = 0;

    private readonly PhysicalMemory _memory;
    private readonly FrameAllocator _frames;
    private readonly ContiguousRegion _region;
    private readonly byte* _base;       // the region's native base: walks are C-style pointer arithmetic
    private readonly ulong _start;
    private readonly ulong _lastTable;
    private ulong _pendingFree;
    private long _tables;
    private long _replacedTables; // tables a superpage map unlinked (FreeSubtableUnder): only ever grows
    private int _levels;
    private ulong _maxIova;
    private ulong _walk4End; // 2^48 on 4 levels, else 0: "iova < _walk4End" is the 4-level fast paths' one test of level count and width
    private ulong _root;

    public PageTable(PhysicalMemory memory, FrameAllocator frames, ulong root, int levels)
    {
        _memory = memory;
        _frames = frames;
        _region = frames.Region;
        _base = _region.BasePointer;
        _start = _region.Start;
        _lastTable = _region.Size - PhysicalMemory.PageSize;
        _pendingFree = NoFrame;
        _root = root;
        SetLevels(levels);
        _tables = 1;
    }

    public readonly PhysicalMemory Memory => _memory;

    public readonly ulong Root => _root;

    public readonly int Levels => _levels;

    // Address bits the levels cover (12 + 9 per level; above 64 when 6 levels).
    public readonly int Width => TFormat.PageShift + (TFormat.StrideShift * _levels);

    public readonly int PendingFrees => Volatile.Read(ref Unsafe.AsRef(in _pendingFree)) == NoFrame ? 0 : 1;

    public readonly long TableFrames => Interlocked.Read(ref Unsafe.AsRef(in _tables));

    // How many tables superpage maps have unlinked so far: a map that changes it must flush what those tables mapped
    // (IntelIommu.MapPages, as switch_to_super_page does).
    public readonly long ReplacedTables => Interlocked.Read(ref Unsafe.AsRef(in _replacedTables));

    // Superpage levels above 4 KiB that VT-d defines: 2 MiB and 1 GiB.
    private const int MaxSuperpageLevels = 2;

    // Constants of the instantiation, forced inline: a large caller over its inlining budget still folds them.
    private static int EntriesPerTable
    {
        [MethodImpl(MethodImplOptions.AggressiveInlining)]
        get => 1 << TFormat.StrideShift;
    }

    private static ulong IndexMask
    {
        [MethodImpl(MethodImplOptions.AggressiveInlining)]
        get => (ulong)EntriesPerTable - 1;
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static int Shift(int level) => TFormat.PageShift + (TFormat.StrideShift * (level - 1));

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static ulong LevelSize(int level) => 1UL << Shift(level);

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static int Index(ulong iova, int level) => (int)((iova >> Shift(level)) & IndexMask);

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static bool IsPresent(ulong pte) => (pte & TFormat.PresentMask) != 0;

    // A present entry that points to a next-level table (not a leaf).
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static bool IsTable(ulong pte, int level) => IsPresent(pte) && !TFormat.IsLeaf(pte, level);

    /// <summary>
    /// The walker, from the entry of <paramref name="iova"/> in <paramref name="table"/> at
    /// <typeparamref name="TLevel"/> down to the entry at <paramref name="targetLevel"/>. It stops
    /// early at an entry that is not a table pointer — absent, or a leaf above the target — unless
    /// <paramref name="mode"/> is <see cref="PtWalkMode.Install"/>, when an absent table is
    /// installed and the walk goes on (a failed install stops it there, the entry still absent).
    /// Returns the table it stopped in, the level and the value read from the entry (at the target
    /// level, only for the lookup modes; leaf-only modes give no table when they stop above level 1).
    /// </summary>
    /// <remarks>
    /// The level is a type (<see cref="IPtLevel"/>), so each level is its own specialised copy with the
    /// level constant, inlining the next: with constant <paramref name="targetLevel"/> and
    /// <paramref name="mode"/> the JIT makes straight-line code of it (what the hand-unrolled 4-level
    /// copies used to be). Plain reads would do for the lookups (a table is published by a
    /// compare-exchange after it was zeroed, and dependent loads are ordered), but the format's acquire
    /// load costs nothing more on x64.
    /// </remarks>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal PtWalk Walk<TLevel>(Tables tables, ulong table, ulong iova, int targetLevel, PtWalkMode mode)
        where TLevel : struct, IPtLevel
    {
        int level = TLevel.Level;
        ulong* entries;
        if (mode == PtWalkMode.Query)
        {
            // The range test itself branches out: a null pointer for a foreign table, tested after,
            // made the JIT merge the two arms and test again, two more branches per level.
            if (!tables.TryTablePointer(table, out entries))
            {
                return new PtWalk(null, 0, level);
            }
        }
        else
        {
            entries = tables.TablePointer(table);
        }

        if (level == 1 || level == targetLevel)
        {
            // Only lookups read the target entry: a run of leaves reads its entries itself, and a
            // read here would be one more dependent load on a cold table.
            bool read = mode is PtWalkMode.Lookup or PtWalkMode.Query or PtWalkMode.LeafEntry;
            ulong index = (iova >> Shift(level)) & IndexMask;

            // The leaf-only modes give the entry itself (their one user wants it), so the index is
            // added once and the caller's null test is the only one.
            ulong* at = mode is PtWalkMode.LeafEntry or PtWalkMode.LeafSlot ? entries + index : entries;
            return new PtWalk(at, read ? TFormat.Load(entries, index) : 0, level);
        }

        // A leaf-only walk that stops above the target says so with no table: every early exit is
        // then the same constant, and the caller's one null test is all the merge costs.
        ulong* stop = mode is PtWalkMode.LeafEntry or PtWalkMode.LeafSlot ? null : entries;
        ulong e = TFormat.Load(entries, (iova >> Shift(level)) & IndexMask);
        if (!IsPresent(e))
        {
            if (mode != PtWalkMode.Install || (e = InstallTable(entries + ((iova >> Shift(level)) & IndexMask))) == NoFrame)
            {
                return new PtWalk(stop, e, level);
            }
        }
        else if (TFormat.IsLeaf(e, level))
        {
            return new PtWalk(stop, e, level);
        }

        return TLevel.Below(ref this, tables, TFormat.Address(e), iova, targetLevel, mode);
    }

    // The walk from the root on 4 levels (48-bit): the fast paths' specialisation, inlined.
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private PtWalk Walk4(ulong iova, int targetLevel, PtWalkMode mode) =>
        Walk<PtLevelAbove<PtLevelAbove<PtLevelAbove<PtLevel1>>>>(new Tables(_base, _start, _lastTable), _root, iova, targetLevel, mode);

    // The walk from the root for any level count: one specialisation per depth. Not inlined (five
    // copies would spend the caller's inlining budget); 4-level callers inline Walk4 instead.
    [MethodImpl(MethodImplOptions.NoInlining)]
    private PtWalk WalkAnyDepth(ulong iova, int targetLevel, PtWalkMode mode)
    {
        var tables = new Tables(_base, _start, _lastTable);
        return _levels switch
        {
            4 => Walk<PtLevelAbove<PtLevelAbove<PtLevelAbove<PtLevel1>>>>(tables, _root, iova, targetLevel, mode),
            3 => Walk<PtLevelAbove<PtLevelAbove<PtLevel1>>>(tables, _root, iova, targetLevel, mode),
            5 => Walk<PtLevelAbove<PtLevelAbove<PtLevelAbove<PtLevelAbove<PtLevel1>>>>>(tables, _root, iova, targetLevel, mode),
            2 => Walk<PtLevelAbove<PtLevel1>>(tables, _root, iova, targetLevel, mode),
            _ => Walk<PtLevelAbove<PtLevelAbove<PtLevelAbove<PtLevelAbove<PtLevelAbove<PtLevel1>>>>>>(tables, _root, iova, targetLevel, mode),
        };
    }

    // The 4 KiB entry of iova on 4 levels when every table above it exists (no superpage on the way), else null.
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private ulong* LeafSlot4(ulong iova, PtWalkMode mode, out ulong pte)
    {
        PtWalk w = Walk4(iova, 1, mode);
        pte = w.Pte;
        return w.Table; // the leaf-only modes' Table is the entry (Walk)
    }

    // __domain_mapping; see DmaPageTable.Map. The common case (one 4 KiB page on 4 levels whose tables
    // exist) is inlined into callers; installing a table, superpages and errors go to MapRange, so no
    // local here lives across a call.
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public Errno Map(ulong iova, ulong paddr, ulong size, ulong attr, int superpageLevels, out ulong mapped)
    {
        if (size == LevelSize(1) && iova < _walk4End && TFormat.IsMappable(attr) && ((iova | paddr) & (LevelSize(1) - 1)) == 0)
        {
            ulong* slot = LeafSlot4(iova, PtWalkMode.LeafEntry, out ulong pte);
            if (slot != null)
            {
                if (pte == 0)
                {
                    TFormat.Store(slot, paddr | TFormat.LeafBits(attr, 1));
                }

                mapped = size;
                return Errno.None;
            }
        }

        return MapRange(iova, paddr, size, attr, superpageLevels, out mapped);
    }

    // Never inlined: with a dynamic profile from a process that first mapped only ranges (a guest's boot),
    // the JIT inlined this whole loop into every caller of Map and treated the 4 KiB path as cold; a later
    // single-page map then ran 2.3x slower than in a fresh process (a 776-byte frame of spills).
    [MethodImpl(MethodImplOptions.NoInlining)]
    private Errno MapRange(ulong iova, ulong paddr, ulong size, ulong attr, int superpageLevels, out ulong mapped)
    {
        mapped = 0;

        // Before the other checks, as intel_iommu_map checks the domain's width before __domain_mapping
        // checks the permission. The walks index with the bits below the width only: without this test an
        // IOVA beyond it would map its alias (the IOVA modulo 2^width), and a range past 2^64 would wrap to 0.
        if (size != 0 && (iova > _maxIova || size - 1 > _maxIova - iova))
        {
            return BeyondWidth(iova, size);
        }

        if (!TFormat.IsMappable(attr))
        {
            return ErrorDetail.Fail(Errno.EINVAL, "a mapping needs read or write permission");
        }

        if (((iova | paddr | size) & (LevelSize(1) - 1)) != 0)
        {
            return Unaligned(iova, paddr, size);
        }

        // Leaves only where both formats define them: 2 MiB and 1 GiB (SLLPS bits 2-3 and any larger first-level
        // page are reserved), and never in the top table of 4 or 5 levels (a PML4E or PML5E has no page-size bit)
        // nor above a 2-level table's top. A larger count used to write a 512 GiB "leaf" at level 4, which every
        // later walk read as a pointer to a table at 0 (tables are corrupt), and the hardware as a reserved bit.
        superpageLevels = Math.Clamp(superpageLevels, 0, Math.Min(MaxSuperpageLevels, _levels - 1));

        // A run of 4 KiB pages inside one existing leaf table (iommu_map of up to 2 MiB - 4 KiB, the
        // common scatter-gather case): one walk, then the leaves. Less than 2 MiB never takes a
        // superpage, so this is what the general loop below would write.
        ulong run = size >> TFormat.PageShift;
        if (_levels == 4 && run - 1 < IndexMask && ((iova >> TFormat.PageShift) & IndexMask) + run <= (ulong)EntriesPerTable)
        {
            ulong* slot = LeafSlot4(iova, PtWalkMode.LeafSlot, out _);
            if (slot != null)
            {
                SetLeaves(slot, (int)run, paddr, TFormat.LeafBits(attr, 1));
                mapped = run << TFormat.PageShift;
                return Errno.None;
            }
        }

        while (size != 0)
        {
            int level = LargepageLevel(iova, paddr, size, superpageLevels);
            PtWalk w = _levels == 4 ? Walk4(iova, level, PtWalkMode.Install) : WalkAnyDepth(iova, level, PtWalkMode.Install);
            int stoppedAt = w.Level;
            if (stoppedAt != level)
            {
                if (!IsPresent(w.Pte))
                {
                    return OutOfTableFrames(iova);
                }

                // A superpage above the target level already covers iova: leave it (the kernel would
                // walk into the data page; it only WARNs for already-set entries).
                ulong skip = Math.Min(size, LevelSize(stoppedAt) - (iova & (LevelSize(stoppedAt) - 1)));
                iova += skip;
                paddr += skip;
                size -= skip;
                mapped += skip;
                continue;
            }

            ulong step = LevelSize(level);
            ulong leafBits = TFormat.LeafBits(attr, level);
            int i = Index(iova, level);
            ulong* entries = w.Table;

            // Entries up to the end of this table (or of the run): one table, one pointer.
            ulong pages = size >> Shift(level);
            int count = pages < (ulong)(EntriesPerTable - i) ? (int)pages : EntriesPerTable - i;
            if (level == 1)
            {
                SetLeaves(entries + i, count, paddr, leafBits);
                paddr += (ulong)count * step;
            }
            else
            {
                for (int n = 0; n < count; n++, paddr += step)
                {
                    ulong* e = entries + i + n;
                    FreeSubtableUnder(e, level);
                    if (TFormat.Load(e) == 0)
                    {
                        TFormat.Store(e, paddr | leafBits);
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

    // intel_iommu_unmap of one present 4 KiB page on 4 levels, without the span (its out parameters
    // would live on the caller's stack); false sends the caller to the overload with the span.
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public bool TryUnmapOne4K(ulong iova, ulong size)
    {
        // An aligned iova: 4 KiB from anywhere else overlaps two pages (the walk below removes both).
        if (size == LevelSize(1) && iova < _walk4End && (iova & (LevelSize(1) - 1)) == 0)
        {
            _memory.ThrowIfDisposed();
            ulong* slot = LeafSlot4(iova, PtWalkMode.LeafEntry, out ulong pte);
            if (slot != null && IsPresent(pte))
            {
                TFormat.Store(slot, 0);
                return true;
            }
        }

        return false;
    }

    // domain_unmap; see DmaPageTable.Unmap.
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public ulong Unmap(ulong iova, ulong size, out ulong spanStart, out ulong spanEnd)
    {
        spanStart = iova;
        spanEnd = iova + size;
        if (iova > _maxIova || size == 0)
        {
            return 0;
        }

        // The common cases on a 48-bit unit whose tables reach iova: one present, aligned 4 KiB page is one
        // store; a run of 4 KiB pages that ends in the same leaf table without covering all of it
        // (which would free the table) is cleared from its first slot, as UnmapWalk would clear it.
        // Holes above the leaves, superpages, wider ranges and other level counts take the walk.
        if (_levels == 4)
        {
            int tableShift = Shift(2);
            ulong last = iova + size - 1;
            if (size == LevelSize(1) && (iova & (LevelSize(1) - 1)) == 0)
            {
                ulong* slot = LeafSlot4(iova, PtWalkMode.LeafEntry, out ulong pte);
                if (slot != null && IsPresent(pte))
                {
                    TFormat.Store(slot, 0);
                    return size;
                }
            }
            else if (((iova | size) & (LevelSize(1) - 1)) == 0 && last > iova && (last >> tableShift) == (iova >> tableShift) && size != LevelSize(2))
            {
                ulong* slot = LeafSlot4(iova, PtWalkMode.LeafSlot, out _);
                if (slot != null)
                {
                    return (ulong)ClearLeaves(slot, (int)(size >> TFormat.PageShift)) << TFormat.PageShift;
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

        PtWalk w = _levels == 4 ? Walk4(iova, 1, PtWalkMode.Lookup) : WalkAnyDepth(iova, 1, PtWalkMode.Lookup);
        ulong* slot = w.Slot(iova);
        ulong pte = w.Pte;
        int level = w.Level;
        int shift = Shift(level);
        if (!IsPresent(pte))
        {
            // A hole that holds the whole range: nothing to remove.
            return (iova >> shift) == (last >> shift) ? 0 : UnmapRange(iova, last, ref spanStart, ref spanEnd);
        }

        ulong leaf = 1UL << shift;
        if ((iova >> shift) == (last >> shift))
        {
            // The range lies inside the leaf that maps iova: that leaf is all that goes.
            TFormat.Store(slot, 0);
            spanStart = iova & ~(leaf - 1);
            spanEnd = spanStart + leaf;
            return leaf;
        }

        // A 4 KiB run that ends in the same leaf table without covering all of it (which would free
        // the table): clear from the slot found, as ClearLevel would at level 1.
        int tableShift = Shift(2);
        ulong indexBits = ((1UL << tableShift) - 1) & ~((1UL << TFormat.PageShift) - 1);
        if (level == 1 && (last >> tableShift) == (iova >> tableShift) && ((iova | ~last) & indexBits) != 0)
        {
            int present = ClearLeaves(slot, (int)((last >> TFormat.PageShift) - (iova >> TFormat.PageShift)) + 1);
            return (ulong)present << TFormat.PageShift;
        }

        return UnmapRange(iova, last, ref spanStart, ref spanEnd);
    }

    // intel_iommu_iova_to_phys: the physical address with the offset in the page, or 0 when not mapped.
    // Inlined; on 4 levels the walk is unrolled.
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public ulong IovaToPhys(ulong iova)
    {
        if (iova >= _walk4End)
        {
            return IovaToPhysAnyDepth(iova);
        }

        PtWalk w = Walk4(iova, 1, PtWalkMode.Query);
        return OutputAddress(iova, w.OffsetMask, w.Pte);
    }

    // Other level counts, and IOVAs beyond the width. Not inlined into IovaToPhys, so the 4-level path keeps
    // its registers.
    [MethodImpl(MethodImplOptions.NoInlining)]
    private ulong IovaToPhysAnyDepth(ulong iova)
    {
        if (iova > _maxIova)
        {
            return 0;
        }

        PtWalk w = WalkAnyDepth(iova, 1, PtWalkMode.Query);
        return OutputAddress(iova, w.OffsetMask, w.Pte);
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static ulong OutputAddress(ulong iova, ulong mask, ulong pte)
    {
        if (!IsPresent(pte))
        {
            return 0;
        }

        return (TFormat.Address(pte) & ~mask) | (iova & mask);
    }

    // domain_unmap over [first, last]: every leaf that intersects it goes, whole.
    private ulong UnmapRange(ulong first, ulong last, ref ulong spanStart, ref ulong spanEnd)
    {
        var removed = new Removed { Low = first, High = last };
        ClearLevel(_root, _levels, 0, first, last, ref removed);
        spanStart = removed.Low;
        spanEnd = removed.High + 1;
        return removed.Bytes;
    }

    // The agaw adjustment of prepare_domain_attach_device; see DmaPageTable.ReduceLevels.
    public void ReduceLevels(int levels)
    {
        while (_levels > levels)
        {
            ulong top = TFormat.Load(TablePointer(_root));
            if (IsPresent(top))
            {
                ulong old = _root;
                _root = TFormat.Address(top);
                _frames.Free(old);
                Interlocked.Decrement(ref _tables);
            }

            SetLevels(_levels - 1);
        }
    }

    public int ReleasePendingFrees()
    {
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

    public int TakePendingFrees(ref ulong freelist)
    {
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

    public void FreeAll()
    {
        var free = new FreeVisitor(ref this);
        VisitTree(_root, _levels, 0, ref free);
        ReleasePendingFrees();
        _root = NoFrame;
    }

    public void ForEachLeaf(Action<ulong, ulong, ulong, ulong> visit)
    {
        var leaves = new LeafVisitor(visit);
        VisitTree(_root, _levels, 0, ref leaves);
    }

    private void SetLevels(int levels)
    {
        _levels = levels;
        int width = Width;
        _maxIova = width >= 64 ? ulong.MaxValue : (1UL << width) - 1;
        _walk4End = levels == 4 ? _maxIova + 1 : 0;
    }

    // hardware_largepage_caps: the largest level whose alignment and remaining size fit.
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static int LargepageLevel(ulong iova, ulong paddr, ulong size, int support)
    {
        int level = 1;
        ulong merge = (iova | paddr) >> TFormat.PageShift;
        ulong pages = size >> TFormat.PageShift;
        while (support > 0 && (merge & IndexMask) == 0)
        {
            pages >>= TFormat.StrideShift;
            if (pages == 0)
            {
                break;
            }

            merge >>= TFormat.StrideShift;
            level++;
            support--;
        }

        return level;
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
        ulong Page = 1UL << TFormat.PageShift;
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
        if (TFormat.Load(entry) == 0)
        {
            TFormat.Store(entry, pte);
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
            Vector512<ulong> absent = Vector512<ulong>.Zero, rw = Vector512.Create(TFormat.PresentMask);
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
            Vector256<ulong> absent = Vector256<ulong>.Zero, rw = Vector256.Create(TFormat.PresentMask);
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
            Vector128<ulong> absent = Vector128<ulong>.Zero, rw = Vector128.Create(TFormat.PresentMask);
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
        int present = IsPresent(TFormat.Load(entry)) ? 1 : 0;
        TFormat.Store(entry, 0);
        return present;
    }

    // How many of count entries (a whole table being freed) are present.
    private static int CountPresent(ulong* entries, int count)
    {
        int n = 0, present = 0;
        if (Vector256.IsHardwareAccelerated)
        {
            Vector256<ulong> absent = Vector256<ulong>.Zero, rw = Vector256.Create(TFormat.PresentMask);
            for (; n + 4 <= count; n += 4)
            {
                absent -= Vector256.Equals(Vector256.Load(entries + n) & rw, Vector256<ulong>.Zero);
            }

            present = n - (int)Vector256.Sum(absent);
        }

        for (; n < count; n++)
        {
            present += IsPresent(entries[n]) ? 1 : 0;
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

    [MethodImpl(MethodImplOptions.NoInlining)]
    private static Errno Unaligned(ulong iova, ulong paddr, ulong size) =>
        ErrorDetail.Fail(Errno.EINVAL, $"iova 0x{iova:x}, paddr 0x{paddr:x} and size 0x{size:x} must all be multiples of 4 KiB");

    [MethodImpl(MethodImplOptions.NoInlining)]
    private Errno BeyondWidth(ulong iova, ulong size) =>
        ErrorDetail.Fail(Errno.EFAULT, $"iova 0x{iova:x} + size 0x{size:x} does not fit the table's {Math.Min(Width, 64)}-bit address space (last iova 0x{_maxIova:x})");

    [MethodImpl(MethodImplOptions.NoInlining)]
    private static Errno OutOfTableFrames(ulong iova) =>
        ErrorDetail.Fail(Errno.ENOMEM, $"no frame left for a page table while mapping iova 0x{iova:x}");

    // What a walk is for. Lookup: the entry it stops at, read. LeafEntry: the same, but a stop above
    // level 1 gives no table, and at level 1 the walk's Table is the leaf entry itself (a leaf slot or
    // nothing). LeafSlot: as LeafEntry without reading the leaf (a run reads its entries itself).
    // Install: install missing tables on the way down to the target (whose entry is not read).
    internal enum PtWalkMode
    {
        Lookup,

        // A lookup for iova_to_phys, which the core runs without marking the domain and validates afterwards
        // (IommuCore.IovaToPhys): a table pointer outside the region (a frame that iommu_domain_free gave back
        // and another user rewrote, or the freed root) answers "not present" instead of throwing; the core
        // then reports the free. Map and unmap keep throwing on one (corrupt tables).
        Query,
        LeafEntry,
        LeafSlot,
        Install,
    }

    // Where a walk stopped: the table, the value read from the entry, its level. The table rather than
    // the entry: the JIT then folds each level's index into its load, off the chain of dependent loads.
    // The leaf-only modes, whose one user wants the entry, give the entry instead (see PtWalkMode).
    internal readonly struct PtWalk
    {
        public readonly ulong* Table;
        public readonly ulong Pte;
        public readonly int Level;

        // The offset bits of an address in a page at Level: a constant at each place a walk stops, so
        // a lookup's result needs no shift (the field is dropped where unused).
        public readonly ulong OffsetMask;

        // Forced inline: under a dynamic profile from range maps the JIT called this constructor on
        // the 4 KiB path, and the 32-byte result went through the stack (PageTable64K.Map4K 2.3x slower).
        [MethodImpl(MethodImplOptions.AggressiveInlining)]
        public PtWalk(ulong* table, ulong pte, int level)
        {
            Table = table;
            Pte = pte;
            Level = level;
            OffsetMask = LevelSize(level) - 1;
        }

        // The entry the walk stopped at.
        [MethodImpl(MethodImplOptions.AggressiveInlining)]
        public ulong* Slot(ulong iova) => Table + ((iova >> Shift(Level)) & IndexMask);
    }

    // The region the tables live in, as locals of a walk: the acquire reads would make the JIT reload
    // fields every level.
    internal readonly struct Tables(byte* b, ulong start, ulong lastTable)
    {
        private readonly byte* _b = b;
        private readonly ulong _start = start;
        private readonly ulong _lastTable = lastTable;

        [MethodImpl(MethodImplOptions.AggressiveInlining)]
        public ulong* TablePointer(ulong table)
        {
            ulong offset = table - _start;
            if (offset > _lastTable)
            {
                ThrowForeign(table);
            }

            return (ulong*)(_b + offset);
        }

        [MethodImpl(MethodImplOptions.AggressiveInlining)]
        public bool TryTablePointer(ulong table, out ulong* entries)
        {
            ulong offset = table - _start;
            entries = (ulong*)(_b + offset);
            return offset <= _lastTable;
        }
    }

    // Not NoInlining: the JIT must look at the body to see it never returns, so the walks treat the
    // check as a cold throw block instead of keeping their locals alive (spilled) across a call.
    [DoesNotReturn]
    private static void ThrowForeign(ulong table) =>
        throw new InvalidOperationException($"Page-table pointer 0x{table:x} lies outside the translation-structure region: the tables are corrupt.");

    // Installs a fresh zeroed table in an absent entry; returns the entry now there (ours, or the
    // winner's of a race, whose table we then use), or NoFrame when no frame is left.
    [MethodImpl(MethodImplOptions.NoInlining)]
    private ulong InstallTable(ulong* slot)
    {
        if (!_frames.TryAllocate(out ulong fresh))
        {
            return NoFrame;
        }

        ulong pte = fresh | TFormat.TableBits;
        ulong prev = Interlocked.CompareExchange(ref *slot, pte, 0);
        if (prev != 0)
        {
            _frames.Free(fresh); // someone else installed one first; use theirs
            return prev;
        }

        Interlocked.Increment(ref _tables);
        return pte;
    }

    // Before a superpage goes into slot (at level): a table already there is unlinked and pended with its
    // subtree, mappings included, as dma_pte_free_pagetable does in __domain_mapping; the caller flushes.
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private void FreeSubtableUnder(ulong* slot, int level)
    {
        ulong pte = TFormat.Load(slot);
        if (IsTable(pte, level) && Interlocked.CompareExchange(ref *slot, 0, pte) == pte)
        {
            PendTree(TFormat.Address(pte), level - 1);
            Interlocked.Increment(ref _replacedTables);
        }
    }

    // dma_pte_clear_level, the range walk: clear entries of [start, last] in the table at level; unlink
    // tables whose whole span is inside the range. A leaf only partly inside the range is cleared whole
    // (the kernel would walk into the data page), and widens the span to flush. Counts what it removes.
    private void ClearLevel(ulong table, int level, ulong addr, ulong start, ulong last, ref Removed removed)
    {
        ulong* entries = TablePointer(table);
        ulong span = LevelSize(level);
        ulong from = Math.Max(start, addr);
        int i = Index(from, level);

        // Entries of this table that intersect [from, last].
        ulong tableSpan = span << TFormat.StrideShift;
        ulong tableEnd = (from & ~(tableSpan - 1)) + tableSpan - 1;
        int end = last >= tableEnd ? EntriesPerTable : Index(last, level) + 1;
        if (level == 1)
        {
            removed.Bytes += (ulong)ClearLeaves(entries + i, end - i) << TFormat.PageShift;
            return;
        }

        ulong at = from & ~(span - 1);
        for (; i < end; i++, at += span)
        {
            ulong* slot = entries + i;
            ulong pte = TFormat.Load(slot);
            if (!IsPresent(pte))
            {
                continue;
            }

            if (TFormat.IsLeaf(pte, level))
            {
                TFormat.Store(slot, 0);
                removed.Bytes += span;
                removed.Low = Math.Min(removed.Low, at);
                removed.High = Math.Max(removed.High, at + span - 1);
            }
            else if (start <= at && last >= at + span - 1)
            {
                TFormat.Store(slot, 0);
                removed.Bytes += PendTree(TFormat.Address(pte), level - 1);
            }
            else
            {
                ClearLevel(TFormat.Address(pte), level - 1, at, start, last, ref removed);
            }
        }
    }

    // The native address of a table of the region (tables always come from our frame allocator).
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private readonly ulong* TablePointer(ulong table)
    {
        ulong offset = table - _start;
        if (offset > _lastTable)
        {
            ThrowForeign(table);
        }

        return (ulong*)(_base + offset);
    }

    // The subtree walk: every present entry of the table at level and of the tables under it, depth
    // first, each table after its entries. A leaf table the visitor takes whole is not entered.
    private readonly void VisitTree<TVisitor>(ulong table, int level, ulong baseIova, ref TVisitor visitor)
        where TVisitor : ITreeVisitor, allows ref struct
    {
        ulong* entries = TablePointer(table);
        if (level > 1 || !visitor.LeafTable(entries))
        {
            ulong span = LevelSize(level);
            for (int i = 0; i < EntriesPerTable; i++)
            {
                ulong pte = TFormat.Load(entries + i);
                if (!IsPresent(pte))
                {
                    continue;
                }

                ulong iova = baseIova + ((ulong)i * span);
                if (TFormat.IsLeaf(pte, level))
                {
                    visitor.Leaf(iova, pte, level);
                }
                else
                {
                    VisitTree(TFormat.Address(pte), level - 1, iova, ref visitor);
                }
            }
        }

        visitor.After(table);
    }

    // Puts a table of the given level and every table under it on the pending-free list; returns
    // the bytes its leaves mapped.
    private ulong PendTree(ulong table, int level)
    {
        var pend = new PendVisitor(ref this);
        VisitTree(table, level, 0, ref pend);
        return pend.Bytes;
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

    // What VisitTree reports.
    private interface ITreeVisitor
    {
        // A level-1 table as a whole; false to have its entries visited one by one.
        bool LeafTable(ulong* entries);

        void Leaf(ulong iova, ulong pte, int level);

        // A table, after everything under it.
        void After(ulong table);
    }

    // PendTree: the leaves' bytes (a leaf table's present entries counted at once), every table pended.
    private ref struct PendVisitor(ref PageTable<TFormat> owner) : ITreeVisitor
    {
        private readonly ref PageTable<TFormat> _owner = ref owner;

        public ulong Bytes;

        public bool LeafTable(ulong* entries)
        {
            Bytes += (ulong)CountPresent(entries, EntriesPerTable) << TFormat.PageShift;
            return true;
        }

        public void Leaf(ulong iova, ulong pte, int level) => Bytes += LevelSize(level);

        public readonly void After(ulong table) => _owner.Pend(table);
    }

    // FreeAll: every table back to the allocator, leaves untouched.
    private readonly ref struct FreeVisitor(ref PageTable<TFormat> owner) : ITreeVisitor
    {
        private readonly ref PageTable<TFormat> _owner = ref owner;

        public bool LeafTable(ulong* entries) => true;

        public void Leaf(ulong iova, ulong pte, int level)
        {
        }

        public void After(ulong table)
        {
            _owner._frames.Free(table);
            Interlocked.Decrement(ref _owner._tables);
        }
    }

    // ForEachLeaf: (IOVA, page address, page size, entry) of every leaf.
    private readonly struct LeafVisitor(Action<ulong, ulong, ulong, ulong> visit) : ITreeVisitor
    {
        public bool LeafTable(ulong* entries) => false;

        public void Leaf(ulong iova, ulong pte, int level)
        {
            ulong span = LevelSize(level);
            visit(iova, TFormat.Address(pte) & ~(span - 1), span, pte);
        }

        public void After(ulong table)
        {
        }
    }
}
