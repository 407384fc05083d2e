using System.Collections.Concurrent;
using System.Diagnostics;
using Iommu.Devices;
using Iommu.Domains;
using Iommu.Mm;
using Iommu.Reliability.Tests.Infrastructure;
using Xunit.Abstractions;

namespace Iommu.Reliability.Tests.Concurrency;

/// <summary>
/// The class of the page-request interrupt defect: a handler run on whatever thread touched the unit next. The unit
/// raises its events on the next thread that writes a register or translates, and the driver writes the invalidation
/// queue's doorbell inside its queue lock; so before the PRQ handler had its own thread, an unmap (or an mm notifier's
/// invalidation, or the iopf worker's page response) could run the whole PRQ pass inside the queue lock, waiting for
/// the PRQ lock that a device thread's pass held while it waited for the queue lock to answer a request. Here every
/// source of page requests and of queued invalidations runs at once on one unit: devices whose requests the driver
/// answers itself (no PASID: Invalid Request), a device whose requests the iopf worker answers (a bound process whose
/// pages come and go), the process's munmaps (notifier invalidations), and map/unmap in another domain. The property:
/// every thread keeps making progress, and nothing throws. It runs for a time budget (RELIABILITY_OPS scales it).
/// </summary>
public sealed class PageRequestInterruptDeadlockTests(ITestOutputHelper output)
{
    private const ulong Page = 4096;
    private static readonly TimeSpan Budget = TimeSpan.FromSeconds(Math.Clamp(ReliabilityBudget.Ops / 25_000, 3, 120));
    private static readonly TimeSpan Stall = TimeSpan.FromSeconds(10);

    [Fact]
    public void Page_requests_racing_every_queued_invalidation_source_never_hang()
    {
        var bed = new SvaTestBed();
        PciDevice bad1 = bed.AddDevice("0000:00:02.0", sva: true);
        PciDevice bad2 = bed.AddDevice("0000:00:03.0", sva: true);
        PciDevice sva = bed.AddDevice("0000:00:04.0", sva: true);
        PciDevice plain = bed.AddDevice("0000:00:05.0", sva: false);
        IDomain dom = bed.Iommu.DomainAlloc(bed.Pci)!;
        Assert.Equal(Errno.None, bed.Iommu.AttachDevice(dom, plain));
        var mm = new ProcessAddressSpace(bed.Pages, "p");
        const int Pages = 64;
        ulong va = mm.Mmap(Pages * Page);
        Assert.Equal(Errno.None, bed.Iommu.SvaBindDevice(sva, mm, null, out IommuSva? handle));
        uint pasid = bed.Iommu.SvaGetPasid(handle!);

        var errors = new ConcurrentQueue<string>();
        long requests = 0;
        bool stop = false;
        var workers = new (string Name, Action<long> Step)[]
        {
            // Nothing is mapped for requests without PASID: each one is a page request the PRQ handler answers Invalid.
            ("device without PASID 1", k => Count(bad1.AtsDmaRead(null, 0x4000_0000UL + ((ulong)(k & 255) << 12), new byte[8]))),
            ("device without PASID 2", k => Count(bad2.AtsDmaRead(null, 0x8000_0000UL + ((ulong)(k & 255) << 12), new byte[8]))),

            // A bound process's pages: faulted in by the iopf worker (or refused while they are PROT_NONE); each
            // mprotect is an mm notifier invalidation through the queue.
            ("SVA device", k => Count(sva.AtsDmaWrite(pasid, va + ((ulong)(k % Pages) * Page), BitConverter.GetBytes(k)))),
            ("mprotect", k =>
            {
                ulong at = va + ((ulong)(k % Pages) * Page);
                mm.Mprotect(at, Page, VmProt.None);
                mm.Mprotect(at, Page, VmProt.ReadWrite);
            }),

            // Another domain on the same unit: each unmap's IOTLB sync is a queued invalidation.
            ("mapper", k =>
            {
                Assert.Equal(Errno.None, bed.Iommu.Map(dom, 0x10_0000, 0x1_0000_0000, Page, IommuProt.Read | IommuProt.Write));
                Assert.Equal(Page, bed.Iommu.Unmap(dom, 0x10_0000, Page));
            }),
        };

        long[] progress = new long[workers.Length];
        var threads = workers.Select((w, i) => new Thread(() =>
        {
            try
            {
                for (long k = 0; !Volatile.Read(ref stop); k++)
                {
                    w.Step(k);
                    Interlocked.Increment(ref progress[i]);
                }
            }
            catch (Exception ex)
            {
                errors.Enqueue($"{w.Name}: {ex}");
            }
        }) { IsBackground = true, Name = w.Name }).ToList();

        threads.ForEach(t => t.Start());
        var clock = Stopwatch.StartNew();
        long[] last = new long[workers.Length];
        var since = workers.Select(_ => Stopwatch.StartNew()).ToArray();
        string? stuck = null;
        while (clock.Elapsed < Budget && errors.IsEmpty && stuck is null)
        {
            Thread.Sleep(50);
            for (int i = 0; i < workers.Length; i++)
            {
                long now = Interlocked.Read(ref progress[i]);
                if (now != last[i])
                {
                    last[i] = now;
                    since[i].Restart();
                }
                else if (since[i].Elapsed > Stall)
                {
                    stuck = workers[i].Name;
                }
            }
        }

        Volatile.Write(ref stop, true);
        stuck ??= threads.Where(t => !t.Join(Stall)).Select(t => t.Name).FirstOrDefault();
        output.WriteLine($"{clock.Elapsed.TotalSeconds:F1} s: {string.Join(", ", workers.Select((w, i) => $"{w.Name} {last[i]}"))}; {Interlocked.Read(ref requests)} page requests pending after a DMA");

        // A deadlocked platform cannot be disposed (its stuck threads hold access scopes): leave it to the process.
        Assert.True(stuck is null, $"no progress for {Stall.TotalSeconds} s: {stuck} (deadlock)");
        Assert.True(errors.IsEmpty, string.Join("\n", errors.Take(5)));
        Assert.True(Interlocked.Read(ref requests) > 0, "no page request was ever sent: the test exercised nothing");
        bed.Iommu.SvaUnbindDevice(handle!);
        mm.Dispose();
        bed.Dispose();

        void Count(DmaResult r)
        {
            if (r.Status == DmaStatus.PageRequestPending)
            {
                Interlocked.Increment(ref requests);
            }
        }
    }
}
