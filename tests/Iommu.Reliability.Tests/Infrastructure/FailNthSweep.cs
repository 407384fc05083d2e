using Iommu.Memory;

namespace Iommu.Reliability.Tests.Infrastructure;

/// <summary>
/// The systematic <c>fail_nth</c> sweep: runs one call with the 1st, 2nd, … frame allocation failing
/// until the call no longer hits the injected failure, and checks every failing run.
/// </summary>
internal static class FailNthSweep
{
    /// <summary>Upper bound on n, so a call that allocates without end cannot hang the test.</summary>
    public const int MaxN = 4096;

    /// <summary>
    /// For n = 1, 2, …: <paramref name="before"/> (re-arms the scenario and returns whatever the
    /// check needs), then <paramref name="call"/> with <see cref="FrameAllocator.FailNth"/>(n) armed,
    /// then <paramref name="afterFailure"/> when the injection fired. Stops at the first n whose
    /// injection did not fire (the call needed fewer than n allocations) and returns that run's errno.
    /// </summary>
    /// <typeparam name="T">What <paramref name="before"/> hands to the check (e.g. a state snapshot).</typeparam>
    /// <param name="frames">The allocator to inject into.</param>
    /// <param name="before">Called before each run.</param>
    /// <param name="call">The call under test.</param>
    /// <param name="afterFailure">Called with n, the call's errno and the value from <paramref name="before"/> after each injected failure.</param>
    /// <returns>The number of injected failures exercised and the errno of the final (uninjected) run.</returns>
    public static (int Failures, Errno Final) Run<T>(FrameAllocator frames, Func<T> before, Func<Errno> call, Action<int, Errno, T> afterFailure)
    {
        for (int n = 1; n <= MaxN; n++)
        {
            T state = before();
            frames.FailNth(n);
            Errno e;
            bool fired;
            try
            {
                e = call();
            }
            finally
            {
                fired = !frames.FailurePending;
                frames.FailNth(0);
            }

            if (!fired)
            {
                return (n - 1, e);
            }

            afterFailure(n, e, state);
        }

        throw new InvalidOperationException($"the call still allocated after {MaxN} injected failures");
    }

    /// <summary>Asserts two snapshots are equal line by line, naming the first line that differs.</summary>
    /// <param name="expected">Before the call.</param>
    /// <param name="actual">After the failed call.</param>
    /// <param name="what">Which run, for the message.</param>
    public static void AssertSame(IReadOnlyList<string> expected, IReadOnlyList<string> actual, string what)
    {
        int n = Math.Min(expected.Count, actual.Count);
        for (int i = 0; i < n; i++)
        {
            if (!string.Equals(expected[i], actual[i], StringComparison.Ordinal))
            {
                Assert.Fail($"{what}: state differs at line {i}: expected '{expected[i]}', got '{actual[i]}'");
            }
        }

        if (expected.Count != actual.Count)
        {
            Assert.Fail($"{what}: state has {actual.Count} lines, expected {expected.Count} (first extra: '{(actual.Count > n ? actual[n] : expected[n])}')");
        }
    }
}
