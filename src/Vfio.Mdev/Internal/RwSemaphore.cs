namespace Vfio.Mdev.Internal;

/// <summary>
/// A reader/writer semaphore with the two operations the mdev core uses on <c>parent->unreg_sem</c>:
/// readers only ever <em>try</em> to enter (<c>down_read_trylock</c>), the writer waits
/// (<c>down_write</c>). A pending or active writer makes every reader's try fail, as in the kernel.
/// </summary>
/// <remarks>Not thread-affine (a reader may leave on another thread), unlike <see cref="ReaderWriterLockSlim"/>.</remarks>
internal sealed class RwSemaphore
{
    private readonly object _gate = new();
    private int _readers;
    private bool _writer;

    public bool TryDownRead()
    {
        lock (_gate)
        {
            if (_writer)
            {
                return false;
            }

            _readers++;
            return true;
        }
    }

    public void UpRead()
    {
        lock (_gate)
        {
            if (--_readers == 0)
            {
                Monitor.PulseAll(_gate);
            }
        }
    }

    public void DownWrite()
    {
        lock (_gate)
        {
            while (_writer)
            {
                Monitor.Wait(_gate);
            }

            _writer = true;
            while (_readers > 0)
            {
                Monitor.Wait(_gate);
            }
        }
    }

    public void UpWrite()
    {
        lock (_gate)
        {
            _writer = false;
            Monitor.PulseAll(_gate);
        }
    }
}
