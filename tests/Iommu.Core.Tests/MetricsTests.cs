using Iommu.Core.Tests.Infrastructure;
using Iommu.Devices;
using Iommu.Domains;
using Iommu.Faults;
using Microsoft.Extensions.Diagnostics.Metrics.Testing;

namespace Iommu.Core.Tests;

/// <summary>
/// The core's instruments on a platform without an IMeterFactory (the platform's own meter), read with
/// <see cref="MetricCollector{T}"/>: failed maps and their unwinding count nothing, foreign IDomain
/// implementations count too, faults are counted by path and type.
/// </summary>
public sealed class MetricsTests : IDisposable
{
    private readonly CoreBed _p = new();

    public void Dispose() => _p.Dispose();

    private MetricCollector<long> Collector(string instrument) => new(_p.Platform.GetMeter(IommuCore.MeterName), instrument);

    [Fact]
    public void A_map_that_fails_part_way_counts_neither_the_map_nor_its_unwinding()
    {
        _p.WithIommu();
        using var maps = Collector("iommu.map.operations");
        using var unmaps = Collector("iommu.unmap.operations");
        using var pages = Collector("iommu.mapped.pages");
        IDomain d = _p.Core.DomainAlloc(_p.Pci)!;
        _p.Driver.MapPagesBehaviour = (_, _, pgsize, count) => count > 1 ? (Errno.ENOMEM, pgsize) : (Errno.None, pgsize * count);

        Assert.Equal(Errno.ENOMEM, _p.Core.Map(d, 0x10_0000, 0x20_0000, 3 * Sizes.Page, IommuProt.Read));
        Assert.Contains(_p.Driver.Log, c => c.Op == "unmap_pages"); // the core did unwind the page that was mapped
        Assert.Equal(0, Observe(maps));
        Assert.Equal(0, Observe(unmaps));
        Assert.Equal(0, Observe(pages));

        Assert.Equal(Errno.None, _p.Core.Map(d, 0x10_0000, 0x20_0000, Sizes.Page, IommuProt.Read));
        Assert.Equal(1, Observe(maps));
        Assert.Equal(1, Observe(pages));
    }

    [Fact]
    public void Domains_that_do_not_derive_from_IommuDomain_are_counted_too()
    {
        _p.Driver.DomainAllocBehaviour = t => new ForeignDomain(_p.Driver.Ops, t);
        _p.WithIommu();
        using var maps = Collector("iommu.map.operations");
        using var size = Collector("iommu.unmap.size");
        using var pages = Collector("iommu.mapped.pages");
        IDomain d = _p.Core.DomainAlloc(_p.Pci)!;

        Assert.Equal(Errno.None, _p.Core.Map(d, 0x10_0000, 0x20_0000, 8 * Sizes.Page, IommuProt.Read));
        Assert.Equal(1, Observe(maps));
        Assert.Equal(8, Observe(pages));

        var gather = default(IommuIotlbGather);
        Assert.Equal(2 * Sizes.Page, _p.Core.UnmapFast(d, 0x10_0000, 2 * Sizes.Page, ref gather));
        _p.Core.IotlbSync(d, ref gather);
        Assert.Equal(6, Observe(pages));
        Assert.Equal((long)(2 * Sizes.Page), Observe(size));
    }

    [Fact]
    public void Unmaps_are_counted_whichever_thread_makes_them_and_after_the_domain_is_freed()
    {
        // The first thread that counts on a domain adds with plain stores, others atomically: the
        // instruments must add both, live and after iommu_domain_free.
        _p.WithIommu();
        using var maps = Collector("iommu.map.operations");
        using var unmaps = Collector("iommu.unmap.operations");
        using var size = Collector("iommu.unmap.size");
        using var pages = Collector("iommu.mapped.pages");
        IDomain d = _p.Core.DomainAlloc(_p.Pci)!;
        Assert.Equal(Errno.None, _p.Core.Map(d, 0x10_0000, 0x20_0000, 8 * Sizes.Page, IommuProt.Read));

        Assert.Equal(Sizes.Page, _p.Core.Unmap(d, 0x10_0000, Sizes.Page));
        var other = new Thread(() =>
        {
            Assert.Equal(2 * Sizes.Page, _p.Core.Unmap(d, 0x10_1000, 2 * Sizes.Page));
            var gather = default(IommuIotlbGather);
            Assert.Equal(Sizes.Page, _p.Core.UnmapFast(d, 0x10_3000, Sizes.Page, ref gather));
            _p.Core.IotlbSync(d, ref gather);
        });
        other.Start();
        other.Join();
        var mine = default(IommuIotlbGather);
        Assert.Equal(Sizes.Page, _p.Core.UnmapFast(d, 0x10_4000, Sizes.Page, ref mine));
        _p.Core.IotlbSync(d, ref mine);

        Assert.Equal(4, Observe(unmaps));
        Assert.Equal((long)(5 * Sizes.Page), Observe(size));
        Assert.Equal(3, Observe(pages));

        _p.Core.DomainFree(d);
        Assert.Equal(1, Observe(maps));
        Assert.Equal(4, Observe(unmaps));
        Assert.Equal((long)(5 * Sizes.Page), Observe(size));
    }

    [Fact]
    public void Faults_are_counted_by_path_and_type()
    {
        _p.WithIommu();
        PciDevice dev = _p.AddPci("0000:00:02.0");
        IommuDomain d = _p.Driver.NewDomain();
        using var faults = Collector("iommu.faults");
        Assert.Equal(Errno.None, _p.Core.RegisterDeviceFaultHandler(dev, (_, _) => Errno.None, null));

        _p.Core.ReportFault(d, dev, 0x1000, IommuFaultAccess.Read);
        _p.Core.ReportFault(d, dev, 0x2000, IommuFaultAccess.Write);
        _p.Core.ReportDeviceFault(dev, new IommuFault { Type = IommuFaultType.DmaUnrecoverable, Reason = 6, Address = 0x3000 });
        _p.Core.ReportDeviceFault(dev, new IommuFault { Type = IommuFaultType.PageRequest, GroupId = 1 });
        _p.Core.ReportDeviceFault(dev, new IommuFault { Type = IommuFaultType.PageRequest, GroupId = 2 });

        faults.RecordObservableInstruments();
        IReadOnlyList<CollectedMeasurement<long>> all = faults.GetMeasurementSnapshot();
        Assert.Equal(2, Assert.Single(all, m => m.MatchesTags(new KeyValuePair<string, object?>("path", "report_iommu_fault"))).Value);
        Assert.Equal(1, Assert.Single(all, m => m.ContainsTags(new KeyValuePair<string, object?>("type", "dma_unrecoverable"))).Value);
        Assert.Equal(2, Assert.Single(all, m => m.ContainsTags(new KeyValuePair<string, object?>("type", "page_request"))).Value);
    }

    private static long Observe(MetricCollector<long> collector)
    {
        collector.Clear();
        collector.RecordObservableInstruments();
        return Assert.Single(collector.GetMeasurementSnapshot()).Value;
    }

    // A driver domain not derived from IommuDomain reports the ops and type it was allocated for.
    private sealed class ForeignDomain(IIommuOps ops, DomainType type) : IDomain
    {
        public DomainType Type { get; } = type;

        public IIommuOps? Ops { get; } = ops;

        public ulong PgsizeBitmap { get; set; }

        public IommuDomainGeometry Geometry { get; set; }

        public IommuFaultHandler? Handler { get; set; }

        public object? HandlerToken { get; set; }
    }
}
