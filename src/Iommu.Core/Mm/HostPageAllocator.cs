using System.Globalization;
using Iommu;
using Iommu.Memory;
using Iommu.Internal;

namespace Iommu.Mm;

/// <summary>
/// Hands out the host pages that back process memory (the "struct page" side of the model): a bump
/// allocator over a physical range of <see cref="PhysicalMemory"/> that lies outside the frame
/// allocator's table region, with per-page reference counts (mappings plus pins) and a free list.
/// </summary>
/// <remarks>
/// Consecutive allocations are physically contiguous while the bump pointer lasts, so a buffer
/// touched in order forms contiguous runs (as THP-less Linux often does for fresh memory), which
/// lets type1 map runs with superpages. One page is reserved as the shared zero page.
/// Thread safety: every member is safe to call concurrently (one internal lock).
/// </remarks>
public sealed class HostPageAllocator
{
    private readonly Lock _lock = new();
    private readonly Dictionary<ulong, int> _refs = [];
    private readonly Dictionary<ulong, int> _pins = [];
    private readonly Stack<ulong> _free = new();
    private readonly Stack<ulong> _tableFree = new();
    private readonly ulong _end;
    private ulong _next;

    // Page-table pages are taken from the top of the pool downwards, so that they never break the
    // physically contiguous runs that data pages touched in order form from the bottom.
    private ulong _tableLow;
    private int _tablePages;

    /// <summary>Creates an allocator over <c>[base, base + size)</c>, which it claims in <paramref name="memory"/> (see <see cref="PhysicalMemory.Claim"/>).</summary>
    /// <param name="memory">Host physical memory.</param>
    /// <param name="physicalBase">First byte (page aligned).</param>
    /// <param name="size">Bytes (page multiple, at least two pages).</param>
    /// <exception cref="ArgumentException">The range overlaps a range of <paramref name="memory"/> already claimed (another page pool, or the platform's page-table frames); the message names both.</exception>
    /// <exception cref="ObjectDisposedException">The memory is disposed.</exception>
    /// <remarks>Two pools over overlapping pages would hand the same page to two owners (one guest would read another's bytes), so the second is refused. Use <see cref="ForPlatform"/> to share a platform's pool.</remarks>
    public HostPageAllocator(PhysicalMemory memory, ulong physicalBase, ulong size)
    {
        ArgumentNullException.ThrowIfNull(memory);
        memory.ThrowIfDisposed();
        if ((physicalBase | size) % PhysicalMemory.PageSize != 0 || size < 2 * (ulong)PhysicalMemory.PageSize || !memory.Contains(physicalBase, size))
        {
            ThrowHelper.HostRangeInvalid(physicalBase, size);
        }

        memory.Claim(physicalBase, size, this, "host page pool");

        Memory = memory;
        Base = physicalBase;
        _end = physicalBase + size;
        _tableLow = _end;
        _next = physicalBase;
        ZeroPagePfn = _next >> PhysicalMemory.PageShift;
        _next += PhysicalMemory.PageSize;
        memory.Fill(ZeroPagePfn << PhysicalMemory.PageShift, PhysicalMemory.PageSize, 0);
    }

    /// <summary>
    /// The platform's host page pool: the pool already created for the platform over the same range
    /// (or, when no range is given, the platform's first pool), else a new one over the range.
    /// </summary>
    /// <param name="platform">The platform.</param>
    /// <param name="physicalBase">First byte; default 4 GiB.</param>
    /// <param name="size">Bytes; default 1 GiB.</param>
    /// <returns>The allocator; every caller asking for the same range (or for the defaults) gets the same one.</returns>
    /// <exception cref="ArgumentException">The range overlaps, without being equal to, a pool of the platform or its page-table frames; the message names both ranges. With neither argument given and no pool yet, the default range does not fit the platform (it needs <c>MemorySize</c> of at least 5 GiB plus <c>TableMemorySize</c> when the frames are at the top); the message says what to change.</exception>
    /// <exception cref="ObjectDisposedException">The platform is disposed.</exception>
    /// <remarks>Pools are recorded as claims of the platform's <see cref="PhysicalMemory"/>, not in any
    /// static state: two platforms have independent pools. Before, each call built a new pool over the
    /// same pages, so two guests were handed the same physical pages.</remarks>
    public static HostPageAllocator ForPlatform(Platform platform, ulong? physicalBase = null, ulong? size = null)
    {
        ArgumentNullException.ThrowIfNull(platform);
        PhysicalMemory memory = platform.Memory;
        memory.ThrowIfDisposed();
        ulong b = physicalBase ?? 4 * Sizes.GiB, n = size ?? 1 * Sizes.GiB;
        bool defaults = physicalBase is null && size is null;
        return memory.FindOrClaim(
            c => c.Owner is HostPageAllocator pool && (defaults || (c.Start == b && c.Size == n)) ? pool : null,
            () =>
            {
                if (defaults)
                {
                    ThrowIfDefaultPoolDoesNotFit(platform, b, n);
                }

                return new HostPageAllocator(memory, b, n);
            });
    }

    // The default range is a convention, not the caller's choice: say what to change rather than which range failed.
    private static void ThrowIfDefaultPoolDoesNotFit(Platform platform, ulong b, ulong n)
    {
        ulong tables = platform.Frames.RegionBase, tablesEnd = tables + platform.Frames.RegionSize;
        bool outside = !platform.Memory.Contains(b, n);
        if (outside || (b < tablesEnd && tables < b + n))
        {
            throw new ArgumentException(
                string.Create(
                    CultureInfo.InvariantCulture,
                    $"The default host page pool [0x{b:x}, 0x{b + n:x}) does not fit this platform: {(outside ? $"its memory ends at 0x{platform.Memory.Size:x}" : $"its page-table frames are at [0x{tables:x}, 0x{tablesEnd:x})")}. Give PlatformOptions.MemorySize at least 0x{b + n + platform.Frames.RegionSize:x} (5 GiB plus TableMemorySize, the frames at the top), or pass physicalBase and size for a pool inside memory and outside the frames."),
                nameof(platform));
        }
    }

    /// <summary>Host physical memory the pages live in.</summary>
    public PhysicalMemory Memory { get; }

    /// <summary>First physical address managed.</summary>
    public ulong Base { get; }

    /// <summary>Page frame number of the shared zero page (never freed, never accounted).</summary>
    public ulong ZeroPagePfn { get; }

    /// <summary>Pages currently allocated (excluding the zero page).</summary>
    public int AllocatedPages
    {
        get
        {
            lock (_lock)
            {
                return _refs.Count;
            }
        }
    }

    /// <summary>Allocates <paramref name="pages"/> contiguous zeroed pages with one reference each.</summary>
    /// <param name="pages">How many.</param>
    /// <param name="alignPages">Alignment of the first page, in pages (power of two).</param>
    /// <param name="pfn">First page frame number.</param>
    /// <returns>0 or -ENOMEM.</returns>
    /// <exception cref="ArgumentOutOfRangeException"><paramref name="pages"/> is 0.</exception>
    public Errno Allocate(ulong pages, ulong alignPages, out ulong pfn)
    {
        using PhysicalMemory.AccessScope guard = Memory.EnterAccess();
        // Zero pages used to "succeed" with a pfn nobody owns (bad-input matrix).
        ArgumentOutOfRangeException.ThrowIfZero(pages);
        pfn = 0;
        lock (_lock)
        {
            ulong pa;
            if (pages == 1 && alignPages <= 1 && _next >= _tableLow && _free.Count > 0)
            {
                pa = _free.Pop() << PhysicalMemory.PageShift;
            }
            else
            {
                ulong align = Math.Max(1, alignPages) << PhysicalMemory.PageShift;
                ulong start = (_next + align - 1) & ~(align - 1);
                if (start < _next || start > _tableLow || pages > (_tableLow - start) >> PhysicalMemory.PageShift)
                {
                    if (pages == 1 && _free.Count > 0)
                    {
                        pa = _free.Pop() << PhysicalMemory.PageShift;
                        goto got;
                    }

                    return ErrorDetail.Fail(Errno.ENOMEM, $"host page pool 0x{Base:x}..0x{_end:x} exhausted ({pages} pages requested)");
                }

                // Pages skipped for alignment go to the free list.
                for (ulong p = _next; p < start; p += PhysicalMemory.PageSize)
                {
                    _free.Push(p >> PhysicalMemory.PageShift);
                }

                pa = start;
                _next = start + (pages << PhysicalMemory.PageShift);
            }

        got:
            pfn = pa >> PhysicalMemory.PageShift;
            for (ulong i = 0; i < pages; i++)
            {
                _refs[pfn + i] = 1;
            }

            Memory.Fill(pa, pages << PhysicalMemory.PageShift, 0);
            return Errno.None;
        }
    }

    /// <summary>Pages currently holding process page tables (<c>PageTables</c> of <c>/proc/meminfo</c>); not counted in <see cref="AllocatedPages"/>.</summary>
    [KernelSymbol("NR_PAGETABLE")]
    public int PageTablePages
    {
        get
        {
            lock (_lock)
            {
                return _tablePages;
            }
        }
    }

    // pte_alloc_one/pmd_alloc_one: one zeroed page for a process page table, from the top of the pool.
    internal Errno AllocateTable(out ulong pa)
    {
        lock (_lock)
        {
            if (_tableFree.Count > 0)
            {
                pa = _tableFree.Pop();
            }
            else if (_tableLow - PhysicalMemory.PageSize >= _next)
            {
                _tableLow -= PhysicalMemory.PageSize;
                pa = _tableLow;
            }
            else if (_free.Count > 0)
            {
                pa = _free.Pop() << PhysicalMemory.PageShift;
            }
            else
            {
                pa = 0;
                return ErrorDetail.Fail(Errno.ENOMEM, $"host page pool 0x{Base:x}..0x{_end:x} exhausted (page table)");
            }

            _tablePages++;
            Memory.Fill(pa, PhysicalMemory.PageSize, 0);
            return Errno.None;
        }
    }

    // pte_free/pmd_free: the table page goes back to the tables' free list.
    internal void FreeTable(ulong pa)
    {
        lock (_lock)
        {
            _tablePages--;
            _tableFree.Push(pa);
        }
    }

    /// <summary>Takes one more reference on a page (<c>get_page</c>).</summary>
    /// <param name="pfn">Page frame number; the zero page and pfns outside the pool are ignored.</param>
    public void Get(ulong pfn)
    {
        Memory.ThrowIfDisposed();
        lock (_lock)
        {
            if (_refs.TryGetValue(pfn, out int n))
            {
                _refs[pfn] = n + 1;
            }
        }
    }

    /// <summary>Drops one reference (<c>put_page</c>); the page is freed at zero.</summary>
    /// <param name="pfn">Page frame number; the zero page and pfns outside the pool are ignored.</param>
    public void Put(ulong pfn)
    {
        Memory.ThrowIfDisposed();
        lock (_lock)
        {
            if (_refs.TryGetValue(pfn, out int n))
            {
                if (n <= 1)
                {
                    _refs.Remove(pfn);
                    _free.Push(pfn);
                }
                else
                {
                    _refs[pfn] = n - 1;
                }
            }
        }
    }

    /// <summary>Pins a page: one reference plus one pin count (<c>pin_user_pages</c> with FOLL_LONGTERM).</summary>
    /// <param name="pfn">Page frame number (the zero page is counted too, but never freed).</param>
    public void Pin(ulong pfn)
    {
        Memory.ThrowIfDisposed();
        lock (_lock)
        {
            _pins[pfn] = _pins.TryGetValue(pfn, out int p) ? p + 1 : 1;
            if (_refs.TryGetValue(pfn, out int n))
            {
                _refs[pfn] = n + 1;
            }
        }
    }

    /// <summary>Drops one pin (<c>unpin_user_page</c>).</summary>
    /// <param name="pfn">Page frame number.</param>
    public void Unpin(ulong pfn)
    {
        Memory.ThrowIfDisposed();
        lock (_lock)
        {
            if (!_pins.TryGetValue(pfn, out int p))
            {
                ThrowHelper.PfnNotPinned(pfn);
            }

            if (p == 1)
            {
                _pins.Remove(pfn);
            }
            else
            {
                _pins[pfn] = p - 1;
            }
        }

        Put(pfn);
    }

    /// <summary>How many pins a page holds.</summary>
    /// <param name="pfn">Page frame number.</param>
    /// <returns>The pin count.</returns>
    public int PinCount(ulong pfn)
    {
        Memory.ThrowIfDisposed();
        lock (_lock)
        {
            return _pins.TryGetValue(pfn, out int n) ? n : 0;
        }
    }

    /// <summary>Total pins held on all pages (0 when nothing is pinned).</summary>
    public long TotalPins
    {
        get
        {
            lock (_lock)
            {
                long t = 0;
                foreach (int v in _pins.Values)
                {
                    t += v;
                }

                return t;
            }
        }
    }

    /// <summary>Current reference count of a page (0 if free or not managed here).</summary>
    /// <param name="pfn">Page frame number.</param>
    /// <returns>The count.</returns>
    public int RefCount(ulong pfn)
    {
        Memory.ThrowIfDisposed();
        lock (_lock)
        {
            return _refs.TryGetValue(pfn, out int n) ? n : 0;
        }
    }
}
