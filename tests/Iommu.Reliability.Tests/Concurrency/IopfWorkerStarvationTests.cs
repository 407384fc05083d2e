using Iommu.Devices;
using Iommu.Mm;
using Iommu.Reliability.Tests.Infrastructure;

namespace Iommu.Reliability.Tests.Concurrency;

/// <summary>Tests that block the process's thread pool run alone: they would starve every other test's pool work.</summary>
[CollectionDefinition(Name, DisableParallelization = true)]
public sealed class ThreadPoolStarvationGroup
{
    /// <summary>The collection's name.</summary>
    public const string Name = "thread pool starvation";
}

/// <summary>
/// The iopf work queue answers page requests whatever the host's thread pool is doing: an emulator's pool may be
/// busy with its own blocking work, and a device waiting for its page group response must not wait for the pool's
/// thread injection (about one new thread per half second). Found when the worker was a thread-pool item:
/// <see cref="PageRequestMunmapRaceTests"/> then saw no DMA succeed on a loaded machine.
/// </summary>
[Collection(ThreadPoolStarvationGroup.Name)]
public sealed class IopfWorkerStarvationTests
{
    private const ulong Page = 4096;

    [Theory]
    [InlineData(1)]
    [InlineData(4)]
    public void Page_requests_are_answered_while_every_thread_pool_thread_is_blocked(int pages)
    {
        using var bed = new SvaTestBed();
        PciDevice dev = bed.AddDevice("0000:00:02.0", sva: true);
        using var mm = new ProcessAddressSpace(bed.Pages, "p");
        Assert.Equal(Errno.None, bed.Iommu.SvaBindDevice(dev, mm, null, out IommuSva? h));
        uint pasid = bed.Iommu.SvaGetPasid(h!);
        ulong va = mm.Mmap(Page * (ulong)pages); // never touched: each first read sends a page request

        // Every pool thread blocked, and more blocking items queued behind them: pool work queued now starts only
        // after the pool has injected a thread per blocker, many seconds.
        ThreadPool.GetMinThreads(out int workers, out _);
        // Not disposed: queued blockers touch them after the test returns.
        var release = new ManualResetEventSlim();
        var running = new CountdownEvent(workers);
        int started = 0;
        for (int i = 0; i < workers + 32; i++)
        {
            ThreadPool.UnsafeQueueUserWorkItem(
                _ =>
                {
                    if (Interlocked.Increment(ref started) <= workers)
                    {
                        running.Signal();
                    }

                    release.Wait(TimeSpan.FromSeconds(30));
                },
                null);
        }

        try
        {
            Assert.True(running.Wait(TimeSpan.FromSeconds(30)), "the pool never ran its threads");
            byte[] b = new byte[64];
            for (int p = 0; p < pages; p++)
            {
                Assert.Equal(DmaStatus.PageRequestPending, dev.AtsDmaRead(pasid, va + ((ulong)p * Page), b).Status);
            }

            // A hang detector, not a speed goal: the bound is far above a normal answer and far below what the
            // pool's injection would take to reach a queued worker.
            var flusher = new Thread(() => bed.Iommu.IopfQueueFlushDev(dev).ThrowIfError());
            flusher.Start();
            Assert.True(flusher.Join(TimeSpan.FromSeconds(5)), "page requests unanswered while the thread pool is blocked");
            for (int p = 0; p < pages; p++)
            {
                DmaResult r = dev.AtsDmaRead(pasid, va + ((ulong)p * Page), b);
                Assert.Equal(DmaStatus.Ok, r.Status);
                Assert.All(b, x => Assert.Equal(0, x)); // an anonymous page faulted in by the worker reads zeros
            }
        }
        finally
        {
            release.Set();
        }

        bed.Iommu.SvaUnbindDevice(h!);
    }
}
