using System.Runtime.CompilerServices;
using Iommu.Memory;

namespace Iommu.VtD.Driver;

/// <summary>
/// A domain's VT-d second-level page table, living in <see cref="PhysicalMemory"/> exactly as the
/// hardware walks it: 4 KiB tables of 512 64-bit entries, 3 to 5 levels, 2 MiB and 1 GiB superpages.
/// This is the page-table engine of <c>struct dmar_domain</c> (<c>__domain_mapping</c>,
/// <c>domain_unmap</c>, <c>pfn_to_dma_pte</c>).
/// </summary>
/// <remarks>
/// <para>The engine is <see cref="PageTable{TFormat}"/> over <see cref="SecondLevelFormat"/>, held in
/// place as a field: this class adds the public contract (argument and dispose checks, docs).</para>
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
/// scope (<see cref="PhysicalMemory.EnterAccess"/>) — <see cref="IommuCore"/> holds one around every map
/// and unmap that reaches this table through the driver (its iova_to_phys relies instead on owned memory
/// staying mapped after a dispose, and validates its answer; see <see cref="PhysicalMemory.Dispose"/>). A
/// direct user that may race the platform's dispose holds one too.</para>
/// </remarks>
public sealed class DmaPageTable
{
    private PageTable<SecondLevelFormat> _pt;

    private DmaPageTable(PhysicalMemory memory, FrameAllocator frames, ulong root, int levels)
    {
        _pt = new PageTable<SecondLevelFormat>(memory, frames, root, levels);
    }

    // The engine in place, for the driver's map path: it has checked the same memory's disposed
    // flag already, so the public members' second check is skipped there.
    internal ref PageTable<SecondLevelFormat> Engine => ref _pt;

    /// <summary>Physical address of the top-level table (<c>dmar_domain->pgd</c>).</summary>
    public ulong Root => _pt.Root;

    /// <summary>Number of levels (3 for 39-bit, 4 for 48-bit, 5 for 57-bit; <c>agaw + 2</c>).</summary>
    public int Levels => _pt.Levels;

    /// <summary>Address width the table covers: 12 + 9 × levels bits (capped at 64).</summary>
    public int AddressWidth => Math.Min(_pt.Width, 64);

    /// <summary>Whether tables wait on the pending-free list (an unmap freed tables since the last release).</summary>
    public int PendingFrees => _pt.PendingFrees;

    /// <summary>Table frames currently owned (including those waiting on the pending-free list).</summary>
    public long TableFrames => _pt.TableFrames;

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
    /// <param name="superpageLevels">Superpage levels allowed (<c>iommu_superpage</c>: 0 none, 1 = 2 MiB, 2 = 1 GiB too). More
    /// counts as the most the table holds (2, or 1 for a 2-level table, whose top is the 2 MiB level; VT-d defines no larger
    /// page), less as 0.</param>
    /// <param name="mapped">Bytes whose entries this call wrote (or found already set) before it stopped.</param>
    /// <returns>
    /// -EFAULT when the range does not fit the table's <see cref="AddressWidth"/> (or runs past 2^64),
    /// before any other check, as <c>intel_iommu_map</c> checks the domain's width first (the kernel's
    /// <c>__domain_mapping</c> itself BUG()s); -EINVAL without R or W, or when <paramref name="iova"/>,
    /// <paramref name="paddr"/> or <paramref name="size"/> is not a multiple of 4 KiB (the kernel counts
    /// in pages and cannot get one); -ENOMEM when a table frame cannot be allocated. An entry that is
    /// already present is left as it is and counted as mapped (the kernel WARNs and returns 0).
    /// </returns>
    /// <remarks>
    /// Like the kernel, a superpage replaces any table under it, with whatever that table mapped, and
    /// the table goes on the pending-free list; the caller must flush the range (the internal ReplacedTables count
    /// tells it: 5.15 <c>switch_to_super_page</c> flushes the IOTLB of every unit of the domain). Callers
    /// (the IOMMU core users) should never map over live mappings. Unlike the kernel, a superpage already
    /// mapped above the target level is left alone instead of being walked into as a table.
    /// </remarks>
    [KernelSymbol("__domain_mapping")]
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public Errno Map(ulong iova, ulong paddr, ulong size, ulong attr, int superpageLevels, out ulong mapped)
    {
        _pt.Memory.ThrowIfDisposed();
        return _pt.Map(iova, paddr, size, attr, superpageLevels, out mapped);
    }

    // How many tables superpage maps have replaced so far (it only grows): a map that changes it must flush its range.
    internal long ReplacedTables => _pt.ReplacedTables;

    /// <summary>
    /// Removes every leaf (4 KiB, 2 MiB or 1 GiB page) that overlaps <c>[iova, iova + size)</c>, each
    /// one whole (<c>intel_iommu_unmap</c> → <c>domain_unmap</c>): the "unmap more than asked" contract.
    /// Tables whose whole span lies inside the range are unlinked and put on the pending-free list.
    /// </summary>
    /// <param name="iova">First IOVA, normally 4 KiB aligned (a range from any byte removes every page it overlaps).</param>
    /// <param name="size">Bytes, normally a multiple of 4 KiB.</param>
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
        return _pt.TryUnmapOne4K(iova, size) ? size : UnmapWithoutSpan(iova, size);
    }

    // Out of line: inlined, the overload's two out locals were zeroed on the caller's stack on every
    // single-page unmap of a loop.
    [MethodImpl(MethodImplOptions.NoInlining)]
    private ulong UnmapWithoutSpan(ulong iova, ulong size) => Unmap(iova, size, out _, out _);

    /// <summary>
    /// <see cref="Unmap(ulong, ulong)"/>, also giving the span the removed leaves lie in, which is
    /// what an IOTLB flush must cover (wider than the range when a superpage overlaps an end).
    /// </summary>
    /// <param name="iova">First IOVA, normally 4 KiB aligned (a range from any byte removes every page it overlaps).</param>
    /// <param name="size">Bytes, normally a multiple of 4 KiB.</param>
    /// <param name="spanStart">First IOVA of the span.</param>
    /// <param name="spanEnd">IOVA just past the span (0 when it ends at 2^64).</param>
    /// <returns>The total size of the leaves removed, as for <see cref="Unmap(ulong, ulong)"/>.</returns>
    [KernelSymbol("domain_unmap")]
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public ulong Unmap(ulong iova, ulong size, out ulong spanStart, out ulong spanEnd)
    {
        _pt.Memory.ThrowIfDisposed();
        return _pt.Unmap(iova, size, out spanStart, out spanEnd);
    }

    /// <summary>Translates <paramref name="iova"/> (<c>intel_iommu_iova_to_phys</c>).</summary>
    /// <param name="iova">The IOVA.</param>
    /// <returns>The physical address including the offset in the page, or 0 when not mapped.</returns>
    [KernelSymbol("intel_iommu_iova_to_phys")]
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public ulong IovaToPhys(ulong iova)
    {
        _pt.Memory.ThrowIfDisposed();
        return _pt.IovaToPhys(iova);
    }

    /// <summary>
    /// Drops the top level while the table has more levels than <paramref name="levels"/>: entry 0 of
    /// the top table, if present, becomes the new top and the old top is freed (the agaw adjustment
    /// of <c>prepare_domain_attach_device</c>). The caller has checked nothing is mapped above.
    /// </summary>
    /// <param name="levels">The level count of the unit being attached.</param>
    public void ReduceLevels(int levels)
    {
        _pt.Memory.ThrowIfDisposed();
        _pt.ReduceLevels(levels);
    }

    /// <summary>
    /// Frees the tables that unmaps put on the pending list. Call after the IOTLB flush that
    /// covers those unmaps (the kernel frees its freelist in <c>iotlb_sync</c>).
    /// </summary>
    /// <returns>Number of frames freed.</returns>
    public int ReleasePendingFrees()
    {
        _pt.Memory.ThrowIfDisposed();
        return _pt.ReleasePendingFrees();
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
        _pt.Memory.ThrowIfDisposed();
        return _pt.TakePendingFrees(ref freelist);
    }

    /// <summary>Frees every table, the root included (<c>domain_exit</c>). The page table must not be used afterwards.</summary>
    public void FreeAll()
    {
        _pt.Memory.ThrowIfDisposed();
        _pt.FreeAll();
    }

    /// <summary>Calls <paramref name="visit"/> for every present leaf: (IOVA, physical address, page size, entry).</summary>
    /// <param name="visit">The callback.</param>
    /// <remarks>For inspection and tests (the kernel's debugfs dump); allocates.</remarks>
    public void ForEachLeaf(Action<ulong, ulong, ulong, ulong> visit)
    {
        _pt.Memory.ThrowIfDisposed();
        ArgumentNullException.ThrowIfNull(visit);
        _pt.ForEachLeaf(visit);
    }
}
