using System.Diagnostics;
using System.Diagnostics.Metrics;

namespace Iommu.VtD.Hardware;

/// <summary>
/// Publishes a unit's counters through <see cref="System.Diagnostics.Metrics"/>: cache hits and
/// misses, table walks, invalidations and faults by reason, as observable instruments read on
/// collection (the translation path pays nothing for them).
/// </summary>
public static class VtdMetrics
{
    /// <summary>Name of the meter.</summary>
    public const string MeterName = "Iommu.VtD";

    /// <summary>Creates the instruments for <paramref name="unit"/> on a new meter.</summary>
    /// <param name="unit">The unit.</param>
    /// <param name="meterFactory">Creates the meter when given (dependency-injection hosts); otherwise a plain <see cref="Meter"/> is created.</param>
    /// <param name="unitName">A tag value that tells units apart (e.g. "dmar0").</param>
    /// <returns>The meter; dispose it to stop publishing.</returns>
    public static Meter Publish(VtdUnit unit, IMeterFactory? meterFactory = null, string unitName = "dmar0")
    {
        ArgumentNullException.ThrowIfNull(unit);
        Meter meter = meterFactory?.Create(MeterName) ?? new Meter(MeterName);
        var tag = new KeyValuePair<string, object?>("unit", unitName);
        meter.CreateObservableCounter("iommu.vtd.iotlb.hits", () => new Measurement<long>(unit.Statistics.IotlbHits, tag), description: "IOTLB lookups that hit");
        meter.CreateObservableCounter("iommu.vtd.iotlb.misses", () => new Measurement<long>(unit.Statistics.IotlbMisses, tag), description: "IOTLB lookups that walked the page tables");
        meter.CreateObservableCounter("iommu.vtd.context.misses", () => new Measurement<long>(unit.Statistics.ContextMisses, tag), description: "Context-cache misses (root/context table reads)");
        meter.CreateObservableCounter("iommu.vtd.pasid.misses", () => new Measurement<long>(unit.Statistics.PasidMisses, tag), description: "PASID-cache misses (PASID directory/table reads)");
        meter.CreateObservableCounter("iommu.vtd.invalidations", () => Invalidations(unit, tag), description: "Invalidations processed, by cache");
        meter.CreateObservableCounter("iommu.vtd.faults", () => Faults(unit, tag), description: "DMA faults, by VT-d fault reason");
        return meter;
    }

    private static IEnumerable<Measurement<long>> Invalidations(VtdUnit unit, KeyValuePair<string, object?> tag)
    {
        VtdActivity a = unit.Activity;
        yield return new Measurement<long>(a.ContextInvalidations, tag, new("cache", "context"));
        yield return new Measurement<long>(a.PasidInvalidations, tag, new("cache", "pasid"));
        yield return new Measurement<long>(a.IotlbInvalidations, tag, new("cache", "iotlb"));
    }

    private static IEnumerable<Measurement<long>> Faults(VtdUnit unit, KeyValuePair<string, object?> tag)
    {
        foreach ((VtdFaultReason reason, long count) in unit.Activity.FaultsByReason)
        {
            yield return new Measurement<long>(count, tag, new("reason", $"0x{(int)reason:x2}"));
        }
    }
}
