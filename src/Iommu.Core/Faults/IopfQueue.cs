using Iommu.Devices;

namespace Iommu.Faults;

/// <summary>
/// An I/O page fault queue (<c>struct iopf_queue</c>): the devices whose recoverable faults an IOMMU driver
/// routes through <see cref="IommuCore.QueueIopf"/>, and the work queue that handles their fault groups.
/// </summary>
/// <remarks>
/// <para>Created by <see cref="IommuCore.IopfQueueAlloc"/> (one per IOMMU unit with a page request queue) and
/// released by <see cref="IommuCore.IopfQueueFree"/>.</para>
/// <para>The work queue (5.15: <c>alloc_workqueue("iopf_queue/%s", WQ_UNBOUND, 0)</c>) is a real worker: a
/// group queued by <see cref="IommuCore.QueueIopf"/> is handled on the queue's own background thread (started when
/// work arrives, ended after a short idle time; not a thread-pool item, which a busy pool could leave waiting
/// for its thread injection for hundreds of milliseconds while a device waits for its answer), one group at a
/// time in queue order, and answered through <see cref="IommuCore.PageResponse"/>. Whoever needs the answers waits with
/// <see cref="IommuCore.IopfQueueFlushDev"/> (<c>flush_workqueue</c>), which blocks until every group queued
/// before the call is answered; nothing needs to poll. Thread safety: all members are safe to call concurrently.</para>
/// </remarks>
[KernelSymbol("struct iopf_queue")]
[System.Diagnostics.CodeAnalysis.SuppressMessage("Naming", "CA1711", Justification = "Mirrors struct iopf_queue.")]
public sealed class IopfQueue
{
    private readonly IommuCore _core;
    private readonly object _workLock = new();
    private readonly Queue<IopfGroup> _work = new();
    private long _queued;
    private long _done;
    private bool _running;
    private int _workerThread;

    internal IopfQueue(IommuCore core, string name)
    {
        _core = core;
        Name = name;
    }

    /// <summary>The work queue's name (<c>iopf_queue/</c> followed by the name given at allocation).</summary>
    public string Name { get; }

    // queue->devices and queue->lock.
    internal List<IopfDeviceParam> Devices { get; } = [];

    internal Lock Lock { get; } = new();

    // The driver's wait for the handler that feeds this queue (VT-d: synchronize_irq of the unit's PRQ thread), run by
    // IommuCore.IopfQueueFlushDev before it flushes the work: null when the driver reports synchronously.
    internal Action? SourceFlush { get; set; }

    // How long an idle worker waits for more work before its thread ends: a burst of page requests is served
    // by one thread, and an idle queue holds none.
    private const int IdleMilliseconds = 50;

    // queue_work on the unbound workqueue: one worker drains the queue, started when work arrives.
    internal void QueueWork(IopfGroup group)
    {
        bool start;
        lock (_workLock)
        {
            _work.Enqueue(group);
            _queued++;
            start = !_running;
            _running = true;
            Monitor.PulseAll(_workLock); // wakes an idle worker (flushers re-check their count)
        }

        if (start)
        {
            var worker = new Thread(static q => ((IopfQueue)q!).RunWorker()) { IsBackground = true, Name = Name };
            worker.UnsafeStart(this);
        }
    }

    // flush_workqueue: every group queued before the call has been handled. A flush from the worker itself
    // (a handler that ends up here) returns at once rather than wait for itself.
    internal void Flush()
    {
        if (Environment.CurrentManagedThreadId == Volatile.Read(ref _workerThread))
        {
            return;
        }

        lock (_workLock)
        {
            long target = _queued;
            while (_done < target)
            {
                Monitor.Wait(_workLock);
            }
        }
    }

    private void RunWorker()
    {
        Volatile.Write(ref _workerThread, Environment.CurrentManagedThreadId);
        while (true)
        {
            IopfGroup? group;
            lock (_workLock)
            {
                if (!_work.TryDequeue(out group))
                {
                    // Whether woken or timed out, look again: work queued under the lock is never left behind.
                    Monitor.Wait(_workLock, IdleMilliseconds);
                }

                if (group is null && !_work.TryDequeue(out group))
                {
                    _running = false;
                    Volatile.Write(ref _workerThread, 0);
                    return;
                }
            }

            try
            {
                _core.IopfHandleGroup(group);
            }
            catch (Exception ex) when (ex is ObjectDisposedException or InvalidOperationException)
            {
                // The platform went away under the worker, or the unit rejected the response descriptor
                // (the driver logged it): the group stays unanswered, as after an oops in the kernel's worker.
            }
#pragma warning disable CA1031 // an exception on the worker thread would end the host process: log it, like an oops
            catch (Exception ex)
            {
                try
                {
                    _core.LogIopfWorkerFailure(ex, Name);
                }
                catch (Exception)
                {
                    // A logger that throws must not end the process either.
                }
            }
#pragma warning restore CA1031
            finally
            {
                lock (_workLock)
                {
                    _done++;
                    Monitor.PulseAll(_workLock);
                }
            }
        }
    }

    /// <inheritdoc/>
    public override string ToString() => Name;
}

// struct iopf_device_param: a device on a queue and its partial faults (non-last requests of open groups).
internal sealed class IopfDeviceParam(Device device, IopfQueue queue)
{
    public Device Device { get; } = device;

    public IopfQueue Queue { get; } = queue;

    public List<IommuFault> Partial { get; } = [];
}

// struct iopf_group: the faults of one page request group, partials first, the last one at the end.
internal sealed class IopfGroup(Device device, List<IommuFault> faults)
{
    public Device Device { get; } = device;

    public List<IommuFault> Faults { get; } = faults;
}
