using Vfio.Type1.Tests.Infrastructure;

namespace Vfio.Type1.Tests;

/// <summary>
/// Synthetic cases (Traces/readme-cases.json, same schema as the recorded trace) written from the trace README's
/// table of surprising behaviours, one or more per case family the public trace does not hold; replayed through
/// the same path and deliberate differences as <see cref="KernelTraceReplayTests"/>.
/// </summary>
public sealed class ReadmeCaseReplayTests
{
    private const string File = "readme-cases.json";

    public static IEnumerable<object[]> Cases() => SyntheticTrace.CaseNames(File);

    [Theory]
    [MemberData(nameof(Cases))]
    public void Readme_case_replays(string name) => KernelTraceReplayTests.ReplayCase(name, SyntheticTrace.Case(File, name));
}
