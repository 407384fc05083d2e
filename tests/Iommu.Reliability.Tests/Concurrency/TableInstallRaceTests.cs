using System.Collections.Concurrent;
using System.Diagnostics;
using Iommu.Devices;
using Iommu.Domains;
using Iommu.Reliability.Tests.Infrastructure;
using Iommu.VtD.Driver;
using Iommu.VtD.Hardware;
using Xunit.Abstractions;

namespace Iommu.Reliability.Tests.Concurrency;

/// <summary>
/// All threads map interleaved 4 KiB pages of the same fresh 2 MiB region at once (released by a
/// spinning barrier), region after region, each region under its own L2 table: every level's table is
/// installed by racing <c>cmpxchg</c>s whose losers must free their table. Then the tables hold exactly
/// the expected leaves, exactly the expected table frames are live (no loser table leaked, none
/// freed twice), DMA sees every page, and tearing down returns every frame.
/// </summary>
public sealed class TableInstallRaceTests(ITestOutputHelper output)
{
    private const ulong Base = 0x100_0000_0000;
    private const ulong Stride = Sizes.GiB + (2 * Sizes.MiB); // a new L2 and L1 for every region (and a new L3 every 512)
    private const ulong PaBase = 0x8_0000_0000;

    [Fact]
    public void Racing_table_installs_leak_nothing_and_lose_no_mapping()
    {
        // One thread per core: the threads must run at the same instant for their walks to collide.
        int threads = Math.Max(Environment.ProcessorCount, 2);
        const int Regions = 512;
        using var bed = new FailNthVtdBed(VtdConfig.Legacy48Bit, scalable: false);
        PciDevice dev = bed.AddDevice("0000:00:03.0");
        long baseline = bed.Platform.Frames.LiveFrames;
        DmarDomain dom = bed.Unmanaged();
        Assert.Equal(Errno.None, bed.Iommu.AttachDevice(dom, dev));
        long attached = bed.Platform.Frames.LiveFrames;
        long allocations = bed.Platform.Frames.TotalAllocations;
        var errors = new ConcurrentQueue<string>();
        int arrived = 0;
        var sw = Stopwatch.StartNew();

        void Worker(int t)
        {
            try
            {
                for (int r = 0; r < Regions; r++)
                {
                    // A spinning barrier: the threads leave it together, so their first walks collide.
                    Interlocked.Increment(ref arrived);
                    var spin = default(SpinWait);
                    while (Volatile.Read(ref arrived) < (r + 1) * threads)
                    {
                        spin.SpinOnce(sleep1Threshold: -1);
                    }

                    ulong iova = Base + ((ulong)r * Stride);
                    for (int p = t; p < 512; p += threads)
                    {
                        ulong off = (ulong)p * Sizes.Page;
                        Errno e = bed.Iommu.Map(dom, iova + off, PaBase + ((ulong)r * 2 * Sizes.MiB) + off, Sizes.Page, IommuProt.Read | IommuProt.Write);
                        if (e != Errno.None)
                        {
                            errors.Enqueue($"thread {t} region {r} page {p}: {e}");
                        }
                    }
                }
            }
            catch (Exception ex)
            {
                errors.Enqueue($"thread {t}: {ex}");
                Interlocked.Add(ref arrived, Regions * threads); // release the others
            }
        }

        var ts = Enumerable.Range(0, threads).Select(t => new Thread(() => Worker(t)) { IsBackground = true }).ToList();
        ts.ForEach(t => t.Start());
        ts.ForEach(t => Assert.True(t.Join(TimeSpan.FromSeconds(60)), "a thread did not finish"));
        sw.Stop();
        Assert.True(errors.IsEmpty, string.Join("\n", errors.Take(20)));

        long l3s = (long)(((Base + ((Regions - 1) * Stride)) / (512 * Sizes.GiB)) - (Base / (512 * Sizes.GiB)) + 1);
        long tables = (2L * Regions) + l3s; // an L2 and an L1 per region, and the L3s they hang off
        Assert.Equal(attached + tables, bed.Platform.Frames.LiveFrames);
        Assert.Equal(1 + tables, dom.PageTable.TableFrames);
        long lost = bed.Platform.Frames.TotalAllocations - allocations - tables; // tables freed by the losers of a cmpxchg
        var leaves = new List<(ulong Iova, ulong Pa, ulong Size)>();
        dom.PageTable.ForEachLeaf((iova, pa, size, _) => leaves.Add((iova, pa, size)));
        Assert.Equal(Regions * 512, leaves.Count);
        foreach ((ulong iova, ulong pa, ulong size) in leaves)
        {
            ulong r = (iova - Base) / Stride, off = (iova - Base) % Stride;
            Assert.Equal(Sizes.Page, size);
            Assert.Equal(PaBase + (r * 2 * Sizes.MiB) + off, pa);
        }

        var b = new byte[8];
        for (int r = 0; r < Regions; r++)
        {
            ulong iova = Base + ((ulong)r * Stride) + (((ulong)r % 512) * Sizes.Page);
            DmaResult res = dev.DmaRead(null, iova, b);
            Assert.True(res.IsOk);
            Assert.Equal(PaBase + ((ulong)r * 2 * Sizes.MiB) + (((ulong)r % 512) * Sizes.Page), res.Address);
        }

        output.WriteLine($"{threads} threads raced {Regions} regions × 512 pages ({Regions * 512} 4K maps, {tables} table installs) in {sw.ElapsedMilliseconds} ms; {lost} installs lost the race and freed their table; {tables} tables live, none leaked");

        for (int r = 0; r < Regions; r++)
        {
            Assert.Equal(2 * Sizes.MiB, bed.Iommu.Unmap(dom, Base + ((ulong)r * Stride), 2 * Sizes.MiB));
        }

        bed.Iommu.DetachDevice(dom, dev);
        bed.Iommu.DomainFree(dom);
        Assert.Equal(baseline, bed.Platform.Frames.LiveFrames);
    }
}
