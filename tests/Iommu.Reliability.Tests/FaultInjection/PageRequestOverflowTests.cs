using Iommu.Devices;
using Iommu.Mm;
using Iommu.Reliability.Tests.Infrastructure;

namespace Iommu.Reliability.Tests.FaultInjection;

/// <summary>
/// PRQ overflow end to end (pasid-sva.md §2.7, §4 inv 9–10, §5.4): an ATS+PRI device floods page requests past the
/// queue while the driver's PRQ thread cannot run; the unit sets PRO and drops what does not fit; the driver drains,
/// clears PRO only once PQH == PQT and discards partial groups; the device's retries of the queued requests reach the
/// pages the faults mapped. Dropped requests get no response by default (the device keeps waiting), or the unit's
/// configured automatic response.
/// </summary>
public sealed class PageRequestOverflowTests
{
    private const ulong Page = 4096;
    private const int Pqh = 0xC0, Pqt = 0xC8, Pqa = 0xD0, Prs = 0xDC, Pectl = 0xE0;

    [Theory]
    [InlineData(null)]
    [InlineData(0)]
    [InlineData(1)]
    public void A_flood_past_the_queue_sets_pro_the_driver_drains_and_the_retries_complete(int? autoResponse)
    {
        using var bed = new SvaTestBed(autoResponse);
        PciDevice dev = bed.AddDevice("0000:00:02.0", sva: true);
        PciDevice dev2 = bed.AddDevice("0000:00:03.0", sva: true);
        using var mm = new ProcessAddressSpace(bed.Pages, "p");
        int slots = (int)((4096UL << (int)(bed.Unit.Read64(Pqa) & 7)) / 32);
        Assert.True(slots <= 512, "one PRGI per request needs at most 512 slots");
        ulong va = mm.Mmap((ulong)(slots + 2) * Page);
        Assert.Equal(Errno.None, bed.Iommu.SvaBindDevice(dev, mm, null, out IommuSva? h));
        Assert.Equal(Errno.None, bed.Iommu.SvaBindDevice(dev2, mm, null, out IommuSva? h2));
        uint pasid = bed.Iommu.SvaGetPasid(h!);
        ulong partialPage = va + ((ulong)slots * Page), lastPage = partialPage + Page;

        bed.Unit.Write32(Pectl, 0x8000_0000); // the event is masked: the PRQ thread does not run

        // A partial group of dev2 (PRGI 5, not last) takes one slot; the device's flood fills the other slots - 1
        // but one (one slot always stays free) and the last two requests are dropped: the first sets PRO.
        Assert.True(bed.Unit.PageRequest(dev2, new PageRequestMessage(pasid, partialPage, true, true, false, false, 5, LastInGroup: false)));
        for (int i = 0; i < slots; i++)
        {
            ulong tail = bed.Unit.Read64(Pqt);
            Assert.Equal(DmaStatus.PageRequestPending, dev.AtsDmaWrite(pasid, va + ((ulong)i * Page), Value(i)).Status);
            bool dropped = i >= slots - 2;
            Assert.Equal(dropped, bed.Unit.Read64(Pqt) == tail);
            Assert.Equal(i >= slots - 2 ? 2u : 0u, bed.Unit.Read32(Prs) & 2); // PRO
        }

        // While PRO is set nothing is queued, even with room.
        ulong pqt = bed.Unit.Read64(Pqt);
        Assert.False(bed.Unit.PageRequest(dev2, new PageRequestMessage(pasid, lastPage, true, true, false, false, 6, LastInGroup: true)));
        Assert.Equal(pqt, bed.Unit.Read64(Pqt));

        // Unmasking wakes the thread: it drains every queued request, then clears PRO (PQH == PQT) and discards
        // partials. The flush waits for that pass (and for the iopf work it queued).
        bed.Unit.Write32(Pectl, 0);
        Assert.Equal(Errno.None, bed.Iommu.IopfQueueFlushDev(dev));
        Assert.Equal(Errno.None, bed.Iommu.IopfQueueFlushDev(dev2));
        Assert.Equal(0u, bed.Unit.Read32(Prs));
        Assert.Equal(bed.Unit.Read64(Pqt), bed.Unit.Read64(Pqh));

        // The queued requests were answered SUCCESS: each retry writes into the page the fault mapped.
        byte[] got = new byte[8];
        for (int i = 0; i < slots - 2; i++)
        {
            ulong at = va + ((ulong)i * Page);
            DmaResult r = dev.AtsDmaWrite(pasid, at, Value(i));
            Assert.True(r.IsOk, $"page {i}: {r.Status}");
            Assert.True(mm.TryTranslate(at, out ulong pfn) && r.Address == pfn << 12);
            Assert.Equal(Errno.None, mm.Read(at, got));
            Assert.Equal(Value(i), got);
        }

        // The dropped requests: no response by default (the device still waits and sends nothing new); with an
        // automatic Success the retry asks again and completes; with Invalid Request it fails.
        for (int i = slots - 2; i < slots; i++)
        {
            ulong at = va + ((ulong)i * Page);
            pqt = bed.Unit.Read64(Pqt);
            DmaResult r = dev.AtsDmaWrite(pasid, at, Value(i));
            switch (autoResponse)
            {
                case null:
                    Assert.Equal(DmaStatus.PageRequestPending, r.Status);
                    Assert.Equal(pqt, bed.Unit.Read64(Pqt));
                    Assert.False(mm.TryTranslate(at, out _));
                    break;
                case 0:
                    Assert.Equal(DmaStatus.PageRequestPending, r.Status);
                    Assert.NotEqual(pqt, bed.Unit.Read64(Pqt)); // a new request, handled at once
                    Assert.Equal(Errno.None, bed.Iommu.IopfQueueFlushDev(dev));
                    Assert.True(dev.AtsDmaWrite(pasid, at, Value(i)).IsOk);
                    Assert.Equal(Errno.None, mm.Read(at, got));
                    Assert.Equal(Value(i), got);
                    break;
                default:
                    Assert.Equal(DmaStatus.PageRequestFailed, r.Status);
                    Assert.False(mm.TryTranslate(at, out _));
                    break;
            }
        }

        // The partial group was discarded: dev2's new last request of PRGI 5 is handled on its own.
        Assert.True(bed.Unit.PageRequest(dev2, new PageRequestMessage(pasid, lastPage, true, true, false, false, 5, LastInGroup: true)));
        Assert.Equal(Errno.None, bed.Iommu.IopfQueueFlushDev(dev2));
        Assert.True(mm.TryTranslate(lastPage, out _));
        Assert.False(mm.TryTranslate(partialPage, out _));
        Assert.Equal(0u, bed.Unit.Read32(Prs));

        bed.Iommu.SvaUnbindDevice(h2!);
        bed.Iommu.SvaUnbindDevice(h!);
    }

    private static byte[] Value(int i) => BitConverter.GetBytes(0x0F10_0000_0000_0000UL + (ulong)i);
}
