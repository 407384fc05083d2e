namespace Iommu.VtD.Driver;

// A threaded interrupt handler (request_threaded_irq with IRQF_ONESHOT and no primary handler): the unit's interrupt
// only wakes the handler's thread, which runs one pass at a time and, after a wake that came during a pass, one more.
// Why a thread: the unit sends its event on the thread whose call raised it, a device's DMA thread that may hold any
// locks of its own (an emulator's, a vendor driver's). A handler run there would take the driver's locks inside
// them, and a thread of the driver's own inside the driver's (before session 11 the unit sent events on whichever
// thread next touched it, the invalidation queue's doorbell under the queue lock included). In 5.15 the PRQ handler
// is a threaded IRQ as well. The thread starts when a wake arrives and ends after a short idle time, so an idle unit
// holds no thread (and a platform never disposed leaks none).
internal sealed class ThreadedIrq(string name, Action handler, Action<Exception> onFailure)
{
    // How long an idle handler thread waits for another wake before it ends.
    private const int IdleMilliseconds = 50;

    private readonly object _lock = new();
    private long _raised;
    private long _handled;
    private bool _running;
    private int _thread;

    public string Name { get; } = name;

    // The hard interrupt: IRQ_WAKE_THREAD. Never blocks and never runs the handler on the caller's thread.
    public void Wake()
    {
        bool start;
        lock (_lock)
        {
            _raised++;
            start = !_running;
            _running = true;
            Monitor.PulseAll(_lock);
        }

        if (start)
        {
            var thread = new Thread(static irq => ((ThreadedIrq)irq!).Run()) { IsBackground = true, Name = Name };
            thread.UnsafeStart(this);
        }
    }

    // Whether the caller is the handler's own thread (inside a pass: a callback of the handler).
    public bool IsCurrentThread => Environment.CurrentManagedThreadId == Volatile.Read(ref _thread);

    // synchronize_irq: returns once a pass that began after every wake raised before the call has finished. From the
    // handler's own thread it returns at once, rather than wait for itself.
    public void Synchronize()
    {
        if (IsCurrentThread)
        {
            return;
        }

        lock (_lock)
        {
            long target = _raised;
            while (_handled < target)
            {
                Monitor.Wait(_lock);
            }
        }
    }

    private void Run()
    {
        Volatile.Write(ref _thread, Environment.CurrentManagedThreadId);
        while (true)
        {
            long target;
            lock (_lock)
            {
                if (_handled == _raised)
                {
                    // Whether woken or timed out, look again: a wake counted under the lock is never left behind.
                    Monitor.Wait(_lock, IdleMilliseconds);
                }

                if (_handled == _raised)
                {
                    _running = false;
                    Volatile.Write(ref _thread, 0);
                    return;
                }

                target = _raised; // this pass serves every wake so far: it reads the hardware after they were raised
            }

            try
            {
                handler();
            }
            catch (ObjectDisposedException)
            {
                // The platform went away under the handler: nothing is left to serve.
            }
#pragma warning disable CA1031 // an exception on the handler thread would end the host process: log it, like an oops
            catch (Exception ex)
            {
                try
                {
                    onFailure(ex);
                }
                catch (Exception)
                {
                    // A logger that throws must not end the process either.
                }
            }
#pragma warning restore CA1031
            finally
            {
                lock (_lock)
                {
                    _handled = target;
                    Monitor.PulseAll(_lock);
                }
            }
        }
    }
}
