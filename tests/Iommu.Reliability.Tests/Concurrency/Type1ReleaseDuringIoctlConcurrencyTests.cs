using System.Collections.Concurrent;
using Iommu.Reliability.Tests.Infrastructure;
using Vfio.Type1;
using Vfio.Type1.Uapi;
using Xunit.Abstractions;

namespace Iommu.Reliability.Tests.Concurrency;

/// <summary>
/// The container's only group leaves (the backend is released: every mapping unmapped and unpinned,
/// every domain freed) and joins again with a new backend, over and over, while other threads issue
/// MAP_DMA and UNMAP_DMA on the container. 5.15 holds the container's <c>group_lock</c> for read across
/// a backend ioctl and for write while the last group leaves, so an ioctl sees the backend whole or
/// not at all (-EINVAL). Here an ioctl may have fetched the backend just before its release; it then
/// finds it released under the backend's lock and returns EINVAL (before that check it reported
/// success for a mapping that no domain held). Every call returns 0, EINVAL, or EEXIST for a slot
/// still mapped in the current backend; once all threads stop and the group has left, nothing is
/// pinned, locked_vm is 0 and every frame is back.
/// </summary>
public sealed class Type1ReleaseDuringIoctlConcurrencyTests(ITestOutputHelper output)
{
    private const ulong SlotBase = 0x40_0000;
    private const int SlotsPerThread = 8;

    // The race needs the cycler to run while the mappers do: they go on past their budget until it has
    // made this many cycles (a loaded machine can hold it off until a short budget is spent), up to MaxRun.
    private const long MinCycles = 10;
    private static readonly TimeSpan MaxRun = TimeSpan.FromSeconds(60);

    [Fact]
    public void Map_and_unmap_racing_the_last_group_leaving_leave_nothing_pinned()
    {
        int mappers = Math.Max(Environment.ProcessorCount - 1, 2);
        long opsPerMapper = Math.Max(ReliabilityBudget.Ops / 10 / mappers, 200);
        using var bed = new FailNthType1Bed();
        long frames0 = bed.Platform.Frames.LiveFrames;
        Assert.Equal(Errno.None, bed.G0.SetContainer(bed.Container));
        Assert.Equal(Errno.None, bed.Container.SetIommu(VfioUapi.VFIO_TYPE1v2_IOMMU));
        ulong buf = bed.Buffer((ulong)mappers * SlotsPerThread * Sizes.Page, 0x01);
        var errors = new ConcurrentQueue<string>();
        int done = 0;
        long maps = 0, refused = 0, cycles = 0;
        var clock = System.Diagnostics.Stopwatch.StartNew();

        void Mapper(int m)
        {
            var rng = new Random(m + 1);
            try
            {
                for (long i = 0; (i < opsPerMapper || (Volatile.Read(ref cycles) <= MinCycles && clock.Elapsed < MaxRun)) && errors.IsEmpty; i++)
                {
                    int s = (m * SlotsPerThread) + rng.Next(SlotsPerThread);
                    ulong iova = SlotBase + ((ulong)s * Sizes.Page);
                    Errno e = bed.Map(buf + ((ulong)s * Sizes.Page), iova, Sizes.Page);
                    if (e == Errno.None)
                    {
                        Interlocked.Increment(ref maps);
                    }
                    else if (e == Errno.EINVAL || e == Errno.EEXIST)
                    {
                        Interlocked.Increment(ref refused); // no backend, or the slot survived in this backend
                    }
                    else
                    {
                        errors.Enqueue($"mapper {m}: MAP_DMA of slot {s}: {e}");
                    }

                    Errno u = bed.Unmap(iova, Sizes.Page, out _);
                    if (u != Errno.None && u != Errno.EINVAL)
                    {
                        errors.Enqueue($"mapper {m}: UNMAP_DMA of slot {s}: {u}");
                    }
                }
            }
            catch (Exception ex)
            {
                errors.Enqueue($"mapper {m}: {ex}");
            }
            finally
            {
                Interlocked.Increment(ref done);
            }
        }

        void Cycler()
        {
            try
            {
                while (Volatile.Read(ref done) < mappers && errors.IsEmpty)
                {
                    Errno u = bed.G0.UnsetContainer();
                    Errno s = bed.G0.SetContainer(bed.Container);
                    Errno i = bed.Container.SetIommu(VfioUapi.VFIO_TYPE1v2_IOMMU);
                    if (u != Errno.None || s != Errno.None || i != Errno.None)
                    {
                        errors.Enqueue($"cycler: UNSET_CONTAINER {u}, SET_CONTAINER {s}, SET_IOMMU {i}");
                        return;
                    }

                    Volatile.Write(ref cycles, cycles + 1);
                }
            }
            catch (Exception ex)
            {
                errors.Enqueue($"cycler: {ex}");
            }
        }

        var threads = Enumerable.Range(0, mappers).Select(m => new Thread(() => Mapper(m)) { IsBackground = true }).ToList();
        threads.Add(new Thread(Cycler) { IsBackground = true });
        threads.ForEach(t => t.Start());
        threads.ForEach(t => Assert.True(t.Join(TimeSpan.FromSeconds(120)), "a thread did not finish"));
        Assert.True(errors.IsEmpty, string.Join("\n", errors.Take(10)));
        output.WriteLine($"{mappers} mappers: {maps} maps, {refused} refused, racing {cycles} leave/join cycles");
        Assert.True(cycles > MinCycles, $"only {cycles} leave/join cycles raced the ioctls");

        // What the last backend holds is the mappers' last slots; the group leaving releases all of it,
        // and nothing an earlier backend took may still be pinned.
        bed.Backend.Audit();
        Assert.Equal(Errno.None, bed.G0.UnsetContainer());
        Assert.Equal(0, bed.Pages.TotalPins);
        Assert.Equal(0, bed.Proc.LockedVm);
        Assert.Equal(frames0, bed.Platform.Frames.LiveFrames);
    }
}
