using System.Collections.Concurrent;
using System.Diagnostics;
using Iommu.Reliability.Tests.Infrastructure;
using Vfio.Type1;
using Vfio.Type1.Uapi;
using Xunit.Abstractions;

namespace Iommu.Reliability.Tests.Concurrency;

/// <summary>
/// A second group (behind another unit and driver, so it always gets a new domain) joins and leaves
/// the container over and over — each join replays every mapping into a new domain, each leave frees
/// it — while N − 1 threads MAP/UNMAP their own slots and check their device's DMA. Every owned call
/// succeeds; the joining group's device, checked by the attaching thread right after each join,
/// sees every slot the model says is mapped; Audit() holds at the end; tearing down returns every
/// frame, pin and locked_vm page.
/// </summary>
public sealed class Type1AttachDuringMapConcurrencyTests(ITestOutputHelper output)
{
    private const ulong SlotBase = 0x40_0000;
    private const int SlotsPerThread = 16;

    [Fact]
    public void Group_join_and_leave_with_replay_race_map_and_unmap_without_losing_a_mapping()
    {
        int threads = Math.Max(Environment.ProcessorCount, 4);
        int mappers = threads - 1;
        long opsPerMapper = Math.Max(ReliabilityBudget.Ops / 20 / mappers, 50);
        ulong seed = ReliabilityBudget.Seed(0xA77A);
        using var bed = new FailNthType1Bed();
        long frames0 = bed.Platform.Frames.LiveFrames;
        Assert.Equal(Errno.None, bed.G0.SetContainer(bed.Container));
        Assert.Equal(Errno.None, bed.Container.SetIommu(VfioUapi.VFIO_TYPE1v2_IOMMU));
        int slots = mappers * SlotsPerThread;
        ulong buf = bed.Buffer((ulong)slots * 2 * Sizes.Page, 0x01);
        var mapped = new int[slots]; // pages mapped per slot, written only by the owner
        var unmaps = new int[slots]; // unmaps started per slot: the checker's guard against unmap + map again (ABA)
        var errors = new ConcurrentQueue<string>();
        int done = 0;
        long joins = 0, replayChecks = 0;
        var sw = Stopwatch.StartNew();

        ulong SlotIova(int s) => SlotBase + ((ulong)s * 4 * Sizes.Page);

        void Mapper(int m)
        {
            var rng = new Random((int)(seed + (ulong)m));
            var b = new byte[1];
            try
            {
                for (long i = 0; i < opsPerMapper; i++)
                {
                    int s = (m * SlotsPerThread) + rng.Next(SlotsPerThread);
                    if (Volatile.Read(ref mapped[s]) == 0)
                    {
                        int pages = 1 + rng.Next(2);
                        Errno e = bed.Map(buf + ((ulong)s * 2 * Sizes.Page), SlotIova(s), (ulong)pages * Sizes.Page);
                        if (e != Errno.None)
                        {
                            errors.Enqueue($"mapper {m}: MAP slot {s}: {e}");
                        }

                        Volatile.Write(ref mapped[s], pages);
                        if (!bed.Dev0.DmaRead(null, SlotIova(s), b).IsOk || b[0] != (byte)(0x01 + (2 * s)))
                        {
                            errors.Enqueue($"mapper {m}: DMA at slot {s} after MAP");
                        }
                    }
                    else
                    {
                        Interlocked.Increment(ref unmaps[s]);
                        Volatile.Write(ref mapped[s], -mapped[s]); // being unmapped: the checker skips it
                        Errno e = bed.Unmap(SlotIova(s), 4 * Sizes.Page, out ulong n);
                        if (e != Errno.None || n != (ulong)(-mapped[s]) * Sizes.Page)
                        {
                            errors.Enqueue($"mapper {m}: UNMAP slot {s}: {e}, {n} bytes");
                        }

                        Volatile.Write(ref mapped[s], 0);
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

        void Joiner()
        {
            var b = new byte[1];
            try
            {
                do
                {
                    Errno e = bed.G1.SetContainer(bed.Container);
                    if (e != Errno.None)
                    {
                        errors.Enqueue($"joiner: SET_CONTAINER: {e}");
                        return;
                    }

                    joins++;

                    // Slots that were mapped before the join and are not being unmapped must be in the new domain.
                    for (int s = 0; s < slots; s++)
                    {
                        int unmapsBefore = Volatile.Read(ref unmaps[s]);
                        int before = Volatile.Read(ref mapped[s]);
                        if (before <= 0)
                        {
                            continue;
                        }

                        // A miss counts only if no unmap started meanwhile: the owner may unmap and map
                        // the slot again with the same page count while the DMA runs.
                        bool ok = bed.Dev1.DmaRead(null, SlotIova(s), b).IsOk && b[0] == (byte)(0x01 + (2 * s));
                        if (!ok && Volatile.Read(ref unmaps[s]) == unmapsBefore)
                        {
                            errors.Enqueue($"joiner: slot {s} ({before} pages) is not reachable through the replayed domain");
                        }

                        replayChecks++;
                    }

                    Errno u = bed.G1.UnsetContainer();
                    if (u != Errno.None)
                    {
                        errors.Enqueue($"joiner: UNSET_CONTAINER: {u}");
                        return;
                    }
                }
                while (Volatile.Read(ref done) < mappers);
            }
            catch (Exception ex)
            {
                errors.Enqueue($"joiner: {ex}");
            }
        }

        var ts = Enumerable.Range(0, mappers).Select(m => new Thread(() => Mapper(m)) { IsBackground = true }).ToList();
        ts.Add(new Thread(Joiner) { IsBackground = true });
        ts.ForEach(t => t.Start());
        ts.ForEach(t => Assert.True(t.Join(TimeSpan.FromSeconds(60)), "a thread did not finish"));
        sw.Stop();
        Assert.True(errors.IsEmpty, string.Join("\n", errors.Take(20)));

        VfioIommuType1 be = bed.Backend;
        be.Audit();
        Assert.Single(be.Domains);
        Assert.Equal(mapped.Sum(), be.Mappings.Sum(x => (long)(x.Size / Sizes.Page)));
        Assert.Equal(mapped.Sum(), bed.Proc.LockedVm);
        output.WriteLine($"{mappers} mappers × {opsPerMapper} MAP/UNMAP ops racing {joins} group joins (each a new domain and a replay) and leaves, {replayChecks} replayed slots checked by DMA, in {sw.ElapsedMilliseconds} ms");
        Assert.True(joins > 0);

        var all = new VfioIommuType1DmaUnmap(24, VfioUapi.VFIO_DMA_UNMAP_FLAG_ALL, 0, 0);
        Assert.Equal(Errno.None, bed.Container.UnmapDma(ref all));
        Assert.Equal(Errno.None, bed.G0.UnsetContainer());
        Assert.Equal(0, bed.Proc.LockedVm);
        Assert.Equal(0, bed.Pages.TotalPins);
        Assert.Equal(frames0, bed.Platform.Frames.LiveFrames);
    }
}
