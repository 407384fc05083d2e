using System.Runtime.InteropServices;
using BenchmarkDotNet.Attributes;
using Iommu.Memory;
using Iommu.VtD.Driver;

namespace Iommu.Benchmarks;

/// <summary>
/// The C-floor workload on the driver's page table, in the C program's sequence: N single-4K maps at shuffled IOVAs, N
/// iova_to_phys in reverse order (offset +8, checked), N single-4K unmaps after a lookup pass. One class per N because BenchmarkDotNet
/// needs OperationsPerInvoke as a constant. The C rows (CMap4K, ...) run shared/bench/ref_pagetable.c's own
/// loops with the same order and iteration setup: the floor, timed by the same harness.
/// </summary>
[MemoryDiagnoser]
public abstract unsafe class PageTableWorkload : IDisposable
{
    private const ulong Rw = DmaPte.Read | DmaPte.Write;
    private PhysicalMemory _memory = null!;
    private FrameAllocator _frames = null!;
    private DmaPageTable _table = null!;
    private ulong[] _order = [];
    private ulong* _nativeOrder;
    private CFloor.Library? _floor;
    private delegate* unmanaged<nuint, void> _reset;
    private delegate* unmanaged<ulong*, nuint, int> _mapPass;
    private delegate* unmanaged<ulong*, nuint, ulong> _lookupPass;
    private delegate* unmanaged<ulong*, nuint, int> _unmapPass;
    private delegate* unmanaged<ulong*, nuint, int> _unmapSyncPass;

    /// <summary>Pages in the workload.</summary>
    protected abstract int N { get; }

    [GlobalSetup]
    public void Setup()
    {
        _memory = new PhysicalMemory(64 * Sizes.GiB);
        _frames = new FrameAllocator(_memory, 32 * Sizes.GiB, 4 * Sizes.GiB);
        _order = Workload.Order(N);
        DmaPageTable.Create(_memory, _frames, 4, out DmaPageTable? t);
        _table = t!;
    }

    [GlobalCleanup]
    public void Dispose()
    {
        _memory.Dispose();
        _floor?.Dispose();
        NativeMemory.Free(_nativeOrder);
        _nativeOrder = null;
        GC.SuppressFinalize(this);
    }

    // The iteration setups of the derived classes' rows (BenchmarkDotNet finds inherited setups).
    [IterationSetup(Target = "Map4K")]
    public void BeforeMap() => FreshTable();

    [IterationSetup(Target = "IovaToPhys")]
    public void BeforeLookup() => FullTable();

    [IterationSetup(Target = "Unmap4K")]
    public void BeforeUnmap() => FullTableLookedUp();

    [IterationSetup(Target = "CMap4K")]
    public void BeforeCMap() => CFreshTable();

    [IterationSetup(Target = "CIovaToPhys")]
    public void BeforeCLookup() => CFullTable();

    [IterationSetup(Target = "CUnmap4K")]
    public void BeforeCUnmap() => CFullTableLookedUp();

    [IterationSetup(Target = "CUnmap4KSync")]
    public void BeforeCUnmapSync() => CFullTable();

    // The C table, built on first use so the C# rows never need gcc.
    protected void CFreshTable()
    {
        if (_floor is null)
        {
            _floor = CFloor.Load(CFloor.PageTableShim);
            _reset = (delegate* unmanaged<nuint, void>)_floor.Export("rp_reset");
            _mapPass = (delegate* unmanaged<ulong*, nuint, int>)_floor.Export("rp_map_pass");
            _lookupPass = (delegate* unmanaged<ulong*, nuint, ulong>)_floor.Export("rp_lookup_pass");
            _unmapPass = (delegate* unmanaged<ulong*, nuint, int>)_floor.Export("rp_unmap_pass");
            _unmapSyncPass = (delegate* unmanaged<ulong*, nuint, int>)_floor.Export("rp_unmap_sync_pass");
            _nativeOrder = (ulong*)NativeMemory.Alloc((nuint)_order.Length, sizeof(ulong));
            _order.CopyTo(new Span<ulong>(_nativeOrder, _order.Length));
        }

        _reset((nuint)N);
    }

    protected void CFullTable()
    {
        CFreshTable();
        CMapAll();
    }

    protected void CFullTableLookedUp()
    {
        CFullTable();
        CLookupAll();
    }

    protected void CMapAll()
    {
        if (_mapPass(_nativeOrder, (nuint)N) != 0)
        {
            throw new InvalidOperationException("C map failed");
        }
    }

    protected ulong CLookupAll() => _lookupPass(_nativeOrder, (nuint)N) is not 0 and ulong sink ? sink : throw new InvalidOperationException("C lookup failed");

    protected void CUnmapAll()
    {
        if (_unmapPass(_nativeOrder, (nuint)N) != 0)
        {
            throw new InvalidOperationException("C unmap failed");
        }
    }

    /// <summary>
    /// The floor of <c>iommu_unmap</c> as the kernel path does it: each unmap followed by a page-selective
    /// IOTLB invalidation and its wait through a minimal invalidation queue (ref_pagetable_shim.c).
    /// </summary>
    protected void CUnmapSyncAll()
    {
        if (_unmapSyncPass(_nativeOrder, (nuint)N) != 0)
        {
            throw new InvalidOperationException("C unmap+sync failed");
        }
    }

    protected void FreshTable()
    {
        _table.FreeAll();
        DmaPageTable.Create(_memory, _frames, 4, out DmaPageTable? t);
        _table = t!;
    }

    protected void FullTable()
    {
        FreshTable();
        MapAll();
    }

    // The C floor unmaps right after its lookup pass; the same sequence leaves the caches in the
    // same state before the unmaps.
    protected void FullTableLookedUp()
    {
        FullTable();
        LookupAll();
    }

    protected void MapAll()
    {
        DmaPageTable t = _table;
        foreach (ulong k in _order)
        {
            if (t.Map(Workload.IovaBase + (k << 12), Workload.PhysBase + (k << 12), 4096, Rw, 2, out _) != Errno.None)
            {
                throw new InvalidOperationException("map failed");
            }
        }
    }

    // Reverse order, as the C floor does (its lookups run order[n - 1 - i]).
    protected ulong LookupAll()
    {
        DmaPageTable t = _table;
        ulong[] order = _order;
        ulong sink = 0;
        for (int i = order.Length - 1; i >= 0; i--)
        {
            ulong k = order[i];
            ulong pa = t.IovaToPhys(Workload.IovaBase + (k << 12) + 8);
            if (pa != Workload.PhysBase + (k << 12) + 8)
            {
                throw new InvalidOperationException("bad translation");
            }

            sink += pa;
        }

        return sink;
    }

    protected void UnmapAll()
    {
        DmaPageTable t = _table;
        foreach (ulong k in _order)
        {
            if (t.Unmap(Workload.IovaBase + (k << 12), 4096) != 4096)
            {
                throw new InvalidOperationException("unmap failed");
            }
        }

        t.ReleasePendingFrees();
    }
}

/// <summary>2^16 pages.</summary>
public class PageTable64K : PageTableWorkload
{
    private const int Pages = 1 << 16;

    protected override int N => Pages;

    [Benchmark(OperationsPerInvoke = Pages)]
    public void Map4K() => MapAll();

    [Benchmark(OperationsPerInvoke = Pages)]
    public void CMap4K() => CMapAll();

    [Benchmark(OperationsPerInvoke = Pages)]
    public ulong IovaToPhys() => LookupAll();

    [Benchmark(OperationsPerInvoke = Pages)]
    public ulong CIovaToPhys() => CLookupAll();

    [Benchmark(OperationsPerInvoke = Pages)]
    public void Unmap4K() => UnmapAll();

    [Benchmark(OperationsPerInvoke = Pages)]
    public void CUnmap4K() => CUnmapAll();

    /// <summary>The floor of <see cref="DriverPath64K.IommuUnmap4K"/>: unmap plus a queued-invalidation round trip per page.</summary>
    [Benchmark(OperationsPerInvoke = Pages)]
    public void CUnmap4KSync() => CUnmapSyncAll();
}

/// <summary>2^20 pages.</summary>
public class PageTable1M : PageTableWorkload
{
    private const int Pages = 1 << 20;

    protected override int N => Pages;

    [Benchmark(OperationsPerInvoke = Pages)]
    public void Map4K() => MapAll();

    [Benchmark(OperationsPerInvoke = Pages)]
    public void CMap4K() => CMapAll();

    [Benchmark(OperationsPerInvoke = Pages)]
    public ulong IovaToPhys() => LookupAll();

    [Benchmark(OperationsPerInvoke = Pages)]
    public ulong CIovaToPhys() => CLookupAll();

    [Benchmark(OperationsPerInvoke = Pages)]
    public void Unmap4K() => UnmapAll();

    [Benchmark(OperationsPerInvoke = Pages)]
    public void CUnmap4K() => CUnmapAll();
}

/// <summary>
/// 256×4K maps and unmaps (the Linux generic-pt VT-d figures), in two sequences that the C rows
/// repeat on the C floor's table (rb_* of ref_pagetable_shim.c, same ranges, same passes).
/// Hot: 16 ranges 1 MiB apart whose tables and entries stay in cache, mapped in one pass and
/// unmapped in the next, <see cref="Passes"/> times in one invocation (about 150 µs, so the timer
/// and the harness's per-invocation cost vanish); one operation is one range mapped and unmapped,
/// as the kernel benchmark maps and unmaps one range in a loop, so the 391 + 210 ns targets add up
/// to 601 ns for it. Cold: 4096 ranges (8 MiB of leaf entries) mapped in one pass and unmapped in
/// the next (one pass of either lasts over 100 µs), which measures memory more than code. Leaf
/// tables exist throughout.
/// </summary>
[MemoryDiagnoser]
public unsafe class PageTableBatches : IDisposable
{
    /// <summary>Ranges of the hot passes.</summary>
    public const int Hot = 16;

    /// <summary>Ranges of the cold passes.</summary>
    public const int Cold = 4096;

    /// <summary>Map-then-unmap passes over the hot ranges in one invocation of the hot rows.</summary>
    public const int Passes = 64;

    private const ulong Rw = DmaPte.Read | DmaPte.Write;
    private const ulong Range = 256 * 4096;
    private const ulong IovaBase = 0x40_0000_0000;
    private PhysicalMemory _memory = null!;
    private FrameAllocator _frames = null!;
    private DmaPageTable _table = null!;
    private CFloor.Library? _floor;
    private delegate* unmanaged<int, void> _cMapPass;
    private delegate* unmanaged<int, ulong> _cUnmapPass;
    private delegate* unmanaged<int, int, ulong> _cMapUnmapPasses;

    [GlobalSetup]
    public void Setup()
    {
        _memory = new PhysicalMemory(64 * Sizes.GiB);
        _frames = new FrameAllocator(_memory, 32 * Sizes.GiB, Sizes.GiB);
        DmaPageTable.Create(_memory, _frames, 4, out DmaPageTable? t);
        _table = t!;

        // Map then unmap 4K in every range: the tables exist but hold nothing, as in steady use.
        for (int r = 0; r < Cold; r++)
        {
            _table.Map(Iova(r), Workload.PhysBase, 4096, Rw, 0, out _);
            _table.Unmap(Iova(r), 4096);
        }
    }

    [GlobalCleanup]
    public void Dispose()
    {
        _memory.Dispose();
        _floor?.Dispose();
        GC.SuppressFinalize(this);
    }

    // The C floor's tables for the same ranges, built on first use so the C# rows never need gcc.
    private void LoadFloor()
    {
        if (_floor is null)
        {
            _floor = CFloor.Load(CFloor.PageTableShim);
            _cMapPass = (delegate* unmanaged<int, void>)_floor.Export("rb_map_pass");
            _cUnmapPass = (delegate* unmanaged<int, ulong>)_floor.Export("rb_unmap_pass");
            _cMapUnmapPasses = (delegate* unmanaged<int, int, ulong>)_floor.Export("rb_map_unmap_passes");
            ((delegate* unmanaged<int, void>)_floor.Export("rb_init"))(Cold);
        }
    }

    // The hot rows have no iteration setup: each pass leaves the tables as it found them.
    [GlobalSetup(Target = nameof(CMapUnmap256x4K))]
    public void SetupC()
    {
        Setup();
        LoadFloor();
    }

    [IterationSetup(Targets = [nameof(CMap256x4KCold)])]
    public void CLoad() => LoadFloor();

    [IterationCleanup(Targets = [nameof(CMap256x4KCold)])]
    public void CUnmapCold() => _cUnmapPass(Cold);

    [IterationSetup(Targets = [nameof(CUnmap256x4KCold)])]
    public void CMapCold()
    {
        LoadFloor();
        _cMapPass(Cold);
    }

    [IterationSetup(Targets = [nameof(Unmap256x4KCold)])]
    public void MapCold() => MapRanges(Cold);

    [IterationCleanup(Targets = [nameof(Map256x4KCold)])]
    public void UnmapCold() => UnmapRanges(Cold);

    /// <summary>256×4K map and unmap, cache-hot (targets ≤ 391 + 210 ns).</summary>
    [Benchmark(OperationsPerInvoke = Hot * Passes)]
    public void MapUnmap256x4K()
    {
        for (int p = 0; p < Passes; p++)
        {
            MapRanges(Hot);
            UnmapRanges(Hot);
        }
    }

    /// <summary>The C floor of <see cref="MapUnmap256x4K"/>.</summary>
    [Benchmark(OperationsPerInvoke = Hot * Passes)]
    public void CMapUnmap256x4K()
    {
        if (_cMapUnmapPasses(Hot, Passes) != (ulong)Hot * Passes * Range)
        {
            throw new InvalidOperationException("C unmap failed");
        }
    }

    /// <summary>256×4K map over 8 MiB of leaf entries.</summary>
    [Benchmark(OperationsPerInvoke = Cold)]
    public void Map256x4KCold() => MapRanges(Cold);

    /// <summary>The C floor of <see cref="Map256x4KCold"/>.</summary>
    [Benchmark(OperationsPerInvoke = Cold)]
    public void CMap256x4KCold() => _cMapPass(Cold);

    /// <summary>256×4K unmap over 8 MiB of leaf entries.</summary>
    [Benchmark(OperationsPerInvoke = Cold)]
    public void Unmap256x4KCold() => UnmapRanges(Cold);

    /// <summary>The C floor of <see cref="Unmap256x4KCold"/>.</summary>
    [Benchmark(OperationsPerInvoke = Cold)]
    public ulong CUnmap256x4KCold() => _cUnmapPass(Cold);

    [Benchmark]
    public ulong MapUnmap2M()
    {
        _table.Map(0x80_0000_0000, 0x2_0000_0000, 2UL << 20, Rw, 2, out ulong mapped);
        _table.Unmap(0x80_0000_0000, 2UL << 20);
        return mapped;
    }

    [Benchmark]
    public ulong MapUnmap1G()
    {
        _table.Map(0x80_0000_0000, 0x2_0000_0000, 1UL << 30, Rw, 2, out ulong mapped);
        _table.Unmap(0x80_0000_0000, 1UL << 30);
        return mapped;
    }

    private static ulong Iova(int r) => IovaBase + ((ulong)r * Range);

    private void MapRanges(int ranges)
    {
        DmaPageTable t = _table;
        for (int r = 0; r < ranges; r++)
        {
            t.Map(Iova(r), Workload.PhysBase + ((ulong)r * Range), Range, Rw, 2, out _);
        }
    }

    private void UnmapRanges(int ranges)
    {
        DmaPageTable t = _table;
        for (int r = 0; r < ranges; r++)
        {
            if (t.Unmap(Iova(r), Range) != Range)
            {
                throw new InvalidOperationException("unmap failed");
            }
        }
    }
}
