using Iommu.Devices;
using Iommu.Mm;
using Iommu.Reliability.Tests.Infrastructure;

namespace Iommu.Reliability.Tests.FaultInjection;

/// <summary>
/// A user's MMU notifier that throws (a bug in user code) must not take the SVA binds' notifiers down with it. Before,
/// the process stopped at the first notifier that threw: an SVA bind registered after it never heard of a munmap, so
/// the device kept reaching the page the process had unmapped and the allocator had handed out again; and a
/// copy-on-write break on the iopf worker that threw left the device's page request unanswered forever.
/// </summary>
public sealed class ThrowingNotifierTests
{
    private const ulong Page = 4096;

    private sealed class ThrowOnce : MmuNotifier
    {
        private int _thrown;

        public override void InvalidateRange(ProcessAddressSpace mm, ulong start, ulong end)
        {
            if (Interlocked.Exchange(ref _thrown, 1) == 0)
            {
                throw new InvalidOperationException("bug in a user's notifier");
            }
        }
    }

    [Theory]
    [InlineData(true)]
    [InlineData(false)]
    public void A_munmap_whose_first_notifier_throws_still_reaches_the_sva_binds_iotlb_and_device_tlb(bool ats)
    {
        using var bed = new SvaTestBed();
        PciDevice dev = bed.AddDevice("0000:00:02.0", sva: true);
        using var mm = new ProcessAddressSpace(bed.Pages, "p");
        ulong va = mm.Mmap(4 * Page);
        Assert.Equal(Errno.None, mm.Write(va, BitConverter.GetBytes(0x5EC2E7UL)));
        mm.MmuNotifierRegister(new ThrowOnce()); // before the bind's own notifier
        Assert.Equal(Errno.None, bed.Iommu.SvaBindDevice(dev, mm, null, out IommuSva? handle));
        uint pasid = bed.Iommu.SvaGetPasid(handle!);

        // The device reads the page: its translation is now cached (IOTLB, and the ATC with ATS).
        byte[] b = new byte[8];
        Assert.True((ats ? dev.AtsDmaRead(pasid, va, b) : dev.DmaRead(pasid, va, b)).IsOk);
        Assert.Equal(0x5EC2E7UL, BitConverter.ToUInt64(b));

        Assert.Throws<InvalidOperationException>(() => mm.Munmap(va, Page));
        DmaResult r = ats ? dev.AtsDmaRead(pasid, va, b) : dev.DmaRead(pasid, va, b);
        Assert.False(r.IsOk, $"the device read 0x{r.Address:x} after the process unmapped the page");
        bed.Iommu.SvaUnbindDevice(handle!);
    }

    private sealed class ThrowOnCow : MmuNotifier
    {
        public override void InvalidateRange(ProcessAddressSpace mm, ulong start, ulong end) =>
            throw new InvalidOperationException("bug in a user's notifier");
    }

    [Fact]
    public void A_copy_on_write_break_on_the_iopf_worker_that_throws_still_answers_the_device()
    {
        using var bed = new SvaTestBed();
        PciDevice dev = bed.AddDevice("0000:00:02.0", sva: true);
        using var mm = new ProcessAddressSpace(bed.Pages, "p");
        ulong va = mm.Mmap(4 * Page);
        Assert.Equal(Errno.None, mm.Read(va, new byte[8])); // the zero page: a write is a copy-on-write break
        Assert.Equal(Errno.None, bed.Iommu.SvaBindDevice(dev, mm, null, out IommuSva? handle));
        uint pasid = bed.Iommu.SvaGetPasid(handle!);
        var throwing = new ThrowOnCow();
        mm.MmuNotifierRegister(throwing);

        Assert.Equal(DmaStatus.PageRequestPending, dev.AtsDmaWrite(pasid, va, new byte[8]).Status);
        Assert.True(dev.WaitForPageGroupResponses(TimeSpan.FromSeconds(10)), "the device never got an answer");
        Assert.Equal(Errno.None, bed.Iommu.IopfQueueFlushDev(dev));

        // Answered Invalid (the handling threw), though the break itself completed and every notifier ran: the retry
        // translates once more and reaches the process's new page.
        byte[] value = BitConverter.GetBytes(0xC0B7UL);
        DmaResult retry = dev.AtsDmaWrite(pasid, va, value);
        Assert.True(retry.IsOk, $"retry: {retry.Status}");
        byte[] back = new byte[8];
        Assert.Equal(Errno.None, mm.Read(va, back));
        Assert.Equal(value, back);
        mm.MmuNotifierUnregister(throwing);
        bed.Iommu.SvaUnbindDevice(handle!);
    }

    // A user's notifier mirroring the process into an IOMMU domain that was freed meanwhile: its iommu_unmap throws
    // ObjectDisposedException, which is the notifier's bug like any other exception (the platform is alive).
    private sealed class UnmapFreedDomain(IommuCore iommu, Domains.IDomain dom) : MmuNotifier
    {
        public override void InvalidateRange(ProcessAddressSpace mm, ulong start, ulong end) => iommu.Unmap(dom, 0x10_0000, Page);
    }

    [Fact]
    public void A_copy_on_write_break_whose_notifier_hits_a_freed_domain_still_answers_the_device()
    {
        using var bed = new SvaTestBed();
        PciDevice dev = bed.AddDevice("0000:00:02.0", sva: true);
        using var mm = new ProcessAddressSpace(bed.Pages, "p");
        ulong va = mm.Mmap(4 * Page);
        Assert.Equal(Errno.None, mm.Read(va, new byte[8]));
        Assert.Equal(Errno.None, bed.Iommu.SvaBindDevice(dev, mm, null, out IommuSva? handle));
        uint pasid = bed.Iommu.SvaGetPasid(handle!);
        Domains.IDomain dom = bed.Iommu.DomainAlloc(bed.Pci)!;
        bed.Iommu.DomainFree(dom);
        var n = new UnmapFreedDomain(bed.Iommu, dom);
        mm.MmuNotifierRegister(n);

        Assert.Equal(DmaStatus.PageRequestPending, dev.AtsDmaWrite(pasid, va, new byte[8]).Status);
        Assert.True(dev.WaitForPageGroupResponses(TimeSpan.FromSeconds(5)), "the device never got an answer");
        mm.MmuNotifierUnregister(n);
        bed.Iommu.SvaUnbindDevice(handle!);
    }
}
