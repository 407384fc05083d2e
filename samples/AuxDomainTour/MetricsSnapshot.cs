using System.Diagnostics.Metrics;
using System.Globalization;
using Iommu;

namespace AuxDomainTour;

/// <summary>One measurement of an instrument: what an exporter would see at a collection.</summary>
internal sealed record MetricValue(
    string Instrument, string Unit, IReadOnlyDictionary<string, object?> Tags, long Value)
{
    public string TagText => Tags.Count == 0
        ? "-"
        : string.Join(" ", Tags.Select(t => Tag(t.Key, t.Value)));

    public bool Has(string key, object value) =>
        Tags.TryGetValue(key, out object? v) && Equals(v, value);

    private static string Tag(string key, object? value) =>
        string.Create(CultureInfo.InvariantCulture, $"{key}={value}");
}

/// <summary>
/// Reads the platform's metrics as an exporter would: a <see cref="MeterListener"/> on the
/// platform's meters (<see cref="Platform.GetMeter"/>), one collection of the observable
/// instruments, every measurement kept.
/// </summary>
internal static class MetricsSnapshot
{
    public static IReadOnlyList<MetricValue> Read(Platform platform, params string[] meterNames)
    {
        HashSet<Meter> meters = [.. meterNames.Select(platform.GetMeter)];
        var values = new List<MetricValue>();
        using var listener = new MeterListener
        {
            InstrumentPublished = (instrument, l) =>
            {
                if (meters.Contains(instrument.Meter))
                {
                    l.EnableMeasurementEvents(instrument);
                }
            },
        };
        listener.SetMeasurementEventCallback<long>((instrument, value, tags, _) =>
        {
            var d = new Dictionary<string, object?>(StringComparer.Ordinal);
            foreach (KeyValuePair<string, object?> t in tags)
            {
                d[t.Key] = t.Value;
            }

            values.Add(new MetricValue(instrument.Name, instrument.Unit ?? "", d, value));
        });
        listener.Start();
        listener.RecordObservableInstruments();
        return values;
    }

    public static long Sum(
        this IEnumerable<MetricValue> values,
        string instrument,
        string? key = null,
        object? tagValue = null) =>
        values.Where(v => v.Instrument == instrument && (key is null || v.Has(key, tagValue!)))
            .Sum(v => v.Value);
}
