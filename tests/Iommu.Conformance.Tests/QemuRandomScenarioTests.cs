using System.Diagnostics;
using System.Globalization;
using Iommu.Conformance.Tests.Qemu;
using Iommu.Conformance.Tests.Scenarios;
using Iommu.Domains;
using Iommu.VtD.Diagnostics;
using Xunit.Abstractions;

namespace Iommu.Conformance.Tests;

/// <summary>
/// Random driver-built scenarios (<see cref="RandomConformanceScenario"/>) on every QEMU-compatible unit, each probe
/// run as a real edu DMA through QEMU 7.2's VT-d and compared with our model (beyond the named
/// <see cref="QemuExpectation"/> differences). The base seed is random per run; set IOMMU_QEMU_SEED to replay one, IOMMU_QEMU_SCENARIOS to run more per unit.
/// </summary>
public sealed class QemuRandomScenarioTests(ITestOutputHelper output)
{
    // Measured on a 2-core machine: 0.25–0.35 s per scenario of 14 steps (~50 probes), so 16 scenarios of 20 steps
    // per unit keep the four runs near 25 s; IOMMU_QEMU_SCENARIOS=60 ran 240 scenarios, 12,000 probes in 70 s.
    private const int ScenariosPerConfig = 16, Steps = 20;

    public static TheoryData<string> Configs => new() { "legacy-4level", "legacy-3level", "scalable-4level", "scalable-3level" };

    [QemuTheory]
    [MemberData(nameof(Configs))]
    public void Random_driver_built_scenarios_walk_the_same_in_qemu_and_in_the_model(string config)
    {
        string qemu = QtestClient.FindQemu() ?? throw new InvalidOperationException("CI=true but qemu-system-x86_64 is not installed: .ci/run must install Debian's qemu-system-x86.");
        int baseSeed = Environment.GetEnvironmentVariable("IOMMU_QEMU_SEED") is string env
            ? int.Parse(env, CultureInfo.InvariantCulture)
            : Random.Shared.Next();
        int scenarios = Environment.GetEnvironmentVariable("IOMMU_QEMU_SCENARIOS") is string n ? int.Parse(n, CultureInfo.InvariantCulture) : ScenariosPerConfig;
        var total = Stopwatch.StartNew();
        int probes = 0, dropped = 0, verified = 0, faults = 0;
        var classes = new SortedDictionary<string, int>(StringComparer.Ordinal);
        for (int i = 0; i < scenarios; i++)
        {
            int seed = unchecked(baseSeed + i);
            (ConformanceScenario s, List<string> log) = RandomConformanceScenario.Build(config, seed, Steps);
            foreach (string c in RandomConformanceScenario.Classes(log))
            {
                classes[c] = classes.GetValueOrDefault(c) + 1;
            }

            using (s)
            {
                ConformanceReport r = ConformanceRunner.RunScenario(qemu, s, ref dropped);
                probes += r.Probes;
                verified += r.DataVerified;
                faults += r.FaultsCompared;
                string context = string.Create(CultureInfo.InvariantCulture,
                    $"{config} seed {seed} (IOMMU_QEMU_SEED={seed} replays it as the first scenario):\n  {string.Join("\n  ", log)}");
                Assert.True(r.Mismatches.Count == 0, $"{r.Mismatches.Count} of {r.Probes} probes disagree with QEMU in {context}\n{string.Join('\n', r.Mismatches.Take(40))}");
            }
        }

        output.WriteLine(string.Create(CultureInfo.InvariantCulture,
            $"{config}: base seed {baseSeed}, {scenarios} scenarios, {probes} probes ({verified} data checked, {faults} fault records compared, {dropped} outside guest RAM not run), {total.Elapsed.TotalSeconds:F1} s; scenarios with: {string.Join(", ", classes.Select(c => $"{c.Key} {c.Value}"))}"));
        Assert.True(scenarios != ScenariosPerConfig || total.Elapsed < TimeSpan.FromMinutes(1), $"the random conformance run of {config} took {total.Elapsed}");
    }

    /// <summary>
    /// A device on an identity default domain (TT=10 / PGTT=100): its DMA reaches the page it names, and an input
    /// beyond the width faults in the model (spec) but passes in QEMU 7.2, the named pass-through difference.
    /// </summary>
    [QemuTheory]
    [InlineData("legacy-4level")]
    [InlineData("scalable-4level")]
    public void Pass_through_dma_reaches_its_own_address_and_qemu_passes_inputs_beyond_the_width(string config)
    {
        string qemu = QtestClient.FindQemu() ?? throw new InvalidOperationException("CI=true but qemu-system-x86_64 is not installed: .ci/run must install Debian's qemu-system-x86.");
        using var s = new ConformanceScenario("pass-through-" + config, ScenarioCatalog.Config(config), defaultDomain: DomainType.Identity);
        Iommu.Devices.PciDevice dev = s.Device("00:04.0");
        IDomain identity = s.Iommu.GetDomainForDev(dev) ?? throw new InvalidOperationException("no default domain");
        Assert.Equal(DomainType.Identity, identity.Type);
        s.AddPoint(identity, 0x0400_0000);
        s.AddPoint(identity, 0x0400_0ff8);
        int dropped = 0;
        ConformanceReport r = ConformanceRunner.RunScenario(qemu, s, ref dropped);
        Assert.True(r.Mismatches.Count == 0, string.Join('\n', r.Mismatches));
        Assert.Equal(4, r.DataVerified);
        Assert.Contains(r.DifferencesUsed, d => d.Contains("pass-through", StringComparison.Ordinal));
    }

    /// <summary>
    /// An edu behind QEMU's pcie-pci-bridge: its DMA carries the bridge's (11:00.0) requester ID in QEMU and in our
    /// model (PciDevice.DmaRequesterId), so the domain attached to the group translates it and faults name 11:00.0.
    /// </summary>
    [QemuTheory]
    [InlineData("legacy-4level")]
    [InlineData("scalable-3level")]
    public void Dma_behind_a_pcie_to_pci_bridge_uses_the_bridge_alias_in_qemu_as_in_the_model(string config)
    {
        string qemu = QtestClient.FindQemu() ?? throw new InvalidOperationException("CI=true but qemu-system-x86_64 is not installed: .ci/run must install Debian's qemu-system-x86.");
        using var s = new ConformanceScenario("bridged-" + config, ScenarioCatalog.Config(config));
        Iommu.Devices.PciDevice dev = s.BridgedDevice(8);
        IDomain d = s.NewDomain();
        Assert.Equal(Errno.None, s.Iommu.AttachGroup(d, dev.IommuGroup!));
        s.Map(d, 0x1000_0000, 0x0400_0000, ScenarioCatalog.K4, ScenarioCatalog.RW);
        s.Map(d, 0x1000_1000, 0x0400_2000, ScenarioCatalog.K4, IommuProt.Read);
        int dropped = 0;
        ConformanceReport r = ConformanceRunner.RunScenario(qemu, s, ref dropped);
        Assert.True(r.Mismatches.Count == 0, string.Join('\n', r.Mismatches));
        Assert.Equal(0x1100, dev.DmaRequesterId);
        Assert.Equal(6, r.DataVerified);    // writes to the RW page, reads of both pages (brought back through the RW page)
        Assert.Equal(6, r.FaultsCompared);  // writes to the read-only page, the never-mapped and beyond-width points
    }
}
