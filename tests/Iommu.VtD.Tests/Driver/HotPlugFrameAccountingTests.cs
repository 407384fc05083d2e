using Iommu.Devices;
using Iommu.Domains;
using Iommu.VtD.Hardware;

namespace Iommu.VtD.Tests.Driver;

/// <summary>
/// Table frames over random single-threaded hot-plug lifetimes (domain alloc, map, unmap, attach, PASID attach with a
/// global PASID, detach, free, hot-remove, re-add), with PASIDs pushed above 63 so that PASID table pages beyond the
/// first are allocated on demand: once the device is removed, every frame is back. A device that stays present keeps
/// the PASID table pages it grew (5.15 frees them with the table at release), which is why the check removes it.
/// </summary>
public sealed class HotPlugFrameAccountingTests(Xunit.Abstractions.ITestOutputHelper output)
{
    [Theory]
    [InlineData(1, 0)]
    [InlineData(2, 0)]
    [InlineData(3, 100)]
    [InlineData(4, 100)]
    [InlineData(5, 300)]
    [InlineData(6, 100)]
    [InlineData(7, 100)]
    [InlineData(8, 200)]
    [InlineData(9, 1000)]
    public void Every_table_frame_returns_once_the_device_is_removed(int seed, int burnCount)
    {
        using var bed = new DriverBed(VtdConfig.ScalableMode48Bit, memory: 2 * Sizes.GiB);
        var spec = new PciDeviceSpec("0000:00:07.0") { PasidWidth = 20, Ats = true, Acs = true };
        PciDevice? dev = bed.Pci.AddDevice(spec);
        var burn = new List<uint>();
        for (int i = 0; i < burnCount; i++) burn.Add(bed.Iommu.AllocGlobalPasid(dev));
        bed.Pci.RemoveDevice(dev);
        long before = bed.Platform.Frames.LiveFrames;
        dev = bed.Pci.AddDevice(spec);
        var rng = new Random(seed);
        IDomain? d = null; uint gp = 0; bool rid = false, pas = false;
        var log = new List<string>();
        for (int step = 0; step < 3000; step++)
        {
            int op = rng.Next(10);
            switch (op)
            {
                case 0 when d is null: d = bed.Iommu.DomainAlloc(bed.Pci); log.Add("alloc"); break;
                case 1 when d is not null: bed.Iommu.Map(d, 0x20_0000 + ((ulong)rng.Next(4) * 4096), 0x1000_0000 + ((ulong)rng.Next(4) * 4096), 4096, IommuProt.Read | IommuProt.Write); log.Add("map"); break;
                case 2 when d is not null: bed.Iommu.Unmap(d, 0x20_0000 + ((ulong)rng.Next(4) * 4096), 4096); log.Add("unmap"); break;
                case 3 when d is not null && dev is not null && !rid && !pas: rid = bed.Iommu.AttachDevice(d, dev) == Errno.None; log.Add($"attach {rid}"); break;
                case 4 when d is not null && dev is not null && !rid && !pas:
                    if (gp == 0) gp = bed.Iommu.AllocGlobalPasid(dev);
                    pas = bed.Iommu.AttachDevicePasid(d, dev, gp) == Errno.None; log.Add($"pattach {gp} {pas}"); break;
                case 5 when d is not null && dev is not null:
                    if (rid) { bed.Iommu.DetachDevice(d, dev); rid = false; log.Add("detach"); }
                    if (pas) { bed.Iommu.DetachDevicePasid(d, dev, gp); pas = false; log.Add("pdetach"); }
                    break;
                case 6 when d is not null && !rid && !pas:
                    if (gp != 0) { bed.Iommu.FreeGlobalPasid(gp); gp = 0; }
                    bed.Iommu.DomainFree(d); d = null; log.Add("free"); break;
                case 7 when rng.Next(3) == 0:
                    if (dev is not null) { bed.Pci.RemoveDevice(dev); dev = null; rid = pas = false; log.Add("remove"); }
                    else { dev = bed.Pci.AddDevice(spec); log.Add("add"); }
                    break;
            }
        }

        if (dev is null) { dev = bed.Pci.AddDevice(spec); }
        if (d is not null)
        {
            if (rid) bed.Iommu.DetachDevice(d, dev);
            if (pas) bed.Iommu.DetachDevicePasid(d, dev, gp);
            if (gp != 0) bed.Iommu.FreeGlobalPasid(gp);
            bed.Iommu.DomainFree(d);
        }

        bed.Pci.RemoveDevice(dev);
        output.WriteLine($"before {before} end {bed.Platform.Frames.LiveFrames}; last: {string.Join(",", log.TakeLast(30))}");
        Assert.Equal(before, bed.Platform.Frames.LiveFrames);
    }
}
