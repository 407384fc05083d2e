using System.Globalization;
using Iommu.Devices;
using Iommu.Domains;
using Iommu.Reliability.Tests.Infrastructure;
using Iommu.VtD.Driver;
using Iommu.VtD.Hardware;
using Xunit.Abstractions;

namespace Iommu.Reliability.Tests.FaultInjection;

/// <summary>
/// fail_nth over <c>iommu_attach_device_pasid</c> on intel-iommu: a failed attach returns the
/// driver's errno, calls remove_dev_pasid on every group device, and leaves frames, DIDs, PASIDs, the
/// group's slot and every device's DMA exactly as they were.
/// </summary>
public sealed class PasidAttachFailNthTests(ITestOutputHelper output)
{
    private const ulong Iova = 0x1000_0000, Pa = 0x2_0000_0000, Size = 2 * Sizes.MiB;

    private static List<string> Snapshot(FailNthVtdBed bed, PciDevice[] devs, DmarDomain d, uint pasid)
    {
        var s = new List<string>();
        bed.Counters(s);
        s.Add(string.Create(CultureInfo.InvariantCulture, $"did={d.DidOn(0)}"));
        foreach (PciDevice dev in devs)
        {
            s.Add(string.Create(CultureInfo.InvariantCulture, $"{dev.Name} slot={bed.Iommu.GetDomainForDevPasid(dev, pasid, DomainType.Blocked, out IDomain? held)}/{held is not null}"));
            FailNthVtdBed.Dma(dev.Name, dev, pasid, FailNthVtdBed.Samples(Iova, Size, Sizes.MiB), s);
            FailNthVtdBed.Dma(dev.Name + " rid", dev, null, [Iova], s);
        }

        return s;
    }

    [Fact]
    public void A_failing_pasid_table_page_on_the_second_group_device_unwinds_the_first()
    {
        using var bed = new FailNthVtdBed(VtdConfig.ScalableMode48Bit, scalable: true);
        PciDevice f0 = bed.Pci.AddDevice(new PciDeviceSpec("0000:00:03.0") { Multifunction = true, PasidWidth = 20 });
        DmarDomain d = bed.Unmanaged();
        Assert.Equal(Errno.None, bed.Iommu.Map(d, Iova, Pa, Size, IommuProt.Read | IommuProt.Write));

        // f0 gets the PASID table for 64..127 now; f1 joins the group afterwards without one.
        Assert.Equal(Errno.None, bed.Iommu.AttachDevicePasid(d, f0, 65));
        bed.Iommu.DetachDevicePasid(d, f0, 65);
        PciDevice f1 = bed.Pci.AddDevice(new PciDeviceSpec("0000:00:03.1") { Multifunction = true, PasidWidth = 20 });
        Assert.Same(f0.IommuGroup, f1.IommuGroup);
        PciDevice[] devs = [f0, f1];

        (int failures, Errno final) = FailNthSweep.Run(
            bed.Platform.Frames,
            () => Snapshot(bed, devs, d, 64),
            () => bed.Iommu.AttachDevicePasid(d, f0, 64),
            (n, err, pre) =>
            {
                // f1's PASID entry has no table page: intel_pasid_get_entry fails → -ENODEV.
                Assert.True(err == Errno.ENODEV, $"fail_nth={n}: {err}, expected ENODEV");
                FailNthSweep.AssertSame(pre, Snapshot(bed, devs, d, 64), $"fail_nth={n}");
            });

        Assert.Equal(Errno.None, final);
        Assert.Equal(1, failures);
        output.WriteLine($"PASID attach over a 2-device group: {failures} injected allocation failure(s), each -ENODEV with state unchanged");
        Span<byte> b = stackalloc byte[8];
        Assert.True(f0.DmaRead(64, Iova, b).IsOk);
        Assert.True(f1.DmaRead(64, Iova, b).IsOk);
    }

    [Fact]
    public void Did_exhaustion_is_enospc_and_changes_nothing()
    {
        using var bed = new FailNthVtdBed(VtdConfig.ScalableMode48Bit with { DomainIdEncoding = 0 }, scalable: true);
        PciDevice dev = bed.AddDevice("0000:00:02.0", pasidWidth: 20);
        var held = new List<DmarDomain>();
        uint pasid = 1;
        while (true)
        {
            DmarDomain x = bed.Unmanaged();
            Errno e = bed.Iommu.AttachDevicePasid(x, dev, pasid);
            if (e != Errno.None)
            {
                Assert.Equal(Errno.ENOSPC, e);
                List<string> pre = Snapshot(bed, [dev], x, pasid);
                Assert.Equal(Errno.ENOSPC, bed.Iommu.AttachDevicePasid(x, dev, pasid));
                FailNthSweep.AssertSame(pre, Snapshot(bed, [dev], x, pasid), "DID exhaustion");
                break;
            }

            held.Add(x);
            pasid++;
        }

        Assert.NotEmpty(held);
        bed.Iommu.DetachDevicePasid(held[0], dev, 1);
        Assert.Equal(Errno.None, bed.Iommu.AttachDevicePasid(bed.Unmanaged(), dev, pasid)); // the freed DID is reused
    }
}
