using System.Collections.Concurrent;
using System.Diagnostics;
using Iommu.Devices;
using Iommu.Mm;
using Iommu.Reliability.Tests.Infrastructure;
using Xunit.Abstractions;

namespace Iommu.Reliability.Tests.Concurrency;

/// <summary>
/// Page requests racing munmap and mprotect (pasid-sva.md §4 inv 2–4): a CPU thread maps one page per generation,
/// writes the generation's tag into it, publishes it, flips it to PROT_NONE and back, and munmaps it (the freed
/// page soon backs a later generation); a device thread issues ATS reads and writes with the process's PASID at the
/// published generation, sends page requests for pages that do not translate, and flushes the iopf worker while
/// the worker faults pages in concurrently. A DMA that started after the munmap (or mprotect(PROT_NONE)) of its
/// generation returned never succeeds; a successful read returns its generation's tag and nothing else; the CPU
/// finds only its generation's tag in the page before it unmaps it; no exception, no hang.
/// </summary>
/// <remarks>Plant caught: the SVA notifier's device-TLB flush skipped — generation 0's ATC entry served reads and writes
/// after mprotect(PROT_NONE) returned.</remarks>
public sealed class PageRequestMunmapRaceTests(ITestOutputHelper output)
{
    private const ulong Page = 4096;
    private const ulong TagBase = 0x6E6E_0000_0000_0000;

    private sealed class Generation(int id, ulong va)
    {
        public int Id { get; } = id;

        public ulong Va { get; } = va;

        // 0 mapped read-write, 1 PROT_NONE, 2 munmap'd; written by the CPU thread after the call returned.
        public volatile int State;

        // A sequence count, odd while the CPU thread is inside mprotect/munmap: a DMA that saw the same even count
        // before and after ran entirely in one state.
        public volatile int Seq;

        public void Change(int state, Action call)
        {
            Seq++;
            call();
            State = state;
            Seq++;
        }
    }

    [Fact]
    public void No_dma_reaches_a_page_after_its_munmap_or_mprotect_returned()
    {
        int generations = (int)Math.Max(200, ReliabilityBudget.Ops / 100);
        using var bed = new SvaTestBed();
        PciDevice dev = bed.AddDevice("0000:00:02.0", sva: true);
        using var mm = new ProcessAddressSpace(bed.Pages, "p");
        Assert.Equal(Errno.None, bed.Iommu.SvaBindDevice(dev, mm, null, out IommuSva? h));
        uint pasid = bed.Iommu.SvaGetPasid(h!);
        var errors = new ConcurrentQueue<string>();
        Generation? current = null;
        bool done = false;
        long ok = 0, pending = 0, failed = 0, faults = 0, dmas = 0;

        // Lets the device thread issue a DMA or two in each phase; bounded, so a stuck device cannot hang the CPU thread.
        void WaitForDevice()
        {
            long at = Interlocked.Read(ref dmas);
            var spin = new SpinWait();
            for (int i = 0; i < 200 && Interlocked.Read(ref dmas) < at + 2; i++)
            {
                spin.SpinOnce(sleep1Threshold: -1);
            }
        }

        var cpu = new Thread(() =>
        {
            try
            {
                byte[] b = new byte[8];
                for (int g = 0; g < generations; g++)
                {
                    ulong va = mm.Mmap(Page);
                    Assert.Equal(Errno.None, mm.Write(va, BitConverter.GetBytes(TagBase + (ulong)g)));
                    var gen = new Generation(g, va);
                    Volatile.Write(ref current, gen);
                    WaitForDevice();

                    if ((g & 1) == 0)
                    {
                        gen.Change(1, () => mm.Mprotect(va, Page, VmProt.None));
                        WaitForDevice();
                        gen.Change(0, () => mm.Mprotect(va, Page, VmProt.ReadWrite));
                        WaitForDevice();
                    }

                    // Only this generation's tag may be in the page (a stale DMA write of an older one would show).
                    Assert.Equal(Errno.None, mm.Read(va, b));
                    if (BitConverter.ToUInt64(b) != TagBase + (ulong)g)
                    {
                        errors.Enqueue($"gen {g}: the CPU reads 0x{BitConverter.ToUInt64(b):x} in its page");
                    }

                    gen.Change(2, () => mm.Munmap(va, Page));
                }
            }
            catch (Exception e)
            {
                errors.Enqueue($"cpu thread: {e}");
            }
            finally
            {
                Volatile.Write(ref done, true);
            }
        });

        var device = new Thread(() =>
        {
            try
            {
                byte[] b = new byte[8];
                var rng = new Random(7);
                while (!Volatile.Read(ref done))
                {
                    Generation? gen = Volatile.Read(ref current);
                    if (gen is null)
                    {
                        Thread.Yield();
                        continue;
                    }

                    int seq = gen.Seq, before = gen.State;
                    bool write = rng.Next(3) == 0;
                    DmaResult r = write
                        ? dev.AtsDmaWrite(pasid, gen.Va, BitConverter.GetBytes(TagBase + (ulong)gen.Id))
                        : dev.AtsDmaRead(pasid, gen.Va, b);
                    Interlocked.Increment(ref dmas);
                    if (r.Status == DmaStatus.Ok && (ok & 15) == 0)
                    {
                        Thread.Yield(); // ATC hits are cheap: leave the CPU thread its share of two cores
                    }

                    switch (r.Status)
                    {
                        case DmaStatus.Ok:
                            Interlocked.Increment(ref ok);
                            if (before != 0 && (seq & 1) == 0 && gen.Seq == seq)
                            {
                                errors.Enqueue($"gen {gen.Id}: {(write ? "write" : "read")} reached 0x{r.Address:x} after {(before == 1 ? "mprotect(PROT_NONE)" : "munmap")} returned");
                            }
                            else if (!write && BitConverter.ToUInt64(b) != TagBase + (ulong)gen.Id)
                            {
                                errors.Enqueue($"gen {gen.Id}: read 0x{BitConverter.ToUInt64(b):x} at 0x{r.Address:x}, not its tag");
                            }

                            break;
                        case DmaStatus.PageRequestPending:
                            Interlocked.Increment(ref pending);
                            if (rng.Next(2) == 0)
                            {
                                bed.Iommu.IopfQueueFlushDev(dev).ThrowIfError();
                            }

                            break;
                        case DmaStatus.PageRequestFailed:
                            Interlocked.Increment(ref failed);
                            break;
                        default:
                            Interlocked.Increment(ref faults);
                            break;
                    }
                }

                bed.Iommu.IopfQueueFlushDev(dev).ThrowIfError();
            }
            catch (Exception e)
            {
                errors.Enqueue($"device thread: {e}");
            }
        });

        var sw = Stopwatch.StartNew();
        cpu.Start();
        device.Start();
        Assert.True(cpu.Join(TimeSpan.FromSeconds(60)), "the CPU thread hung");
        Assert.True(device.Join(TimeSpan.FromSeconds(60)), "the device thread hung");
        output.WriteLine($"{generations} generations in {sw.Elapsed.TotalSeconds:F1} s: {ok} DMAs ok, {pending} page requests pending, {failed} answered invalid, {faults} faults");
        Assert.True(errors.IsEmpty, string.Join(Environment.NewLine, errors.Take(10)));
        Assert.True(ok > 0 && pending > 0, "the device never reached a page or never sent a page request");

        // Nothing is left waiting: SVA can be turned off once unbound, and the PRQ is drained.
        bed.Iommu.SvaUnbindDevice(h!);
        Assert.Equal(Errno.None, bed.Iommu.DevDisableFeature(dev, IommuDevFeature.Sva));
        Assert.Equal(bed.Unit.Read64(0xC8), bed.Unit.Read64(0xC0));
    }
}
