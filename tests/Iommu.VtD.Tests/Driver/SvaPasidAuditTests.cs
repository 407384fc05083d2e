using Iommu.Devices;
using Iommu.Domains;
using Iommu.Faults;
using Iommu.Mm;
using Iommu.VtD.Driver;
using static Iommu.VtD.Tests.Driver.IopfTestKit;

namespace Iommu.VtD.Tests.Driver;

/// <summary>
/// Audit of SVA, page requests and the PASID attach API at their edges: the PRQ thread's svm/sdev cache
/// after a bad request, and a PASID still bound by SVA after its process exited.
/// </summary>
public sealed class SvaPasidAuditTests
{
    private const ulong Page = 4096;

    // 5.15 prq_event_thread: every "goto bad_req" (no PASID, not canonical, privileged, execute with read, no
    // svm for the PASID, no sdev for the RID) sets svm = sdev = NULL before answering Invalid. A request that
    // follows, from the same device with the PASID of a process the device is not bound to, then looks the
    // sdev up in that svm, finds none and is answered Invalid — it must not be reported (and faulted into
    // that other process) on the strength of the sdev cached from the request before the bad one.
    [Theory]
    [InlineData(true)] // the bad request fails an early check (privileged with read)
    [InlineData(false)] // the bad request names a PASID without svm
    public void A_bad_request_resets_the_prq_threads_cache_so_a_pasid_the_device_is_not_bound_to_is_answered_invalid(bool earlyCheck)
    {
        (DriverBed f, PciDevice a, HostPageAllocator pages) = Bed();
        using DriverBed owner = f;
        PciDevice b = SvaDevice(f, "0000:00:06.0");
        using var mm1 = new ProcessAddressSpace(pages, "p1");
        using var mm2 = new ProcessAddressSpace(pages, "p2");
        ulong va1 = mm1.Mmap(Page);
        ulong va2 = mm2.Mmap(Page);
        uint p1 = f.Iommu.SvaGetPasid(Bind(f, a, mm1));
        uint p2 = f.Iommu.SvaGetPasid(Bind(f, b, mm2)); // only b is bound to mm2
        var trace = new FirstLevelTestKit.QiTrace(f);

        f.Unit.Write32(0xE0, 0x8000_0000); // mask: one pass sees all three requests
        Assert.True(Request(f, a, p1, va1, prgi: 1, lpig: true)); // good: caches (svm1, a's sdev)
        Assert.True(earlyCheck
            ? Request(f, a, p2, va2, prgi: 2, lpig: true, pm: true)
            : Request(f, a, p2 + 50, va2, prgi: 2, lpig: true));
        Assert.True(Request(f, a, p2, va2, prgi: 3, lpig: true, rd: false, wr: true)); // a is not bound to mm2
        f.Unit.Write32(0xE0, 0);
        Assert.Equal(Errno.None, f.Iommu.IopfQueueFlushDev(a));
        Assert.Equal(Errno.None, f.Iommu.IopfQueueFlushDev(b));

        List<(ulong Q0, ulong Q1)> responses = Responses(trace);
        Assert.Contains((ResponseQ0(p1, a.RequesterId, 0), ResponseQ1(1)), responses);
        Assert.Contains((ResponseQ0(p2, a.RequesterId, 1), ResponseQ1(3)), responses);
        Assert.False(mm2.TryTranslate(va2, out _)); // nothing faulted into a process a cannot reach
    }

    // 6.2: an SVA bind holds its PASID in the group's pasid_array (the SVA domain) until the unbind, also after
    // the process exited (mm release only tears the entry down with FPD). iommu_attach_device_pasid on that
    // PASID is -EBUSY. Attached anyway, the later unbind's intel_pasid_tear_down_entry removes the attached
    // domain's entry while the core still lists the domain there.
    [Fact]
    public void Attach_device_pasid_on_a_pasid_bound_by_sva_is_ebusy_also_after_the_process_exited()
    {
        (DriverBed f, PciDevice dev, HostPageAllocator pages) = Bed();
        using DriverBed owner = f;
        using var mm = new ProcessAddressSpace(pages, "p");
        IommuSva h = Bind(f, dev, mm);
        uint p = f.Iommu.SvaGetPasid(h);
        IDomain d = f.Unmanaged();
        Assert.Equal(Errno.None, f.Iommu.Map(d, 0x4000_0000, 0x1_4000_0000, DriverTestKit.M2, DriverTestKit.RW));

        Assert.Equal(Errno.EBUSY, f.Iommu.AttachDevicePasid(d, dev, p));
        mm.Exit();
        Assert.Equal(0x2UL, f.PasidEntry(dev, p)![0]); // FPD only: the bind still owns the PASID
        Assert.Equal(Errno.EBUSY, f.Iommu.AttachDevicePasid(d, dev, p));

        // After the unbind the PASID is free for the domain, and the domain's entry is the one DMA uses.
        f.Iommu.SvaUnbindDevice(h);
        Assert.Equal(Errno.None, f.Iommu.AttachDevicePasid(d, dev, p));
        f.AssertDma(dev, p, 0x4000_0080, 0x1_4000_0080);
        f.Iommu.DetachDevicePasid(d, dev, p);
    }

    // The model's bind refuses a process that has exited (-EINVAL). A bind racing the exit (another thread exits the
    // process while a second device binds it; the svm exists, so the bind registers no notifier) must not program a
    // PASID entry once the exit's release has run: the exit frees the tables right after, and an entry made then
    // points at freed (or, read after the exit, zero) page-table memory.
    [Fact]
    public void A_bind_racing_the_process_exit_fails_and_leaves_no_entry_on_freed_tables()
    {
        (DriverBed f, PciDevice b, HostPageAllocator pages) = Bed();
        using DriverBed owner = f;
        PciDevice a = SvaDevice(f, "0000:00:06.0");
        using var mm = new ProcessAddressSpace(pages, "p");
        ulong va = mm.Mmap(Page);
        Assert.Equal(Errno.None, mm.Write(va, [1]));
        uint p = f.Iommu.SvaGetPasid(Bind(f, b, mm));

        Errno bound = Errno.None;
        IommuSva? ha = null;
        Thread? binder = null;
        mm.MmuNotifierRegister(new ReleaseHook(() =>
        {
            // The svm's release has run (b's entry is down); the exit holds the process until it has freed the tables.
            binder = new Thread(() => bound = f.Iommu.SvaBindDevice(a, mm, null, out ha)) { IsBackground = true };
            binder.Start();
            var sw = System.Diagnostics.Stopwatch.StartNew();
            while (sw.ElapsedMilliseconds < 2000 && binder.IsAlive && (binder.ThreadState & ThreadState.WaitSleepJoin) == 0)
            {
                Thread.Sleep(1);
            }

            Thread.Sleep(100);
        }));
        mm.Exit();
        Assert.True(binder!.Join(TimeSpan.FromSeconds(10)));
        Assert.Equal(Errno.EINVAL, bound);
        Assert.Null(ha);
        ulong[]? e = f.PasidEntry(a, p);
        Assert.True(e is null || (e[0] & 1) == 0, $"a's PASID entry is present after the exit (q0 0x{e?[0]:x}, FLPTR 0x{e?[2]:x})");
    }

    private sealed class ReleaseHook(Action onRelease) : MmuNotifier
    {
        public override void InvalidateRange(ProcessAddressSpace mm, ulong start, ulong end)
        {
        }

        public override void Release(ProcessAddressSpace mm) => onRelease();
    }

    // 5.15 intel_svm_check: a unit is SVM-capable only with pasid_supported and, on a CPU with 1 GiB pages
    // (X86_FEATURE_GBPAGES, which every SVA-capable x86-64 CPU has), CAP.FL1GP ("SVM disabled, incompatible 1GB page
    // capability"); intel_iommu_enable_sva is -ENODEV otherwise, before the device joins the iopf queue.
    [Fact]
    public void Sva_enable_on_a_unit_without_first_level_1gib_pages_is_enodev_and_changes_nothing()
    {
        using DriverBed f = FirstLevelTestKit.NewFl(Config with { FirstLevel1GiBPages = false }, FirstLevelPolicy.AllWhenEveryUnitHasFlts);
        PciDevice dev = f.Pci.AddDevice(new PciDeviceSpec("0000:00:05.0") { PasidWidth = 20, Ats = true, Pri = true, Acs = true });
        Assert.True(dev.AtsEnabled && dev.PriEnabled);
        Assert.Equal(Errno.None, f.Iommu.DevEnableFeature(dev, IommuDevFeature.Iopf));
        Assert.Equal(Errno.ENODEV, f.Iommu.DevEnableFeature(dev, IommuDevFeature.Sva));
        Assert.Equal(Errno.EINVAL, f.Iommu.DevDisableFeature(dev, IommuDevFeature.Sva)); // never joined the iopf queue
    }

    // iommu_free_global_pasid of a PASID an SVA process holds (a caller's mistake: it never allocated it) must not hand
    // the number out again while the process keeps it: a second process bound with the same PASID joins the first
    // one's svm in the driver (PASID -> svm), so its notifier is never registered and its munmap flushes nothing —
    // the device keeps reaching the freed page through a warmed IOTLB entry.
    [Fact]
    public void Freeing_an_sva_pasid_as_a_global_pasid_does_not_give_it_to_another_process()
    {
        (DriverBed f, PciDevice a, HostPageAllocator pages) = Bed();
        using DriverBed owner = f;
        PciDevice b = SvaDevice(f, "0000:00:06.0");
        using var mm1 = new ProcessAddressSpace(pages, "p1");
        using var mm2 = new ProcessAddressSpace(pages, "p2");
        uint p1 = f.Iommu.SvaGetPasid(Bind(f, a, mm1));
        f.Iommu.FreeGlobalPasid(p1); // not the caller's to free

        ulong va = mm2.Mmap(Page);
        Assert.Equal(Errno.None, mm2.Write(va, [7]));
        uint p2 = f.Iommu.SvaGetPasid(Bind(f, b, mm2));
        Assert.NotEqual(p1, p2);

        // The driver refuses a PASID whose svm belongs to another process, whoever hands it the number.
        Assert.Equal(Errno.EBUSY, f.Driver.SvaBind(b, mm2, p1, null, out IommuSva? stray));
        Assert.Null(stray);

        Span<byte> buf = stackalloc byte[8];
        Assert.True(b.DmaRead(p2, va, buf).IsOk); // warms the IOTLB
        mm2.Munmap(va, Page);
        Assert.False(b.DmaRead(p2, va, buf).IsOk);
    }

    // 5.15 intel_svm_page_response ignores qi_submit_sync's result: a page group response descriptor the unit rejects
    // (IQE: a unit without page requests, ECAP.PRS = 0) is logged by qi_check_fault and iommu_page_response returns 0,
    // the pending request consumed. A device driver that reports and answers its own page requests (its own fault
    // handler) on an SVA-bound device behind such a unit must get that 0, not an exception out of the kernel API.
    [Fact]
    public void A_page_response_the_unit_rejects_returns_zero_as_5_15_and_consumes_the_request()
    {
        DriverBed f = FirstLevelTestKit.NewFl("Fl48", FirstLevelPolicy.AllWhenEveryUnitHasFlts); // no ECAP.PRS
        using DriverBed owner = f;
        PciDevice dev = f.AuxParent("0000:00:02.0");
        using var mm = new ProcessAddressSpace(HostPageAllocator.ForPlatform(f.Platform), "p");
        uint p = f.Iommu.SvaGetPasid(Bind(f, dev, mm));
        Assert.Equal(Errno.None, f.Iommu.RegisterDeviceFaultHandler(dev, (_, _) => Errno.None, null));
        var request = new IommuFault
        {
            Type = IommuFaultType.PageRequest,
            Flags = PageRequestFlags.LastPage | PageRequestFlags.PasidValid | PageRequestFlags.ResponseNeedsPasid,
            Pasid = p,
            GroupId = 3,
            Perm = 1,
            Address = 0x1000,
        };
        Assert.Equal(Errno.None, f.Iommu.ReportDeviceFault(dev, request));
        Assert.Equal(Errno.EBUSY, f.Iommu.UnregisterDeviceFaultHandler(dev)); // pending

        Errno ret = f.Iommu.PageResponse(dev, new IommuPageResponse { Pasid = p, GroupId = 3, Flags = IommuPageResponse.FlagPasidValid, Code = IommuPageResponseCode.Success });
        Assert.Equal(Errno.None, ret);
        Assert.Equal(Errno.None, f.Iommu.UnregisterDeviceFaultHandler(dev)); // no longer pending

        // The queue goes on (qi_check_fault): the rejected slot was rewritten with the wait before IQE was
        // cleared, so the unit, which resumes from IQH at once, did not fetch it again; later flushes complete.
        Assert.Equal(0u, f.Unit.Read32(0x34) & 0x10); // FSTS.IQE
        Assert.Equal(f.Unit.Read64(0x88), f.Unit.Read64(0x80)); // IQT == IQH: nothing left to fetch
        IDomain domain = f.Iommu.DomainAlloc(f.Pci)!;
        PciDevice other = f.AddDevice("0000:00:05.0");
        Assert.Equal(Errno.None, f.Iommu.AttachDevice(domain, other));
        Assert.Equal(Errno.None, f.Iommu.Map(domain, 0x10_0000, 0x20_0000, Sizes.Page, IommuProt.Read | IommuProt.Write));
        Assert.True(f.Write(other, null, 0x10_0000, 1).IsOk); // cached in the IOTLB
        Assert.Equal(Sizes.Page, f.Iommu.Unmap(domain, 0x10_0000, Sizes.Page)); // a synced flush through the queue
        Assert.False(f.Write(other, null, 0x10_0000, 2).IsOk);
        Assert.Equal(0u, f.Unit.Read32(0x34) & 0x10);
    }
}
