using System.Numerics;
using System.Runtime.CompilerServices;
using Iommu.Internal;
using IovaTree = Iommu.Internal.RangeTree<Iommu.Dma.IovaRange>;

namespace Iommu.Dma;

/// <summary>
/// The IOVA allocator of a DMA-API domain with its range caches and flush queue (<c>struct iova_domain</c>,
/// <c>drivers/iommu/iova.c</c>, 5.15), in page frame numbers of <see cref="Granule"/> bytes.
/// </summary>
/// <remarks>
/// <para>Allocation (<c>alloc_iova_fast</c>): first the range cache of the request's order (the most
/// recently freed range of that size in the loaded magazine that fits below the limit), then the kernel's search of its tree
/// (<c>__alloc_and_insert_iova_range</c>): downwards from the cached node (the last range allocated
/// below 4 GiB for a 32-bit limit, else above it; moved up when a range at or above it is freed) for
/// the first gap that holds the request, its start aligned to the request's size rounded up to a power
/// of two; then once more from the top down to the cached node, for ranges freed above it; a 32-bit
/// request of at least the size that last failed fails at once (<c>max32_alloc_size</c>, reset when a
/// range below 4 GiB is freed, as 5.15 stable has it). When that fails and the caller allows it, every
/// cached range goes back to the tree and the search runs once more. A range in the cache is still
/// allocated in the tree, as in the kernel. So an allocation costs a few steps and a tree insert, however
/// many ranges are live, and allocates nothing once the tree's array has grown.</para>
/// <para>Freeing (<c>free_iova_fast</c>) caches the range when its order is below
/// <see cref="RangeCacheMaxSize"/> and the cache has room, else returns it to the tree. With a flush
/// queue (<c>queue_iova</c>) a freed range is not freed: it waits in the queue, tagged with the number of
/// flushes started so far, and is freed only after a flush started later has finished — at the next
/// <c>queue_iova</c>, when the queue is full (that queue_iova flushes first), or when the
/// <see cref="FqTimeout"/> timer fires (it flushes and frees the whole queue). Until then the range is
/// handed out to nobody, and the page-table pages its unmap freed (the entry's freelist) stay allocated.</para>
/// <para>Where we differ from the kernel: one queue and one range cache per domain instead of one per
/// CPU (a single CPU's behaviour: a ring of <see cref="FqSize"/> slots holds at most
/// <see cref="FqSize"/> - 1 entries); a cache of one CPU's loaded and prev magazines plus the global depot,
/// pushed, popped and flushed in the kernel's orders (a pop looks in the loaded magazine only; a full
/// depot sends a whole magazine back to the tree); a dictionary from first frame to tree node beside
/// the tree for the free's lookup (the kernel searches the tree); when the cached node is the anchor the
/// search does not run its second pass (the kernel's retry then starts at frame 0, below
/// <see cref="StartPfn"/>, and can insert a range at frame 0 that it reports as a failure). Reserved
/// regions fill only the gaps between existing ranges (the kernel widens an overlapping range; both
/// happen only before the first allocation). Each range remembers the size it
/// was mapped with so that a free of a range that is not mapped, or with another size, is refused
/// (the kernel WARNs and corrupts its caches; dma-debug reports it).</para>
/// <para>Thread safety: every member takes the domain's lock (the kernel's rbtree lock and fq lock in
/// one); the flush callback runs under it.</para>
/// </remarks>
internal sealed class IovaDomain
{
    /// <summary><c>IOVA_RANGE_CACHE_MAX_SIZE</c>: ranges of 2^0 … 2^5 granules are cached.</summary>
    public const int RangeCacheMaxSize = 6;

    /// <summary><c>IOVA_FQ_SIZE</c>: slots of the flush queue's ring.</summary>
    public const int FqSize = 256;

    private const int MagSize = 128;        // IOVA_MAG_SIZE
    private const int MaxGlobalMags = 32;   // MAX_GLOBAL_MAGS

    private readonly RawSpinLock _lock = new(); // a spinlock, as the kernel's (see RawSpinLock for why not Lock)
    private readonly IovaTree _tree = new();
    private readonly Dictionary<ulong, int> _byPfn = []; // first frame -> node, for ranges handed out
    private readonly Rcache[] _rcaches = new Rcache[RangeCacheMaxSize];
    private readonly Stack<Magazine> _spareMags = []; // magazines the kernel would kfree, kept for reuse
    private readonly int _anchor;          // iovad->anchor: [IOVA_ANCHOR, IOVA_ANCHOR], above every range
    private readonly ulong _dma32BitPfn;   // iovad->dma_32bit_pfn
    private int _cachedNode;               // iovad->cached_node
    private int _cached32Node;             // iovad->cached32_node
    private ulong _max32AllocSize;         // iovad->max32_alloc_size

    // The flush queue (iova_fq and the iova_domain fields that drive it).
    private FqEntry[]? _fq;
    private int _fqHead;
    private int _fqTail;
    private long _flushStartCnt;
    private long _flushFinishCnt;
    private bool _timerOn;
    private bool _dead;
    private PlatformClock? _clock;
    private PlatformClock.ClockTimer? _timer;
    private Action? _flushCb;
    private Action<ulong, object?>? _entryDtor;

    /// <summary>Creates an empty allocator (<c>init_iova_domain</c>).</summary>
    /// <param name="granule">Bytes per page frame: the domain's smallest page, a power of two.</param>
    /// <param name="startPfn">Lowest frame handed out (at least 1: IOVA 0 is never a DMA address).</param>
    public IovaDomain(ulong granule, ulong startPfn)
    {
        Granule = granule;
        Shift = BitOperations.TrailingZeroCount(granule);
        StartPfn = Math.Max(1, startPfn);
        for (int i = 0; i < _rcaches.Length; i++)
        {
            _rcaches[i] = new Rcache();
        }

        _dma32BitPfn = 1UL << (32 - Shift);
        _max32AllocSize = _dma32BitPfn;
        _anchor = _tree.Insert(IovaAnchor, IovaAnchor, new IovaRange(0, IovaState.Reserved));
        _cachedNode = _cached32Node = _anchor;
    }

    /// <summary><c>IOVA_ANCHOR</c>: the anchor node's frame, above every range.</summary>
    private const ulong IovaAnchor = ulong.MaxValue;

    /// <summary>Ranges in the tree, the anchor excluded (for tests).</summary>
    internal int TreeRanges => _tree.Count - 1;

    /// <summary>Ranges held in the range caches (loaded and prev magazines and the depot, every order); tests.</summary>
    internal int CachedRanges
    {
        get
        {
            using (_lock.EnterScope())
            {
                int n = 0;
                foreach (Rcache rc in _rcaches)
                {
                    n += rc.Loaded.Size + rc.Prev.Size;
                    for (int i = 0; i < rc.DepotSize; i++)
                    {
                        n += rc.Depot[i]!.Size;
                    }
                }

                return n;
            }
        }
    }

    /// <summary>
    /// The ranges handed out and not unmapped yet, as (first frame, frames mapped, owner), in frame order (for tests:
    /// the chaos property compares them with the mappings it made and did not unmap; a teardown must leave none).
    /// </summary>
    internal List<(ulong Pfn, ulong Pages, object? Owner)> LiveRangeList()
    {
        using (_lock.EnterScope())
        {
            var list = new List<(ulong Pfn, ulong Pages, object? Owner)>();
            foreach ((ulong pfn, int node) in _byPfn)
            {
                if (_tree[node].Value is { State: IovaState.Live } range)
                {
                    list.Add((pfn, range.Pages, range.Owner));
                }
            }

            list.Sort((a, b) => a.Pfn.CompareTo(b.Pfn));
            return list;
        }
    }

    /// <summary>Entries waiting in the flush queue (for tests: when it is empty every queued unmap has been flushed).</summary>
    internal int QueuedRanges
    {
        get
        {
            using (_lock.EnterScope())
            {
                return _fq is null ? 0 : (_fqTail - _fqHead + FqSize) % FqSize;
            }
        }
    }

    /// <summary>Checks the tree's invariants (for tests): null when they hold.</summary>
    internal string? ValidateTree()
    {
        using (_lock.EnterScope())
        {
            return _tree.Validate();
        }
    }

    /// <summary>Bytes per page frame (<c>iovad->granule</c>).</summary>
    public ulong Granule { get; }

    /// <summary>log2 of <see cref="Granule"/> (<c>iova_shift</c>).</summary>
    public int Shift { get; }

    /// <summary>Lowest frame handed out (<c>iovad->start_pfn</c>).</summary>
    public ulong StartPfn { get; }

    /// <summary><c>IOVA_FQ_TIMEOUT</c>: 10 ms from the first entry queued while the timer was off.</summary>
    public static TimeSpan FqTimeout => TimeSpan.FromMilliseconds(10);

    /// <summary>Whether freed ranges go through the flush queue (<c>has_iova_flush_queue</c>; the cookie's <c>fq_domain</c>).</summary>
    public bool HasFlushQueue => Volatile.Read(ref _fq) is not null;

    /// <summary>
    /// Sets up the flush queue (<c>init_iova_flush_queue</c>): <paramref name="flushCb"/> flushes the
    /// whole IOTLB of the domain, <paramref name="entryDtor"/> releases an entry's freelist after that.
    /// </summary>
    public void InitFlushQueue(PlatformClock clock, Action flushCb, Action<ulong, object?> entryDtor)
    {
        using (_lock.EnterScope())
        {
            if (_fq is not null)
            {
                return;
            }

            _clock = clock;
            _flushCb = flushCb;
            _entryDtor = entryDtor;
            _timer = new PlatformClock.ClockTimer(FlushTimeout);
            Volatile.Write(ref _fq, new FqEntry[FqSize]);
        }
    }

    /// <summary>
    /// Hands out <paramref name="pages"/> frames (a power of two when below 2^(<see cref="RangeCacheMaxSize"/> - 1),
    /// as <c>iommu_dma_alloc_iova</c> rounds) ending at or below <paramref name="limitPfn"/>
    /// (<c>alloc_iova_fast</c>), remembering <paramref name="mappedPages"/> for the free and <paramref name="owner"/>
    /// (the device the DMA API mapped it for) for <see cref="IsLiveFor"/>.
    /// </summary>
    /// <returns>The first frame, or 0 when nothing fits.</returns>
    public ulong AllocFast(ulong pages, ulong mappedPages, ulong limitPfn, bool flushRcache, object? owner = null)
    {
        using (_lock.EnterScope())
        {
            if (_dead)
            {
                return 0;
            }

            ulong pfn = RcacheGet(pages, limitPfn);
            int node;
            if (pfn == 0)
            {
                node = AllocTree(pages, limitPfn);
                if (node == IovaTree.Nil && flushRcache)
                {
                    // Try replenishing IOVAs by flushing the range caches.
                    FlushRcaches();
                    node = AllocTree(pages, limitPfn);
                }

                if (node == IovaTree.Nil)
                {
                    return 0;
                }

                pfn = _tree[node].Lo;
                _byPfn.Add(pfn, node);
            }
            else
            {
                node = _byPfn[pfn];
            }

            _tree[node].Value = new IovaRange(mappedPages, IovaState.Live, owner);
            return pfn;
        }
    }

    /// <summary>
    /// Checks that a live mapping of <paramref name="pages"/> frames starts at <paramref name="pfn"/> and
    /// marks it as being unmapped, so that a second unmap of it is refused.
    /// </summary>
    /// <returns>Null, or why the free is refused.</returns>
    public string? BeginFree(ulong pfn, ulong pages)
    {
        using (_lock.EnterScope())
        {
            if (!_byPfn.TryGetValue(pfn, out int index))
            {
                return "no DMA mapping starts there";
            }

            ref IovaRange range = ref _tree[index].Value;
            if (range.State != IovaState.Live)
            {
                return "that DMA mapping was already unmapped";
            }

            if (range.Pages != pages)
            {
                return $"that DMA mapping has {range.Pages} pages, not {pages}";
            }

            range.State = IovaState.Freed;
            range.Owner = null;
            return null;
        }
    }

    /// <summary>Whether a live range handed out for <paramref name="owner"/> starts at <paramref name="pfn"/>.</summary>
    public bool IsLiveFor(ulong pfn, object owner)
    {
        using (_lock.EnterScope())
        {
            return _byPfn.TryGetValue(pfn, out int index) && _tree[index].Value is { State: IovaState.Live } range && ReferenceEquals(range.Owner, owner);
        }
    }

    /// <summary>Frees a range <see cref="BeginFree"/> accepted, now (<c>free_iova_fast</c>): into the range cache of its order when it is small enough, else back to the tree.</summary>
    public void FreeFast(ulong pfn, ulong pages)
    {
        using (_lock.EnterScope())
        {
            FreeFastLocked(pfn, pages);
        }
    }

    /// <summary>
    /// Queues a freed range for the next flush (<c>queue_iova</c>): frees what finished flushes allow,
    /// flushes first when the ring is full, adds the entry tagged with the flushes started so far, and
    /// arms the timer unless it is on.
    /// </summary>
    public void Queue(ulong pfn, ulong pages, ulong freelist, object? payload = null)
    {
        using (_lock.EnterScope())
        {
            FqEntry[] fq = _fq ?? throw new InvalidOperationException("The IOVA domain has no flush queue.");
            if (_dead)
            {
                // The domain is being freed: nothing will flush; release what the entry would have held.
                _entryDtor!(freelist, payload);
                return;
            }

            // First remove the entries already flushed out (another CPU's flush or the timer's).
            RingFree();
            if (FqFull)
            {
                DomainFlush();
                RingFree();
            }

            fq[_fqTail] = new FqEntry(pfn, pages, freelist, _flushStartCnt, payload);
            _fqTail = (_fqTail + 1) % FqSize;
            if (!_timerOn)
            {
                _timerOn = true;
                _clock!.Arm(_timer!, FqTimeout);
            }
        }
    }

    /// <summary>
    /// Reserves <c>[loPfn, hiPfn]</c> (<c>reserve_iova</c>): the parts no range holds yet become
    /// reserved ranges, never handed out.
    /// </summary>
    public void Reserve(ulong loPfn, ulong hiPfn)
    {
        using (_lock.EnterScope())
        {
            // Nodes in frame order from the first that reaches loPfn; an insert keeps the order of the
            // others, so the walk goes on from the node it stood on. The anchor ends it (no frame
            // reaches IOVA_ANCHOR).
            ulong lo = loPfn;
            hiPfn = Math.Min(hiPfn, IovaAnchor - 1);
            for (int node = _tree.FirstEndingAtOrAfter(lo); node != IovaTree.Nil && _tree[node].Lo <= hiPfn; node = _tree.Next(node))
            {
                ulong start = _tree[node].Lo, last = _tree[node].Hi;
                if (start > lo)
                {
                    AddReserved(lo, start - 1);
                }

                if (last >= hiPfn)
                {
                    return;
                }

                lo = last + 1;
            }

            AddReserved(lo, hiPfn);
        }
    }

    /// <summary>
    /// Tears down for <c>iommu_put_dma_cookie</c> (<c>put_iova_domain</c> → <c>free_iova_flush_queue</c>):
    /// disarms the timer and runs the entry destructor on every queued entry without a flush (the
    /// domain is going away), as <c>fq_destroy_all_entries</c> does; nothing is handed out afterwards.
    /// </summary>
    public void Put()
    {
        using (_lock.EnterScope())
        {
            _dead = true;
            if (_fq is not FqEntry[] fq)
            {
                return;
            }

            _clock!.Cancel(_timer!);
            for (int idx = _fqHead; idx != _fqTail; idx = (idx + 1) % FqSize)
            {
                _entryDtor!(fq[idx].Freelist, fq[idx].Payload);
                fq[idx] = default;
            }

            _fqHead = _fqTail = 0;
        }
    }

    private bool FqFull => (_fqTail + 1) % FqSize == _fqHead;

    // fq_flush_timeout: flush, then free every entry (the timer is re-armed by the next queue_iova).
    private void FlushTimeout()
    {
        using (_lock.EnterScope())
        {
            if (_dead)
            {
                return;
            }

            _timerOn = false;
            DomainFlush();
            RingFree();
        }
    }

    // iova_domain_flush
    private void DomainFlush()
    {
        _flushStartCnt++;
        _flushCb!();
        _flushFinishCnt++;
    }

    // fq_ring_free: free the entries whose flush (one started after they were queued) has finished.
    private void RingFree()
    {
        FqEntry[] fq = _fq!;
        while (_fqHead != _fqTail && fq[_fqHead].Counter < _flushFinishCnt)
        {
            FqEntry e = fq[_fqHead];
            fq[_fqHead] = default;
            _fqHead = (_fqHead + 1) % FqSize;
            _entryDtor!(e.Freelist, e.Payload);
            FreeFastLocked(e.Pfn, e.Pages);
        }
    }

    // The node is Freed already (BeginFree, or a map that failed): cache the range or drop the node.
    private void FreeFastLocked(ulong pfn, ulong pages)
    {
        int order = OrderBase2(pages);
        if (order < RangeCacheMaxSize)
        {
            RcacheInsert(_rcaches[order], pfn);
            return;
        }

        RemoveRange(pfn);
    }

    // __iova_rcache_insert for one CPU: into the loaded magazine; when it is full, swapped with prev
    // if prev has room, else the loaded magazine goes to the depot (or, the depot full, its ranges
    // back to the tree) and a new one is loaded. The push order decides the pop order, so it is the
    // kernel's and not one stack per order.
    private void RcacheInsert(Rcache rc, ulong pfn)
    {
        Magazine loaded = rc.Loaded;
        if (loaded.Size == MagSize)
        {
            loaded = MakeRoom(rc);
        }

        loaded.Pfns[loaded.Size++] = pfn;
    }

    // The loaded magazine is full (once per IOVA_MAG_SIZE frees): swap in prev if it has room, else send
    // the loaded one to the depot (the depot full: its ranges back to the tree) and load an empty one.
    // Out of line, so the common push above stays a few instructions.
    [MethodImpl(MethodImplOptions.NoInlining)]
    private Magazine MakeRoom(Rcache rc)
    {
        if (rc.Prev.Size < MagSize)
        {
            (rc.Loaded, rc.Prev) = (rc.Prev, rc.Loaded);
            return rc.Loaded;
        }

        Magazine full = rc.Loaded;
        rc.Loaded = NewMagazine();
        if (rc.DepotSize < MaxGlobalMags)
        {
            rc.Depot[rc.DepotSize++] = full;
        }
        else
        {
            MagazineFreePfns(full);
            _spareMags.Push(full);
        }

        return rc.Loaded;
    }

    // iova_magazine_free_pfns: every range of the magazine back to the tree, in push order.
    private void MagazineFreePfns(Magazine mag)
    {
        for (int i = 0; i < mag.Size; i++)
        {
            RemoveRange(mag.Pfns[i]);
        }

        mag.Size = 0;
    }

    private Magazine NewMagazine() => _spareMags.TryPop(out Magazine? m) ? m : new Magazine();

    // private_free_iova: the range leaves the tree, the cached nodes moved past it first.
    private void RemoveRange(ulong pfn)
    {
        _byPfn.Remove(pfn, out int node);
        CachedNodeDeleteUpdate(node);
        _tree.Remove(node);
    }

    // __cached_rbnode_delete_update, with 5.15 stable's "Improve 32-bit free space estimate": the cached
    // node moves up past a freed range at or above it, and any range freed below 4 GiB may make room
    // for a 32-bit request of any size again.
    private void CachedNodeDeleteUpdate(int free)
    {
        ulong lo = _tree[free].Lo, hi = _tree[free].Hi;
        if (free == _cached32Node || (hi < _dma32BitPfn && lo >= _tree[_cached32Node].Lo))
        {
            _cached32Node = _tree.Next(free);
        }

        if (lo < _dma32BitPfn)
        {
            _max32AllocSize = _dma32BitPfn;
        }

        if (lo >= _tree[_cachedNode].Lo)
        {
            _cachedNode = _tree.Next(free);
        }
    }

    // iova_rcache_get / __iova_rcache_get / iova_magazine_pop: the loaded magazine, else prev swapped
    // in, else the depot's last magazine loaded; then the most recent range of that magazine alone
    // that ends at or below the limit, swapped out with its last one. The kernel does not look in the
    // other magazines when the loaded one has nothing below the limit: the request goes to the tree.
    // Deliberate difference: 5.15 passes the bound as limit + 1 - pages, which wraps for a request
    // larger than the limit (a mask below the request's size) and then hands out a cached range above
    // the device's mask; the test below never does.
    private ulong RcacheGet(ulong pages, ulong limitPfn)
    {
        int order = OrderBase2(pages);
        if (order >= RangeCacheMaxSize)
        {
            return 0;
        }

        Rcache rc = _rcaches[order];
        Magazine? mag = rc.Loaded;
        if (mag.Size == 0 && (mag = Reload(rc)) is null)
        {
            return 0;
        }

        for (int i = mag.Size - 1; i >= 0; i--)
        {
            ulong pfn = mag.Pfns[i];
            if (pfn + pages - 1 <= limitPfn)
            {
                mag.Pfns[i] = mag.Pfns[--mag.Size];
                return pfn;
            }
        }

        return 0;
    }

    // The loaded magazine is empty: swap in prev if it holds ranges, else load the depot's last magazine;
    // null when the order's cache is empty. Out of line, as MakeRoom.
    [MethodImpl(MethodImplOptions.NoInlining)]
    private Magazine? Reload(Rcache rc)
    {
        if (rc.Prev.Size != 0)
        {
            (rc.Loaded, rc.Prev) = (rc.Prev, rc.Loaded);
            return rc.Loaded;
        }

        if (rc.DepotSize == 0)
        {
            return null;
        }

        _spareMags.Push(rc.Loaded);
        rc.Loaded = rc.Depot[--rc.DepotSize]!;
        rc.Depot[rc.DepotSize] = null;
        return rc.Loaded;
    }

    // free_cpu_cached_iovas (loaded, then prev, per order) + free_global_cached_iovas (the depot,
    // per order): every cached range back to the tree.
    private void FlushRcaches()
    {
        foreach (Rcache rc in _rcaches)
        {
            MagazineFreePfns(rc.Loaded);
            MagazineFreePfns(rc.Prev);
        }

        foreach (Rcache rc in _rcaches)
        {
            for (int j = 0; j < rc.DepotSize; j++)
            {
                MagazineFreePfns(rc.Depot[j]!);
                _spareMags.Push(rc.Depot[j]!);
                rc.Depot[j] = null;
            }

            rc.DepotSize = 0;
        }
    }

    // alloc_iova → __alloc_and_insert_iova_range (size aligned): the new range's node, or Nil. The walk
    // goes down from the cached node for the limit, lowering `high` to each range's start, until the
    // aligned candidate clears the range below it; failing that, once more from the anchor down to
    // where the first pass started (ranges freed above the cached node). limitPfn is inclusive here
    // (alloc_iova passes limit_pfn + 1 on).
    private int AllocTree(ulong size, ulong limitPfn)
    {
        // Exclusive, and below the anchor's frame (only a byte-granule domain's limit reaches it; the
        // kernel's limit_pfn + 1 would wrap to 0 there).
        ulong limit = Math.Min(limitPfn, IovaAnchor - 2) + 1;
        ulong high = limit, low = StartPfn;
        ulong alignMask = ~0UL << OrderBase2(size);
        if (limit <= _dma32BitPfn && size >= _max32AllocSize)
        {
            return IovaTree.Nil; // iova32_full
        }

        int curr = limit <= _dma32BitPfn ? _cached32Node : _cachedNode;
        ulong retryPfn = _tree[curr].Hi + 1;
        bool canRetry = curr != _anchor; // see the remarks: from the anchor the retry would start at 0
        ulong newPfn;
        int prev;
        while (true)
        {
            do
            {
                high = Math.Min(high, _tree[curr].Lo);
                newPfn = (high - size) & alignMask;
                prev = curr;
                curr = _tree.Prev(curr);
            }
            while (curr != IovaTree.Nil && newPfn <= _tree[curr].Hi && newPfn >= low);

            if (high >= size && newPfn >= low)
            {
                break;
            }

            if (low == StartPfn && retryPfn < limit && canRetry)
            {
                high = limit;
                low = retryPfn;
                curr = _anchor;
                continue;
            }

            _max32AllocSize = size;
            return IovaTree.Nil;
        }

        // __cached_rbnode_insert_update
        int node = _tree.Insert(newPfn, newPfn + size - 1, new IovaRange(size, IovaState.Freed));
        if (newPfn + size - 1 < _dma32BitPfn)
        {
            _cached32Node = node;
        }
        else
        {
            _cachedNode = node;
        }

        return node;
    }

    private void AddReserved(ulong lo, ulong hi)
    {
        if (lo > hi)
        {
            return;
        }

        _tree.Insert(lo, hi, new IovaRange(hi - lo + 1, IovaState.Reserved));
    }

    // order_base_2: the smallest k with 2^k ≥ n.
    private static int OrderBase2(ulong n) => n <= 1 ? 0 : 64 - BitOperations.LeadingZeroCount(n - 1);

    // struct iova_magazine
    private sealed class Magazine
    {
        public readonly ulong[] Pfns = new ulong[MagSize];
        public int Size;
    }

    // struct iova_rcache with one CPU's iova_cpu_rcache.
    private sealed class Rcache
    {
        public readonly Magazine?[] Depot = new Magazine?[MaxGlobalMags];
        public Magazine Loaded = new();
        public Magazine Prev = new();
        public int DepotSize;
    }

    // Payload: what else waits for the flush besides the freelist (a coherent buffer's pages: IommuCore.DmaFreeCoherent).
    private readonly record struct FqEntry(ulong Pfn, ulong Pages, ulong Freelist, long Counter, object? Payload);
}

/// <summary>How an IOVA range in the tree is used.</summary>
internal enum IovaState : byte
{
    /// <summary>Reserved (<c>reserve_iova</c>, and the anchor): never handed out.</summary>
    Reserved,

    /// <summary>Handed out and mapped.</summary>
    Live,

    /// <summary>
    /// Not live: being unmapped, waiting in the flush queue, or in a range cache (one state, so that
    /// the unmap path updates the node once; a second unmap of it is refused all the same).
    /// </summary>
    Freed,
}

/// <summary>What an IOVA range in the tree carries (the rest of <c>struct iova</c>).</summary>
/// <param name="Pages">Frames the range was mapped with (its free must name the same size).</param>
/// <param name="State">How the range is used.</param>
/// <param name="Owner">While live, the device the DMA API mapped it for (unmaps find the domain of their map by it).</param>
internal record struct IovaRange(ulong Pages, IovaState State, object? Owner = null);
