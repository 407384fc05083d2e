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
        (int samples, long ops, TimeSpan elapsed) = IsolationSampler.Run(
            CoreIsolationGen.Sample,
            RunSample,
            CoreIsolationGen.Print,
            ReliabilityBudget.Ops,
            ReliabilityBudget.Seed(0x15_0C04E));

        output.WriteLine($"core isolation: {ops} ops executed in {samples} samples, {elapsed.TotalSeconds:F1} s");
        Assert.True(ops >= ReliabilityBudget.Ops);
    }

    private static long RunSample((int Config, CoreOp[] Ops) sample)
    {
        using var bed = new CoreIsolationBed(CoreIsolationConfig.All[sample.Config]);
        bed.Run(sample.Ops);
        return bed.Executed;
    }
}
