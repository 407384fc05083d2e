// snippet-begin: metrics-reading
using System.Diagnostics.Metrics;
using Iommu;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Diagnostics.Metrics.Testing;
// snippet-end: metrics-reading
using Iommu.Devices;
using Iommu.Domains;
using Iommu.VtD.Driver;
using Iommu.VtD.Hardware;

namespace Snippets;

/// <summary>docs/metrics.md, "Reading them".</summary>
internal static class MetricsDoc
{
    public static long Run()
    {
        // snippet-begin: metrics-reading
        using var services = new ServiceCollection().AddMetrics().BuildServiceProvider();
        var factory = services.GetRequiredService<IMeterFactory>();
        using var platform = new Platform(new PlatformOptions { MeterFactory = factory });
        // ... bring up the driver, map ...
        // snippet-end: metrics-reading
        PciBus pci = platform.AddPciBus(segment: 0);
        var dmar = new VtdUnit(platform.Memory, VtdConfig.ScalableMode48Bit);
        pci.AddDmaRemapper(dmar, includeAll: true);
        pci.SetIommuOps(new IntelIommu(platform, dmar)).ThrowIfError();
        PciDevice dev = pci.AddDevice(new PciDeviceSpec("0000:00:03.0"));
        IDomain domain = platform.Iommu.DomainAlloc(pci)!;
        platform.Iommu.AttachDevice(domain, dev).ThrowIfError();
        platform.Iommu.Map(domain, 0x1000, 0x8000_0000, Sizes.Page, IommuProt.Read).ThrowIfError();
        platform.Iommu.Map(domain, 0x2000, 0x8000_1000, Sizes.Page, IommuProt.Read).ThrowIfError();

        // snippet-begin: metrics-reading
        using var maps = new MetricCollector<long>(factory, IommuCore.MeterName, "iommu.map.operations");
        maps.RecordObservableInstruments();
        long n = maps.LastMeasurement!.Value;
        // snippet-end: metrics-reading
        return n;
    }
}
