using System.Runtime.InteropServices;
using BenchmarkDotNet.Attributes;

namespace Iommu.Benchmarks;

/// <summary>
/// The C floor of <see cref="PageTableBatches"/>: ref_batch.c built as a shared library and timed by
/// BenchmarkDotNet with the same ranges, passes and iteration setup, so the ratio compares code, not
/// harnesses. Needs gcc; without it the setup fails and the table shows no ratio.
/// </summary>
[MemoryDiagnoser]
public unsafe class CFloorBatches : IDisposable
{
    private nint _library;
    private string? _path;
    private delegate* unmanaged<int, void> _init;
    private delegate* unmanaged<int, void> _mapPass;
    private delegate* unmanaged<int, ulong> _unmapPass;

    [GlobalSetup]
    public void Setup()
    {
        _path = CFloor.BuildBatchLibrary() ?? throw new InvalidOperationException("ref_batch.c could not be built (gcc missing?)");
        _library = NativeLibrary.Load(_path);
        _init = (delegate* unmanaged<int, void>)NativeLibrary.GetExport(_library, "rb_init");
        _mapPass = (delegate* unmanaged<int, void>)NativeLibrary.GetExport(_library, "rb_map_pass");
        _unmapPass = (delegate* unmanaged<int, ulong>)NativeLibrary.GetExport(_library, "rb_unmap_pass");
        _init(PageTableBatches.Cold);
    }

    [GlobalCleanup]
    public void Dispose()
    {
        if (_library != 0)
        {
            NativeLibrary.Free(_library);
            _library = 0;
        }

        if (_path is not null)
        {
            File.Delete(_path);
        }

        GC.SuppressFinalize(this);
    }

    [IterationSetup(Targets = [nameof(Map256x4K)])]
    public void UnmapHot() => _unmapPass(PageTableBatches.Hot);

    [IterationSetup(Targets = [nameof(Unmap256x4K)])]
    public void MapHot() => _mapPass(PageTableBatches.Hot);

    [IterationSetup(Targets = [nameof(Unmap256x4KCold)])]
    public void MapCold() => _mapPass(PageTableBatches.Cold);

    [IterationCleanup(Targets = [nameof(Map256x4KCold)])]
    public void UnmapCold() => _unmapPass(PageTableBatches.Cold);

    /// <summary>C: 256×4K map, cache-hot.</summary>
    [Benchmark(OperationsPerInvoke = PageTableBatches.Hot)]
    public void Map256x4K() => _mapPass(PageTableBatches.Hot);

    /// <summary>C: 256×4K unmap, cache-hot.</summary>
    [Benchmark(OperationsPerInvoke = PageTableBatches.Hot)]
    public ulong Unmap256x4K() => _unmapPass(PageTableBatches.Hot);

    /// <summary>C: 256×4K map over 8 MiB of leaf entries.</summary>
    [Benchmark(OperationsPerInvoke = PageTableBatches.Cold)]
    public void Map256x4KCold() => _mapPass(PageTableBatches.Cold);

    /// <summary>C: 256×4K unmap over 8 MiB of leaf entries.</summary>
    [Benchmark(OperationsPerInvoke = PageTableBatches.Cold)]
    public ulong Unmap256x4KCold() => _unmapPass(PageTableBatches.Cold);
}
