using System.Globalization;
using Iommu.Devices;
using Iommu.Mm;
using Iommu.Reliability.Tests.Infrastructure;
using Xunit.Abstractions;

namespace Iommu.Reliability.Tests.FaultInjection;

/// <summary>
/// Allocation failures on the SVA bind and page-fault paths (5.15): every failure returns the kernel's errno (or the
/// kernel's page response) and leaves what a user observes as it was — frames, PASIDs handed out, the PASID entry
/// (DMA with the PASID), the notifier (no invalidation after a munmap), the pages of the process — and a later
/// bind or fault succeeds.
/// </summary>
/// <remarks>
/// Reachable failure points: the PASID-table page of <c>intel_pasid_get_entry</c> (a platform frame,
/// <see cref="Memory.FrameAllocator.FailNth"/>), the PASID allocator (ioasid_alloc: exhausted by a device with one
/// PASID), and the process pool's page and page-table allocations under <c>handle_mm_fault</c> (swept by leaving
/// n = 0, 1, … pages free in a small pool; no injection hook needed). The model's iopf group, the <c>intel_svm</c>
/// and the notifier registration allocate no frames, so they have no failure point here.
/// </remarks>
public sealed class SvaFailNthTests(ITestOutputHelper output)
{
    private const ulong Page = 4096;

    private static List<string> Snapshot(SvaTestBed bed, PciDevice dev, uint pasid, ProcessAddressSpace mm, ulong va)
    {
        var s = new List<string>
        {
            $"frames.live={bed.Platform.Frames.LiveFrames}",
            $"pool.pages={bed.Pages.AllocatedPages}",
            $"pool.tables={bed.Pages.PageTablePages}",
        };
        byte[] b = new byte[8];
        DmaResult r = dev.DmaRead(pasid, va, b);
        s.Add(string.Create(CultureInfo.InvariantCulture, $"dma pasid {pasid} -> {r.Status} 0x{(r.IsOk ? r.Address : 0):x} reason 0x{r.FaultReason:x}"));

        // A notifier left registered would queue a P_IOTLB for the range: munmap of a scratch page must queue nothing.
        ulong scratch = mm.Mmap(Page);
        _ = mm.Write(scratch, [1]);
        ulong iqt = bed.Mark();
        mm.Munmap(scratch, Page);
        s.Add(string.Create(CultureInfo.InvariantCulture, $"invalidations after munmap: {(bed.Mark() - iqt) / 32}"));
        return s;
    }

    [Fact]
    public void A_failing_pasid_table_page_fails_the_bind_with_einval_and_changes_nothing()
    {
        using var bed = new SvaTestBed();
        PciDevice other = bed.AddDevice("0000:00:02.0", sva: true);
        PciDevice dev = bed.AddDevice("0000:00:03.0", sva: true);

        // PASIDs 1..63 go to processes bound to the other device: the next mm gets PASID 64, whose PASID-table page
        // `dev` does not have yet.
        var held = new List<(ProcessAddressSpace Mm, IommuSva H)>();
        for (int i = 1; i < 64; i++)
        {
            var m = new ProcessAddressSpace(bed.Pages, $"h{i}");
            Assert.Equal(Errno.None, bed.Iommu.SvaBindDevice(other, m, null, out IommuSva? hh));
            held.Add((m, hh!));
        }

        using var mm = new ProcessAddressSpace(bed.Pages, "p");
        ulong va = mm.Mmap(Page);
        Assert.Equal(Errno.None, mm.Write(va, [0x42]));
        IommuSva? h = null;
        (int failures, Errno final) = FailNthSweep.Run(
            bed.Platform.Frames,
            () => Snapshot(bed, dev, 64, mm, va),
            () => bed.Iommu.SvaBindDevice(dev, mm, null, out h),
            (n, err, pre) =>
            {
                // intel_pasid_get_entry cannot allocate the table page: 5.15's intel_pasid_setup_first_level returns
                // -EINVAL (WARN_ON(!pte)); the PASID goes back and nothing else changed.
                Assert.True(err == Errno.EINVAL, $"fail_nth={n}: {err}, expected EINVAL");
                Assert.Null(h);
                FailNthSweep.AssertSame(pre, Snapshot(bed, dev, 64, mm, va), $"fail_nth={n}");
            });

        Assert.Equal(Errno.None, final);
        Assert.True(failures >= 1, "the bind allocated no frame: the sweep tested nothing");
        Assert.Equal(64u, bed.Iommu.SvaGetPasid(h!)); // the failed binds handed their PASID back
        byte[] b = new byte[1];
        DmaResult r = dev.DmaRead(64, va, b);
        Assert.True(r.IsOk && b[0] == 0x42, $"after the failures the bind works: {r.Status}");
        output.WriteLine($"SVA bind: {failures} injected frame failure(s), each failed with state unchanged");

        bed.Iommu.SvaUnbindDevice(h!);
        foreach ((ProcessAddressSpace m, IommuSva hh) in held)
        {
            bed.Iommu.SvaUnbindDevice(hh);
            m.Dispose();
        }
    }

    [Fact]
    public void An_exhausted_pasid_space_fails_the_bind_with_enomem_and_the_pasid_comes_back_after_unbind()
    {
        using var bed = new SvaTestBed();
        PciDevice dev = bed.Pci.AddDevice(new PciDeviceSpec("0000:00:02.0") { PasidWidth = 1, Ats = true, Pri = true, Acs = true });
        Assert.Equal(Errno.None, bed.Iommu.DevEnableFeature(dev, IommuDevFeature.Iopf));
        Assert.Equal(Errno.None, bed.Iommu.DevEnableFeature(dev, IommuDevFeature.Sva));
        using var a = new ProcessAddressSpace(bed.Pages, "a");
        using var b = new ProcessAddressSpace(bed.Pages, "b");
        ulong va = b.Mmap(Page);
        Assert.Equal(Errno.None, bed.Iommu.SvaBindDevice(dev, a, null, out IommuSva? ha));
        Assert.Equal(1u, bed.Iommu.SvaGetPasid(ha!));

        List<string> pre = Snapshot(bed, dev, 1, b, va);
        Assert.Equal(Errno.ENOMEM, bed.Iommu.SvaBindDevice(dev, b, null, out IommuSva? hb)); // iommu_sva_alloc_pasid: ioasid_alloc failed
        Assert.Null(hb);
        FailNthSweep.AssertSame(pre, Snapshot(bed, dev, 1, b, va), "PASID exhaustion");

        bed.Iommu.SvaUnbindDevice(ha!);
        Assert.Equal(Errno.None, bed.Iommu.SvaBindDevice(dev, b, null, out hb));
        Assert.Equal(1u, bed.Iommu.SvaGetPasid(hb!));
        bed.Iommu.SvaUnbindDevice(hb!);
    }

    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public void Page_pool_exhaustion_under_a_page_request_is_answered_invalid_and_the_fault_succeeds_once_pages_are_free(bool cow)
    {
        using var bed = new SvaTestBed();
        PciDevice dev = bed.AddDevice("0000:00:02.0", sva: true);

        // A pool of its own (64 pages) so that exhausting it is cheap; tables and pages come from it.
        var pool = HostPageAllocator.ForPlatform(bed.Platform, 6 * Sizes.GiB, 64 * Page);
        using var mm = new ProcessAddressSpace(pool, "p");
        ulong va = mm.Mmap(1UL << 30); // a fresh 1 GiB area: a fault there needs the PD, the PT and the page
        if (cow)
        {
            Assert.Equal(Errno.None, mm.Write(va, [5]));
        }

        using ProcessAddressSpace? child = cow ? mm.Fork("child") : null;
        Assert.Equal(Errno.None, bed.Iommu.SvaBindDevice(dev, mm, null, out IommuSva? h));
        uint pasid = bed.Iommu.SvaGetPasid(h!);

        var taken = new Stack<ulong>();
        while (pool.Allocate(1, 1, out ulong pfn) == Errno.None)
        {
            taken.Push(pfn);
        }

        int failures = 0;
        byte[] data = [0x77];
        for (int free = 0; ; free++)
        {
            ulong before = mm.TryTranslate(va, out ulong oldPfn) ? oldPfn : 0;
            ulong mark = bed.Mark();
            Assert.Equal(DmaStatus.PageRequestPending, dev.AtsDmaWrite(pasid, va, data).Status);
            Assert.Equal(Errno.None, bed.Iommu.IopfQueueFlushDev(dev));
            List<(ulong Q0, ulong Q1)> resp = bed.Responses(mark);
            Assert.Single(resp);
            int rc = (int)((resp[0].Q0 >> 12) & 0xF);
            if (rc == 0)
            {
                DmaResult r = dev.AtsDmaWrite(pasid, va, data);
                Assert.Equal(DmaStatus.Ok, r.Status);
                Assert.True(mm.TryTranslate(va, out ulong pfn) && pfn != before);
                byte[] got = new byte[1];
                Assert.Equal(Errno.None, mm.Read(va, got));
                Assert.Equal(0x77, got[0]);
                if (child is not null)
                {
                    Assert.Equal(Errno.None, child.Read(va, got));
                    Assert.Equal(5, got[0]); // the child kept the old page
                }

                break;
            }

            // handle_mm_fault → VM_FAULT_OOM: INVALID (iopf_handle_single), the page is not mapped (writable), the retry fails once.
            failures++;
            Assert.Equal(1, rc);
            Assert.Equal(before, mm.TryTranslate(va, out ulong now) ? now : 0);
            Assert.False(mm.Walk(va).Writable);
            Assert.Equal(DmaStatus.PageRequestFailed, dev.AtsDmaWrite(pasid, va, data).Status);
            Assert.True(free < 16, "the fault still failed with 16 free pages");
            pool.Put(taken.Pop()); // one more page free for the next run
        }

        Assert.True(failures >= (cow ? 1 : 3), $"only {failures} allocation failure(s) reached");
        output.WriteLine($"page request {(cow ? "COW break" : "fresh page")}: {failures} allocation failure(s), each answered INVALID with the page unmapped");
        bed.Iommu.SvaUnbindDevice(h!);
    }
}
