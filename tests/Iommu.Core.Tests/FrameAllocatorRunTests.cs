using Iommu.Memory;

namespace Iommu.Core.Tests;

/// <summary>
/// Runs given back whole (<see cref="FrameAllocator.FreeContiguous"/>) are reused: before, runs came only from frames
/// never handed out, so a platform whose devices attached and detached ~2,000 times (a PASID directory of 32 frames
/// each time) ran out of table memory with almost all of it free. Random orders of single and run allocations and
/// frees, against a model of which frames are live.
/// </summary>
public sealed class FrameAllocatorRunTests
{
    private const ulong Base = 0x100_0000;

    [Theory]
    [InlineData(1)]
    [InlineData(2)]
    [InlineData(3)]
    [InlineData(4)]
    [InlineData(5)]
    public void Random_orders_never_hand_out_a_live_frame_and_reuse_every_freed_run(int seed)
    {
        const int capacity = 256;
        using var mem = new PhysicalMemory(Sizes.GiB);
        var frames = new FrameAllocator(mem, Base, capacity * Sizes.Page);
        var rng = new Random(seed);
        var live = new HashSet<ulong>();
        var runs = new List<(ulong Pa, int Count)>();
        var singles = new List<ulong>();
        for (int step = 0; step < 20_000; step++)
        {
            int op = rng.Next(4);
            if (op == 0)
            {
                int count = 1 << rng.Next(1, 6);
                if (frames.TryAllocateContiguous(count, out ulong pa))
                {
                    for (int i = 0; i < count; i++)
                    {
                        ulong f = pa + ((ulong)i * Sizes.Page);
                        Assert.True(live.Add(f), $"step {step}: frame 0x{f:x} handed out while live");
                        Assert.True(mem.Table(f).IndexOfAnyExcept(0UL) < 0, "a run's frames are zeroed");
                        mem.Table(f).Fill(0xA5A5A5A5A5A5A5A5); // dirty: a reuse must zero it again
                    }

                    runs.Add((pa, count));
                }
            }
            else if (op == 1)
            {
                if (frames.TryAllocate(out ulong pa))
                {
                    Assert.True(live.Add(pa), $"step {step}: frame 0x{pa:x} handed out while live");
                    mem.Table(pa).Fill(0x5A5A5A5A5A5A5A5A);
                    singles.Add(pa);
                }
                else
                {
                    Assert.Equal(capacity, live.Count); // a single frame is found whenever one is free
                }
            }
            else if (op == 2 && runs.Count > 0)
            {
                int i = rng.Next(runs.Count);
                (ulong pa, int count) = runs[i];
                runs.RemoveAt(i);
                frames.FreeContiguous(pa, count);
                for (int k = 0; k < count; k++)
                {
                    live.Remove(pa + ((ulong)k * Sizes.Page));
                }

                // The run just given back is found again at once, whatever else is free.
                Assert.True(frames.TryAllocateContiguous(count, out ulong again), $"step {step}: a freed run of {count} frames was not reused");
                for (int k = 0; k < count; k++)
                {
                    Assert.True(live.Add(again + ((ulong)k * Sizes.Page)));
                }

                runs.Add((again, count));
            }
            else if (op == 3 && singles.Count > 0)
            {
                int i = rng.Next(singles.Count);
                ulong pa = singles[i];
                singles.RemoveAt(i);
                frames.Free(pa);
                live.Remove(pa);
            }

            Assert.Equal(live.Count, frames.LiveFrames);
        }

        foreach ((ulong pa, int count) in runs)
        {
            frames.FreeContiguous(pa, count);
        }

        foreach (ulong pa in singles)
        {
            frames.Free(pa);
        }

        Assert.Equal(0, frames.LiveFrames);
    }

    [Fact]
    public void A_run_freed_twice_or_partly_free_is_refused_whole()
    {
        using var mem = new PhysicalMemory(Sizes.GiB);
        var frames = new FrameAllocator(mem, Base, 64 * Sizes.Page);
        Assert.True(frames.TryAllocateContiguous(8, out ulong pa));
        frames.Free(pa + (3 * Sizes.Page)); // one frame of the run given back alone
        Assert.Throws<InvalidOperationException>(() => frames.FreeContiguous(pa, 8));
        Assert.Equal(7, frames.LiveFrames); // nothing of the run was freed by the refused call
        Assert.True(frames.IsAllocated(pa));
        Assert.Throws<ArgumentException>(() => frames.FreeContiguous(pa + 1, 2));
        Assert.Throws<ArgumentException>(() => frames.FreeContiguous(Base + (63 * Sizes.Page), 2));
    }
}
