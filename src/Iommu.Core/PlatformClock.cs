using Iommu.Memory;

namespace Iommu;

/// <summary>
/// The platform's time, as the kernel's <c>jiffies</c> and timer wheel: virtual, starting at zero, and
/// moved only by <c>Advance</c>. Timers the model arms (the DMA flush queue's
/// <c>IOVA_FQ_TIMEOUT</c>) fire inside <see cref="Advance"/>, on the caller's thread, when the clock
/// passes their deadline.
/// </summary>
/// <remarks>
/// <para>Where we differ from the kernel, deliberately: in the kernel time passes by itself and a
/// timer fires in softirq context some time after it expires (rounded up to a jiffy, 4 ms at HZ=250,
/// plus timer-wheel slack). Here nothing happens until someone calls <see cref="Advance"/>, and a timer
/// fires exactly at its deadline (<see cref="Now"/> reads the deadline inside the callback), so tests
/// and users see the same sequence on every run. A host that wants wall-clock behaviour advances the
/// clock from its own timer.</para>
/// <para>Thread safety: <see cref="Now"/> may be read from any thread. Calls to <see cref="Advance"/>
/// are serialised: timers run one at a time, in deadline order (ties in the order they were armed),
/// while other threads keep calling into the platform. A timer callback must not call
/// <see cref="Advance"/> (<see cref="InvalidOperationException"/>).</para>
/// <para>Dispose: after <see cref="Platform.Dispose"/>, <see cref="Advance"/> throws
/// <see cref="ObjectDisposedException"/>; an advance already running holds the platform's access scope
/// while its timers run, so the dispose waits for it.</para>
/// </remarks>
[KernelSymbol("jiffies")]
public sealed class PlatformClock
{
    private readonly PhysicalMemory _memory;
    private readonly Lock _timersLock = new();
    private readonly Lock _advanceLock = new();
    private readonly List<ClockTimer> _armed = [];
    private long _nowTicks;
    private long _armSequence;
    private bool _advancing;

    internal PlatformClock(PhysicalMemory memory) => _memory = memory;

    /// <summary>Time since the platform was built: the sum of every <see cref="Advance"/> so far (inside a timer callback, that timer's deadline).</summary>
    public TimeSpan Now => TimeSpan.FromTicks(Volatile.Read(ref _nowTicks));

    /// <summary>
    /// Moves the clock forward by <paramref name="delta"/>, running every timer whose deadline falls in
    /// <c>(Now, Now + delta]</c> in deadline order, each with <see cref="Now"/> at its deadline; timers the
    /// callbacks arm run too when their deadline falls in the same window.
    /// </summary>
    /// <param name="delta">How far; <see cref="TimeSpan.Zero"/> runs only timers already due.</param>
    /// <exception cref="ArgumentOutOfRangeException"><paramref name="delta"/> is negative, or would take the clock past <see cref="TimeSpan.MaxValue"/>.</exception>
    /// <exception cref="InvalidOperationException">Called from a timer callback.</exception>
    /// <exception cref="ObjectDisposedException">The platform is disposed.</exception>
    public void Advance(TimeSpan delta)
    {
        using PhysicalMemory.AccessScope guard = _memory.EnterAccess();
        ArgumentOutOfRangeException.ThrowIfLessThan(delta, TimeSpan.Zero);
        lock (_advanceLock)
        {
            if (_advancing)
            {
                throw new InvalidOperationException("PlatformClock.Advance was called from a timer callback.");
            }

            _advancing = true;
            try
            {
                long now = Volatile.Read(ref _nowTicks);
                if (delta.Ticks > long.MaxValue - now)
                {
                    throw new ArgumentOutOfRangeException(nameof(delta), delta, $"The clock is at {Now}; advancing it by that much passes TimeSpan.MaxValue.");
                }

                long end = now + delta.Ticks;
                while (TakeDue(end) is ClockTimer due)
                {
                    due.Callback();
                }

                Volatile.Write(ref _nowTicks, end);
            }
            finally
            {
                _advancing = false;
            }
        }
    }

    /// <summary>Arms <paramref name="timer"/> to fire <paramref name="delay"/> from now, re-arming it if armed (<c>mod_timer</c>).</summary>
    internal void Arm(ClockTimer timer, TimeSpan delay)
    {
        lock (_timersLock)
        {
            timer.Deadline = Volatile.Read(ref _nowTicks) + delay.Ticks;
            timer.Sequence = ++_armSequence;
            if (!timer.Armed)
            {
                timer.Armed = true;
                _armed.Add(timer);
            }
        }
    }

    /// <summary>Disarms <paramref name="timer"/> (<c>del_timer</c>); a callback already running is not waited for.</summary>
    internal void Cancel(ClockTimer timer)
    {
        lock (_timersLock)
        {
            if (timer.Armed)
            {
                timer.Armed = false;
                _armed.Remove(timer);
            }
        }
    }

    // The armed timer with the earliest deadline ≤ end (ties: armed first), disarmed, with Now moved to its deadline.
    private ClockTimer? TakeDue(long end)
    {
        lock (_timersLock)
        {
            ClockTimer? best = null;
            foreach (ClockTimer t in _armed)
            {
                if (t.Deadline <= end && (best is null || t.Deadline < best.Deadline || (t.Deadline == best.Deadline && t.Sequence < best.Sequence)))
                {
                    best = t;
                }
            }

            if (best is not null)
            {
                best.Armed = false;
                _armed.Remove(best);
                if (best.Deadline > Volatile.Read(ref _nowTicks))
                {
                    Volatile.Write(ref _nowTicks, best.Deadline);
                }
            }

            return best;
        }
    }

    /// <summary>A timer of the model (<c>struct timer_list</c>): a callback run by <see cref="Advance"/> at its deadline.</summary>
    internal sealed class ClockTimer(Action callback)
    {
        public Action Callback { get; } = callback;

        public long Deadline { get; set; }

        public long Sequence { get; set; }

        public bool Armed { get; set; }
    }
}
