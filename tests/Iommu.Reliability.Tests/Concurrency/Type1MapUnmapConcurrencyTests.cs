using System.Collections.Concurrent;
using System.Diagnostics;
using Iommu.Reliability.Tests.Infrastructure;
using Vfio.Type1;
using Vfio.Type1.Uapi;
using Xunit.Abstractions;

namespace Iommu.Reliability.Tests.Concurrency;

/// <summary>
/// Concurrent VFIO_IOMMU_MAP_DMA / UNMAP_DMA on one container from N threads: each thread owns
/// disjoint slots (every call must succeed, UNMAP returns exactly what its MAP mapped, the device's
/// DMA sees the buffer) and all threads also hammer one shared window with overlapping ranges (MAP
/// is 0 or -EEXIST, UNMAP is 0 or -EINVAL for a bisected mapping). Serial consistency: bytes mapped
/// minus bytes unmapped equals what is left; an auditor thread runs Audit() throughout; locked_vm
/// always equals the mapped pages and returns to 0.
/// </summary>
public sealed class Type1MapUnmapConcurrencyTests(ITestOutputHelper output)
{
    private const ulong OwnBase = 0x100_0000;
    private const ulong SharedBase = 0x8000_0000;
    private const int SlotsPerThread = 16;
    private const int SlotPages = 4;
    private const int SharedPages = 8;

    [Fact]
    public void Concurrent_map_and_unmap_are_consistent_with_a_serial_order()
    {
        int threads = Math.Max(Environment.ProcessorCount, 4);
        long opsPerThread = Math.Max(ReliabilityBudget.Ops / 2 / threads, 100);
        ulong seed = ReliabilityBudget.Seed(0x7E57);
        using var bed = new FailNthType1Bed();
        Assert.Equal(Errno.None, bed.G0.SetContainer(bed.Container));
        Assert.Equal(Errno.None, bed.Container.SetIommu(VfioUapi.VFIO_TYPE1v2_IOMMU));
        int ownSlots = threads * SlotsPerThread;
        ulong own = bed.Buffer((ulong)ownSlots * SlotPages * Sizes.Page, 0x01);
        ulong shared = bed.Buffer(SharedPages * Sizes.Page, 0x80);

        // Overlapping ranges of the shared window: (first page, pages).
        (int First, int Pages)[] ranges = [(0, 2), (1, 2), (2, 2), (0, 4), (3, 1), (4, 4), (2, 4), (6, 2), (5, 3), (0, 8)];
        var errors = new ConcurrentQueue<string>();
        long sharedMapped = 0, sharedUnmapped = 0, eexist = 0, einval = 0;
        int done = 0;
        long audits = 0;
        var sw = Stopwatch.StartNew();

        void Worker(int t)
        {
            var rng = new Random((int)(seed + (ulong)t));
            var mine = new int[SlotsPerThread];
            var b = new byte[1];
            try
            {
                for (long i = 0; i < opsPerThread; i++)
                {
                    if (rng.Next(2) == 0)
                    {
                        int k = rng.Next(SlotsPerThread);
                        int slot = (t * SlotsPerThread) + k;
                        ulong iova = OwnBase + ((ulong)slot * 16 * Sizes.Page);
                        if (mine[k] == 0)
                        {
                            int pages = 1 + rng.Next(SlotPages);
                            ulong va = own + ((ulong)slot * SlotPages * Sizes.Page);
                            Errno e = bed.Map(va, iova, (ulong)pages * Sizes.Page);
                            if (e != Errno.None)
                            {
                                errors.Enqueue($"thread {t}: MAP of its own slot {slot}: {e}");
                            }

                            mine[k] = pages;
                            byte want = (byte)(0x01 + (slot * SlotPages));
                            if (!bed.Dev0.DmaRead(null, iova, b).IsOk || b[0] != want)
                            {
                                errors.Enqueue($"thread {t}: DMA at its slot {slot} after MAP: 0x{b[0]:x}, expected 0x{want:x}");
                            }
                        }
                        else
                        {
                            Errno e = bed.Unmap(iova, 16 * Sizes.Page, out ulong n);
                            if (e != Errno.None || n != (ulong)mine[k] * Sizes.Page)
                            {
                                errors.Enqueue($"thread {t}: UNMAP of its own slot {slot}: {e}, {n} bytes, mapped {mine[k]} pages");
                            }

                            mine[k] = 0;
                            if (bed.Dev0.DmaRead(null, iova, b).IsOk)
                            {
                                errors.Enqueue($"thread {t}: DMA at its slot {slot} after UNMAP still translates");
                            }
                        }
                    }
                    else
                    {
                        (int first, int pages) = ranges[rng.Next(ranges.Length)];
                        ulong iova = SharedBase + ((ulong)first * Sizes.Page), size = (ulong)pages * Sizes.Page;
                        if (rng.Next(2) == 0)
                        {
                            Errno e = bed.Map(shared + ((ulong)first * Sizes.Page), iova, size);
                            if (e == Errno.None)
                            {
                                Interlocked.Add(ref sharedMapped, (long)size);
                            }
                            else if (e == Errno.EEXIST)
                            {
                                Interlocked.Increment(ref eexist);
                            }
                            else
                            {
                                errors.Enqueue($"thread {t}: shared MAP [{first}, +{pages}): {e}");
                            }
                        }
                        else
                        {
                            Errno e = bed.Unmap(iova, size, out ulong n);
                            if (e == Errno.None)
                            {
                                Interlocked.Add(ref sharedUnmapped, (long)n);
                                if (n > size)
                                {
                                    errors.Enqueue($"thread {t}: v2 UNMAP [{first}, +{pages}) removed {n} bytes");
                                }
                            }
                            else if (e == Errno.EINVAL)
                            {
                                Interlocked.Increment(ref einval);
                            }
                            else
                            {
                                errors.Enqueue($"thread {t}: shared UNMAP [{first}, +{pages}): {e}");
                            }
                        }
                    }
                }
            }
            catch (Exception ex)
            {
                errors.Enqueue($"thread {t}: {ex}");
            }
            finally
            {
                Interlocked.Increment(ref done);
            }
        }

        void Auditor()
        {
            try
            {
                while (Volatile.Read(ref done) < threads)
                {
                    bed.Backend.Audit();
                    audits++;
                    Thread.Sleep(1);
                }
            }
            catch (Exception ex)
            {
                errors.Enqueue($"auditor: {ex.Message}");
            }
        }

        var all = Enumerable.Range(0, threads).Select(t => new Thread(() => Worker(t)) { IsBackground = true }).ToList();
        all.Add(new Thread(Auditor) { IsBackground = true });
        all.ForEach(t => t.Start());
        all.ForEach(t => Assert.True(t.Join(TimeSpan.FromSeconds(60)), "a thread did not finish"));
        sw.Stop();
        Assert.True(errors.IsEmpty, string.Join("\n", errors.Take(20)));

        VfioIommuType1 be = bed.Backend;
        be.Audit();
        long left = be.Mappings.Where(m => m.Iova >= SharedBase).Sum(m => (long)m.Size);
        Assert.Equal(sharedMapped - sharedUnmapped, left);
        long pages = be.Mappings.Sum(m => (long)(m.Size / Sizes.Page));
        Assert.Equal(pages, bed.Proc.LockedVm);
        Assert.Equal((uint)(be.DmaEntryLimit - be.Mappings.Count), bed.DmaAvail());
        output.WriteLine($"{threads} threads × {opsPerThread} MAP/UNMAP ops ({threads * opsPerThread} total; shared window: {eexist} × EEXIST, {einval} × EINVAL bisections), {audits} concurrent audits, in {sw.ElapsedMilliseconds} ms");

        var all0 = new VfioIommuType1DmaUnmap(24, VfioUapi.VFIO_DMA_UNMAP_FLAG_ALL, 0, 0);
        Assert.Equal(Errno.None, bed.Container.UnmapDma(ref all0));
        Assert.Equal(0, bed.Proc.LockedVm);
        Assert.Equal(0, bed.Pages.TotalPins);
        be.Audit();
    }
}
