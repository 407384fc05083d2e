using System.Diagnostics.Metrics;
using Iommu.Devices;
using Iommu.Domains;
using Iommu.VtD.Hardware;
using Iommu.VtD.Tests.Infrastructure;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Diagnostics.Metrics.Testing;

namespace Iommu.VtD.Tests.Driver;

/// <summary>
/// The platform's metrics read back with <see cref="MetricCollector{T}"/> through the IMeterFactory of a
/// DI container, after real map/unmap/DMA through the core, the intel-iommu driver and the VT-d model.
/// </summary>
public sealed class PlatformMetricsTests : IDisposable
{
    private const ulong Iova = 0x10_0000;
    private readonly ServiceProvider _services = new ServiceCollection().AddMetrics().BuildServiceProvider();

    private IMeterFactory Factory => _services.GetRequiredService<IMeterFactory>();

    public void Dispose() => _services.Dispose();

    [Fact]
    public void Core_counts_maps_unmaps_and_pages_through_the_meter_factory()
    {
        using var f = new DriverBed(VtdConfig.ScalableMode48Bit, memory: 8 * Sizes.GiB, meterFactory: Factory);
        using var maps = Collector(IommuCore.MeterName, "iommu.map.operations");
        using var unmaps = Collector(IommuCore.MeterName, "iommu.unmap.operations");
        using var pages = Collector(IommuCore.MeterName, "iommu.mapped.pages");
        using var mapped = Collector(IommuCore.MeterName, "iommu.map.size");
        using var unmapped = Collector(IommuCore.MeterName, "iommu.unmap.size");
        PciDevice dev = f.AddDevice("0000:00:03.0");
        IDomain dom = f.Iommu.DomainAlloc(f.Pci)!;
        f.Iommu.AttachDevice(dom, dev).ThrowIfError();

        // 1 + 16 + 512 pages of 4 KiB (the 2 MiB range goes into one superpage: still 512 pages mapped).
        f.Iommu.Map(dom, Iova, 0x1_0000_0000, Sizes.Page, IommuProt.Read).ThrowIfError();
        f.Iommu.Map(dom, 0x40_0000, 0x1_0040_0000, 64 * Sizes.KiB, IommuProt.Read | IommuProt.Write).ThrowIfError();
        f.Iommu.Map(dom, 0x80_0000, 0x1_0080_0000, 2 * Sizes.MiB, IommuProt.Read).ThrowIfError();
        Assert.Equal(Errno.EINVAL, f.Iommu.Map(dom, 0x123, 0x1_0000_0000, Sizes.Page, IommuProt.Read)); // a failed map is not counted

        Assert.Equal(3, Observe(maps));
        Assert.Equal(1 + 16 + 512, Observe(pages));
        Assert.Equal((long)(Sizes.Page + (64 * Sizes.KiB) + (2 * Sizes.MiB)), Observe(mapped));
        Assert.Equal(0, Observe(unmaps));

        Assert.Equal(64 * Sizes.KiB, f.Iommu.Unmap(dom, 0x40_0000, 64 * Sizes.KiB));
        Assert.Equal(1, Observe(unmaps));
        Assert.Equal(1 + 512, Observe(pages));
        Assert.Equal((long)(64 * Sizes.KiB), Observe(unmapped));
        Assert.Equal(3, Observe(maps)); // a counter: unmapping does not take maps back

        // Freeing a domain with mappings left: its pages stop counting as mapped, its totals stay.
        f.Iommu.DetachDevice(dom, dev);
        f.Iommu.DomainFree(dom);
        Assert.Equal(0, Observe(pages));
        Assert.Equal(3, Observe(maps));
        Assert.Equal(1, Observe(unmaps));
    }

    [Fact]
    public void Maps_of_one_domain_from_several_threads_are_all_counted()
    {
        // The first thread to count a map on a domain counts with plain stores, the others atomically:
        // the totals add both, also after the domain is freed.
        using var f = new DriverBed(VtdConfig.ScalableMode48Bit, memory: 8 * Sizes.GiB, meterFactory: Factory);
        using var maps = Collector(IommuCore.MeterName, "iommu.map.operations");
        using var mapped = Collector(IommuCore.MeterName, "iommu.map.size");
        using var unmaps = Collector(IommuCore.MeterName, "iommu.unmap.operations");
        using var pages = Collector(IommuCore.MeterName, "iommu.mapped.pages");
        PciDevice dev = f.AddDevice("0000:00:03.0");
        IDomain dom = f.Iommu.DomainAlloc(f.Pci)!;
        f.Iommu.AttachDevice(dom, dev).ThrowIfError();
        const int Threads = 4, PerThread = 256;
        using var start = new Barrier(Threads);
        Thread[] threads = [.. Enumerable.Range(0, Threads).Select(t => new Thread(() =>
        {
            start.SignalAndWait();
            for (int i = 0; i < PerThread; i++)
            {
                ulong iova = Iova + ((ulong)((t * PerThread) + i) * Sizes.Page);
                f.Iommu.Map(dom, iova, 0x1_0000_0000 + iova, Sizes.Page, IommuProt.Read).ThrowIfError();
                if (i % 4 == 0)
                {
                    Assert.Equal(Sizes.Page, f.Iommu.Unmap(dom, iova, Sizes.Page));
                }
            }
        }))];
        foreach (Thread t in threads)
        {
            t.Start();
        }

        foreach (Thread t in threads)
        {
            t.Join();
        }

        Assert.Equal(Threads * PerThread, Observe(maps));
        Assert.Equal((long)(Threads * PerThread * Sizes.Page), Observe(mapped));
        Assert.Equal(Threads * PerThread / 4, Observe(unmaps));
        Assert.Equal(Threads * PerThread * 3 / 4, Observe(pages));

        f.Iommu.DetachDevice(dom, dev);
        f.Iommu.DomainFree(dom);
        Assert.Equal(Threads * PerThread, Observe(maps));
        Assert.Equal(0, Observe(pages));
    }

    [Fact]
    public void Vtd_iotlb_hits_misses_invalidations_and_faults_by_reason_are_published_per_unit()
    {
        using var f = new DriverBed(VtdConfig.Legacy48Bit, memory: 8 * Sizes.GiB, meterFactory: Factory);
        using var hits = Collector(VtdMetrics.MeterName, "iommu.vtd.iotlb.hits");
        using var misses = Collector(VtdMetrics.MeterName, "iommu.vtd.iotlb.misses");
        using var invalidations = Collector(VtdMetrics.MeterName, "iommu.vtd.invalidations");
        using var faults = Collector(VtdMetrics.MeterName, "iommu.vtd.faults");
        PciDevice dev = f.AddDevice("0000:00:03.0");
        IDomain dom = f.Iommu.DomainAlloc(f.Pci)!;
        f.Iommu.AttachDevice(dom, dev).ThrowIfError();
        f.Iommu.Map(dom, Iova, 0x1_0000_0000, Sizes.Page, IommuProt.Read).ThrowIfError();
        Span<byte> buf = stackalloc byte[8];
        Assert.True(dev.DmaRead(null, Iova, buf).IsOk);       // miss
        Assert.True(dev.DmaRead(null, Iova + 8, buf).IsOk);   // hit
        Assert.Equal(DmaStatus.Fault, dev.DmaWrite(null, Iova, buf).Status);           // read-only page: reason 0x05
        Assert.Equal(DmaStatus.Fault, dev.DmaRead(null, 0x20_0000, buf).Status);       // not mapped: reason 0x06
        Assert.Equal(DmaStatus.Fault, dev.DmaRead(null, 0x20_1000, buf).Status);       // not mapped again

        Assert.Equal(2, Observe(hits, "unit", "dmar0"));
        Assert.Equal(3, Observe(misses, "unit", "dmar0"));
        Assert.Equal(1, Observe(faults, "reason", "0x05"));
        Assert.Equal(2, Observe(faults, "reason", "0x06"));
        long iotlbBefore = Observe(invalidations, "cache", "iotlb");

        f.Iommu.Unmap(dom, Iova, Sizes.Page);
        Assert.True(Observe(invalidations, "cache", "iotlb") > iotlbBefore, "an unmap flushes the IOTLB");
        Assert.Equal(2, Observe(faults, "reason", "0x06")); // collecting again reports totals, not deltas
    }

    [Fact]
    public void Two_named_platforms_on_one_factory_keep_their_numbers_apart()
    {
        using var a = new DriverBed(VtdConfig.ScalableMode48Bit, memory: 8 * Sizes.GiB, meterFactory: Factory, name: "a");
        using var b = new DriverBed(VtdConfig.ScalableMode48Bit, memory: 8 * Sizes.GiB, meterFactory: Factory, name: "b");
        Assert.NotSame(a.Platform.GetMeter(IommuCore.MeterName), b.Platform.GetMeter(IommuCore.MeterName));
        using var mapsA = new MetricCollector<long>(a.Platform.GetMeter(IommuCore.MeterName), "iommu.map.operations");
        using var mapsB = new MetricCollector<long>(b.Platform.GetMeter(IommuCore.MeterName), "iommu.map.operations");
        foreach ((DriverBed f, int n) in new[] { (a, 2), (b, 5) })
        {
            IDomain dom = f.Iommu.DomainAlloc(f.Pci)!;
            f.Iommu.AttachDevice(dom, f.AddDevice("0000:00:03.0")).ThrowIfError();
            for (int i = 0; i < n; i++)
            {
                f.Iommu.Map(dom, Iova + ((ulong)i * Sizes.Page), 0x1_0000_0000, Sizes.Page, IommuProt.Read).ThrowIfError();
            }
        }

        Assert.Equal(2, Observe(mapsA, "platform", "a"));
        Assert.Equal(5, Observe(mapsB, "platform", "b"));
    }

    [Fact]
    public void Platforms_without_a_factory_own_their_meters_and_stop_reporting_when_disposed()
    {
        var f = new DriverBed(VtdConfig.ScalableMode48Bit, memory: 8 * Sizes.GiB);
        using var other = new DriverBed(VtdConfig.ScalableMode48Bit, memory: 8 * Sizes.GiB);
        Meter meter = f.Platform.GetMeter(IommuCore.MeterName);
        using var maps = new MetricCollector<long>(meter, "iommu.map.operations");
        using var otherMaps = new MetricCollector<long>(other.Platform.GetMeter(IommuCore.MeterName), "iommu.map.operations");
        IDomain dom = f.Iommu.DomainAlloc(f.Pci)!;
        f.Iommu.AttachDevice(dom, f.AddDevice("0000:00:03.0")).ThrowIfError();
        f.Iommu.Map(dom, Iova, 0x1_0000_0000, Sizes.Page, IommuProt.Read).ThrowIfError();
        Assert.Equal(1, Observe(maps));
        Assert.Equal(0, Observe(otherMaps));

        f.Dispose();
        maps.Clear();
        maps.RecordObservableInstruments();
        Assert.Empty(maps.GetMeasurementSnapshot());
        Assert.Throws<ObjectDisposedException>(() => f.Platform.GetMeter(IommuCore.MeterName));
    }

    [Fact]
    public void Map_unmap_and_iova_to_phys_allocate_nothing_while_a_listener_collects()
    {
        using var f = new DriverBed(VtdConfig.ScalableMode48Bit, memory: 8 * Sizes.GiB, meterFactory: Factory);
        IDomain dom = f.Iommu.DomainAlloc(f.Pci)!;
        f.Iommu.AttachDevice(dom, f.AddDevice("0000:00:03.0")).ThrowIfError();
        long seen = 0;
        IMeterFactory factory = Factory; // not read in the callback: other tests' platforms publish through this listener
                                          // on their threads, also after this class disposed its services
        using var listener = new MeterListener();
        listener.InstrumentPublished = (instrument, l) =>
        {
            if (instrument.Meter.Scope == factory)
            {
                l.EnableMeasurementEvents(instrument);
            }
        };
        listener.SetMeasurementEventCallback<long>((_, value, _, _) => seen += value);
        listener.Start();
        Cycle(f.Iommu, dom); // warm-up: tables exist, code is jitted
        Assert.Equal(0, Allocations.Fewest(() =>
        {
            for (int r = 0; r < 10; r++)
            {
                Cycle(f.Iommu, dom);
            }
        }));

        listener.RecordObservableInstruments();
        Assert.True(seen > 0, "the listener was attached and saw the counters");

        static void Cycle(IommuCore iommu, IDomain dom)
        {
            for (ulong i = 0; i < 64; i++)
            {
                iommu.Map(dom, Iova + (i * Sizes.Page), 0x1_0000_0000 + (i * Sizes.Page), Sizes.Page, IommuProt.Read | IommuProt.Write);
            }

            for (ulong i = 0; i < 64; i++)
            {
                if (iommu.IovaToPhys(dom, Iova + (i * Sizes.Page) + 8) != 0x1_0000_0000 + (i * Sizes.Page) + 8)
                {
                    throw new InvalidOperationException("bad translation");
                }
            }

            for (ulong i = 0; i < 64; i++)
            {
                iommu.Unmap(dom, Iova + (i * Sizes.Page), Sizes.Page);
            }
        }
    }

    private MetricCollector<long> Collector(string meter, string instrument) => new(Factory, meter, instrument);

    // Collects the observable instruments now and returns the value of the measurement with the given tag (any, when no tag is given).
    private static long Observe(MetricCollector<long> collector, string? tag = null, string? value = null)
    {
        collector.Clear();
        collector.RecordObservableInstruments();
        IReadOnlyList<CollectedMeasurement<long>> all = collector.GetMeasurementSnapshot();
        CollectedMeasurement<long>[] match = tag is null ? [.. all] : [.. all.Where(m => m.Tags.TryGetValue(tag, out object? v) && Equals(v, value))];
        return Assert.Single(match).Value;
    }
}
