using Iommu.Devices;
using Iommu.Faults;
using Iommu.Mm;
using Iommu.VtD.Driver;
using static Iommu.VtD.Tests.Driver.IopfTestKit;

namespace Iommu.VtD.Tests.Driver;

/// <summary>
/// 5.15 I/O page faults end to end: an ATS+PRI device bound by SVA sends page requests to the unit's queue; the
/// PRQ thread reports them, the iopf worker handles each group on the process model and answers it once.
/// </summary>
public sealed class PageRequestTests
{
    private const ulong Page = 4096;

    [Fact]
    public void A_never_touched_page_is_faulted_in_by_a_page_request_and_the_retry_reaches_the_page_the_cpu_maps()
    {
        (DriverBed f, PciDevice dev, HostPageAllocator pages) = Bed();
        using DriverBed owner = f;
        using var mm = new ProcessAddressSpace(pages, "p");
        ulong va = mm.Mmap(4 * Page);
        uint pasid = f.Iommu.SvaGetPasid(Bind(f, dev, mm));
        Assert.False(mm.TryTranslate(va + Page, out _));
        var trace = new FirstLevelTestKit.QiTrace(f);

        byte[] data = [1, 2, 3, 4];
        Assert.Equal(DmaStatus.PageRequestPending, dev.AtsDmaWrite(pasid, va + Page + 8, data).Status);
        Assert.Equal(Errno.None, f.Iommu.IopfQueueFlushDev(dev));
        Assert.Equal([(ResponseQ0(pasid, dev.RequesterId, 0), ResponseQ1(0))], Responses(trace));

        // The CPU now maps a writable, dirty page there; the retry writes into exactly that page.
        ulong pa = Pa(mm, va + Page + 8);
        DmaResult r = dev.AtsDmaWrite(pasid, va + Page + 8, data);
        Assert.Equal(DmaStatus.Ok, r.Status);
        Assert.Equal(pa, r.Address);
        byte[] back = new byte[4];
        Assert.Equal(Errno.None, mm.Read(va + Page + 8, back));
        Assert.Equal(data, back);

        // A read of a never-touched page: the shared zero page, as a CPU read maps it.
        byte[] buf = new byte[8];
        Assert.Equal(DmaStatus.PageRequestPending, dev.AtsDmaRead(pasid, va + (2 * Page), buf).Status);
        Assert.Equal(Errno.None, f.Iommu.IopfQueueFlushDev(dev));
        Assert.Equal(DmaStatus.Ok, dev.AtsDmaRead(pasid, va + (2 * Page), buf).Status);
        Assert.Equal(pages.ZeroPagePfn, Pa(mm, va + (2 * Page)) >> 12);
        Assert.Equal([(ResponseQ0(pasid, dev.RequesterId, 0), ResponseQ1(1))], Responses(trace));
        Assert.Equal(0u, f.Unit.Read32(0xDC)); // PRS: nothing pending
    }

    [Fact]
    public void Writes_to_a_read_only_area_accesses_outside_any_area_and_prot_none_are_answered_invalid()
    {
        (DriverBed f, PciDevice dev, HostPageAllocator pages) = Bed();
        using DriverBed owner = f;
        using var mm = new ProcessAddressSpace(pages, "p");
        ulong ro = mm.Mmap(Page, VmProt.Read);
        ulong none = mm.Mmap(Page, VmProt.None);
        ulong rw = mm.Mmap(Page);
        uint pasid = f.Iommu.SvaGetPasid(Bind(f, dev, mm));
        var trace = new FirstLevelTestKit.QiTrace(f);
        byte[] b = new byte[8];

        Assert.Equal(DmaStatus.PageRequestPending, dev.AtsDmaWrite(pasid, ro, b).Status);
        Assert.Equal(DmaStatus.PageRequestPending, dev.AtsDmaRead(pasid, none, b).Status);
        Assert.Equal(DmaStatus.PageRequestPending, dev.AtsDmaRead(pasid, rw + Page + (16 * Page), b).Status);
        Assert.Equal(Errno.None, f.Iommu.IopfQueueFlushDev(dev));
        Assert.Equal(
            [(ResponseQ0(pasid, dev.RequesterId, 1), ResponseQ1(0)), (ResponseQ0(pasid, dev.RequesterId, 1), ResponseQ1(1)), (ResponseQ0(pasid, dev.RequesterId, 1), ResponseQ1(2))],
            Responses(trace));
        Assert.Equal(DmaStatus.PageRequestFailed, dev.AtsDmaWrite(pasid, ro, b).Status);
        Assert.Equal(DmaStatus.PageRequestFailed, dev.AtsDmaRead(pasid, none, b).Status);
        Assert.False(mm.TryTranslate(ro, out _)); // nothing was faulted in
        Assert.False(mm.TryTranslate(none, out _));

        // A read of the read-only area succeeds (permission never exceeds the area: a read only).
        Assert.Equal(DmaStatus.PageRequestPending, dev.AtsDmaRead(pasid, ro, b).Status);
        Assert.Equal(Errno.None, f.Iommu.IopfQueueFlushDev(dev));
        Assert.Equal(DmaStatus.Ok, dev.AtsDmaRead(pasid, ro, b).Status);
        Assert.False(f.Unit.TranslationRequest(dev, pasid, ro, write: true).Write);
    }

    [Fact]
    public void A_write_page_request_on_a_private_cow_page_gives_the_process_a_new_page_and_the_child_keeps_the_old()
    {
        (DriverBed f, PciDevice dev, HostPageAllocator pages) = Bed();
        using DriverBed owner = f;
        using var mm = new ProcessAddressSpace(pages, "parent");
        ulong va = mm.Mmap(Page);
        Assert.Equal(Errno.None, mm.Write(va, [7]));
        uint pasid = f.Iommu.SvaGetPasid(Bind(f, dev, mm));
        byte[] b = [9];
        Assert.Equal(DmaStatus.Ok, dev.AtsDmaRead(pasid, va, new byte[1]).Status); // warms the ATC read-only
        using ProcessAddressSpace child = mm.Fork("child");
        ulong old = Pa(mm, va);
        Assert.Equal(old, Pa(child, va));

        Assert.Equal(DmaStatus.PageRequestPending, dev.AtsDmaWrite(pasid, va, b).Status);
        Assert.Equal(Errno.None, f.Iommu.IopfQueueFlushDev(dev));
        ulong fresh = Pa(mm, va);
        Assert.NotEqual(old, fresh);
        Assert.Equal(old, Pa(child, va));
        DmaResult r = dev.AtsDmaWrite(pasid, va, b);
        Assert.Equal(DmaStatus.Ok, r.Status);
        Assert.Equal(fresh, r.Address);
        byte[] got = new byte[1];
        Assert.Equal(Errno.None, child.Read(va, got));
        Assert.Equal(7, got[0]);
        Assert.Equal(Errno.None, mm.Read(va, got));
        Assert.Equal(9, got[0]);
    }

    [Fact]
    public void Non_last_requests_wait_for_the_last_of_their_group_which_is_matched_by_group_index_only()
    {
        (DriverBed f, PciDevice dev, HostPageAllocator pages) = Bed();
        using DriverBed owner = f;
        using var mm = new ProcessAddressSpace(pages, "p");
        using var other = new ProcessAddressSpace(pages, "q");
        ulong va = mm.Mmap(4 * Page);
        ulong ova = other.Mmap(Page);
        uint p = f.Iommu.SvaGetPasid(Bind(f, dev, mm));
        uint q = f.Iommu.SvaGetPasid(Bind(f, dev, other));
        var trace = new FirstLevelTestKit.QiTrace(f);

        Assert.True(Request(f, dev, p, va, prgi: 3, lpig: false));
        Assert.True(Request(f, dev, p, va + Page, prgi: 3, lpig: false, rd: true, wr: true));
        Assert.Equal(Errno.None, f.Iommu.IopfQueueFlushDev(dev));
        Assert.Empty(Responses(trace));
        Assert.False(mm.TryTranslate(va, out _)); // not handled before the last request

        Assert.True(Request(f, dev, p, va + (2 * Page), prgi: 3, lpig: true));
        Assert.Equal(Errno.None, f.Iommu.IopfQueueFlushDev(dev));
        Assert.Equal([(ResponseQ0(p, dev.RequesterId, 0), ResponseQ1(3))], Responses(trace));
        Assert.True(mm.TryTranslate(va, out _));
        Assert.True(mm.TryTranslate(va + Page, out _));
        Assert.True(mm.TryTranslate(va + (2 * Page), out _));

        // A stored request of PASID q outside its areas joins PASID p's group 5: the group is INVALID and the
        // status is sticky (p's own page is not handled).
        Assert.True(Request(f, dev, q, ova + Page, prgi: 5, lpig: false));
        Assert.True(Request(f, dev, p, va + (3 * Page), prgi: 5, lpig: true));
        Assert.Equal(Errno.None, f.Iommu.IopfQueueFlushDev(dev));
        Assert.Equal([(ResponseQ0(p, dev.RequesterId, 1), ResponseQ1(5))], Responses(trace));
        Assert.False(mm.TryTranslate(va + (3 * Page), out _));
    }

    [Fact]
    public void Bad_requests_are_answered_invalid_only_when_they_end_a_group_and_stop_markers_get_nothing()
    {
        (DriverBed f, PciDevice dev, HostPageAllocator pages) = Bed();
        using DriverBed owner = f;
        PciDevice unbound = SvaDevice(f, "0000:00:06.0");
        using var mm = new ProcessAddressSpace(pages, "p");
        ulong va = mm.Mmap(Page);
        uint p = f.Iommu.SvaGetPasid(Bind(f, dev, mm));
        var trace = new FirstLevelTestKit.QiTrace(f);
        ushort rid = dev.RequesterId;

        Assert.True(Request(f, dev, null, va, prgi: 1, lpig: true)); // a: no PASID
        Assert.True(Request(f, dev, p, 0x0000_8000_0000_0000, prgi: 2, lpig: true)); // b: not canonical
        Assert.True(Request(f, dev, p, va, prgi: 3, lpig: true, pm: true)); // c: privileged with read
        Assert.True(Request(f, dev, p, va, prgi: 4, lpig: true, exe: true)); // d: execute with read
        Assert.True(Request(f, dev, p, va, prgi: 5, lpig: true, rd: false)); // e: stop marker
        Assert.True(Request(f, dev, p + 7, va, prgi: 6, lpig: true)); // f: no process bound to the PASID
        Assert.True(Request(f, unbound, p, va, prgi: 7, lpig: true)); // g: the device is not bound to it
        Assert.True(Request(f, dev, null, va, prgi: 8, lpig: false)); // a bad request inside a group: no answer
        Assert.Equal(Errno.None, f.Iommu.IopfQueueFlushDev(dev)); // the PRQ thread's pass, then the iopf work (none)
        Assert.Equal(
            [
                (ResponseQ0(0, rid, 1, pp: false), ResponseQ1(1)),
                (ResponseQ0(p, rid, 1), ResponseQ1(2)),
                (ResponseQ0(p, rid, 1), ResponseQ1(3)),
                (ResponseQ0(p, rid, 1), ResponseQ1(4)),
                (ResponseQ0(p + 7, rid, 1), ResponseQ1(6)),
                (ResponseQ0(p, unbound.RequesterId, 1), ResponseQ1(7)),
            ],
            Responses(trace));
        Assert.False(mm.TryTranslate(va, out _));
        Assert.Equal(0u, f.Unit.Read32(0xDC));
        Assert.Equal(f.Unit.Read64(0xC8), f.Unit.Read64(0xC0)); // PQH caught up with PQT
    }

    [Fact]
    public void An_overflow_is_cleared_only_after_the_queue_drains_and_the_partial_groups_are_discarded()
    {
        (DriverBed f, PciDevice dev, HostPageAllocator pages) = Bed();
        using DriverBed owner = f;
        using var mm = new ProcessAddressSpace(pages, "p");
        ulong va = mm.Mmap(Page);
        uint p = f.Iommu.SvaGetPasid(Bind(f, dev, mm));
        var trace = new FirstLevelTestKit.QiTrace(f);

        f.Unit.Write32(0xE0, 0x8000_0000); // mask the page request event: the thread does not run
        for (int i = 0; i < 511; i++)
        {
            Assert.True(Request(f, dev, p, va + Page, prgi: 9, lpig: false)); // outside the area
        }

        Assert.False(Request(f, dev, p, va, prgi: 9, lpig: true)); // full: PRO, dropped
        Assert.Equal(2u, f.Unit.Read32(0xDC) & 2);
        f.Unit.Write32(0xE0, 0); // unmask: the pending event wakes the PRQ thread
        Assert.Equal(Errno.None, f.Iommu.IopfQueueFlushDev(dev)); // waits for its pass
        Assert.Equal(0u, f.Unit.Read32(0xDC));
        Assert.Equal(f.Unit.Read64(0xC8), f.Unit.Read64(0xC0));

        // The 511 stored requests were discarded: group 9's new last request is answered on its own, SUCCESS.
        Assert.True(Request(f, dev, p, va, prgi: 9, lpig: true));
        Assert.Equal(Errno.None, f.Iommu.IopfQueueFlushDev(dev));
        Assert.Equal([(ResponseQ0(p, dev.RequesterId, 0), ResponseQ1(9))], Responses(trace));
    }

    [Fact]
    public void Unbind_drains_the_pasid_and_the_drain_descriptors_name_the_rid_domain()
    {
        (DriverBed f, PciDevice dev, HostPageAllocator pages) = Bed();
        using DriverBed owner = f;
        using var mm = new ProcessAddressSpace(pages, "p");
        ulong va = mm.Mmap(Page);
        IommuSva h = Bind(f, dev, mm);
        uint p = f.Iommu.SvaGetPasid(h);

        // A request left in the queue (event masked) and a group waiting for the worker.
        f.Unit.Write32(0xE0, 0x8000_0000);
        Assert.True(Request(f, dev, p, va, prgi: 1, lpig: true));
        Assert.NotEqual(f.Unit.Read64(0xC8), f.Unit.Read64(0xC0));
        ulong iqtBefore = f.Unit.Read64(0x88);
        f.Iommu.SvaUnbindDevice(h);
        Assert.Equal(f.Unit.Read64(0xC8), f.Unit.Read64(0xC0)); // nothing of the PASID is left in the queue
        Assert.Equal(Errno.None, f.Iommu.DevDisableFeature(dev, IommuDevFeature.Sva)); // the flushed group left nothing pending

        // The last descriptors: fence wait, P_IOTLB of the PASID with the RID domain's DID, PASID dev-TLB, wait with SW and PD.
        ulong iqa = f.Unit.Read64(0x90), queue = iqa & ~0xFFFUL, size = 4096UL << (int)(iqa & 7);
        ulong end = f.Unit.Read64(0x88);
        ulong At(int back) => queue + ((end + size - (ulong)(32 * back)) % size);
        ushort did = ((DmarDomain)f.Iommu.GetDomainForDev(dev)!).DidOn(0);
        Assert.Equal(0x0000_0002_0000_0045UL, f.Platform.Memory.ReadUInt64(At(4)));
        Assert.Equal(FirstLevelTestKit.PiotlbQ0(did, p, 2), f.Platform.Memory.ReadUInt64(At(3)));
        // PASID dev-TLB: SID, PASID, type 8 (QDEP 8:4 and PFSID 15:12/63:52 are the device info's, set at attach).
        Assert.Equal(((ulong)p << 32) | ((ulong)dev.RequesterId << 16) | 8, f.Platform.Memory.ReadUInt64(At(2)) & ~(0x1F0UL | 0xF000UL | (0xFFFUL << 52)));
        Assert.Equal(0UL, f.Platform.Memory.ReadUInt64(At(2) + 8));
        Assert.Equal(0xA5UL, f.Platform.Memory.ReadUInt64(At(1)) & 0xFFF); // wait: SW | PD | type 5
        Assert.NotEqual(iqtBefore, end);
    }
}
