namespace Iommu.Core.Tests;

public sealed class PlatformClockTests
{
    private static readonly TimeSpan Ms = TimeSpan.FromMilliseconds(1);

    [Fact]
    public void Time_moves_only_when_advanced()
    {
        using var p = new Platform(new PlatformOptions { MemorySize = Sizes.GiB, TableMemorySize = 16 * Sizes.MiB });
        Assert.Equal(TimeSpan.Zero, p.Clock.Now);
        p.Clock.Advance(3 * Ms);
        p.Clock.Advance(TimeSpan.Zero);
        Assert.Equal(3 * Ms, p.Clock.Now);
        Assert.Throws<ArgumentOutOfRangeException>(() => p.Clock.Advance(-Ms));
        Assert.Equal(3 * Ms, p.Clock.Now);
    }

    [Fact]
    public void Timers_fire_in_deadline_order_at_their_deadline_and_may_arm_timers_in_the_same_window()
    {
        using var p = new Platform(new PlatformOptions { MemorySize = Sizes.GiB, TableMemorySize = 16 * Sizes.MiB });
        PlatformClock clock = p.Clock;
        var log = new List<string>();
        PlatformClock.ClockTimer? c = null;
        var a = new PlatformClock.ClockTimer(() => log.Add($"a@{clock.Now.TotalMilliseconds}"));
        var b = new PlatformClock.ClockTimer(() =>
        {
            log.Add($"b@{clock.Now.TotalMilliseconds}");
            clock.Arm(c!, 2 * Ms);
        });
        c = new PlatformClock.ClockTimer(() => log.Add($"c@{clock.Now.TotalMilliseconds}"));
        var d = new PlatformClock.ClockTimer(() => log.Add("d"));
        clock.Arm(a, 10 * Ms);
        clock.Arm(b, 5 * Ms);
        clock.Arm(d, 6 * Ms);
        clock.Arm(d, 20 * Ms); // mod_timer of an armed timer moves it
        clock.Cancel(a);
        clock.Arm(a, 8 * Ms);

        clock.Advance(9 * Ms);

        Assert.Equal(["b@5", "c@7", "a@8"], log);
        Assert.Equal(9 * Ms, clock.Now);
        clock.Cancel(d);
        clock.Advance(TimeSpan.FromSeconds(1));
        Assert.Equal(3, log.Count);
    }

    [Fact]
    public void A_timer_callback_cannot_advance_the_clock_and_the_clock_refuses_after_dispose()
    {
        var p = new Platform(new PlatformOptions { MemorySize = Sizes.GiB, TableMemorySize = 16 * Sizes.MiB });
        PlatformClock clock = p.Clock;
        clock.Arm(new PlatformClock.ClockTimer(() => clock.Advance(Ms)), Ms);
        Assert.Throws<InvalidOperationException>(() => clock.Advance(Ms));
        clock.Advance(Ms); // the clock is usable again
        p.Dispose();
        Assert.Throws<ObjectDisposedException>(() => clock.Advance(Ms));
    }
}
