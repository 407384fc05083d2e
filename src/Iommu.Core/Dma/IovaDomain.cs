using System.Numerics;
using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using Iommu.Internal;

namespace Iommu.Dma;

/// <summary>
/// The IOVA allocator of a DMA-API domain with its range caches and flush queue (<c>struct iova_domain</c>,
/// <c>drivers/iommu/iova.c</c>, 5.15), in page frame numbers of <see cref="Granule"/> bytes.
/// </summary>
/// <remarks>
/// <para>Allocation (<c>alloc_iova_fast</c>): first the range cache of the request's order (the most
/// recently freed range of that size that fits below the limit), then the top-down search for the
/// highest free range below the limit, aligned to the request's size rounded up to a power of two
/// (<c>__alloc_and_insert_iova_range</c>); when that fails and the caller allows it, every cached range
/// goes back to the tree and the search runs once more. A range in the cache is still allocated in the
/// tree, as in the kernel.</para>
/// <para>Freeing (<c>free_iova_fast</c>) caches the range when its order is below
/// <see cref="RangeCacheMaxSize"/> and the cache has room, else returns it to the tree. With a flush
/// queue (<c>queue_iova</c>) a freed range is not freed: it waits in the queue, tagged with the number of
/// flushes started so far, and is freed only after a flush started later has finished — at the next
/// <c>queue_iova</c>, when the queue is full (that queue_iova flushes first), or when the
/// <see cref="FqTimeout"/> timer fires (it flushes and frees the whole queue). Until then the range is
/// handed out to nobody, and the page-table pages its unmap freed (the entry's freelist) stay allocated.</para>
/// <para>Where we differ from the kernel: one queue and one range cache per domain instead of one per
/// CPU (a single CPU's behaviour: a ring of <see cref="FqSize"/> slots holds at most
/// <see cref="FqSize"/> - 1 entries); a cache of one CPU's two magazines plus the global depot,
/// <c>(2 + MAX_GLOBAL_MAGS) × IOVA_MAG_SIZE</c> ranges per order, past which a freed range goes back to
/// the tree alone (the kernel frees a whole magazine); a sorted set and a dictionary instead of the
/// red-black tree, searched from the limit down each time (the kernel starts below its cached node, the
/// last range allocated, so it may answer with a lower range than ours). Each range remembers the size it
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
    private const int RcacheCapacity = (2 + MaxGlobalMags) * MagSize;

    private readonly RawSpinLock _lock = new(); // a spinlock, as the kernel's (see RawSpinLock for why not Lock)
    private readonly SortedSet<ulong> _starts = [];
    private readonly Dictionary<ulong, Node> _nodes = [];
    private readonly List<ulong>[] _rcaches = new List<ulong>[RangeCacheMaxSize];

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
    private Action<ulong>? _entryDtor;

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
            _rcaches[i] = [];
        }
    }

    /// <summary>How a tree node is used.</summary>
    private enum State : byte
    {
        /// <summary>Reserved (<c>reserve_iova</c>): never handed out.</summary>
        Reserved,

        /// <summary>Handed out and mapped.</summary>
        Live,

        /// <summary>
        /// Not live: being unmapped, waiting in the flush queue, or in a range cache (one state, so that
        /// the unmap path updates the node once; a second unmap of it is refused all the same).
        /// </summary>
        Freed,
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
    public void InitFlushQueue(PlatformClock clock, Action flushCb, Action<ulong> entryDtor)
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
    /// (<c>alloc_iova_fast</c>), remembering <paramref name="mappedPages"/> for the free.
    /// </summary>
    /// <returns>The first frame, or 0 when nothing fits.</returns>
    public ulong AllocFast(ulong pages, ulong mappedPages, ulong limitPfn, bool flushRcache)
    {
        using (_lock.EnterScope())
        {
            if (_dead)
            {
                return 0;
            }

            ulong pfn = RcacheGet(pages, limitPfn);
            if (pfn == 0)
            {
                pfn = AllocTree(pages, limitPfn);
                if (pfn == 0 && flushRcache)
                {
                    // Try replenishing IOVAs by flushing the range caches.
                    FlushRcaches();
                    pfn = AllocTree(pages, limitPfn);
                }

                if (pfn == 0)
                {
                    return 0;
                }

                _starts.Add(pfn);
                _nodes.Add(pfn, new Node(pfn + pages - 1, mappedPages, State.Live));
                return pfn;
            }

            ref Node node = ref CollectionsMarshal.GetValueRefOrNullRef(_nodes, pfn);
            node.Pages = mappedPages;
            node.State = State.Live;
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
            ref Node node = ref CollectionsMarshal.GetValueRefOrNullRef(_nodes, pfn);
            if (Unsafe.IsNullRef(ref node) || node.State != State.Live)
            {
                return Unsafe.IsNullRef(ref node) || node.State == State.Reserved ? "no DMA mapping starts there" : "that DMA mapping was already unmapped";
            }

            if (node.Pages != pages)
            {
                return $"that DMA mapping has {node.Pages} pages, not {pages}";
            }

            node.State = State.Freed;
            return null;
        }
    }

    /// <summary>Frees a range <see cref="BeginFree"/> accepted, now (<c>free_iova_fast</c>): into the range cache of its order when there is room, else back to the tree.</summary>
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
    public void Queue(ulong pfn, ulong pages, ulong freelist)
    {
        using (_lock.EnterScope())
        {
            FqEntry[] fq = _fq ?? throw new InvalidOperationException("The IOVA domain has no flush queue.");
            if (_dead)
            {
                // The domain is being freed: nothing will flush; release what the entry would have held.
                _entryDtor!(freelist);
                return;
            }

            // First remove the entries already flushed out (another CPU's flush or the timer's).
            RingFree();
            if (FqFull)
            {
                DomainFlush();
                RingFree();
            }

            fq[_fqTail] = new FqEntry(pfn, pages, freelist, _flushStartCnt);
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
            ulong lo = loPfn;
            foreach (ulong start in _starts.GetViewBetween(0, hiPfn).ToArray())
            {
                Node n = _nodes[start];
                if (n.Last < lo)
                {
                    continue;
                }

                if (start > lo)
                {
                    AddReserved(lo, start - 1);
                }

                if (n.Last >= hiPfn)
                {
                    return;
                }

                lo = n.Last + 1;
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
                _entryDtor!(fq[idx].Freelist);
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
            _entryDtor!(e.Freelist);
            FreeFastLocked(e.Pfn, e.Pages);
        }
    }

    // The node is Freed already (BeginFree, or a map that failed): cache the range or drop the node.
    private void FreeFastLocked(ulong pfn, ulong pages)
    {
        int order = OrderBase2(pages);
        if (order < RangeCacheMaxSize && _rcaches[order].Count < RcacheCapacity)
        {
            _rcaches[order].Add(pfn);
            return;
        }

        _nodes.Remove(pfn);
        _starts.Remove(pfn);
    }

    // iova_rcache_get / iova_magazine_pop: the most recent cached range of the order that ends at or
    // below the limit, swapped out with the last one.
    private ulong RcacheGet(ulong pages, ulong limitPfn)
    {
        int order = OrderBase2(pages);
        if (order >= RangeCacheMaxSize)
        {
            return 0;
        }

        List<ulong> cache = _rcaches[order];
        for (int i = cache.Count - 1; i >= 0; i--)
        {
            ulong pfn = cache[i];
            if (pfn + pages - 1 <= limitPfn)
            {
                cache[i] = cache[^1];
                cache.RemoveAt(cache.Count - 1);
                return pfn;
            }
        }

        return 0;
    }

    // free_cpu_cached_iovas + free_global_cached_iovas: every cached range back to the tree.
    private void FlushRcaches()
    {
        foreach (List<ulong> cache in _rcaches)
        {
            foreach (ulong pfn in cache)
            {
                _nodes.Remove(pfn);
                _starts.Remove(pfn);
            }

            cache.Clear();
        }
    }

    // __alloc_and_insert_iova_range: the highest free range of `pages` frames ending at or below
    // limitPfn and starting at or above StartPfn, its start aligned to `pages` rounded up to a power of two.
    private ulong AllocTree(ulong pages, ulong limitPfn)
    {
        ulong alignMask = ~((1UL << OrderBase2(pages)) - 1);
        ulong high = limitPfn; // highest frame the range may use
        foreach (ulong start in _starts.GetViewBetween(0, limitPfn).Reverse())
        {
            ulong last = _nodes[start].Last;
            if (last < high)
            {
                // The gap (last, high].
                ulong candidate = Fit(high, pages, alignMask);
                if (candidate != 0 && candidate > last)
                {
                    return candidate;
                }
            }

            if (start <= StartPfn)
            {
                return 0;
            }

            high = Math.Min(high, start - 1);
        }

        return Fit(high, pages, alignMask);
    }

    // The aligned start of a range of `pages` frames ending at or below `high`, or 0 when it would
    // start below StartPfn.
    private ulong Fit(ulong high, ulong pages, ulong alignMask)
    {
        if (high + 1 < pages)
        {
            return 0;
        }

        ulong candidate = (high + 1 - pages) & alignMask;
        return candidate >= StartPfn ? candidate : 0;
    }

    private void AddReserved(ulong lo, ulong hi)
    {
        if (lo > hi)
        {
            return;
        }

        _starts.Add(lo);
        _nodes.Add(lo, new Node(hi, hi - lo + 1, State.Reserved));
    }

    // order_base_2: the smallest k with 2^k ≥ n.
    private static int OrderBase2(ulong n) => n <= 1 ? 0 : 64 - BitOperations.LeadingZeroCount(n - 1);

    private struct Node(ulong last, ulong pages, State state)
    {
        public ulong Last = last;
        public ulong Pages = pages;
        public State State = state;
    }

    private readonly record struct FqEntry(ulong Pfn, ulong Pages, ulong Freelist, long Counter);
}
