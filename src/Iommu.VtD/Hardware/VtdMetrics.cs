using System.Diagnostics;
using System.Diagnostics.Metrics;

namespace Iommu.VtD.Hardware;

/// <summary>
/// Publishes a unit's counters through <see cref="System.Diagnostics.Metrics"/>: cache hits and
/// misses, table walks, invalidations and faults by reason, as observable instruments read on
/// collection (the translation path pays nothing for them).
/// </summary>
/// <remarks>
/// <see cref="Driver.IntelIommu"/> publishes every unit it drives on its platform's meter
/// (<see cref="Platform.GetMeter"/>) with <c>unit</c> = <c>dmar&lt;index&gt;</c>; call
/// <see cref="Publish"/> only for a unit used without the driver. The instruments are listed in
/// <c>docs/metrics.md</c>.
/// </remarks>
public static class VtdMetrics
{
    /// <summary>Name of the meter.</summary>
    public const string MeterName = "Iommu.VtD";

    /// <summary>Creates the instruments for <paramref name="unit"/> on a new meter.</summary>
    /// <param name="unit">The unit.</param>
    /// <param name="meterFactory">Creates the meter when given (dependency-injection hosts); otherwise a plain <see cref="Meter"/> is created.</param>
    /// <param name="unitName">A tag value that tells units apart (e.g. "dmar0").</param>
    /// <returns>
    /// The meter. Without <paramref name="meterFactory"/> it is a meter of its own: dispose it to stop
    /// publishing. With one it is the factory's <c>Iommu.VtD</c> meter, which the factory caches and owns
    /// (an unnamed platform on the same factory publishes on it too): disposing it does nothing, and the
    /// unit's instruments stay until the factory is disposed.
    /// </returns>
    public static Meter Publish(VtdUnit unit, IMeterFactory? meterFactory = null, string unitName = "dmar0")
    {
        ArgumentNullException.ThrowIfNull(unit);
        Meter meter = meterFactory?.Create(MeterName) ?? new Meter(MeterName);
        AddInstruments(meter, [(unit, new TagList { { "unit", unitName } })], static () => true);
        return meter;
    }

    // One instrument per name for all the units (a collector follows one instrument of a name per meter);
    // each unit's measurements start with its tags; nothing is reported once alive() is false.
    internal static void AddInstruments(Meter meter, (IVtdDiagnostics Unit, TagList Tags)[] units, Func<bool> alive)
    {
        meter.CreateObservableCounter("iommu.vtd.iotlb.hits", () => Each(units, alive, static (u, t) => [new(u.Statistics.IotlbHits, t)]), "{lookup}", "IOTLB lookups that hit");
        meter.CreateObservableCounter("iommu.vtd.iotlb.misses", () => Each(units, alive, static (u, t) => [new(u.Statistics.IotlbMisses, t)]), "{lookup}", "IOTLB lookups that walked the page tables");
        meter.CreateObservableCounter("iommu.vtd.context.misses", () => Each(units, alive, static (u, t) => [new(u.Statistics.ContextMisses, t)]), "{lookup}", "Context-cache misses (root/context table reads)");
        meter.CreateObservableCounter("iommu.vtd.pasid.misses", () => Each(units, alive, static (u, t) => [new(u.Statistics.PasidMisses, t)]), "{lookup}", "PASID-cache misses (PASID directory/table reads)");
        meter.CreateObservableCounter("iommu.vtd.invalidations", () => Each(units, alive, Invalidations), "{invalidation}", "Invalidations processed, by cache");
        meter.CreateObservableCounter("iommu.vtd.faults", () => Each(units, alive, Faults), "{fault}", "DMA faults, by VT-d fault reason");
    }

    private static List<Measurement<long>> Each((IVtdDiagnostics Unit, TagList Tags)[] units, Func<bool> alive, Func<IVtdDiagnostics, TagList, IEnumerable<Measurement<long>>> observe)
    {
        var list = new List<Measurement<long>>();
        if (alive())
        {
            foreach ((IVtdDiagnostics unit, TagList tags) in units)
            {
                list.AddRange(observe(unit, tags));
            }
        }

        return list;
    }

    private static Measurement<long>[] Invalidations(IVtdDiagnostics unit, TagList tags)
    {
        VtdActivity a = unit.Activity;
        return [With(a.ContextInvalidations, tags, "cache", "context"), With(a.PasidInvalidations, tags, "cache", "pasid"), With(a.IotlbInvalidations, tags, "cache", "iotlb")];
    }

    private static List<Measurement<long>> Faults(IVtdDiagnostics unit, TagList tags)
    {
        var list = new List<Measurement<long>>();
        foreach ((VtdFaultReason reason, long count) in unit.Activity.FaultsByReason)
        {
            list.Add(With(count, tags, "reason", $"0x{(int)reason:x2}"));
        }

        return list;
    }

    private static Measurement<long> With(long value, TagList tags, string key, string tagValue)
    {
        tags.Add(key, tagValue);
        return new Measurement<long>(value, tags);
    }
}
