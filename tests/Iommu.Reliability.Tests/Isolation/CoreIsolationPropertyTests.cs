using Iommu.Reliability.Tests.Infrastructure;
using Xunit.Abstractions;

namespace Iommu.Reliability.Tests.Isolation;

/// <summary>
/// Isolation property of the IOMMU core + intel-iommu driver + VT-d model: random sequences of
/// domain alloc/free, attach/detach, AUX enable/disable, aux attach/detach, map/unmap (4K/2M/1G,
/// R/W/RW), the DMA API on the default domains (strict DMA, lazy DMA_FQ with its flush queue and
/// timer) and DMA probes from every device with and without PASID. A DMA succeeds iff the
/// reference model says that RID/PASID's current domain maps the page with that permission, and
/// then reaches exactly the modelled physical address — except inside the deferred window of a lazy
/// unmap, where a stale hit at the old page is allowed until the flush the model predicts; an IOVA is
/// never handed out again before that flush; every op's errno matches the model.
/// </summary>
public sealed class CoreIsolationPropertyTests(ITestOutputHelper output)
{
    [Fact]
    public void Isolation_core_dma_reaches_exactly_what_the_model_maps()
    {
        // The budget is shared with the mixed-levels property below (10^5 ops in CI between them).
        long budget = ReliabilityBudget.Ops * 6 / 10;
        (int samples, long ops, TimeSpan elapsed) = IsolationSampler.Run(
            CoreIsolationGen.Sample,
            RunSample,
            CoreIsolationGen.Print,
            budget,
            ReliabilityBudget.Seed(0x15_0C04E));

        output.WriteLine($"core isolation: {ops} ops executed in {samples} samples, {elapsed.TotalSeconds:F1} s");
        Assert.True(ops >= budget);
    }

    /// <summary>
    /// The same property on units with both stages, where second-level (UNMANAGED under 6.x), first-level
    /// (DMA, and every domain under 5.15) and a nested domain live on one unit: a device's RID attached
    /// to the nested domain, the guest's stage-1 leaves rewritten with and without its invalidation. A
    /// nested DMA succeeds iff the stage-1 leaf (U/S, R/W) and the parent (R/W) allow it and reaches that
    /// page — or, before the guest's invalidation, what an older leaf allowed — and the guest's A/D bits
    /// end as the walk sets them.
    /// </summary>
    [Fact]
    public void Isolation_mixed_first_second_level_and_nested_domains_on_one_unit()
    {
        long budget = ReliabilityBudget.Ops * 4 / 10;
        (int samples, long ops, TimeSpan elapsed) = IsolationSampler.Run(
            CoreIsolationGen.MixedSample,
            RunSample,
            CoreIsolationGen.Print,
            budget,
            ReliabilityBudget.Seed(0x20_0F1E5));

        output.WriteLine($"mixed isolation: {ops} ops executed in {samples} samples, {elapsed.TotalSeconds:F1} s");
        output.WriteLine($"nested: {_nested.Probes} probes, {_nested.Ok} reached a page, {_nested.Stale} answered by a stale stage-1 leaf");
        Assert.True(ops >= budget);
        Assert.True(_nested.Ok > 0 && _nested.Stale > 0, "the nested domain was never reached, or no stale stage-1 translation was ever used");
    }

    private (int Probes, int Ok, int Stale) _nested;

    private long RunSample((int Config, CoreOp[] Ops) sample)
    {
        using var bed = new CoreIsolationBed(CoreIsolationConfig.All[sample.Config]);
        try
        {
            bed.Run(sample.Ops);
        }
        finally
        {
            (int p, int ok, int stale) = bed.NestedStats;
            _nested = (_nested.Probes + p, _nested.Ok + ok, _nested.Stale + stale);
        }

        return bed.Executed;
    }
}
