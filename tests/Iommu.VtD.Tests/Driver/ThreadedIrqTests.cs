using Iommu.VtD.Driver;

namespace Iommu.VtD.Tests.Driver;

/// <summary>
/// The driver's threaded interrupt handler (the PRQ interrupt's prq_event_thread): a wake never runs the handler on
/// the waking thread (which may hold any of the driver's locks), passes never overlap, a wake during a pass gets a
/// pass of its own, synchronize waits for a pass that began after every earlier wake, a failing pass is reported
/// and the thread goes on, and an idle handler holds no thread.
/// </summary>
public sealed class ThreadedIrqTests
{
    private static readonly TimeSpan Long = TimeSpan.FromSeconds(30);

    [Fact]
    public void A_wake_returns_while_the_handler_is_blocked_and_the_handler_runs_on_its_own_named_thread()
    {
        using var release = new ManualResetEventSlim();
        using var entered = new ManualResetEventSlim();
        string? threadName = null;
        int caller = Environment.CurrentManagedThreadId, handlerThread = 0;
        var irq = new ThreadedIrq("dmar7-prq", () =>
        {
            threadName = Thread.CurrentThread.Name;
            handlerThread = Environment.CurrentManagedThreadId;
            entered.Set();
            release.Wait(Long);
        }, ex => throw ex);

        irq.Wake(); // would never return if the pass ran here: the handler waits for the release below
        Assert.True(entered.Wait(Long));
        release.Set();
        irq.Synchronize();
        Assert.NotEqual(caller, handlerThread);
        Assert.Equal("dmar7-prq", threadName);
    }

    [Fact]
    public void Passes_never_overlap_and_every_wake_is_served_by_a_pass_that_began_after_it()
    {
        int running = 0, overlaps = 0, early = 0;
        long started = 0, served = 0;
        var irq = new ThreadedIrq("irq", () =>
        {
            if (Interlocked.Increment(ref running) != 1)
            {
                Interlocked.Increment(ref overlaps);
            }

            // Each pass serves the wakes counted before it began, as the PRQ pass reads PQT after its wake.
            long seen = Interlocked.Read(ref started);
            Thread.SpinWait(200);
            Volatile.Write(ref served, seen);
            Interlocked.Decrement(ref running);
        }, ex => throw ex);

        var wakers = Enumerable.Range(0, 4).Select(_ => new Thread(() =>
        {
            for (int i = 0; i < 2_000; i++)
            {
                long mine = Interlocked.Increment(ref started);
                irq.Wake();
                if (i % 16 == 0)
                {
                    irq.Synchronize();
                    if (Volatile.Read(ref served) < mine)
                    {
                        Interlocked.Increment(ref early); // synchronize returned before this wake was served
                    }
                }
            }
        })).ToList();
        wakers.ForEach(t => t.Start());
        wakers.ForEach(t => Assert.True(t.Join(Long)));
        irq.Synchronize();

        Assert.Equal(0, overlaps);
        Assert.Equal(0, early);
        Assert.Equal(Interlocked.Read(ref started), Volatile.Read(ref served));
    }

    [Fact]
    public void A_wake_during_a_pass_gets_another_pass()
    {
        using var inFirst = new ManualResetEventSlim();
        using var release = new ManualResetEventSlim();
        int passes = 0;
        var irq = new ThreadedIrq("irq", () =>
        {
            if (Interlocked.Increment(ref passes) == 1)
            {
                inFirst.Set();
                release.Wait(Long);
            }
        }, ex => throw ex);

        irq.Wake();
        Assert.True(inFirst.Wait(Long));
        irq.Wake(); // during the first pass: that pass may have read the hardware before this event
        release.Set();
        irq.Synchronize();
        Assert.Equal(2, Volatile.Read(ref passes));
    }

    [Fact]
    public void Synchronize_from_the_handler_returns_at_once_and_without_wakes_at_all()
    {
        new ThreadedIrq("irq", () => { }, ex => throw ex).Synchronize(); // nothing raised: nothing to wait for

        ThreadedIrq? self = null;
        using var done = new ManualResetEventSlim();
        self = new ThreadedIrq("irq", () =>
        {
            self!.Synchronize(); // a handler that ends up waiting for its own interrupt must not wait for itself
            done.Set();
        }, ex => throw ex);
        self.Wake();
        Assert.True(done.Wait(Long));
    }

    [Fact]
    public void A_failing_pass_is_reported_and_later_wakes_are_still_served()
    {
        var failures = new List<Exception>();
        int passes = 0;
        var irq = new ThreadedIrq("irq", () =>
        {
            if (Interlocked.Increment(ref passes) == 1)
            {
                throw new InvalidOperationException("first pass fails");
            }
        }, ex =>
        {
            lock (failures)
            {
                failures.Add(ex);
            }
        });

        irq.Wake();
        irq.Synchronize();
        irq.Wake();
        irq.Synchronize();
        Assert.Equal(2, Volatile.Read(ref passes));
        Assert.Equal("first pass fails", Assert.Single(failures).Message);

        // A platform disposed under the handler ends the pass quietly: nothing is reported.
        var quiet = new ThreadedIrq("irq", () => throw new ObjectDisposedException("platform"), failures.Add);
        quiet.Wake();
        quiet.Synchronize();
        Assert.Single(failures);
    }

    [Fact]
    public void An_idle_handler_thread_ends_and_a_later_wake_starts_a_new_one()
    {
        var threads = new List<Thread>();
        var irq = new ThreadedIrq("irq", () =>
        {
            lock (threads)
            {
                threads.Add(Thread.CurrentThread);
            }
        }, ex => throw ex);

        irq.Wake();
        irq.Synchronize();
        Thread first;
        lock (threads)
        {
            first = threads[0];
        }

        Assert.True(first.Join(Long), "the handler thread did not end when idle");
        irq.Wake();
        irq.Synchronize();
        lock (threads)
        {
            Assert.Equal(2, threads.Count);
            Assert.NotSame(first, threads[1]);
        }
    }
}
