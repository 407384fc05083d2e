using System.Diagnostics;
using System.Globalization;
using System.Text;
using Iommu.Conformance.Tests.Qemu;
using Iommu.Conformance.Tests.Scenarios;
using Iommu.VtD.Diagnostics;
using Xunit.Abstractions;

namespace Iommu.Conformance.Tests;

/// <summary>Every probe of every driver-built scenario, run as a real edu DMA through QEMU 7.2's VT-d.</summary>
public sealed class QemuConformanceTests(ITestOutputHelper output)
{
    private static readonly TimeSpan QtestTimeout = TimeSpan.FromSeconds(20);

    [QemuFact]
    public void Qemu_walks_our_tables_and_every_dma_lands_where_the_model_says()
    {
        string qemu = QtestClient.FindQemu() ?? throw new InvalidOperationException("CI=true but qemu-system-x86_64 is not installed: .ci/run must install Debian's qemu-system-x86.");
        var total = Stopwatch.StartNew();
        var summary = new StringBuilder();
        var mismatches = new List<string>();
        var differences = new SortedSet<string>(StringComparer.Ordinal);
        int probes = 0, passed = 0, phases = 0;
        string outDir = Path.Combine(AppContext.BaseDirectory, "conformance");
        Directory.CreateDirectory(outDir);
        foreach (string name in ScenarioCatalog.Names)
        {
            var sw = Stopwatch.StartNew();
            using ConformanceScenario s = ScenarioCatalog.Build(name);
            IReadOnlyList<ScenarioPhase> built = s.Build();
            File.WriteAllText(Path.Combine(outDir, name + ".json"), built[0].Image.ToJson());
            using var m = new EduMachine(qemu, s.Scalable, s.Requesters, QtestTimeout);
            ulong expectCap = 0x00D2_008C_222F_0606UL;
            Assert.Equal(expectCap, m.Cap);
            ConformanceReport r = ConformanceRunner.Run(m, built);
            phases += built.Count;
            probes += r.Probes;
            passed += r.Passed;
            mismatches.AddRange(r.Mismatches.Select(x => name + " " + x));
            differences.UnionWith(r.DifferencesUsed);
            summary.AppendLine(string.Create(CultureInfo.InvariantCulture,
                $"{name}: {built.Count} phases, {s.Requesters.Count} requesters, {r.Probes} probes, {r.Passed} passed ({r.DataVerified} data checked, {r.FaultsCompared} fault records compared, {r.WithQemuDifference} under a QEMU 7.2 difference), {m.Qtest.Commands} qtest commands, {sw.Elapsed.TotalSeconds:F1} s"));
        }

        summary.AppendLine(string.Create(CultureInfo.InvariantCulture, $"total: {phases} phases, {probes} probes, {passed} passed, {total.Elapsed.TotalSeconds:F1} s"));
        summary.AppendLine("QEMU 7.2 differences applied:");
        foreach (string d in differences)
        {
            summary.AppendLine("  " + d);
        }

        output.WriteLine(summary.ToString());
        File.WriteAllText(Path.Combine(outDir, "summary.txt"), summary.ToString());
        Assert.True(mismatches.Count == 0, $"{mismatches.Count} of {probes} probes disagree with QEMU:\n{string.Join('\n', mismatches.Take(60))}\n{summary}");
        Assert.True(total.Elapsed < TimeSpan.FromMinutes(2), $"the conformance run took {total.Elapsed}");
    }
}
