using Iommu.Devices;
using Iommu.Domains;
using Iommu.Mm;
using Iommu.Reliability.Tests.Infrastructure;
using Xunit.Abstractions;

namespace Iommu.Reliability.Tests.Concurrency;

/// <summary>
/// A process exit (the svm's release, which tears down each bound device's PASID entry) racing the detach of that
/// device's RID domain (which frees the device's PASID tables). The release checked the device's info and then wrote
/// into its PASID table without the driver's device-domain lock, so a detach in between freed the table under the
/// write, and the frame could already be another domain's page table. Afterwards every table frame the round freed
/// is reused by a fresh domain, whose every page must still translate exactly.
/// </summary>
public sealed class SvmReleaseDetachRaceTests(ITestOutputHelper output)
{
    private const ulong Page = 4096;

    [Fact]
    public void Exit_racing_the_detach_of_the_bound_device_leaves_every_table_intact()
    {
        int rounds = Math.Max((int)(ReliabilityBudget.Ops / 2000), 40);
        using var bed = new SvaTestBed();
        PciDevice other = bed.Pci.AddDevice(new PciDeviceSpec("0000:00:05.0") { PasidWidth = 20, Acs = true });
        PciDevice dev = bed.AddDevice("0000:00:03.0", sva: true);
        var buf = new byte[8];
        for (int round = 0; round < rounds; round++)
        {
            var mm = new ProcessAddressSpace(bed.Pages, $"p{round}");
            ulong va = mm.Mmap(4 * Page);
            Assert.Equal(Errno.None, mm.Write(va, new byte[8]));
            Assert.Equal(Errno.None, bed.Iommu.SvaBindDevice(dev, mm, null, out IommuSva? h));
            IDomain unmanaged = bed.Iommu.DomainAlloc(bed.Pci)!;

            using var start = new Barrier(2);
            Exception? failure = null;
            var exiter = new Thread(() =>
            {
                try
                {
                    start.SignalAndWait();
                    mm.Exit();
                }
                catch (Exception ex)
                {
                    failure = ex;
                }
            }) { IsBackground = true };
            exiter.Start();
            start.SignalAndWait();
            Errno attached = bed.Iommu.AttachDevice(unmanaged, dev); // frees the PASID tables of the RID domain's info
            Assert.True(exiter.Join(TimeSpan.FromSeconds(30)), "exit did not return");
            Assert.Null(failure);
            Assert.Equal(Errno.None, attached);

            bed.Iommu.SvaUnbindDevice(h!);
            bed.Iommu.DetachDevice(unmanaged, dev);
            Assert.Equal(DomainType.Dma, bed.Iommu.GetDomainForDev(dev)?.Type);
            bed.Iommu.DomainFree(unmanaged);
            mm.Dispose();

            // A fresh domain takes the frames just freed for its tables: a late write into any of them shows here.
            IDomain fresh = bed.Iommu.DomainAlloc(bed.Pci)!;
            Assert.Equal(Errno.None, bed.Iommu.AttachDevice(fresh, other));
            for (ulong i = 0; i < 64; i++)
            {
                ulong pa = 0x1_8000_0000 + (i * Page);
                bed.Platform.Memory.WriteUInt64(pa, ((ulong)round << 32) | i);
                Assert.Equal(Errno.None, bed.Iommu.Map(fresh, (i * 0x20_0000) + (i * Page), pa, Page, IommuProt.Read));
            }

            for (ulong i = 0; i < 64; i++)
            {
                DmaResult r = other.DmaRead(null, (i * 0x20_0000) + (i * Page), buf);
                Assert.True(r.IsOk && BitConverter.ToUInt64(buf) == (((ulong)round << 32) | i), $"round {round}, page {i}: {r.Status} 0x{r.Address:x}");
            }

            bed.Iommu.DetachDevice(fresh, other);
            bed.Iommu.DomainFree(fresh);
        }

        output.WriteLine($"{rounds} rounds");
    }
}
