using System.Reflection;
using Iommu.Devices;
using Iommu.Domains;
using Iommu.Mm;
using Iommu.Reliability.Tests.Infrastructure;
using Iommu.VtD.Driver;
using Xunit.Abstractions;

namespace Iommu.Reliability.Tests.Concurrency;

/// <summary>The background threads (the VT-d PRQ interrupt thread, the iopf worker) against user callbacks that throw or wait, and Platform.Dispose.</summary>
public sealed class BackgroundThreadTests(ITestOutputHelper output)
{
    private const ulong Page = 4096;
    private static readonly TimeSpan Wait = TimeSpan.FromSeconds(3);

    // A device fault handler that throws on the PRQ thread. 5.15: a handler that fails makes
    // intel_svm_prq_report return an error and the driver answers the request Invalid (handle_bad_prq_event),
    // then goes on with the queue. Here the exception aborts the pass before PQH is written: the request stays
    // pending in the core (the handler can never be unregistered), the device never gets an answer, every later
    // pass re-reads the same descriptor first (the handler sees it again and throws again), so no other device
    // on the unit is ever answered; and an unbind's PRQ drain on a caller's thread throws the handler's exception.
    [Fact]
    public void Throwing_device_fault_handler_on_the_prq_thread_answers_invalid_and_leaves_the_unit_serving()
    {
        var bed = new SvaTestBed();
        PciDevice a = bed.AddDevice("0000:00:02.0", sva: true);
        PciDevice b = bed.AddDevice("0000:00:03.0", sva: true);
        var mm = new ProcessAddressSpace(bed.Pages, "p");
        ulong va = mm.Mmap(16 * Page);
        Assert.Equal(Errno.None, bed.Iommu.SvaBindDevice(a, mm, null, out IommuSva? ha));
        Assert.Equal(Errno.None, bed.Iommu.SvaBindDevice(b, mm, null, out IommuSva? hb));
        uint pasid = bed.Iommu.SvaGetPasid(ha!);

        // The user's own handler for a (API-legal: drop iommu_queue_iopf, register one's own), with a bug.
        Assert.Equal(Errno.None, bed.Iommu.UnregisterDeviceFaultHandler(a));
        int calls = 0;
        Assert.Equal(Errno.None, bed.Iommu.RegisterDeviceFaultHandler(a, (_, _) =>
        {
            Interlocked.Increment(ref calls);
            throw new InvalidOperationException("bug in the user's fault handler");
        }, null));

        var problems = new List<string>();
        Assert.Equal(DmaStatus.PageRequestPending, a.AtsDmaRead(pasid, va, new byte[8]).Status);
        if (!a.WaitForPageGroupResponses(Wait))
        {
            problems.Add($"device a never got an answer to its page request within {Wait.TotalSeconds} s (5.15 answers Invalid)");
        }

        // Another device's request on the same unit, answered by iommu_queue_iopf and the iopf worker.
        Assert.Equal(DmaStatus.PageRequestPending, b.AtsDmaWrite(pasid, va + Page, new byte[8]).Status);
        if (!b.WaitForPageGroupResponses(Wait))
        {
            problems.Add($"device b (a different device, a working handler) never got an answer within {Wait.TotalSeconds} s");
        }

        Thread.Sleep(200);
        if (Volatile.Read(ref calls) != 1)
        {
            problems.Add($"a's handler saw its one page request {Volatile.Read(ref calls)} times");
        }

        Errno unreg = bed.Iommu.UnregisterDeviceFaultHandler(a);
        if (unreg != Errno.None)
        {
            problems.Add($"UnregisterDeviceFaultHandler(a) = {unreg}: the request the handler threw on is pending forever");
        }

        try
        {
            bed.Iommu.SvaUnbindDevice(hb!);
        }
        catch (Exception ex)
        {
            problems.Add($"SvaUnbindDevice(b) threw a's handler's exception from its PRQ drain: {ex.GetType().Name}: {ex.Message}");
        }

        output.WriteLine(string.Join("\n", problems));
        Assert.True(problems.Count == 0, string.Join("\n", problems));
        bed.Iommu.SvaUnbindDevice(ha!);
        mm.Dispose();
        bed.Dispose();
    }

    // The PRQ thread runs its pass without an access scope. Platform.Dispose waits only for open
    // scopes, so it frees the native memory while a pass is between its (checked) read of a descriptor and its
    // (unchecked) write of the response descriptor into the invalidation queue (IntelIommuUnit.SubmitSync writes
    // through the frame allocator's raw region). The interleaving is forced by parking the pass at the queue
    // lock (as an OS preemption at that point would), via reflection on the driver's private _qiLock.
    [Fact]
    public void Dispose_waits_for_a_prq_pass_in_progress()
    {
        var logs = new CapturingLoggerFactory();
        var bed = new SvaTestBed(loggerFactory: logs);
        PciDevice bad = bed.AddDevice("0000:00:02.0", sva: true);
        IntelIommuUnit unit = bed.Driver.Units[0];
        object qiLock = typeof(IntelIommuUnit).GetField("_qiLock", BindingFlags.NonPublic | BindingFlags.Instance)!.GetValue(unit)!;
        FieldInfo owner = qiLock.GetType().GetField("_owner", BindingFlags.NonPublic | BindingFlags.Instance)!;
        const int Parked = 0x7FFF_FFF0; // no real thread id: the lock looks held by someone else

        owner.SetValue(qiLock, Parked);

        // A request without PASID: the PRQ pass answers it Invalid itself (handle_bad_prq_event -> qi_submit_sync).
        Assert.Equal(DmaStatus.PageRequestPending, bad.AtsDmaRead(null, 0x4000_0000, new byte[8]).Status);
        Thread.Sleep(300); // the PRQ thread is now spinning for the queue lock, mid-pass

        var disposer = new Thread(() => bed.Platform.Dispose()) { IsBackground = true };
        disposer.Start();

        // Released now, a pass outside any scope would write into the freed queue and end the test host with an
        // access violation: on failure the pass stays parked (the platform is left to the process).
        Assert.False(disposer.Join(TimeSpan.FromSeconds(1)), "Platform.Dispose returned while the PRQ thread was inside a pass, about to write the page group response into the invalidation queue's (now freed) native memory");
        owner.SetValue(qiLock, 0);
        Assert.True(disposer.Join(TimeSpan.FromSeconds(10)), "Dispose never returned after the pass finished");
        output.WriteLine("logged: " + string.Join("\n", logs.Entries));
    }

    // SvaUnbind holds the driver-wide _deviceDomainLock (and the group's mutex) while its PRQ drain waits
    // for the iopf worker (IopfQueueFlushDev -> IopfQueue.Flush). The worker handles faults under the process's lock
    // and a copy-on-write break there runs the process's MMU notifiers on the worker thread. A user's notifier that
    // keeps an IOMMU domain in step with the process (iommu_unmap on invalidate_range) needs _deviceDomainLock when
    // that domain has an ATS device (iommu_flush_dev_iotlb): the worker waits for the unbind, the unbind for the
    // worker. 5.15 holds no such lock there (device_domain_lock is a spinlock, never held across a sleep).
    [Fact]
    public void Unbind_draining_the_iopf_worker_while_a_notifier_on_the_worker_unmaps_does_not_deadlock()
    {
        var bed = new SvaTestBed();
        PciDevice s = bed.AddDevice("0000:00:02.0", sva: true);
        PciDevice s2 = bed.AddDevice("0000:00:03.0", sva: true);
        Domains.IDomain dom = bed.AtsDomainWithPage("0000:00:04.0");

        var mm = new ProcessAddressSpace(bed.Pages, "p");
        ulong va = mm.Mmap(16 * Page);
        Assert.Equal(Errno.None, mm.Read(va, new byte[8])); // the zero page: a device write is then a COW break
        Assert.Equal(Errno.None, bed.Iommu.SvaBindDevice(s, mm, null, out IommuSva? hs));
        Assert.Equal(Errno.None, bed.Iommu.SvaBindDevice(s2, mm, null, out IommuSva? hs2));
        uint pasid = bed.Iommu.SvaGetPasid(hs!);

        using var inNotifier = new ManualResetEventSlim();
        using var unbindStarted = new ManualResetEventSlim();
        var mirror = new OnceNotifier(() =>
        {
            inNotifier.Set();
            unbindStarted.Wait(TimeSpan.FromSeconds(5));
            Thread.Sleep(300); // the unbind is now in its drain, waiting for this worker
            _ = bed.Iommu.Unmap(dom, 0x10_0000, Page);
        });
        mm.MmuNotifierRegister(mirror);

        Assert.Equal(DmaStatus.PageRequestPending, s.AtsDmaWrite(pasid, va, new byte[8]).Status);
        Assert.True(inNotifier.Wait(TimeSpan.FromSeconds(5)), "the iopf worker never ran the notifier (no COW break?)");
        Exception? unbindError = null;
        var unbinder = new Thread(() =>
        {
            try
            {
                bed.Iommu.SvaUnbindDevice(hs2!);
            }
            catch (Exception ex)
            {
                unbindError = ex;
            }
        }) { IsBackground = true };
        unbinder.Start();
        unbindStarted.Set();
        bool unbound = unbinder.Join(TimeSpan.FromSeconds(10));
        bool answered = s.WaitForPageGroupResponses(TimeSpan.FromSeconds(1));
        output.WriteLine($"unbind returned: {unbound}; device s answered: {answered}");

        // A deadlocked platform cannot be disposed: leave it to the process.
        Assert.True(unbound, "SvaUnbindDevice(s2) did not return within 10 s: it holds _deviceDomainLock waiting for the iopf worker, whose MMU notifier waits for _deviceDomainLock (deadlock)");
        Assert.Null(unbindError);
        Assert.True(answered);
        bed.Iommu.SvaUnbindDevice(hs!);
        mm.Dispose();
        bed.Dispose();
    }

    // A device fault handler that unbinds the device's own bind (on the PRQ thread, inside the pass): the unbind's
    // drain cannot wait for the pass it is called from. Before, it ran a pass of its own inside it, which reported
    // and answered the queued requests a second time once the outer pass went on.
    [Fact]
    public void An_unbind_from_a_fault_handler_on_the_prq_thread_answers_each_request_once()
    {
        using var bed = new SvaTestBed();
        PciDevice dev = bed.AddDevice("0000:00:02.0", sva: true);
        using var mm = new ProcessAddressSpace(bed.Pages, "p");
        ulong va = mm.Mmap(16 * Page);
        Assert.Equal(Errno.None, bed.Iommu.SvaBindDevice(dev, mm, null, out IommuSva? handle));
        uint pasid = bed.Iommu.SvaGetPasid(handle!);
        Assert.Equal(Errno.None, bed.Iommu.UnregisterDeviceFaultHandler(dev));
        int calls = 0;
        Assert.Equal(Errno.None, bed.Iommu.RegisterDeviceFaultHandler(dev, (_, _) =>
        {
            if (Interlocked.Increment(ref calls) == 1)
            {
                bed.Iommu.SvaUnbindDevice(handle!);
            }

            return Errno.EINVAL; // not taken: the driver answers Invalid
        }, null));

        ulong mark = bed.Mark();
        bed.Unit.Write32(0xE0, 0x8000_0000); // masked: both requests wait in the queue for one pass
        for (int prgi = 1; prgi <= 3; prgi++)
        {
            Assert.True(bed.Unit.PageRequest(dev, new PageRequestMessage(pasid, va + ((ulong)prgi * Page), true, false, false, false, prgi, LastInGroup: true)));
        }

        bed.Unit.Write32(0xE0, 0);
        Assert.Equal(Errno.None, bed.Iommu.IopfQueueFlushDev(dev));
        var perGroup = bed.Responses(mark).GroupBy(r => (int)((r.Q1 >> 3) & 0x1FF)).ToDictionary(g => g.Key, g => g.Count());
        Assert.Equal(new Dictionary<int, int> { [1] = 1, [2] = 1, [3] = 1 }, perGroup);
        Assert.Equal(3, Volatile.Read(ref calls)); // once each: the pass keeps its svm and sdev across descriptors, as 5.15
    }

    private sealed class CapturingLoggerFactory : Microsoft.Extensions.Logging.ILoggerFactory, Microsoft.Extensions.Logging.ILogger
    {
        public System.Collections.Concurrent.ConcurrentQueue<string> Entries { get; } = new();

        public void AddProvider(Microsoft.Extensions.Logging.ILoggerProvider provider)
        {
        }

        public Microsoft.Extensions.Logging.ILogger CreateLogger(string categoryName) => this;

        public void Dispose()
        {
        }

        public IDisposable? BeginScope<TState>(TState state)
            where TState : notnull => null;

        public bool IsEnabled(Microsoft.Extensions.Logging.LogLevel logLevel) => logLevel >= Microsoft.Extensions.Logging.LogLevel.Warning;

        public void Log<TState>(Microsoft.Extensions.Logging.LogLevel logLevel, Microsoft.Extensions.Logging.EventId eventId, TState state, Exception? exception, Func<TState, Exception?, string> formatter)
        {
            if (IsEnabled(logLevel))
            {
                Entries.Enqueue($"{logLevel} {formatter(state, exception)} {exception?.GetType().Name}: {exception?.Message} {exception?.StackTrace?.Split('\n').FirstOrDefault()}");
            }
        }
    }
}
