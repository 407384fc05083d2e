using System.Collections.Concurrent;
using System.Diagnostics;
using Iommu.Reliability.Tests.Infrastructure;
using Mtty;
using Vfio.Mdev;
using Xunit.Abstractions;

namespace Iommu.Reliability.Tests.Concurrency;

/// <summary>
/// mdev create/remove racing <c>mdev_unregister_device</c> (spec §3.2/§3.3): workers create mdevs
/// (through a type they looked up earlier, and through the type directory by name) and remove the
/// ones they created while another thread unregisters the parent, round after round (each worker goes
/// on until a create saw the parent going or gone, so every round crosses the unregistration). No exception
/// escapes; every create is 0, -ENODEV (unregistration in progress or done) or -ENOENT (the type
/// directory is gone); every remove is 0, -ENODEV or -EAGAIN; after each round no mdev, bus device,
/// IOMMU group or vendor port is left.
/// </summary>
public sealed class MdevUnregisterRaceTests(ITestOutputHelper output)
{
    [Fact]
    public void Create_and_remove_racing_parent_unregister_return_kernel_errnos_and_leak_nothing()
    {
        int threads = Math.Max(Environment.ProcessorCount, 4);
        int workers = threads - 1;
        const int Rounds = 40;
        long opsPerRound = Math.Max(ReliabilityBudget.Ops / 50 / Rounds, 20);
        ulong seed = ReliabilityBudget.Seed(0xDEAD);
        using var platform = new Platform(new PlatformOptions { MemorySize = 4 * Sizes.GiB, TableMemorySize = 16 * Sizes.MiB });
        var core = new MdevCore(platform);
        var driver = new MttyDriver(platform.Memory);
        int groupsBefore = platform.Iommu.Groups.Count;
        var errors = new ConcurrentQueue<string>();
        var counts = new ConcurrentDictionary<string, long>();
        var sw = Stopwatch.StartNew();

        void Count(string what) => counts.AddOrUpdate(what, 1, (_, v) => v + 1);

        for (int round = 0; round < Rounds; round++)
        {
            Assert.Equal(Errno.None, driver.Register(core));
            MdevType type = core.FindParent(driver.ParentDevice)!.FindType("mtty-1")!;
            long started = 0;
            using var go = new ManualResetEventSlim();
            int r = round;

            void Worker(int w)
            {
                var rng = new Random((int)(seed + (ulong)(r * 100) + (ulong)w));
                var mine = new List<MdevDevice>();
                try
                {
                    go.Wait();
                    bool sawGone = false;
                    for (long i = 0; ; i++)
                    {
                        // Past the round's share, keep going until a create has seen the parent going
                        // or gone: on a busy machine the workers could otherwise finish before the
                        // unregister thread runs, and the round would not cross it at all.
                        if (i >= opsPerRound && (sawGone || i >= opsPerRound * 1000))
                        {
                            break;
                        }

                        Interlocked.Increment(ref started);
                        int op = rng.Next(3);
                        if (op < 2)
                        {
                            Errno e = op == 0
                                ? core.Create(type, Guid.NewGuid(), out MdevDevice? m)
                                : core.Create(driver.ParentDevice, "mtty-1", Guid.NewGuid(), out m);
                            Count($"create {e}");
                            if (e == Errno.None)
                            {
                                mine.Add(m!);
                            }
                            else if (e == Errno.ENODEV || (op == 1 && e == Errno.ENOENT))
                            {
                                sawGone = true;
                            }
                            else
                            {
                                errors.Enqueue($"round {r} worker {w}: create → {e}");
                            }
                        }
                        else if (mine.Count > 0)
                        {
                            int k = rng.Next(mine.Count);
                            MdevDevice m = mine[k];
                            mine.RemoveAt(k);
                            Errno e = core.Remove(m);
                            Count($"remove {e}");
                            if (e is not (Errno.None or Errno.ENODEV or Errno.EAGAIN))
                            {
                                errors.Enqueue($"round {r} worker {w}: remove → {e}");
                            }
                        }
                    }
                }
                catch (Exception ex)
                {
                    errors.Enqueue($"round {r} worker {w}: {ex}");
                }
            }

            var ts = Enumerable.Range(0, workers).Select(w => new Thread(() => Worker(w)) { IsBackground = true }).ToList();
            var unregister = new Thread(() =>
            {
                try
                {
                    // Unregister somewhere in the middle of the round's operations.
                    long at = (opsPerRound * workers * (1 + (r % 3))) / 4;
                    while (Interlocked.Read(ref started) < at)
                    {
                        Thread.Yield();
                    }

                    core.UnregisterDevice(driver.ParentDevice);
                }
                catch (Exception ex)
                {
                    errors.Enqueue($"round {r} unregister: {ex}");
                }
            })
            { IsBackground = true };
            ts.Add(unregister);
            ts.ForEach(t => t.Start());
            go.Set();
            ts.ForEach(t => Assert.True(t.Join(TimeSpan.FromSeconds(30)), $"round {r}: a thread did not finish"));
            Assert.True(errors.IsEmpty, string.Join("\n", errors.Take(20)));

            // Nothing survives the parent.
            Assert.Empty(core.Devices);
            Assert.Empty(core.Bus.Devices);
            Assert.Null(core.FindParent(driver.ParentDevice));
            Assert.Equal(0, driver.UsedPorts);
            Assert.Equal(groupsBefore, platform.Iommu.Groups.Count);
        }

        sw.Stop();
        output.WriteLine($"{Rounds} rounds × {workers} workers × {opsPerRound} ops + unregister, in {sw.ElapsedMilliseconds} ms: "
            + string.Join(", ", counts.OrderBy(kv => kv.Key, StringComparer.Ordinal).Select(kv => $"{kv.Key}: {kv.Value}")));
        Assert.True(counts.GetValueOrDefault("create None") > 0 && counts.Keys.Any(k => k.StartsWith("create ENODEV", StringComparison.Ordinal) || k == "create ENOENT"), "the race was not exercised");
    }
}
