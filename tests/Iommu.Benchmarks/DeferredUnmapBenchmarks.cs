using BenchmarkDotNet.Attributes;
using Iommu.Devices;
using Iommu.Domains;
using Iommu.VtD.Driver;
using Iommu.VtD.Hardware;

namespace Iommu.Benchmarks;

/// <summary>
/// Unmapping 256 4 KiB pages through the kernel path, four ways, to show what deferring the IOTLB
/// invalidation buys (issue 16 point 4). Each row is ns per 256 pages:
/// <list type="bullet">
/// <item><see cref="PerPageSync"/>: 256 × <c>iommu_unmap</c> of 4K, each waiting for its own
/// page-selective invalidation (256 invalidation round trips).</item>
/// <item><see cref="OneSync"/>: 256 × <c>iommu_unmap_fast</c> into one gather, then one
/// <c>iommu_iotlb_sync</c> (one page-selective invalidation of the 1 MiB range).</item>
/// <item><see cref="FlushQueue"/>: 256 × <c>dma_unmap_page</c> in a DMA_FQ domain: no invalidation per
/// unmap; the flush queue does one domain-wide flush per 255 entries (the timer never fires here).</item>
/// <item><see cref="DmaStrict"/>: 256 × <c>dma_unmap_page</c> in a strict DMA domain (per-page sync plus
/// the IOVA allocator), the baseline the flush queue replaces.</item>
/// </list>
/// The C rows are the floor of the first two: ref_pagetable.c's unmap4k with a minimal
/// queued-invalidation round trip (descriptor, wait descriptor, a unit that executes them against a
/// set-associative IOTLB, status check) per page (<see cref="CPerPageSync"/>) or one 1 MiB
/// page-selective round trip per 256 pages (<see cref="COneSync"/>); the flush-queue and strict DMA
/// rows are paired with them too, though they do more (IOVA allocation, the queue). Each iteration maps
/// <see cref="Batches"/> × 256 pages in its setup (not timed; the flush queue is drained first by
/// advancing the platform clock past the timer) and unmaps them all in the timed call. Nothing did
/// DMA through the pages, so the IOTLB is cold: the rows measure the software and the invalidation
/// round trips, not the hardware's cache scan.
/// </summary>
[MemoryDiagnoser]
public unsafe class DeferredUnmap256 : IDisposable
{
    /// <summary>256-page unmaps per timed call (≥ 100 µs per iteration for every row).</summary>
    public const int Batches = 16;

    private const int Pages = 256;
    private const ulong Batch = Pages * 4096;
    private Platform _iommuApi = null!;
    private IDomain _domain = null!;
    private Platform _lazy = null!;
    private PciDevice _lazyDev = null!;
    private Platform _strict = null!;
    private PciDevice _strictDev = null!;
    private readonly ulong[] _handles = new ulong[Batches * Pages];
    private CFloor.Library? _floor;
    private delegate* unmanaged<int, int> _cMapBatches;
    private delegate* unmanaged<int, int, int> _cUnmap256;

    [GlobalSetup]
    public void Setup()
    {
        (_iommuApi, PciDevice dev) = NewPlatform(DomainType.Dma);
        _domain = _iommuApi.Iommu.DomainAlloc(_iommuApi.GetPciBus()!)!;
        _iommuApi.Iommu.AttachDevice(_domain, dev).ThrowIfError();
        (_lazy, _lazyDev) = NewPlatform(DomainType.DmaFq);
        (_strict, _strictDev) = NewPlatform(DomainType.Dma);
    }

    [GlobalCleanup]
    public void Dispose()
    {
        _iommuApi.Dispose();
        _lazy.Dispose();
        _strict.Dispose();
        _floor?.Dispose();
        GC.SuppressFinalize(this);
    }

    [IterationSetup(Targets = [nameof(PerPageSync), nameof(OneSync)])]
    public void MapRanges()
    {
        for (int b = 0; b < Batches; b++)
        {
            _iommuApi.Iommu.Map(_domain, Iova(b), Workload.PhysBase + ((ulong)b * Batch), Batch, IommuProt.Read | IommuProt.Write).ThrowIfError();
        }
    }

    [IterationSetup(Targets = [nameof(CPerPageSync), nameof(COneSync)])]
    public void CMapRanges()
    {
        if (_floor is null)
        {
            _floor = CFloor.Load(CFloor.PageTableShim);
            _cMapBatches = (delegate* unmanaged<int, int>)_floor.Export("rp_map_batches");
            _cUnmap256 = (delegate* unmanaged<int, int, int>)_floor.Export("rp_unmap256_pass");
            ((delegate* unmanaged<nuint, void>)_floor.Export("rp_reset"))((nuint)(Batches * 512));
        }

        if (_cMapBatches(Batches) != 0)
        {
            throw new InvalidOperationException("C map failed");
        }
    }

    [IterationSetup(Target = nameof(FlushQueue))]
    public void DmaMapLazy() => DmaMapAll(_lazy, _lazyDev);

    [IterationSetup(Target = nameof(DmaStrict))]
    public void DmaMapStrict() => DmaMapAll(_strict, _strictDev);

    /// <summary>256 × iommu_unmap(4K): a sync (page-selective invalidation and wait) per page.</summary>
    [Benchmark(Baseline = true, OperationsPerInvoke = Batches)]
    public void PerPageSync()
    {
        IommuCore iommu = _iommuApi.Iommu;
        for (int b = 0; b < Batches; b++)
        {
            for (ulong p = 0; p < Pages; p++)
            {
                if (iommu.Unmap(_domain, Iova(b) + (p << 12), 4096) != 4096)
                {
                    throw new InvalidOperationException("unmap failed");
                }
            }
        }
    }

    /// <summary>256 × iommu_unmap_fast(4K) into one gather, then one iommu_iotlb_sync.</summary>
    [Benchmark(OperationsPerInvoke = Batches)]
    public void OneSync()
    {
        IommuCore iommu = _iommuApi.Iommu;
        for (int b = 0; b < Batches; b++)
        {
            var gather = default(IommuIotlbGather);
            for (ulong p = 0; p < Pages; p++)
            {
                if (iommu.UnmapFast(_domain, Iova(b) + (p << 12), 4096, ref gather) != 4096)
                {
                    throw new InvalidOperationException("unmap failed");
                }
            }

            iommu.IotlbSync(_domain, ref gather);
        }
    }

    /// <summary>256 × dma_unmap_page(4K) in a DMA_FQ domain: one flush_iotlb_all per 255 unmaps.</summary>
    [Benchmark(OperationsPerInvoke = Batches)]
    public void FlushQueue() => DmaUnmapAll(_lazy, _lazyDev);

    /// <summary>256 × dma_unmap_page(4K) in a strict DMA domain: a sync per page.</summary>
    [Benchmark(OperationsPerInvoke = Batches)]
    public void DmaStrict() => DmaUnmapAll(_strict, _strictDev);

    /// <summary>The C floor of <see cref="PerPageSync"/>: 256 × (unmap4k + a page-selective invalidation round trip).</summary>
    [Benchmark(OperationsPerInvoke = Batches)]
    public void CPerPageSync()
    {
        if (_cUnmap256(Batches, 1) != 0)
        {
            throw new InvalidOperationException("C unmap failed");
        }
    }

    /// <summary>The C floor of <see cref="OneSync"/>: 256 × unmap4k, then one 1 MiB page-selective round trip.</summary>
    [Benchmark(OperationsPerInvoke = Batches)]
    public void COneSync()
    {
        if (_cUnmap256(Batches, 0) != 0)
        {
            throw new InvalidOperationException("C unmap failed");
        }
    }

    private static ulong Iova(int batch) => Workload.IovaBase + ((ulong)batch * 2 * Batch);

    private static (Platform Platform, PciDevice Dev) NewPlatform(DomainType defaultDomain)
    {
        var platform = new Platform(new PlatformOptions { MemorySize = 64 * Sizes.GiB, TableMemorySize = 256 * Sizes.MiB, DefaultDomainType = defaultDomain });
        PciBus pci = platform.AddPciBus();
        var unit = new VtdUnit(platform.Memory, VtdConfig.ScalableMode48Bit);
        pci.AddDmaRemapper(unit, includeAll: true);
        pci.SetIommuOps(new IntelIommu(platform, unit)).ThrowIfError();
        PciDevice dev = pci.AddDevice(new PciDeviceSpec("0000:00:03.0") { Acs = true });
        if (platform.Iommu.GetDmaDomain(dev)!.Type != defaultDomain)
        {
            throw new InvalidOperationException($"default domain is {platform.Iommu.GetDmaDomain(dev)!.Type}, not {defaultDomain}");
        }

        return (platform, dev);
    }

    private void DmaMapAll(Platform platform, PciDevice dev)
    {
        platform.Clock.Advance(IommuCore.IovaFqTimeout); // drain what the last iteration left queued
        for (int i = 0; i < _handles.Length; i++)
        {
            ulong h = platform.Iommu.DmaMapPage(dev, Workload.PhysBase + ((ulong)i << 12), 4096, DmaDataDirection.Bidirectional);
            _handles[i] = h != IommuCore.DmaMappingError ? h : throw new InvalidOperationException("dma_map failed");
        }
    }

    private void DmaUnmapAll(Platform platform, PciDevice dev)
    {
        IommuCore iommu = platform.Iommu;
        foreach (ulong h in _handles)
        {
            iommu.DmaUnmapPage(dev, h, 4096, DmaDataDirection.Bidirectional);
        }
    }
}
