using BenchmarkDotNet.Attributes;
using Iommu.Memory;
using Iommu.VtD.Driver;

namespace Iommu.Benchmarks;

/// <summary>
/// The C-floor workload on the driver's page table, in the C program's sequence: N single-4K maps at shuffled IOVAs, N
/// iova_to_phys in reverse order (offset +8, checked), N single-4K unmaps after a lookup pass. One class per N because BenchmarkDotNet
/// needs OperationsPerInvoke as a constant.
/// </summary>
[MemoryDiagnoser]
public abstract class PageTableWorkload : IDisposable
{
    private const ulong Rw = DmaPte.Read | DmaPte.Write;
    private PhysicalMemory _memory = null!;
    private FrameAllocator _frames = null!;
    private DmaPageTable _table = null!;
    private ulong[] _order = [];

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
        GC.SuppressFinalize(this);
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

    [IterationSetup(Target = nameof(Map4K))]
    public void BeforeMap() => FreshTable();

    [IterationSetup(Target = nameof(IovaToPhys))]
    public void BeforeLookup() => FullTable();

    [IterationSetup(Target = nameof(Unmap4K))]
    public void BeforeUnmap() => FullTableLookedUp();

    [Benchmark(OperationsPerInvoke = Pages)]
    public void Map4K() => MapAll();

    [Benchmark(OperationsPerInvoke = Pages)]
    public ulong IovaToPhys() => LookupAll();

    [Benchmark(OperationsPerInvoke = Pages)]
    public void Unmap4K() => UnmapAll();
}

/// <summary>2^20 pages.</summary>
public class PageTable1M : PageTableWorkload
{
    private const int Pages = 1 << 20;

    protected override int N => Pages;

    [IterationSetup(Target = nameof(Map4K))]
    public void BeforeMap() => FreshTable();

    [IterationSetup(Target = nameof(IovaToPhys))]
    public void BeforeLookup() => FullTable();

    [IterationSetup(Target = nameof(Unmap4K))]
    public void BeforeUnmap() => FullTableLookedUp();

    [Benchmark(OperationsPerInvoke = Pages)]
    public void Map4K() => MapAll();

    [Benchmark(OperationsPerInvoke = Pages)]
    public ulong IovaToPhys() => LookupAll();

    [Benchmark(OperationsPerInvoke = Pages)]
    public void Unmap4K() => UnmapAll();
}

/// <summary>
/// Batched maps: 256×4K map and unmap measured separately (the Linux generic_pt VT-d figures),
/// 4096 batches per invocation at distinct IOVAs, with tables for the range already present.
/// </summary>
[MemoryDiagnoser]
public class PageTableBatches : IDisposable
{
    private const int Batches = 4096;
    private const ulong Rw = DmaPte.Read | DmaPte.Write;
    private const ulong Batch = 256 * 4096;
    private PhysicalMemory _memory = null!;
    private FrameAllocator _frames = null!;
    private DmaPageTable _table = null!;

    [GlobalSetup]
    public void Setup()
    {
        _memory = new PhysicalMemory(64 * Sizes.GiB);
        _frames = new FrameAllocator(_memory, 32 * Sizes.GiB, Sizes.GiB);
        DmaPageTable.Create(_memory, _frames, 4, out DmaPageTable? t);
        _table = t!;
    }

    [GlobalCleanup]
    public void Dispose()
    {
        _memory.Dispose();
        GC.SuppressFinalize(this);
    }

    [IterationSetup(Target = nameof(Map256x4K))]
    public void Empty()
    {
        // Map then unmap 4K in every batch: the tables exist but hold nothing, as in steady use.
        for (ulong b = 0; b < Batches; b++)
        {
            _table.Map(0x4000_0000 + (b * Batch), 0x2_0000_0000, 4096, Rw, 0, out _);
            _table.Unmap(0x4000_0000 + (b * Batch), 4096);
        }
    }

    [IterationSetup(Target = nameof(Unmap256x4K))]
    public void Full()
    {
        for (ulong b = 0; b < Batches; b++)
        {
            _table.Map(0x4000_0000 + (b * Batch), 0x2_0000_0000 + (b * Batch), Batch, Rw, 2, out _);
        }
    }

    [IterationCleanup(Target = nameof(Map256x4K))]
    public void UnmapBatches()
    {
        for (ulong b = 0; b < Batches; b++)
        {
            _table.Unmap(0x4000_0000 + (b * Batch), Batch);
        }
    }

    [Benchmark(OperationsPerInvoke = Batches)]
    public void Map256x4K()
    {
        for (ulong b = 0; b < Batches; b++)
        {
            _table.Map(0x4000_0000 + (b * Batch), 0x2_0000_0000 + (b * Batch), Batch, Rw, 2, out _);
        }
    }

    [Benchmark(OperationsPerInvoke = Batches)]
    public void Unmap256x4K()
    {
        for (ulong b = 0; b < Batches; b++)
        {
            _table.Unmap(0x4000_0000 + (b * Batch), Batch);
        }
    }

    // The same 256×4K map + unmap again and again on one range whose tables exist: the cache-hot
    // case (the batched figures above touch 8 MiB of fresh leaf entries per invocation).
    [Benchmark]
    public ulong MapUnmap256x4KHot()
    {
        _table.Map(0x90_0000_0000, 0x2_0000_0000, Batch, Rw, 2, out ulong mapped);
        _table.Unmap(0x90_0000_0000, Batch);
        return mapped;
    }

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
}
