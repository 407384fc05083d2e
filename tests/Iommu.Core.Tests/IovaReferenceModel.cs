using System.Numerics;

namespace Iommu.Core.Tests;

/// <summary>
/// A small, slow, independent rendering of 5.15 <c>drivers/iommu/iova.c</c> for one CPU, written from
/// the kernel source to check <c>IovaDomain</c> against call by call: a sorted list stands in for the
/// rbtree, the cached nodes are node references, and the range caches are the kernel's loaded / prev
/// magazines and global depot with the kernel's push, pop and flush orders.
/// </summary>
/// <remarks>
/// One of the model's documented departures is followed here so that the comparison stays exact:
/// the retry pass is skipped when the search starts at the anchor (the kernel would wrap its retry
/// start to frame 0 and can hand out a frame below start_pfn). The tests reserve later only where no
/// range is handed out or cached, so the kernel's widening of an overlapped range is never visible.
/// </remarks>
internal sealed class IovaReferenceModel
{
    private const int MaxOrder = 6;          // IOVA_RANGE_CACHE_MAX_SIZE
    private const int MagSize = 128;         // IOVA_MAG_SIZE
    private const int MaxGlobalMags = 32;    // MAX_GLOBAL_MAGS
    private const ulong Anchor = ulong.MaxValue;

    private readonly List<Node> _nodes = [];
    private readonly ulong _dma32BitPfn;
    private readonly ulong _startPfn;
    private readonly Node _anchor;
    private readonly Rcache[] _rcaches = new Rcache[MaxOrder];
    private Node _cached;
    private Node _cached32;
    private ulong _max32AllocSize;

    public IovaReferenceModel(ulong granule, ulong startPfn)
    {
        _startPfn = Math.Max(1, startPfn);
        _dma32BitPfn = 1UL << (32 - BitOperations.TrailingZeroCount(granule));
        _max32AllocSize = _dma32BitPfn;
        _anchor = new Node(Anchor, Anchor, reserved: true);
        _nodes.Add(_anchor);
        _cached = _cached32 = _anchor;
        for (int i = 0; i < MaxOrder; i++)
        {
            _rcaches[i] = new Rcache();
        }
    }

    /// <summary>Ranges in the tree other than the anchor, whether reserved, live or cached.</summary>
    public IEnumerable<(ulong Lo, ulong Hi, bool Reserved)> Ranges => _nodes.Where(n => n != _anchor).Select(n => (n.Lo, n.Hi, n.Reserved));

    public ulong Max32AllocSize => _max32AllocSize;

    /// <summary>The most ranges one order's cache has held (for the tests' coverage checks).</summary>
    public int MostCached { get; private set; }

    /// <summary>Whether a pop found nothing in the loaded magazine while another magazine of the order held a range that fits.</summary>
    public bool MissedInOtherMagazine { get; private set; }

    /// <summary>alloc_iova_fast: the first frame, or 0.</summary>
    public ulong AllocFast(ulong size, ulong limitPfn, bool flushRcache)
    {
        ulong pfn = RcacheGet(size, limitPfn + 1);
        if (pfn != 0)
        {
            return pfn;
        }

        while (true)
        {
            Node? n = AllocIova(size, limitPfn + 1);
            if (n is not null)
            {
                return n.Lo;
            }

            if (!flushRcache)
            {
                return 0;
            }

            flushRcache = false;
            // free_cpu_cached_iovas (loaded, then prev, per order), then free_global_cached_iovas.
            foreach (Rcache rc in _rcaches)
            {
                FreePfns(rc.Loaded);
                FreePfns(rc.Prev);
            }

            foreach (Rcache rc in _rcaches)
            {
                foreach (List<ulong> mag in rc.Depot)
                {
                    FreePfns(mag);
                }

                rc.Depot.Clear();
            }
        }
    }

    /// <summary>free_iova_fast.</summary>
    public void FreeFast(ulong pfn, ulong size)
    {
        if (RcacheInsert(pfn, size))
        {
            return;
        }

        PrivateFree(Find(pfn));
    }

    /// <summary>reserve_iova, widening overlapped ranges as the kernel does.</summary>
    public void Reserve(ulong lo, ulong hi)
    {
        bool overlap = false;
        for (int i = 0; i < _nodes.Count; i++)
        {
            Node n = _nodes[i];
            if (n.Lo <= hi && lo <= n.Hi)
            {
                // __adjust_overlap_range
                if (lo < n.Lo)
                {
                    n.Lo = lo;
                }

                if (hi > n.Hi)
                {
                    lo = n.Hi + 1;
                }

                if (lo >= n.Lo && hi <= n.Hi)
                {
                    return;
                }

                overlap = true;
            }
            else if (overlap)
            {
                break;
            }
        }

        Insert(new Node(lo, hi, reserved: true));
    }

    private bool RcacheInsert(ulong pfn, ulong size)
    {
        int order = OrderBase2(size);
        if (order >= MaxOrder)
        {
            return false;
        }

        Rcache rc = _rcaches[order];
        List<ulong>? toFree = null;
        if (rc.Loaded.Count == MagSize)
        {
            if (rc.Prev.Count < MagSize)
            {
                (rc.Loaded, rc.Prev) = (rc.Prev, rc.Loaded);
            }
            else
            {
                if (rc.Depot.Count < MaxGlobalMags)
                {
                    rc.Depot.Add(rc.Loaded);
                }
                else
                {
                    toFree = rc.Loaded;
                }

                rc.Loaded = [];
            }
        }

        rc.Loaded.Add(pfn);
        MostCached = Math.Max(MostCached, rc.Loaded.Count + rc.Prev.Count + rc.Depot.Sum(m => m.Count));
        if (toFree is not null)
        {
            FreePfns(toFree);
        }

        return true;
    }

    // __iova_rcache_get + iova_magazine_pop: only the loaded magazine is searched.
    private ulong RcacheGet(ulong size, ulong limitPfnExcl)
    {
        int order = OrderBase2(size);
        if (order >= MaxOrder)
        {
            return 0;
        }

        Rcache rc = _rcaches[order];
        if (rc.Loaded.Count == 0)
        {
            if (rc.Prev.Count != 0)
            {
                (rc.Loaded, rc.Prev) = (rc.Prev, rc.Loaded);
            }
            else if (rc.Depot.Count != 0)
            {
                rc.Loaded = rc.Depot[^1];
                rc.Depot.RemoveAt(rc.Depot.Count - 1);
            }
            else
            {
                return 0;
            }
        }

        ulong limit = limitPfnExcl - size;
        List<ulong> mag = rc.Loaded;
        int i;
        for (i = mag.Count - 1; mag[i] > limit; i--)
        {
            if (i == 0)
            {
                MissedInOtherMagazine |= rc.Prev.Any(p => p <= limit) || rc.Depot.Any(m => m.Any(p => p <= limit));
                return 0;
            }
        }

        ulong pfn = mag[i];
        mag[i] = mag[^1];
        mag.RemoveAt(mag.Count - 1);
        return pfn;
    }

    private void FreePfns(List<ulong> mag)
    {
        foreach (ulong pfn in mag)
        {
            PrivateFree(Find(pfn));
        }

        mag.Clear();
    }

    // alloc_iova(size_aligned = true) → __alloc_and_insert_iova_range; limit exclusive.
    private Node? AllocIova(ulong size, ulong limitPfn)
    {
        ulong high = limitPfn, low = _startPfn;
        ulong alignMask = ~0UL << OrderBase2(size);
        if (limitPfn <= _dma32BitPfn && size >= _max32AllocSize)
        {
            return null;
        }

        Node? curr = limitPfn <= _dma32BitPfn ? _cached32 : _cached;
        bool fromAnchor = curr == _anchor;
        ulong retryPfn = curr.Hi + 1;
        ulong newPfn;
        while (true)
        {
            do
            {
                high = Math.Min(high, curr!.Lo);
                newPfn = (high - size) & alignMask;
                curr = Prev(curr);
            }
            while (curr is not null && newPfn <= curr.Hi && newPfn >= low);

            if (high < size || newPfn < low)
            {
                if (low == _startPfn && retryPfn < limitPfn && !fromAnchor)
                {
                    high = limitPfn;
                    low = retryPfn;
                    curr = _anchor;
                    continue;
                }

                _max32AllocSize = size;
                return null;
            }

            break;
        }

        var node = new Node(newPfn, newPfn + size - 1, reserved: false);
        Insert(node);
        if (node.Hi < _dma32BitPfn)
        {
            _cached32 = node;
        }
        else
        {
            _cached = node;
        }

        return node;
    }

    // private_free_iova → __cached_rbnode_delete_update, then rb_erase.
    private void PrivateFree(Node free)
    {
        if (free == _cached32 || (free.Hi < _dma32BitPfn && free.Lo >= _cached32.Lo))
        {
            _cached32 = Next(free)!;
        }

        if (free.Lo < _dma32BitPfn)
        {
            _max32AllocSize = _dma32BitPfn;
        }

        if (free.Lo >= _cached.Lo)
        {
            _cached = Next(free)!;
        }

        _nodes.Remove(free);
    }

    private Node Find(ulong pfn) => _nodes.Single(n => n.Lo <= pfn && pfn <= n.Hi);

    private Node? Prev(Node n)
    {
        int i = _nodes.IndexOf(n);
        return i > 0 ? _nodes[i - 1] : null;
    }

    private Node? Next(Node n)
    {
        int i = _nodes.IndexOf(n);
        return i + 1 < _nodes.Count ? _nodes[i + 1] : null;
    }

    private void Insert(Node n)
    {
        int i = _nodes.FindIndex(x => x.Lo > n.Lo);
        _nodes.Insert(i < 0 ? _nodes.Count : i, n);
    }

    internal static int OrderBase2(ulong n) => n <= 1 ? 0 : 64 - BitOperations.LeadingZeroCount(n - 1);

    private sealed class Node(ulong lo, ulong hi, bool reserved)
    {
        public ulong Lo { get; set; } = lo;

        public ulong Hi { get; } = hi;

        public bool Reserved { get; } = reserved;
    }

    private sealed class Rcache
    {
        public List<ulong> Loaded { get; set; } = [];

        public List<ulong> Prev { get; set; } = [];

        public List<List<ulong>> Depot { get; } = [];
    }
}
