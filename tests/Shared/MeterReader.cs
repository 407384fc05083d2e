using System.Diagnostics.Metrics;
using Iommu;

namespace Iommu.Tests.Shared;

/// <summary>
/// Some meters of one platform, read with a <see cref="MeterListener"/>: last value by instrument name and its
/// tags other than <c>unit</c> and <c>platform</c>, in tag order (<c>name|tag=value|…</c>). Only the platform's own
/// meter instances are listened to, so tests running in parallel on other platforms do not leak in.
/// Shared by linking (tests/Shared is no project).
/// </summary>
internal sealed class MeterReader : IDisposable
{
    private readonly MeterListener _listener = new();
    private readonly Dictionary<string, long> _values = [];

    /// <param name="platform">The platform whose meters are read.</param>
    /// <param name="meterNames">Which of its meters (<see cref="Platform.GetMeter"/>).</param>
    public MeterReader(Platform platform, params string[] meterNames)
    {
        HashSet<Meter> meters = [.. meterNames.Select(platform.GetMeter)];
        _listener.InstrumentPublished = (i, l) =>
        {
            if (meters.Contains(i.Meter))
            {
                l.EnableMeasurementEvents(i);
            }
        };
        _listener.SetMeasurementEventCallback<long>((i, value, tags, _) =>
        {
            string key = i.Name;
            foreach (KeyValuePair<string, object?> t in tags)
            {
                if (t.Key is not ("unit" or "platform"))
                {
                    key += $"|{t.Key}={t.Value}";
                }
            }

            _values[key] = value;
        });
        _listener.Start();
    }

    public IEnumerable<string> Keys => _values.Keys;

    public long this[string key] => _values.TryGetValue(key, out long v) ? v : throw new KeyNotFoundException($"no measurement {key}; have {string.Join(", ", _values.Keys)}");

    public bool Has(string key) => _values.ContainsKey(key);

    public void Collect()
    {
        _values.Clear();
        _listener.RecordObservableInstruments();
    }

    public void Dispose() => _listener.Dispose();
}
