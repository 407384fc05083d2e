using Iommu.Reliability.Tests.Infrastructure;
using Xunit.Abstractions;

namespace Iommu.Reliability.Tests.Isolation;

/// <summary>
/// Isolation property at the VFIO level (see <see cref="VfioIsolationBed"/>): an ADI's DMA reaches
/// exactly the host page pinned for its guest's IOVA, and faults otherwise. A fifth of the
/// operation budget of the core property.
/// </summary>
public sealed class VfioIsolationPropertyTests(ITestOutputHelper output)
{
    [Fact]
    public void Isolation_vfio_adi_dma_reaches_exactly_the_guests_pinned_pages()
    {
        long budget = Math.Max(1, ReliabilityBudget.Ops / 5);
        (int samples, long ops, TimeSpan elapsed) = IsolationSampler.Run(
            VfioIsolationGen.Sample,
            RunSample,
            VfioIsolationGen.Print,
            budget,
            ReliabilityBudget.Seed(0xF10_150));

        output.WriteLine($"vfio isolation: {ops} ops executed in {samples} samples, {elapsed.TotalSeconds:F1} s");
        Assert.True(ops >= budget);
    }

    private static long RunSample((int Config, VfioOp[] Ops) sample)
    {
        using var bed = new VfioIsolationBed();
        bed.Run(sample.Ops);
        return bed.Executed;
    }
}
