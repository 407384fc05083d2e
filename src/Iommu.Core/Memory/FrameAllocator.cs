using System.Globalization;

namespace Iommu.Memory;

/// <summary>
/// Hands out zeroed 4 KiB frames of <see cref="PhysicalMemory"/> for translation structures (root,
/// context, PASID and page tables), the way the kernel's <c>alloc_pgtable_page</c> does.
/// </summary>
/// <remarks>
/// <para>Frames come from one region of physical memory. Allocation and free are O(1): a bump
/// pointer over never-used frames and a free list threaded through the freed frames themselves,
/// so nothing is allocated on the GC heap, ever. Runs given back whole (<see cref="FreeContiguous"/>,
/// the kernel's <c>free_pages</c> of a higher-order block) go to a second list, of runs, also threaded
/// through their first frames: a later <see cref="TryAllocateContiguous"/> reuses them (first fit,
/// taking the tail of a longer run), and single frames come from them once the bump pointer and the
/// free list are spent.</para>
/// <para>Fault injection in the style of the kernel's <c>fail_nth</c>: <see cref="FailNth"/> makes
/// the N-th allocation from now fail once.</para>
/// <para>Thread safety: all members may be called concurrently. After the memory is disposed,
/// <see cref="TryAllocate"/>, <see cref="TryAllocateContiguous"/>, <see cref="Free"/>,
/// <see cref="IsAllocated"/> and <see cref="FailNth"/> throw <see cref="ObjectDisposedException"/>;
/// allocation and free hold an access scope of the memory (<see cref="PhysicalMemory.EnterAccess"/>),
/// so they are safe against a racing dispose. The counters and the region's bounds stay readable.</para>
/// </remarks>
public sealed class FrameAllocator
{
    private const ulong NoFrame = ulong.MaxValue;

    private readonly PhysicalMemory _memory;
    private readonly Lock _lock = new();
    private readonly ulong[] _allocated; // one bit per frame: catches double frees and foreign frees
    private ulong _bump;
    private ulong _freeHead = NoFrame;
    private ulong _runHead = NoFrame; // freed runs: entry 0 of a run's first frame links the next run, entry 1 holds its length
    private long _live;
    private long _peak;
    private long _allocations;
    private long _failures;
    private long _failCountdown;

    /// <summary>Creates an allocator over <c>[regionBase, regionBase + regionSize)</c> of <paramref name="memory"/>.</summary>
    /// <param name="memory">The physical memory the frames live in.</param>
    /// <param name="regionBase">4 KiB-aligned start of the region.</param>
    /// <param name="regionSize">Bytes in the region; a non-zero multiple of 4 KiB inside <paramref name="memory"/>.</param>
    /// <exception cref="ArgumentException">The region overlaps a range of <paramref name="memory"/> already claimed (<see cref="PhysicalMemory.Claim"/>).</exception>
    public FrameAllocator(PhysicalMemory memory, ulong regionBase, ulong regionSize)
    {
        ArgumentNullException.ThrowIfNull(memory);
        memory.ThrowIfDisposed();
        if ((regionBase | regionSize) % PhysicalMemory.PageSize != 0 || regionSize == 0 || !memory.Contains(regionBase, regionSize))
        {
            throw new ArgumentOutOfRangeException(
                nameof(regionSize),
                string.Create(CultureInfo.InvariantCulture, $"Frame region [0x{regionBase:x}, 0x{regionBase + regionSize:x}) must be 4 KiB-aligned, non-empty and inside physical memory [0x0, 0x{memory.Size:x})."));
        }

        memory.Claim(regionBase, regionSize, this, "page-table frame region");
        _memory = memory;
        Region = memory.PinContiguous(regionBase, regionSize);
        RegionBase = regionBase;
        RegionSize = regionSize;
        Capacity = (long)(regionSize / PhysicalMemory.PageSize);
        _allocated = new ulong[(Capacity + 63) / 64];
        _bump = regionBase;
    }

    /// <summary>The region as one contiguous block, for fast table walks.</summary>
    public ContiguousRegion Region { get; }

    /// <summary>First physical address of the region frames come from.</summary>
    public ulong RegionBase { get; }

    /// <summary>Bytes in the region.</summary>
    public ulong RegionSize { get; }

    /// <summary>Number of frames in the region.</summary>
    public long Capacity { get; }

    /// <summary>Frames allocated and not yet freed.</summary>
    public long LiveFrames => Interlocked.Read(ref _live);

    /// <summary>Highest value <see cref="LiveFrames"/> has reached.</summary>
    public long PeakLiveFrames => Interlocked.Read(ref _peak);

    /// <summary>Successful allocations since creation.</summary>
    public long TotalAllocations => Interlocked.Read(ref _allocations);

    /// <summary>Failed allocations since creation (exhaustion or injected).</summary>
    public long FailedAllocations => Interlocked.Read(ref _failures);

    /// <summary>
    /// Makes the <paramref name="n"/>-th allocation from now fail (1 = the next one), once; 0 cancels.
    /// </summary>
    /// <param name="n">Which allocation fails; 0 to cancel a pending injection.</param>
    /// <exception cref="ObjectDisposedException">The memory is disposed.</exception>
    public void FailNth(int n)
    {
        _memory.ThrowIfDisposed();
        ArgumentOutOfRangeException.ThrowIfNegative(n);
        lock (_lock)
        {
            _failCountdown = n;
        }
    }

    /// <summary>Whether an injected failure is still pending (<see cref="FailNth"/> has not fired yet).</summary>
    public bool FailurePending
    {
        get
        {
            lock (_lock)
            {
                return _failCountdown != 0;
            }
        }
    }

    /// <summary>Allocates one zeroed 4 KiB frame.</summary>
    /// <param name="pa">Its physical address, or 0 on failure.</param>
    /// <returns>False when the region is exhausted or a failure was injected (the kernel's -ENOMEM).</returns>
    /// <exception cref="ObjectDisposedException">The memory is disposed.</exception>
    public bool TryAllocate(out ulong pa)
    {
        using PhysicalMemory.AccessScope guard = _memory.EnterAccess();
        lock (_lock)
        {
            if (_failCountdown != 0 && --_failCountdown == 0)
            {
                _failures++;
                pa = 0;
                return false;
            }

            if (_freeHead != NoFrame)
            {
                pa = _freeHead;
                _freeHead = Region.Entry(pa);
            }
            else if (_bump < RegionBase + RegionSize)
            {
                pa = _bump;
                _bump += PhysicalMemory.PageSize;
            }
            else if (!TakeFromRuns(1, out pa))
            {
                _failures++;
                pa = 0;
                return false;
            }

            ulong index = (pa - RegionBase) / PhysicalMemory.PageSize;
            _allocated[index / 64] |= 1UL << (int)(index % 64);
            _allocations++;
            _live++;
            if (_live > _peak)
            {
                _peak = _live;
            }
        }

        // Zero outside the lock; the frame is ours alone now.
        Region.Table(pa).Clear();
        return true;
    }

    /// <summary>
    /// Allocates <paramref name="count"/> physically contiguous zeroed frames (the kernel's
    /// higher-order <c>alloc_pages</c>, e.g. for a PASID directory or an invalidation queue).
    /// </summary>
    /// <param name="count">Number of frames, at least 1.</param>
    /// <param name="pa">Physical address of the first frame, or 0 on failure.</param>
    /// <returns>False when no such run is left or a failure was injected.</returns>
    /// <remarks>
    /// Runs come from frames never handed out before, then from runs given back with
    /// <see cref="FreeContiguous"/>. Frames given back one by one (<see cref="Free"/>) are not merged
    /// into runs (the kernel's buddy allocator would merge them): a platform that frees its runs frame
    /// by frame can still exhaust the never-used part first.
    /// </remarks>
    public bool TryAllocateContiguous(int count, out ulong pa)
    {
        using PhysicalMemory.AccessScope guard = _memory.EnterAccess();
        ArgumentOutOfRangeException.ThrowIfLessThan(count, 1);
        if (count == 1)
        {
            return TryAllocate(out pa);
        }

        ulong bytes = (ulong)count * PhysicalMemory.PageSize;
        lock (_lock)
        {
            if (_failCountdown != 0 && --_failCountdown == 0)
            {
                _failures++;
                pa = 0;
                return false;
            }

            if (RegionBase + RegionSize - _bump >= bytes)
            {
                pa = _bump;
                _bump += bytes;
            }
            else if (!TakeFromRuns(count, out pa))
            {
                _failures++;
                pa = 0;
                return false;
            }

            for (int i = 0; i < count; i++)
            {
                ulong index = ((pa - RegionBase) / PhysicalMemory.PageSize) + (ulong)i;
                _allocated[index / 64] |= 1UL << (int)(index % 64);
            }

            _allocations += count;
            _live += count;
            if (_live > _peak)
            {
                _peak = _live;
            }
        }

        for (int i = 0; i < count; i++)
        {
            Region.Table(pa + ((ulong)i * PhysicalMemory.PageSize)).Clear();
        }

        return true;
    }

    /// <summary>Whether <paramref name="pa"/> is a frame of this allocator that is currently allocated.</summary>
    /// <param name="pa">Physical address.</param>
    /// <returns>True when allocated.</returns>
    /// <exception cref="ObjectDisposedException">The memory is disposed.</exception>
    public bool IsAllocated(ulong pa)
    {
        _memory.ThrowIfDisposed();
        if (!InRegion(pa))
        {
            return false;
        }

        ulong index = (pa - RegionBase) / PhysicalMemory.PageSize;
        lock (_lock)
        {
            return (_allocated[index / 64] & (1UL << (int)(index % 64))) != 0;
        }
    }

    /// <summary>Returns a frame obtained from <see cref="TryAllocate"/>.</summary>
    /// <param name="pa">The frame's physical address.</param>
    /// <exception cref="ArgumentException">The address is not a frame of this region.</exception>
    /// <exception cref="InvalidOperationException">The frame is not allocated (double free).</exception>
    /// <exception cref="ObjectDisposedException">The memory is disposed.</exception>
    public void Free(ulong pa)
    {
        using PhysicalMemory.AccessScope guard = _memory.EnterAccess();
        if (!InRegion(pa))
        {
            throw new ArgumentException(
                string.Create(CultureInfo.InvariantCulture, $"0x{pa:x} is not a 4 KiB frame of the region [0x{RegionBase:x}, 0x{RegionBase + RegionSize:x})."), nameof(pa));
        }

        ulong index = (pa - RegionBase) / PhysicalMemory.PageSize;
        lock (_lock)
        {
            ref ulong word = ref _allocated[index / 64];
            ulong bit = 1UL << (int)(index % 64);
            if ((word & bit) == 0)
            {
                throw new InvalidOperationException(string.Create(CultureInfo.InvariantCulture, $"Frame 0x{pa:x} freed twice (it is not allocated)."));
            }

            word &= ~bit;
            Region.Entry(pa) = _freeHead;
            _freeHead = pa;
            _live--;
        }
    }

    /// <summary>
    /// Returns a chain of frames (<c>dma_free_pagelist</c>): <paramref name="head"/>, then the frame whose
    /// address <paramref name="head"/>'s first 64-bit entry holds, and so on until an entry holds 0 — the
    /// form of <see cref="IommuIotlbGather.Freelist"/>.
    /// </summary>
    /// <param name="head">The first frame of the chain, or 0 for an empty chain.</param>
    /// <returns>Number of frames freed.</returns>
    /// <exception cref="ArgumentException">A link is not a frame of this region (the frames before it are freed).</exception>
    /// <exception cref="InvalidOperationException">A frame of the chain is not allocated (the frames before it are freed).</exception>
    /// <exception cref="ObjectDisposedException">The memory is disposed.</exception>
    [KernelSymbol("dma_free_pagelist")]
    public int FreeList(ulong head)
    {
        using PhysicalMemory.AccessScope guard = _memory.EnterAccess();
        int n = 0;
        while (head != 0)
        {
            if (!InRegion(head))
            {
                throw new ArgumentException(
                    string.Create(CultureInfo.InvariantCulture, $"0x{head:x} (link {n} of the chain) is not a 4 KiB frame of the region [0x{RegionBase:x}, 0x{RegionBase + RegionSize:x})."), nameof(head));
            }

            ulong next = Region.Entry(head);
            Free(head);
            head = next;
            n++;
        }

        return n;
    }

    /// <summary>
    /// Returns a run obtained from <see cref="TryAllocateContiguous"/> whole (the kernel's <c>free_pages</c>
    /// of a higher-order block), so that a later run of at most that length reuses it.
    /// </summary>
    /// <param name="pa">First frame of the run.</param>
    /// <param name="count">Frames in the run, at least 1 (1 is <see cref="Free"/>).</param>
    /// <exception cref="ArgumentException">The run is not made of frames of this region.</exception>
    /// <exception cref="InvalidOperationException">A frame of the run is not allocated (double free); nothing is freed then.</exception>
    /// <exception cref="ObjectDisposedException">The memory is disposed.</exception>
    [KernelSymbol("free_pages")]
    public void FreeContiguous(ulong pa, int count)
    {
        using PhysicalMemory.AccessScope guard = _memory.EnterAccess();
        ArgumentOutOfRangeException.ThrowIfLessThan(count, 1);
        if (count == 1)
        {
            Free(pa);
            return;
        }

        ulong last = pa + ((ulong)(count - 1) * PhysicalMemory.PageSize);
        if (!InRegion(pa) || !InRegion(last) || last < pa)
        {
            throw new ArgumentException(
                string.Create(CultureInfo.InvariantCulture, $"[0x{pa:x}, +{count} frames) is not a run of 4 KiB frames of the region [0x{RegionBase:x}, 0x{RegionBase + RegionSize:x})."), nameof(pa));
        }

        ulong first = (pa - RegionBase) / PhysicalMemory.PageSize;
        lock (_lock)
        {
            for (ulong i = first; i < first + (ulong)count; i++)
            {
                if ((_allocated[i / 64] & (1UL << (int)(i % 64))) == 0)
                {
                    throw new InvalidOperationException(string.Create(CultureInfo.InvariantCulture, $"Frame 0x{RegionBase + (i * PhysicalMemory.PageSize):x} of the run at 0x{pa:x} freed twice (it is not allocated)."));
                }
            }

            for (ulong i = first; i < first + (ulong)count; i++)
            {
                _allocated[i / 64] &= ~(1UL << (int)(i % 64));
            }

            Span<ulong> head = Region.Table(pa);
            head[0] = _runHead;
            head[1] = (ulong)count;
            _runHead = pa;
            _live -= count;
        }
    }

    // First fit over the freed runs, under _lock: a run of exactly count frames is unlinked; a longer one gives
    // its tail and keeps its head (and so its place in the list). The caller marks and zeroes the frames.
    private bool TakeFromRuns(int count, out ulong pa)
    {
        ulong prev = NoFrame;
        for (ulong run = _runHead; run != NoFrame;)
        {
            Span<ulong> head = Region.Table(run);
            ulong next = head[0], length = head[1];
            if (length >= (ulong)count)
            {
                if (length == (ulong)count)
                {
                    if (prev == NoFrame)
                    {
                        _runHead = next;
                    }
                    else
                    {
                        Region.Entry(prev) = next;
                    }

                    pa = run;
                }
                else
                {
                    head[1] = length - (ulong)count;
                    pa = run + ((length - (ulong)count) * PhysicalMemory.PageSize);
                }

                return true;
            }

            prev = run;
            run = next;
        }

        pa = 0;
        return false;
    }

    private bool InRegion(ulong pa) =>
        pa >= RegionBase && pa - RegionBase < RegionSize && (pa & (PhysicalMemory.PageSize - 1)) == 0;
}
