using Iommu.Devices;
using Iommu.Mm;
using Iommu.Reliability.Tests.Infrastructure;
using Xunit.Abstractions;

namespace Iommu.Reliability.Tests.Concurrency;

/// <summary>
/// A bind of a second device to a process that already has an svm registers no notifier, but it read the process's
/// page-table root (<see cref="ProcessAddressSpace.Pgd"/>, which takes the process's lock) while holding the driver's
/// _deviceDomainLock: the same inversion as <see cref="SvaNotifierLockOrderTests"/> against a munmap whose mirroring
/// notifier unmaps a domain with an ATS device (taking _deviceDomainLock under the process's lock).
/// </summary>
public sealed class SvaBindPgdLockOrderTests(ITestOutputHelper output)
{
    private const ulong Page = 4096;

    [Fact]
    public void Second_device_bind_reading_the_pgd_while_a_munmap_runs_a_mirroring_notifier_does_not_deadlock()
    {
        var bed = new SvaTestBed();
        PciDevice s1 = bed.AddDevice("0000:00:02.0", sva: true);
        PciDevice s2 = bed.AddDevice("0000:00:03.0", sva: true);
        var mm = new ProcessAddressSpace(bed.Pages, "p");
        ulong va = mm.Mmap(16 * Page);
        Assert.Equal(Errno.None, mm.Write(va, new byte[8]));
        Assert.Equal(Errno.None, bed.Iommu.SvaBindDevice(s1, mm, null, out IommuSva? h1)); // the svm exists from here

        IommuSva? h2 = null;
        Errno bound = Errno.EINVAL;
        Domains.IDomain dom = bed.AtsDomainWithPage("0000:00:04.0");
        using var inNotifier = new ManualResetEventSlim();
        using var go = new ManualResetEventSlim();
        mm.MmuNotifierRegister(new OnceNotifier(() =>
        {
            inNotifier.Set();
            go.Wait(TimeSpan.FromSeconds(5));
            Thread.Sleep(300); // the bind now holds _deviceDomainLock, waiting for the process's lock
            _ = bed.Iommu.Unmap(dom, 0x10_0000, Page);
        }));

        var munmapper = new Thread(() => mm.Munmap(va, Page)) { IsBackground = true };
        munmapper.Start();
        Assert.True(inNotifier.Wait(TimeSpan.FromSeconds(5)));
        var caller = new Thread(() => bound = bed.Iommu.SvaBindDevice(s2, mm, null, out h2)) { IsBackground = true };
        caller.Start();
        go.Set();
        bool returned = caller.Join(TimeSpan.FromSeconds(10));
        bool unmapped = munmapper.Join(TimeSpan.FromSeconds(1));
        output.WriteLine($"bind returned: {returned} ({bound}); munmap returned: {unmapped}");
        Assert.True(returned && unmapped, "deadlock: SvaBindDevice holds _deviceDomainLock while reading mm.Pgd (waiting for the process's lock); munmap holds the process's lock in a notifier that unmaps an ATS domain (waiting for _deviceDomainLock)");
        Assert.Equal(Errno.None, bound);
        bed.Iommu.SvaUnbindDevice(h2!);
        bed.Iommu.SvaUnbindDevice(h1!);
        mm.Dispose();
        bed.Dispose();
    }
}
