using System.Diagnostics.Metrics;
using Iommu.VtD.Driver;
using Iommu.VtD.Hardware;
using Vfio.Type1;

namespace Iommu.Integration.Tests;

public sealed class MetricsDocTests
{
    [Fact]
    public void Docs_metrics_lists_every_instrument_a_platform_publishes_with_its_type_and_unit()
    {
        using var platform = new Platform(new PlatformOptions { MemorySize = 8 * Sizes.GiB, TableMemorySize = 64 * Sizes.MiB });
        var pci = platform.AddPciBus();
        var unit = new VtdUnit(platform.Memory, VtdConfig.ScalableMode48Bit);
        pci.AddDmaRemapper(unit, includeAll: true);
        pci.SetIommuOps(new IntelIommu(platform, unit)).ThrowIfError();
        _ = new VfioCore(platform);

        HashSet<Meter> meters = [platform.GetMeter(IommuCore.MeterName), platform.GetMeter(VtdMetrics.MeterName), platform.GetMeter(VfioCore.MeterName)];
        var published = new List<Instrument>();
        using var listener = new MeterListener
        {
            InstrumentPublished = (instrument, _) =>
            {
                if (meters.Contains(instrument.Meter))
                {
                    published.Add(instrument);
                }
            },
        };
        listener.Start();

        string doc = File.ReadAllText(Path.Combine(RepoPaths.Root, "docs", "metrics.md"));
        Assert.Equal(14, published.Count);
        foreach (Instrument i in published)
        {
            string type = i.GetType().Name.Split('`')[0]; // ObservableCounter`1 -> ObservableCounter
            string row = $"| `{i.Meter.Name}` | `{i.Name}` | {type} | `{i.Unit}` |";
            Assert.True(doc.Contains(row, StringComparison.Ordinal), $"docs/metrics.md has no row starting {row}");
        }
    }
}
