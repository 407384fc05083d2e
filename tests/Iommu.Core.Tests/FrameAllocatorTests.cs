using Iommu.Memory;

namespace Iommu.Core.Tests;

public sealed class FrameAllocatorTests
{
    private static (PhysicalMemory Memory, FrameAllocator Frames) Make(ulong frames = 64)
    {
        var mem = new PhysicalMemory(Sizes.GiB);
        return (mem, new FrameAllocator(mem, 0x100_0000, frames * Sizes.Page));
    }

    [Fact]
    public void Frames_come_from_the_region_zeroed_and_distinct()
    {
        var (mem, frames) = Make();
        using (mem)
        {
            var seen = new HashSet<ulong>();
            for (int i = 0; i < 64; i++)
            {
                Assert.True(frames.TryAllocate(out ulong pa));
                Assert.InRange(pa, 0x100_0000UL, 0x100_0000UL + (63 * Sizes.Page));
                Assert.Equal(0UL, pa % Sizes.Page);
                Assert.True(seen.Add(pa));
                mem.Table(pa).Fill(ulong.MaxValue); // dirty it so reuse must re-zero
            }

            Assert.Equal(64, frames.LiveFrames);
            Assert.False(frames.TryAllocate(out ulong none));
            Assert.Equal(0UL, none);
            Assert.Equal(1, frames.FailedAllocations);

            frames.Free(0x100_3000);
            Assert.True(frames.TryAllocate(out ulong again));
            Assert.Equal(0x100_3000UL, again);
            Assert.True(mem.Table(again).IndexOfAnyExcept(0UL) < 0, "a reused frame must be zeroed");
        }
    }

    [Fact]
    public void Live_frames_return_to_zero_and_peak_is_kept()
    {
        var (mem, frames) = Make();
        using (mem)
        {
            var got = new List<ulong>();
            for (int i = 0; i < 10; i++)
            {
                Assert.True(frames.TryAllocate(out ulong pa));
                got.Add(pa);
            }

            got.ForEach(frames.Free);

            Assert.Equal(0, frames.LiveFrames);
            Assert.Equal(10, frames.PeakLiveFrames);
            Assert.Equal(10, frames.TotalAllocations);
            Assert.False(frames.IsAllocated(got[0]));
        }
    }

    [Fact]
    public void FailNth_fails_exactly_the_nth_allocation_once()
    {
        var (mem, frames) = Make();
        using (mem)
        {
            frames.FailNth(3);
            Assert.True(frames.FailurePending);
            Assert.True(frames.TryAllocate(out _));
            Assert.True(frames.TryAllocate(out _));
            Assert.False(frames.TryAllocate(out _));
            Assert.False(frames.FailurePending);
            Assert.True(frames.TryAllocate(out _));
            Assert.Equal(3, frames.LiveFrames);
            Assert.Equal(1, frames.FailedAllocations);
        }
    }

    [Fact]
    public void FailNth_zero_cancels()
    {
        var (mem, frames) = Make();
        using (mem)
        {
            frames.FailNth(1);
            frames.FailNth(0);
            Assert.True(frames.TryAllocate(out _));
        }
    }

    [Fact]
    public void Double_free_and_foreign_free_are_programming_errors()
    {
        var (mem, frames) = Make();
        using (mem)
        {
            Assert.True(frames.TryAllocate(out ulong pa));
            frames.Free(pa);

            Assert.Throws<InvalidOperationException>(() => frames.Free(pa));
            Assert.Throws<ArgumentException>(() => frames.Free(0x2000));
            Assert.Throws<ArgumentException>(() => frames.Free(pa + 8));
        }
    }

    [Fact]
    public void FreeList_returns_a_chain_linked_through_the_first_entries()
    {
        var (mem, frames) = Make();
        using (mem)
        {
            Assert.True(frames.TryAllocate(out ulong a));
            Assert.True(frames.TryAllocate(out ulong b));
            Assert.True(frames.TryAllocate(out ulong c));
            mem.WriteUInt64(a, b);
            mem.WriteUInt64(b, c); // c's first entry is 0: the end
            Assert.Equal(0, frames.FreeList(0));
            Assert.Equal(3, frames.FreeList(a));
            Assert.Equal(0, frames.LiveFrames);

            // A broken chain frees what comes before the bad link and says which link it is.
            Assert.True(frames.TryAllocate(out ulong d));
            mem.WriteUInt64(d, 0x2000);
            ArgumentException e = Assert.Throws<ArgumentException>(() => frames.FreeList(d));
            Assert.Contains("link 1", e.Message, StringComparison.Ordinal);
            Assert.Equal(0, frames.LiveFrames);
            Assert.Throws<InvalidOperationException>(() => frames.FreeList(d));
        }
    }

    [Fact]
    public void No_gc_allocation_after_warm_up()
    {
        var (mem, frames) = Make(1024);
        using (mem)
        {
            Cycle(frames, new ulong[256]); // warm-up: backs the chunk, JITs the paths

            ulong[] held = new ulong[256];
            long allocated = Iommu.Core.Tests.Infrastructure.Allocations.Fewest(() =>
            {
                for (int round = 0; round < 20; round++)
                {
                    Cycle(frames, held);
                }
            });

            Assert.Equal(0, allocated);
            Assert.Equal(0, frames.LiveFrames);
        }

        static void Cycle(FrameAllocator frames, Span<ulong> held)
        {
            for (int i = 0; i < held.Length; i++)
            {
                frames.TryAllocate(out held[i]);
            }

            for (int i = held.Length - 1; i >= 0; i--)
            {
                frames.Free(held[i]);
            }
        }
    }

    [Fact]
    public void Concurrent_allocations_never_hand_out_a_frame_twice()
    {
        var (mem, frames) = Make(4096);
        using (mem)
        {
            var held = new List<ulong>[4];
            Parallel.For(0, 4, t =>
            {
                var mine = new List<ulong>();
                for (int i = 0; i < 1000; i++)
                {
                    Assert.True(frames.TryAllocate(out ulong pa));
                    mine.Add(pa);
                    if (i % 3 == 0)
                    {
                        frames.Free(mine[^1]);
                        mine.RemoveAt(mine.Count - 1);
                    }
                }

                held[t] = mine;
            });

            List<ulong> union = held.SelectMany(h => h).ToList();
            Assert.Equal(union.Count, union.Distinct().Count());
            Assert.Equal(union.Count, frames.LiveFrames);
            Assert.All(union, pa => Assert.True(frames.IsAllocated(pa)));
        }
    }

    [Fact]
    public void Region_outside_memory_is_rejected_with_the_range()
    {
        using var mem = new PhysicalMemory(Sizes.GiB);
        var ex = Assert.Throws<ArgumentOutOfRangeException>(() => new FrameAllocator(mem, Sizes.GiB - Sizes.Page, 2 * Sizes.Page));
        Assert.Contains("0x3ffff000", ex.Message, StringComparison.Ordinal);
    }
}
