using CsCheck;
using Iommu.Reliability.Tests.Infrastructure;
using Xunit.Abstractions;

namespace Iommu.Reliability.Tests.Chaos;

/// <summary>
/// "Isolation never breaks, whatever a user does in whatever order": random sequences of valid-looking calls across every
/// layer (core domains, aux and PASID attach, the DMA API with DMA_FQ and the clock, SVA with process mmap/munmap/exit,
/// VFIO type1 containers and groups, IOMMU-aware and vendor-isolated mdevs with pin/unpin, uacce queues, hot-remove and
/// re-add, fault reading, image export) on one platform of a random preset. Targets are picked among every object the
/// run made — freed, detached, closed, removed ones and other devices' too. After every step: no exception the member's
/// XML docs do not list, no errno outside the kernel's, every live device's DMA reaches only what its current domain maps,
/// an unbound SVA PASID reaches none of its old process's pages (also once another process holds the number), and the
/// pinned pages and each process's locked_vm are what the property's own MAP_DMA and vfio_pin_pages calls account for;
/// every live DMA/DMA_FQ domain's IOVA allocator holds exactly the DMA API mappings the property made there and did not
/// unmap, each translating to its buffer and nothing it unmapped translating any more (also after the device left or
/// changed its group, or was hot-removed); group membership agrees with the attach state.
/// At the end, tearing everything down leaves as many table frames as a platform that never ran a step, and the
/// platform disposes.
/// </summary>
public sealed class ChaosPropertyTests(ITestOutputHelper output)
{
    private static readonly ChaosKind[] s_kinds = Enum.GetValues<ChaosKind>();

    // Rarer kinds (lifetime events) get a lower weight, so objects live long enough to be used after them.
    private static readonly Gen<ChaosKind> s_kind = Gen.Frequency(s_kinds.Select(k => (Weight(k), (IGen<ChaosKind>)Gen.Const(k))).ToArray());

    private static readonly Gen<ChaosOp> s_op = Gen.Select(s_kind, Gen.Int[0, 63], Gen.Int[0, 63], Gen.Int[0, 63], (k, a, b, c) => new ChaosOp(k, a, b, c));

    internal static Gen<(int Config, ChaosOp[] Ops)> Sample { get; } = Gen.Select(Gen.Int[0, ChaosConfig.All.Count - 1], s_op.Array[20, 120]);

    private readonly Dictionary<ChaosKind, long> _coverage = [];
    private readonly Dictionary<int, long> _baseline = [];
    private readonly Dictionary<string, long> _events = [];

    [Fact]
    public void Chaos_any_order_of_valid_calls_keeps_isolation_and_never_crashes()
    {
        long budget = ReliabilityBudget.Ops * 3 / 10; // 30 000 steps, about 10 s in CI
        (int samples, long ops, TimeSpan elapsed) = IsolationSampler.Run(Sample, RunSample, Print, budget, ReliabilityBudget.Seed(0xC4A05));
        output.WriteLine($"chaos: {ops} steps in {samples} samples, {elapsed.TotalSeconds:F1} s");
        foreach (ChaosKind k in s_kinds)
        {
            output.WriteLine($"  {k}: {_coverage.GetValueOrDefault(k)}");
        }

        foreach ((string e, long n) in _events.OrderBy(e => e.Key, StringComparer.Ordinal))
        {
            output.WriteLine($"  {e}: {n}");
        }

        // Coverage: every kind ran, the lifetime events often enough to matter.
        foreach (ChaosKind k in s_kinds)
        {
            Assert.True(_coverage.GetValueOrDefault(k) >= 20, $"the generator reached {k} only {_coverage.GetValueOrDefault(k)} times");
        }

        // The states the pin-accounting and PASID-reuse oracles need were reached (else they check nothing).
        Assert.True(_events.GetValueOrDefault("vendor pin") >= 20, $"vfio_pin_pages took a page only {_events.GetValueOrDefault("vendor pin")} times");
        Assert.True(_events.GetValueOrDefault("DMA unmap after the device moved") >= 20, $"a DMA unmap came after its device left or changed its group only {_events.GetValueOrDefault("DMA unmap after the device moved")} times");
        Assert.True(_events.GetValueOrDefault("device moved to another group") >= 20, $"iommu_group_add_device moved a device only {_events.GetValueOrDefault("device moved to another group")} times");
        Assert.True(_events.GetValueOrDefault("SVA PASID handed to another process after DMA") >= 3, $"an unbound SVA PASID went to another process after DMA only {_events.GetValueOrDefault("SVA PASID handed to another process after DMA")} times");
    }

    internal static string Print((int Config, ChaosOp[] Ops) s) => $"{ChaosConfig.All[s.Config]}: {string.Join(", ", s.Ops)}";

    internal long RunSample((int Config, ChaosOp[] Ops) sample)
    {
        ChaosConfig config = ChaosConfig.All[sample.Config];
        if (!_baseline.TryGetValue(sample.Config, out long baseline))
        {
            using var empty = new ChaosBed(config, []);
            _baseline[sample.Config] = baseline = empty.TearDown();
        }

        var bed = new ChaosBed(config, _coverage, _events);
        try
        {
            bed.Run(sample.Ops);
            long live = bed.TearDown();
            if (live != baseline)
            {
                throw new Isolation.IsolationViolationException($"[{config}] after teardown {live} table frames are allocated, a platform that ran no step has {baseline}");
            }
        }
        finally
        {
            bed.Dispose();
        }

        return bed.Executed;
    }

    private static int Weight(ChaosKind k) => k switch
    {
        ChaosKind.HotRemove or ChaosKind.ReAdd or ChaosKind.Exit or ChaosKind.ContainerClose or ChaosKind.Spawn or ChaosKind.GroupRemove or ChaosKind.DmaMove => 1,
        ChaosKind.Map or ChaosKind.Attach or ChaosKind.DmaMap or ChaosKind.MapDma or ChaosKind.DomainAlloc => 4,
        _ => 2,
    };
}
