namespace Iommu.Core.Tests.Infrastructure;

/// <summary>Measures GC allocation of a piece of code on this thread, robust against one-off runtime work.</summary>
internal static class Allocations
{
    /// <summary>
    /// Runs <paramref name="action"/> up to <paramref name="attempts"/> times and returns the fewest
    /// bytes one run allocated on this thread. A single run can be charged for work the runtime does
    /// on the thread (an on-stack-replacement compile when a loop gets hot); code that allocates on
    /// every run still reports its allocations.
    /// </summary>
    public static long Fewest(Action action, int attempts = 5)
    {
        long fewest = long.MaxValue;
        for (int i = 0; i < attempts && fewest != 0; i++)
        {
            long before = GC.GetAllocatedBytesForCurrentThread();
            action();
            fewest = Math.Min(fewest, GC.GetAllocatedBytesForCurrentThread() - before);
        }

        return fewest;
    }
}
