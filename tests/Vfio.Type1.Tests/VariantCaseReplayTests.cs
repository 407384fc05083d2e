using Vfio.Type1.Tests.Infrastructure;

namespace Vfio.Type1.Tests;

/// <summary>
/// Synthetic cases (Traces/variant-cases.json, same schema as the recorded trace): the siblings a test author writes
/// next to each public case of a family (other unmap ranges over the M1/M2/M3 layout, map alignment/wrap/aperture/vaddr
/// variants, mlock and RLIMIT_MEMLOCK interplay, VADDR sequences, dirty bitmap shapes, GET_INFO argsz, group/container
/// states), with the answers derived from the type1 and mm source; replayed through the same path and deliberate
/// differences as <see cref="KernelTraceReplayTests"/>.
/// </summary>
public sealed class VariantCaseReplayTests
{
    private const string File = "variant-cases.json";

    public static IEnumerable<object[]> Cases() => SyntheticTrace.CaseNames(File);

    [Theory]
    [MemberData(nameof(Cases))]
    public void Variant_case_replays(string name) => KernelTraceReplayTests.ReplayCase(name, SyntheticTrace.Case(File, name));
}
