using Iommu.Devices;
using Iommu.Domains;
using Iommu.VtD.Driver;
using static Iommu.VtD.Tests.Driver.DriverTestKit;

namespace Iommu.VtD.Tests.Driver;

/// <summary>
/// A superpage mapped over live smaller mappings (a caller bug the kernel tolerates): 5.15 <c>__domain_mapping</c> frees
/// the tables under it and <c>switch_to_super_page</c> flushes the range on every unit of the domain, so a device never
/// keeps reaching the old pages through IOTLB entries it cached before. Legacy, scalable second-level and first-level.
/// </summary>
public sealed class SuperpageOverLiveMappingTests
{
    private const IommuProt Rw = IommuProt.Read | IommuProt.Write;

    public static TheoryData<string> Presets() => ["Legacy48", "Sm48", "Fl48", "Legacy39Cm"];

    private static DriverBed New(string preset) => preset == "Fl48"
        ? FirstLevelTestKit.NewFl("Fl48", FirstLevelPolicy.AllWhenEveryUnitHasFlts)
        : new DriverBed(Config(preset), memory: SmallMemory);

    [Theory]
    [MemberData(nameof(Presets))]
    public void The_device_reaches_what_the_superpage_maps_not_the_cached_pages_it_replaced(string preset)
    {
        using DriverBed f = New(preset);
        PciDevice dev = f.AddDevice("0000:00:03.0");
        IDomain dom = f.Unmanaged();
        Assert.Equal(Errno.None, f.Iommu.AttachDevice(dom, dev));
        Assert.Equal(preset == "Fl48", ((DmarDomain)dom).UseFirstLevel);
        ulong[] probes = [0x4000_0000, 0x4000_1000, 0x4000_2FF8, 0x401F_F000, 0x4020_1000];

        // 4 KiB pages in two 2 MiB ranges, read through the device so the unit caches them.
        foreach (ulong iova in new ulong[] { 0x4000_1000, 0x4000_2000, 0x4020_1000 })
        {
            Assert.Equal(Errno.None, f.Iommu.Map(dom, iova, 0x1000_0000 + (iova & 0xFF_FFFF), 0x1000, Rw));
            f.AssertDmaMatchesIovaToPhys(dom, dev, null, iova);
        }

        // A 2 MiB page over the first range's table, then 1 GiB over both (a split into 2 MiB pages where the unit has
        // no 1 GiB pages: those leave the 2 MiB page where it is, as the kernel's cmpxchg does).
        Assert.Equal(Errno.None, f.Iommu.Map(dom, 0x4000_0000, 0x2000_0000, 2 * Sizes.MiB, Rw));
        Assert.Equal(0x2000_1000UL, f.Iommu.IovaToPhys(dom, 0x4000_1000));
        foreach (ulong iova in probes)
        {
            f.AssertDmaMatchesIovaToPhys(dom, dev, null, iova, "after the 2 MiB map");
        }

        Assert.Equal(Errno.None, f.Iommu.Map(dom, 0x4000_0000, 0x8000_0000, Sizes.GiB, Rw));
        foreach (ulong iova in probes)
        {
            f.AssertDmaMatchesIovaToPhys(dom, dev, null, iova, "after the 1 GiB map");
        }

        f.Iommu.Unmap(dom, 0x4000_0000, Sizes.GiB);
        Assert.All(probes, iova => Assert.Equal(0UL, f.Iommu.IovaToPhys(dom, iova)));
        foreach (ulong iova in probes)
        {
            f.AssertDma(dev, null, iova, 0, "after the unmap");
        }
    }
}
