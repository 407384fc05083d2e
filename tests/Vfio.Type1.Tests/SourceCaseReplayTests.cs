using Vfio.Type1.Tests.Infrastructure;

namespace Vfio.Type1.Tests;

/// <summary>
/// Synthetic cases (Traces/source-cases.json, same schema as the recorded trace) derived from the type1 and vfio
/// core source for variants the public trace and the readme cases leave out (argsz/flags combinations, error
/// precedence, aperture / MSI-window / 2^64 boundaries, VADDR sequences, RLIMIT_MEMLOCK rounding, dma_entry_limit
/// accounting, v1 specifics, group/container ordering); replayed through the same path and deliberate differences
/// as <see cref="KernelTraceReplayTests"/>.
/// </summary>
public sealed class SourceCaseReplayTests
{
    private const string File = "source-cases.json";

    public static IEnumerable<object[]> Cases() => SyntheticTrace.CaseNames(File);

    [Theory]
    [MemberData(nameof(Cases))]
    public void Source_case_replays(string name) => KernelTraceReplayTests.ReplayCase(name, SyntheticTrace.Case(File, name));
}
