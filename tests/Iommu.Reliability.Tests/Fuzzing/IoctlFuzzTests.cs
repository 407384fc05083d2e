using System.Diagnostics;
using Iommu.Reliability.Tests.Infrastructure;
using Xunit.Abstractions;

namespace Iommu.Reliability.Tests.Fuzzing;

/// <summary>
/// Raw-bytes fuzzing of <c>Ioctl(request, Span&lt;byte&gt;)</c> on the container and the group fd
/// (<see cref="FuzzRunner"/> for the oracle). Each test runs <see cref="ReliabilityBudget.Ops"/> inputs;
/// RELIABILITY_SEED replays a seed, RELIABILITY_OPS raises the count for longer local runs.
/// </summary>
public sealed class IoctlFuzzTests(ITestOutputHelper output)
{
    private static readonly FuzzScenario[] ContainerScenarios =
    [
        FuzzScenario.ContainerV2, FuzzScenario.ContainerV2Dirty, FuzzScenario.ContainerV1, FuzzScenario.ContainerV2Full,
        FuzzScenario.ContainerV2, FuzzScenario.ContainerNoBackend, FuzzScenario.ContainerV2Full, FuzzScenario.ContainerNoGroup,
    ];

    private static readonly FuzzScenario[] GroupScenarios =
    [
        FuzzScenario.GroupNoContainer, FuzzScenario.GroupContainerNoBackend, FuzzScenario.GroupWithDeviceFd, FuzzScenario.ContainerV2,
    ];

    [Fact]
    public void Container_ioctl_fuzz_keeps_errno_contract_and_state()
    {
        Run(ReliabilityBudget.Seed(0xC0_77A1_0E55UL), ContainerScenarios, groupShare: 0, epochLength: 5000);
    }

    [Fact]
    public void Group_ioctl_fuzz_keeps_errno_contract_and_state()
    {
        // Mostly group-fd requests, with container requests mixed in so the group walks every state
        // (no container, container without backend, with backend, with device fds open).
        Run(ReliabilityBudget.Seed(0x6_20_0F_F22UL), GroupScenarios, groupShare: 70, epochLength: 2500);
    }

    private void Run(ulong seed, FuzzScenario[] scenarios, int groupShare, int epochLength)
    {
        var runner = new FuzzRunner();
        var sw = Stopwatch.StartNew();
        runner.Run(seed, ReliabilityBudget.Ops, epochLength, scenarios, groupShare);
        sw.Stop();
        output.WriteLine($"seed {seed}");
        output.WriteLine(runner.Summary(sw.Elapsed));
        foreach (string f in runner.Failures)
        {
            output.WriteLine(f);
        }

        Assert.True(runner.FailureCount == 0, $"{runner.FailureCount} fuzz failure(s); first:\n{(runner.Failures.Count > 0 ? runner.Failures[0] : "")}");
        Assert.True(runner.Inputs >= ReliabilityBudget.Ops, $"only {runner.Inputs} inputs ran");
    }
}
