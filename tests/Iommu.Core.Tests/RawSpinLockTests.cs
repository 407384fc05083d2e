using Iommu.Internal;

namespace Iommu.Core.Tests;

/// <summary>
/// The lock of the invalidation queue and the unit's registers: mutual exclusion with a plain-store
/// release, re-entry by its holder, release on an exception.
/// </summary>
public sealed class RawSpinLockTests
{
    private sealed class Shared
    {
        public long A;
        public long B;
        public int Torn;
    }

    [Theory]
    [InlineData(2, 200_000)]
    [InlineData(4, 100_000)]
    [InlineData(16, 10_000)]
    public void Holders_exclude_each_other_and_see_every_earlier_holders_writes(int threads, int rounds)
    {
        var gate = new RawSpinLock();
        var s = new Shared();
        using var start = new Barrier(threads);
        var workers = Enumerable.Range(0, threads).Select(t => new Thread(() =>
        {
            start.SignalAndWait();
            for (int i = 0; i < rounds; i++)
            {
                using (gate.EnterScope())
                {
                    // Two plain fields that only ever change together under the lock: a second
                    // holder (or a stale read of the last holder's stores) shows them apart.
                    if (s.A != s.B)
                    {
                        s.Torn++;
                    }

                    s.A++;
                    if ((i & 63) == 0)
                    {
                        Thread.Yield(); // a holder that loses its CPU: others must wait, not enter
                    }

                    s.B++;
                }
            }
        })).ToList();
        workers.ForEach(w => w.Start());
        workers.ForEach(w => w.Join());

        Assert.Equal(0, s.Torn);
        Assert.Equal((long)threads * rounds, s.A);
        Assert.Equal(s.A, s.B);
        Assert.False(gate.IsHeldByCurrentThread);
    }

    [Fact]
    public void The_holder_may_enter_again_and_holds_the_lock_until_its_outermost_scope_ends()
    {
        var gate = new RawSpinLock();
        int entered = 0;
        var other = new Thread(() =>
        {
            using (gate.EnterScope())
            {
                Volatile.Write(ref entered, 1);
            }
        });

        using (gate.EnterScope())
        {
            using (gate.EnterScope())
            {
                using (gate.EnterScope())
                {
                    Assert.True(gate.IsHeldByCurrentThread);
                }
            }

            // Two levels released, one still held: the other thread must wait.
            Assert.True(gate.IsHeldByCurrentThread);
            other.Start();
            Assert.False(SpinWait.SpinUntil(() => Volatile.Read(ref entered) != 0, 200));
        }

        Assert.True(other.Join(TimeSpan.FromSeconds(30)));
        Assert.Equal(1, entered);
        Assert.False(gate.IsHeldByCurrentThread);
    }

    [Fact]
    public void An_exception_inside_the_scope_releases_the_lock()
    {
        var gate = new RawSpinLock();
        void Throwing()
        {
            using (gate.EnterScope())
            {
                throw new InvalidOperationException("inside");
            }
        }

        Assert.Throws<InvalidOperationException>(Throwing);

        Assert.False(gate.IsHeldByCurrentThread);
        var t = new Thread(() =>
        {
            using (gate.EnterScope())
            {
            }
        });
        t.Start();
        Assert.True(t.Join(TimeSpan.FromSeconds(30)));
    }
}
