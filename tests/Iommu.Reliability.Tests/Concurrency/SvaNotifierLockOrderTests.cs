using Iommu.Devices;
using Iommu.Domains;
using Iommu.Mm;
using Iommu.Reliability.Tests.Infrastructure;
using Xunit.Abstractions;

namespace Iommu.Reliability.Tests.Concurrency;

/// <summary>
/// SVA bind/unbind register and unregister the svm's MMU notifier (which takes the process's lock) while holding the
/// driver-wide _deviceDomainLock; a munmap holds the process's lock while it runs the process's notifiers, and a user's
/// notifier that keeps an IOMMU domain with an ATS device in step (iommu_unmap → iommu_flush_dev_iotlb) takes
/// _deviceDomainLock: lock-order inversion. 5.15 holds only pasid_mutex there (device_domain_lock is a spinlock,
/// never held across mmu_notifier_register/unregister).
/// </summary>
public sealed class SvaNotifierLockOrderTests(ITestOutputHelper output)
{
    private const ulong Page = 4096;

    [Fact]
    public void Last_unbind_unregistering_the_notifier_while_a_munmap_runs_a_mirroring_notifier_does_not_deadlock()
    {
        var bed = new SvaTestBed();
        PciDevice s = bed.AddDevice("0000:00:02.0", sva: true);
        var mm = new ProcessAddressSpace(bed.Pages, "p");
        ulong va = mm.Mmap(16 * Page);
        Assert.Equal(Errno.None, mm.Write(va, new byte[8]));
        Assert.Equal(Errno.None, bed.Iommu.SvaBindDevice(s, mm, null, out IommuSva? hs));

        (bool unbound, bool unmapped) = RaceMirroringMunmap(bed, mm, va, () => bed.Iommu.SvaUnbindDevice(hs!));
        output.WriteLine($"unbind returned: {unbound}; munmap returned: {unmapped}");
        Assert.True(unbound && unmapped, "deadlock: SvaUnbindDevice holds _deviceDomainLock in MmuNotifierUnregister (waiting for the process's lock); munmap holds the process's lock in a notifier that unmaps an ATS domain (waiting for _deviceDomainLock)");
        mm.Dispose();
        bed.Dispose();
    }

    [Fact]
    public void First_bind_registering_the_notifier_while_a_munmap_runs_a_mirroring_notifier_does_not_deadlock()
    {
        var bed = new SvaTestBed();
        PciDevice s = bed.AddDevice("0000:00:02.0", sva: true);
        var mm = new ProcessAddressSpace(bed.Pages, "p");
        ulong va = mm.Mmap(16 * Page);
        Assert.Equal(Errno.None, mm.Write(va, new byte[8]));

        IommuSva? hs = null;
        Errno bound = Errno.EINVAL;
        (bool returned, bool unmapped) = RaceMirroringMunmap(bed, mm, va, () => bound = bed.Iommu.SvaBindDevice(s, mm, null, out hs));
        output.WriteLine($"bind returned: {returned} ({bound}); munmap returned: {unmapped}");
        Assert.True(returned && unmapped, "deadlock: SvaBindDevice holds _deviceDomainLock in MmuNotifierRegister (waiting for the process's lock); munmap holds the process's lock in a notifier that unmaps an ATS domain (waiting for _deviceDomainLock)");
        Assert.Equal(Errno.None, bound);
        bed.Iommu.SvaUnbindDevice(hs!);
        mm.Dispose();
        bed.Dispose();
    }

    // A munmap of va whose mirroring notifier (registered here) waits until `sva` has started on another thread, then
    // unmaps a domain with an ATS device (taking the driver's device-domain lock). Whether `sva` and the munmap returned.
    private static (bool Returned, bool Unmapped) RaceMirroringMunmap(SvaTestBed bed, ProcessAddressSpace mm, ulong va, Action sva)
    {
        Domains.IDomain dom = bed.AtsDomainWithPage("0000:00:04.0");
        using var inNotifier = new ManualResetEventSlim();
        using var go = new ManualResetEventSlim();
        mm.MmuNotifierRegister(new OnceNotifier(() =>
        {
            inNotifier.Set();
            go.Wait(TimeSpan.FromSeconds(5));
            Thread.Sleep(300); // the bind or unbind now holds _deviceDomainLock, waiting for the process's lock
            _ = bed.Iommu.Unmap(dom, 0x10_0000, Page);
        }));

        var munmapper = new Thread(() => mm.Munmap(va, Page)) { IsBackground = true };
        munmapper.Start();
        Assert.True(inNotifier.Wait(TimeSpan.FromSeconds(5)));
        var caller = new Thread(() => sva()) { IsBackground = true };
        caller.Start();
        go.Set();
        bool returned = caller.Join(TimeSpan.FromSeconds(10));
        return (returned, munmapper.Join(TimeSpan.FromSeconds(1)));
    }
}
