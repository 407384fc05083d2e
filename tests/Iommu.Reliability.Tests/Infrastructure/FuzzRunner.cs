using System.Globalization;
using System.Text;
using Vfio.Type1;
using Vfio.Type1.Uapi;

namespace Iommu.Reliability.Tests.Infrastructure;

/// <summary>
/// Runs fuzz inputs against a sequence of <see cref="FuzzBed"/> epochs and checks each result with the
/// oracle: no exception escapes; the result is the predicted value or one of the allowed negative errnos; a
/// failing call leaves <see cref="FuzzState"/> and its argument bytes unchanged and <c>Audit()</c> passing;
/// a successful call writes back only what the kernel writes. Collects counts by request and by result.
/// </summary>
internal sealed class FuzzRunner
{
    private const int MaxReported = 5;
    private readonly List<string> _failures = [];
    private readonly Dictionary<string, long> _byRequest = [];
    private readonly Dictionary<string, long> _byResult = [];
    private readonly Dictionary<string, long> _byScenario = [];
    private readonly Dictionary<string, Dictionary<string, long>> _byPair = [];
    private readonly Dictionary<string, long> _byRule = [];

    public long Inputs { get; private set; }

    private static readonly Dictionary<uint, string> GroupNames = AllRequests().ToDictionary(r => r, r => "group:" + FuzzInputs.RequestName(r));

    private static readonly Dictionary<uint, string> ContainerNames = AllRequests().ToDictionary(r => r, r => "container:" + FuzzInputs.RequestName(r));

    private static readonly Dictionary<int, string> ErrnoNames = Enum.GetValues<Errno>().Where(e => e != Errno.None).ToDictionary(e => (int)e, e => e.ToString());

    public long FailureCount { get; private set; }

    public IReadOnlyList<string> Failures => _failures;

    /// <summary>
    /// Runs <paramref name="total"/> inputs in epochs of <paramref name="epochLength"/> over <paramref name="scenarios"/>;
    /// <paramref name="groupShare"/> percent of the inputs go to group A's fd, the rest to the container's.
    /// </summary>
    public void Run(ulong seed, long total, int epochLength, FuzzScenario[] scenarios, int groupShare)
    {
        var rng = new Random((int)(seed ^ (seed >> 32)));
        long epoch = 0;
        while (Inputs < total && FailureCount < MaxReported)
        {
            FuzzScenario scenario = scenarios[epoch % scenarios.Length];
            using var bed = new FuzzBed(scenario);
            var gen = new FuzzInputs(rng, bed);
            var deviceFds = new List<int>();
            if (bed.DeviceFd >= 0)
            {
                deviceFds.Add(bed.DeviceFd);
            }

            int n = (int)Math.Min(epochLength, total - Inputs);
            for (int i = 0; i < n && FailureCount < MaxReported; i++)
            {
                bool group = rng.Next(100) < groupShare;
                One(bed, gen, group, deviceFds, new Where(seed, epoch, scenario, i));
                Inputs++;
                Count(_byScenario, scenario.ToString());

                if (scenario == FuzzScenario.ContainerV2Full && i % 50 == 49)
                {
                    bed.TopUp();
                }

                // Keep the bed bounded: device fds are closed now and then (a success path of its own).
                if (deviceFds.Count > 3 || (deviceFds.Count > 0 && rng.Next(40) == 0))
                {
                    foreach (int fd in deviceFds)
                    {
                        bed.Proc.Close(fd).ThrowIfError();
                    }

                    deviceFds.Clear();
                }
            }

            try
            {
                bed.Container.Backend?.Audit();
            }
            catch (InvalidOperationException ex)
            {
                Report($"Audit() failed at the end of epoch {epoch} ({scenario}): {ex.Message}");
            }

            epoch++;
        }
    }

    public string Summary(TimeSpan elapsed)
    {
        var sb = new StringBuilder();
        sb.Append(CultureInfo.InvariantCulture, $"{Inputs} inputs in {elapsed.TotalSeconds:F1} s ({Inputs / Math.Max(0.001, elapsed.TotalSeconds):F0}/s), {FailureCount} oracle failure(s)\n");
        sb.Append("by scenario: ").Append(Format(_byScenario)).Append('\n');
        sb.Append("by request:  ").Append(Format(_byRequest)).Append('\n');
        sb.Append("by result:   ").Append(Format(_byResult)).Append('\n');
        foreach (KeyValuePair<string, Dictionary<string, long>> kv in _byPair.OrderByDescending(kv => kv.Value.Values.Sum()))
        {
            sb.Append("  ").Append(kv.Key).Append(": ").Append(Format(kv.Value)).Append('\n');
        }
        sb.Append("by oracle rule:\n");
        foreach (KeyValuePair<string, long> kv in _byRule.OrderBy(kv => kv.Key, StringComparer.Ordinal))
        {
            sb.Append(CultureInfo.InvariantCulture, $"  {kv.Key}: {kv.Value}\n");
        }

        return sb.ToString();
    }

    public IReadOnlyDictionary<string, long> ByResult => _byResult;

    public IReadOnlyDictionary<string, long> ByRequest => _byRequest;

    private static string Format(Dictionary<string, long> d) =>
        string.Join(", ", d.OrderByDescending(kv => kv.Value).Select(kv => string.Create(CultureInfo.InvariantCulture, $"{kv.Key}={kv.Value}")));

    private static void Count(Dictionary<string, long> d, string key) => d[key] = d.GetValueOrDefault(key) + 1;

    private void One(FuzzBed bed, FuzzInputs gen, bool group, List<int> deviceFds, Where where)
    {
        uint request = gen.Request(group ? FuzzInputs.GroupRequests : FuzzInputs.ContainerWeighted);
        IReadOnlyList<FuzzMapping> current = bed.Container.Backend is { } cb ? [.. cb.Mappings.Select(d => new FuzzMapping(d.Iova, d.Vaddr, d.Size, d.Prot, d.VaddrInvalid, d.IommuMapped, d.LockedPages))] : [];
        int[] knownFds = [bed.Container.Fd, bed.OtherContainer.Fd, bed.GroupA.Fd, bed.GroupB.Fd, bed.DevNullFd, bed.ClosedFd, .. deviceFds];
        FuzzInput input = gen.Build(request, current, knownFds);
        (ulong probeIova, ulong probeSize) = Probe(request, input.Arg);
        FuzzState before = FuzzState.Capture(bed, knownFds, probeIova, probeSize);
        FuzzExpectation expect = group
            ? FuzzOracle.GroupExpect(bed, before, deviceFds.Count, request, input.Arg)
            : FuzzOracle.ContainerExpect(bed, before, request, input.Arg);
        byte[] arg = (byte[])input.Arg.Clone();
        string target = group ? "group A" : "container";
        int r;
        try
        {
            r = group ? bed.GroupA.Ioctl(bed.Proc, request, arg) : bed.Container.Ioctl(request, arg);
        }
        catch (Exception ex) when (ex is not OutOfMemoryException)
        {
            Report($"{where}: {target} ioctl threw {ex.GetType().Name}: {ex.Message}\n{input.Describe()}{ex.StackTrace}");
            return;
        }

        string reqName = group ? GroupNames.GetValueOrDefault(request, "group:other") : ContainerNames.GetValueOrDefault(request, "container:other");
        string resName = r >= 0 ? "ok" : ErrnoNames.TryGetValue(-r, out string? en) ? en : string.Create(CultureInfo.InvariantCulture, $"?{r}");
        Count(_byResult, resName);
        if (!_byPair.TryGetValue(reqName, out Dictionary<string, long>? pair))
        {
            _byPair[reqName] = pair = [];
        }

        Count(pair, resName);
        Count(_byRequest, reqName);
        Count(_byRule, reqName + " / " + expect.Rule);
        if (r < 0 && !ErrnoNames.ContainsKey(-r))
        {
            Report($"{where}: {target} returned {r}, not a known Linux errno\n{input.Describe()}");
            return;
        }

        if (!expect.Accepts(r))
        {
            Report($"{where}: {target} returned {Show(r)}, expected {expect}\n{input.Describe()}");
            return;
        }

        if (group && request == VfioUapi.VFIO_GROUP_GET_DEVICE_FD && r >= 0)
        {
            deviceFds.Add(r);
        }

        bool exempt = r == -(int)Errno.EFAULT && !group && request == VfioUapi.VFIO_IOMMU_UNMAP_DMA;
        FuzzState? after = null;
        if (r < 0 && !exempt)
        {
            // §4.7: an UNMAP with GET_DIRTY_BITMAP whose bitmap copy faults keeps the mappings removed before
            // the fault; everything else that fails must leave no trace.
            after = FuzzState.Capture(bed, knownFds, probeIova, probeSize);
            if (before.Diff(after) is string diff)
            {
                Report($"{where}: {target} failed with {Show(r)} but changed the state: {diff}\n{input.Describe()}");
                return;
            }
        }

        if (r >= 0 && (request == VfioUapi.VFIO_IOMMU_UNMAP_DMA || request == VfioUapi.VFIO_IOMMU_GET_INFO || request == VfioUapi.VFIO_GROUP_GET_STATUS))
        {
            after = FuzzState.Capture(bed, knownFds, probeIova, probeSize);
        }

        if (FuzzOracle.CheckWriteBack(before, after ?? before, group, request, input.Arg, arg, r) is string wb)
        {
            Report($"{where}: {target} returned {Show(r)}; write-back: {wb}\nafter:\n{FuzzInputs.HexDump(arg)}{input.Describe()}");
            return;
        }

        // Audit() after failures whose outcome the oracle could not pin down exactly (they went deep into the
        // backend), after every 4th other failure (the snapshot comparison already covers those), and every
        // 32nd input regardless; plus at the end of each epoch.
        if ((r < 0 && (expect.Exact is null || Inputs % 4 == 0)) || Inputs % 32 == 0)
        {
            try
            {
                bed.Container.Backend?.Audit();
            }
            catch (InvalidOperationException ex)
            {
                Report($"{where}: Audit() failed after {target} returned {Show(r)}: {ex.Message}\n{input.Describe()}");
            }
        }
    }

    private static uint[] AllRequests() => [.. FuzzInputs.ContainerRequests, .. FuzzInputs.GroupRequests];

    private static string Show(int r) => r >= 0 ? r.ToString(CultureInfo.InvariantCulture) : string.Create(CultureInfo.InvariantCulture, $"{r} ({(Errno)(-r)})");

    private static (ulong Iova, ulong Size) Probe(uint request, byte[] arg) => request switch
    {
        VfioUapi.VFIO_IOMMU_MAP_DMA when arg.Length >= 32 => (BitConverter.ToUInt64(arg, 16), BitConverter.ToUInt64(arg, 24)),
        VfioUapi.VFIO_IOMMU_UNMAP_DMA or VfioUapi.VFIO_IOMMU_DIRTY_PAGES when arg.Length >= 24 => (BitConverter.ToUInt64(arg, 8), BitConverter.ToUInt64(arg, 16)),
        _ => (0, 0),
    };

    private void Report(string message)
    {
        FailureCount++;
        if (_failures.Count < MaxReported)
        {
            _failures.Add(message);
        }
    }

    private readonly record struct Where(ulong Seed, long Epoch, FuzzScenario Scenario, int Input)
    {
        public override string ToString() => string.Create(CultureInfo.InvariantCulture, $"seed {Seed}, epoch {Epoch} ({Scenario}), input {Input}");
    }
}
