using System.Diagnostics.Metrics;
using Iommu;
using Iommu.Devices;
using Iommu.Domains;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Diagnostics.Metrics.Testing;
using Mtty;
using Vfio.Mdev;
using Vfio.Mdev.Pinning;
using Vfio.Type1.Tests.Infrastructure;
using Vfio.Type1.Uapi;

namespace Vfio.Type1.Tests;

/// <summary>
/// Pinned pages and dma_avail per container, and the core's map counters under MAP_DMA, read with
/// <see cref="MetricCollector{T}"/> through a DI container's IMeterFactory after real VFIO operations.
/// </summary>
public sealed class MetricsTests : IDisposable
{
    private const ulong I0 = 0x10_0000;
    private readonly ServiceProvider _services = new ServiceCollection().AddMetrics().BuildServiceProvider();
    private readonly Type1Bed _bed;

    public MetricsTests() => _bed = new Type1Bed(meterFactory: Factory);

    private IMeterFactory Factory => _services.GetRequiredService<IMeterFactory>();

    public void Dispose()
    {
        _bed.Dispose();
        _services.Dispose();
    }

    [Fact]
    public void Map_dma_pins_pages_and_takes_a_slot_per_container()
    {
        using var pinned = new MetricCollector<long>(Factory, VfioCore.MeterName, "vfio.type1.pinned.pages");
        using var avail = new MetricCollector<long>(Factory, VfioCore.MeterName, "vfio.type1.dma.available");
        using var maps = new MetricCollector<long>(Factory, IommuCore.MeterName, "iommu.map.operations");
        using var pages = new MetricCollector<long>(Factory, IommuCore.MeterName, "iommu.mapped.pages");
        (VfioContainer c1, _) = _bed.Std(_bed.AddDevice("0000:00:03.0"));
        (VfioContainer c2, _) = _bed.Std(_bed.AddDevice("0000:00:04.0"));
        long limit = c1.Backend!.DmaEntryLimit;
        Assert.Equal(limit, Observe(avail, c1.Id));
        long mapsBefore = Observe(maps);

        ulong buf = _bed.Buffer(16 * Sizes.Page);
        Assert.Equal(Errno.None, c1.MapDma(Type1Bed.Map(buf, I0, 16 * Sizes.Page)));

        Assert.Equal(16, Observe(pinned, c1.Id, "map_dma"));
        Assert.Equal(0, Observe(pinned, c1.Id, "vfio_pin_pages"));
        Assert.Equal(limit - 1, Observe(avail, c1.Id));
        Assert.Equal(0, Observe(pinned, c2.Id, "map_dma"));  // the other container is untouched
        Assert.Equal(limit, Observe(avail, c2.Id));
        Assert.True(Observe(maps) > mapsBefore, "MAP_DMA maps through iommu_map");
        Assert.Equal(16, Observe(pages));

        var unmap = new VfioIommuType1DmaUnmap(VfioIommuType1DmaUnmap.StructSize, 0, I0, 16 * Sizes.Page, default);
        Assert.Equal(Errno.None, c1.UnmapDma(ref unmap));
        Assert.Equal(0, Observe(pinned, c1.Id, "map_dma"));
        Assert.Equal(limit, Observe(avail, c1.Id));
        Assert.Equal(0, Observe(pages));
    }

    [Fact]
    public void Vfio_pin_pages_counts_as_pinned_and_released_backends_stop_reporting()
    {
        using var pinned = new MetricCollector<long>(Factory, VfioCore.MeterName, "vfio.type1.pinned.pages");
        MdevDevice m = _bed.AddMttyMdev();
        (VfioContainer c, VfioGroup g) = _bed.Std(m!);
        ulong buf = _bed.Buffer(4 * Sizes.Page);
        Assert.Equal(Errno.None, c.MapDma(Type1Bed.Map(buf, I0, 4 * Sizes.Page))); // external domain only: nothing pinned yet
        Assert.Equal(0, Observe(pinned, c.Id, "map_dma"));
        Assert.Equal(Errno.None, _bed.Vfio.RegisterNotifier(m!, VfioNotifyType.Iommu, VfioIommuNotifyEvents.DmaUnmap, (_, _) => NotifyResult.Ok));

        Assert.Equal(3, _bed.Vfio.PinPages(m!, [I0 >> 12, (I0 >> 12) + 1, (I0 >> 12) + 2], 3, IommuProt.Read, new ulong[3]));
        Assert.Equal(3, Observe(pinned, c.Id, "vfio_pin_pages"));
        Assert.Equal(1, _bed.Vfio.UnpinPages(m!, [I0 >> 12], 1));
        Assert.Equal(2, Observe(pinned, c.Id, "vfio_pin_pages"));
        Assert.Equal(2, _bed.Vfio.UnpinPages(m!, [(I0 >> 12) + 1, (I0 >> 12) + 2], 2));

        // The last group leaves: the backend is released and its container disappears from the measurements.
        g.UnsetContainer().ThrowIfError();
        pinned.Clear();
        pinned.RecordObservableInstruments();
        Assert.DoesNotContain(pinned.GetMeasurementSnapshot(), x => Equals(x.Tags["container"], c.Id));
    }

    private static long Observe(MetricCollector<long> collector, int? container = null, string? source = null)
    {
        collector.Clear();
        collector.RecordObservableInstruments();
        return Assert.Single(collector.GetMeasurementSnapshot(), x =>
            (container is null || Equals(x.Tags["container"], container)) && (source is null || Equals(x.Tags["source"], source))).Value;
    }
}
