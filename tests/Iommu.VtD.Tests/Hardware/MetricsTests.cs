using System.Diagnostics.Metrics;
using Iommu.Devices;
using Iommu.Domains;
using Iommu.VtD.Hardware;
using Iommu.VtD.Tests.Driver;

namespace Iommu.VtD.Tests.Hardware;

public sealed class MetricsTests
{
    [Fact]
    public void Meter_publishes_cache_invalidation_and_fault_counts()
    {
        using var f = new DriverBed(VtdConfig.Legacy48Bit, memory: 8 * Sizes.GiB);
        PciDevice dev = f.AddDevice("0000:00:03.0");
        IDomain dom = f.Iommu.DomainAlloc(f.Pci)!;
        f.Iommu.AttachDevice(dom, dev).ThrowIfError();
        f.Iommu.Map(dom, 0x10_0000, 0x1_0000_0000, Sizes.Page, IommuProt.Read).ThrowIfError();
        Span<byte> buf = stackalloc byte[8];
        Assert.True(dev.DmaRead(null, 0x10_0000, buf).IsOk);   // miss
        Assert.True(dev.DmaRead(null, 0x10_0008, buf).IsOk);   // hit
        Assert.Equal(DmaStatus.Fault, dev.DmaWrite(null, 0x10_0000, buf).Status); // read-only page
        Assert.Equal(DmaStatus.Fault, dev.DmaRead(null, 0x20_0000, buf).Status);  // not mapped

        using Meter meter = VtdMetrics.Publish(f.Unit, unitName: "dmar0");
        var seen = new List<(string Name, long Value, string? Tag)>();
        using var listener = new MeterListener();
        listener.InstrumentPublished = (instrument, l) =>
        {
            if (instrument.Meter == meter)
            {
                l.EnableMeasurementEvents(instrument);
            }
        };
        listener.SetMeasurementEventCallback<long>((instrument, value, tags, _) =>
        {
            string? extra = null;
            foreach (KeyValuePair<string, object?> t in tags)
            {
                if (t.Key != "unit")
                {
                    extra = $"{t.Key}={t.Value}";
                }
            }

            seen.Add((instrument.Name, value, extra));
        });
        listener.Start();
        listener.RecordObservableInstruments();

        // Hits: the second read and the write (the cached leaf refuses it); misses: the first read and the hole.
        Assert.Contains(("iommu.vtd.iotlb.hits", 2L, (string?)null), seen);
        Assert.Contains(("iommu.vtd.iotlb.misses", 2L, (string?)null), seen);
        Assert.Contains(("iommu.vtd.faults", 1L, (string?)"reason=0x05"), seen);
        Assert.Contains(("iommu.vtd.faults", 1L, (string?)"reason=0x06"), seen);
        Assert.Contains(seen, m => m.Name == "iommu.vtd.invalidations" && m.Tag == "cache=context" && m.Value >= 1);
    }
}
