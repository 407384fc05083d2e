using System.Collections.Concurrent;
using System.Diagnostics;
using Iommu.Devices;
using Iommu.Mm;
using Iommu.Reliability.Tests.Infrastructure;

namespace Iommu.Reliability.Tests.Concurrency;

/// <summary>
/// Found by <see cref="StackLifecycleStressTests"/>: a device hot-remove (<c>device_del</c>, which the model runs
/// under the bus lock) frees the group's default domain and so takes other groups' mutexes; an SVA unbind holds
/// its group's mutex while it drains the page request queue and flushes the IOPF workqueue; the IOPF worker's page
/// response looks up the device's remapping unit (<c>dmar_find_matched_drhd_unit</c>). That lookup took the bus
/// lock, closing a cycle: bus lock → group mutex → IOPF flush → bus lock. In the kernel the DRHD list is read
/// under RCU, never under a lock device_del holds. One thread binds, faults through PRI and unbinds; another
/// hot-removes and re-adds a device; both must keep going.
/// </summary>
public sealed class HotRemoveDuringPrqDrainDeadlockTests
{
    [Fact]
    public void Hot_remove_racing_sva_unbind_with_pending_page_requests_does_not_deadlock()
    {
        var bed = new SvaTestBed(); // not disposed after a deadlock: Dispose would wait for the stuck calls
        PciDevice sva = bed.AddDevice("0000:00:05.0", sva: true);
        var errors = new ConcurrentQueue<string>();
        var sw = Stopwatch.StartNew();
        TimeSpan run = TimeSpan.FromSeconds(Math.Clamp(ReliabilityBudget.Ops / 50_000.0, 2, 30));
        long binds = 0, removes = 0;

        var binder = new Thread(() =>
        {
            try
            {
                Span<byte> b = stackalloc byte[8];
                while (sw.Elapsed < run)
                {
                    using var mm = new ProcessAddressSpace(bed.Pages, "app");
                    ulong va = mm.Mmap(16 * 4096);
                    bed.Iommu.SvaBindDevice(sva, mm, null, out IommuSva? h).ThrowIfError();
                    uint pasid = bed.Iommu.SvaGetPasid(h!);
                    for (ulong i = 0; i < 16; i++)
                    {
                        sva.AtsDmaRead(pasid, va + (i * 4096), b); // untouched: a page request the IOPF worker answers
                    }

                    bed.Iommu.SvaUnbindDevice(h!); // drains the PRQ and flushes the IOPF queue under the group mutex
                    Interlocked.Increment(ref binds);
                }
            }
            catch (Exception ex)
            {
                errors.Enqueue($"binder: {ex}");
            }
        })
        { IsBackground = true };

        var plugger = new Thread(() =>
        {
            try
            {
                PciDevice d = bed.Pci.AddDevice(new PciDeviceSpec("0000:00:07.0") { Acs = true });
                while (sw.Elapsed < run)
                {
                    bed.Pci.RemoveDevice(d); // frees the group's default domain
                    d = bed.Pci.AddDevice(new PciDeviceSpec("0000:00:07.0") { Acs = true });
                    Interlocked.Increment(ref removes);
                }
            }
            catch (Exception ex)
            {
                errors.Enqueue($"plugger: {ex}");
            }
        })
        { IsBackground = true };

        binder.Start();
        plugger.Start();
        bool done = binder.Join(run + TimeSpan.FromSeconds(30)) & plugger.Join(TimeSpan.FromSeconds(30));
        Assert.True(done, $"deadlock: {Interlocked.Read(ref binds)} binds, {Interlocked.Read(ref removes)} hot-removes done, then no progress");
        bed.Dispose();
        Assert.True(errors.IsEmpty, string.Join("\n", errors));
    }
}
