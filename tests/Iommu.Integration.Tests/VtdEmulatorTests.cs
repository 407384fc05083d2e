using VtdEmulator;

namespace Iommu.Integration.Tests;

/// <summary>The embedding sample (samples/VtdEmulator, docs/embedding-vtd.md) runs and every check it makes holds.</summary>
public sealed class VtdEmulatorTests
{
    [Fact]
    public void The_sample_emulator_runs_its_guest_through_mmio_only_and_every_check_holds()
    {
        EmulatorReport report = Machine.Run();
        Assert.True(report.AllChecksPassed, report.Describe());
        Assert.Equal(12, report.Checks.Count);
        Assert.Equal(2, report.Lines.Count(l => l.Contains("DMAR fault", StringComparison.Ordinal)));
    }
}
