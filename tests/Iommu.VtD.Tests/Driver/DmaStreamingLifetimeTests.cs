using Iommu.Devices;
using Iommu.Domains;
using static Iommu.VtD.Tests.Driver.DriverTestKit;

namespace Iommu.VtD.Tests.Driver;

/// <summary>
/// Streaming DMA maps (dma_map_page, dma_map_sg) unmapped after their device left its group or moved to another
/// domain: the unmap goes to the domain the map was made in, so the other devices of the old group cannot reach the
/// unmapped page, its IOVA is not leaked, and nothing of the new domain is touched.
/// </summary>
public sealed class DmaStreamingLifetimeTests
{
    private const ulong Pa = 0x1_2345_6000;

    private static int LiveIovas(IDomain domain) => ((IommuDomain)domain).IovaCookie!.LiveRangeList().Count;

    private static (DriverBed F, PciDevice A, PciDevice B, IDomain Domain) TwoDeviceGroup(DomainType type)
    {
        var f = new DriverBed(Config("Sm48"), memory: SmallMemory, defaultDomain: type);
        PciDevice a = f.Pci.AddDevice(new PciDeviceSpec("0000:00:03.0") { Multifunction = true });
        PciDevice b = f.Pci.AddDevice(new PciDeviceSpec("0000:00:03.1") { Multifunction = true });
        Assert.Same(a.IommuGroup, b.IommuGroup);
        return (f, a, b, f.Iommu.GetDmaDomain(a)!);
    }

    private static void Flush(DriverBed f) => f.Platform.Clock.Advance(IommuCore.IovaFqTimeout);

    [Theory]
    [InlineData(DomainType.Dma)]
    [InlineData(DomainType.DmaFq)]
    public void Unmapping_a_page_after_its_device_left_a_group_whose_domain_lives_on_unmaps_it_there(DomainType type)
    {
        (DriverBed f, PciDevice a, PciDevice b, IDomain domain) = TwoDeviceGroup(type);
        using DriverBed _ = f;
        ulong h = f.Iommu.DmaMapPage(a, Pa + 0x10, 0x100, DmaDataDirection.Bidirectional);
        Assert.NotEqual(IommuCore.DmaMappingError, h);
        f.AssertDma(b, null, h & ~(K4 - 1), Pa, "one domain for the group");

        f.Pci.RemoveDevice(a);
        Assert.Null(a.IommuGroup);
        f.Iommu.DmaUnmapPage(a, h, 0x100, DmaDataDirection.Bidirectional);

        Assert.Equal(0UL, f.Iommu.IovaToPhys(domain, h));
        Assert.Equal(0, LiveIovas(domain));
        Flush(f);
        f.AssertDma(b, null, h & ~(K4 - 1), 0, "the unmapped page is reachable by no device of the old group");

        // A second unmap finds no mapping of a's anywhere: a, now in no group, is a dma-direct device, whose unmap does nothing.
        ulong hb = f.Iommu.DmaMapPage(b, Pa + 0x1000, 0x100, DmaDataDirection.Bidirectional);
        f.Iommu.DmaUnmapPage(a, h, 0x100, DmaDataDirection.Bidirectional);
        Assert.Equal(Pa + 0x1000, f.Iommu.IovaToPhys(domain, hb));
    }

    [Theory]
    [InlineData(DomainType.Dma)]
    [InlineData(DomainType.DmaFq)]
    public void Unmapping_a_scatterlist_after_its_device_left_a_group_whose_domain_lives_on_unmaps_it_there(DomainType type)
    {
        (DriverBed f, PciDevice a, PciDevice b, IDomain domain) = TwoDeviceGroup(type);
        using DriverBed _ = f;
        Scatterlist[] sg = [new(Pa, 0x1000), new(Pa + 0x10_0000, 0x1000)];
        Assert.Equal(1, f.Iommu.DmaMapSg(a, sg, DmaDataDirection.ToDevice));
        ulong h = sg[0].DmaAddress;
        Assert.Equal(Pa + 0x10_0000, f.Iommu.IovaToPhys(domain, h + 0x1000));

        f.Pci.RemoveDevice(a);
        f.Iommu.DmaUnmapSg(a, sg, DmaDataDirection.ToDevice);

        Assert.Equal((0UL, 0UL), (f.Iommu.IovaToPhys(domain, h), f.Iommu.IovaToPhys(domain, h + 0x1000)));
        Assert.Equal(0, LiveIovas(domain));
        Flush(f);
        f.AssertDma(b, null, h + 0x1000, 0, "the unmapped list is reachable by no device of the old group");
    }

    [Theory]
    [InlineData(DomainType.Dma)]
    [InlineData(DomainType.DmaFq)]
    public void Unmapping_after_the_device_moved_to_another_group_unmaps_in_the_old_domain_and_leaves_the_new_one_alone(DomainType type)
    {
        (DriverBed f, PciDevice a, PciDevice b, IDomain oldDomain) = TwoDeviceGroup(type);
        using DriverBed _ = f;
        PciDevice c = f.Pci.AddDevice(new PciDeviceSpec("0000:00:04.0") { Acs = true });
        IDomain newDomain = f.Iommu.GetDmaDomain(c)!;
        Assert.NotSame(oldDomain, newDomain);
        ulong h = f.Iommu.DmaMapPage(a, Pa, K4, DmaDataDirection.Bidirectional);

        f.Iommu.GroupRemoveDevice(a);
        Assert.Equal(Errno.None, f.Iommu.GroupAddDevice(c.IommuGroup!, a));
        Assert.Same(newDomain, f.Iommu.GetDmaDomain(a));
        // c's first mapping in its own (fresh) allocator lands at the same IOVA as a's first one in the old domain.
        ulong hc = f.Iommu.DmaMapPage(c, Pa + 0x20_0000, K4, DmaDataDirection.Bidirectional);
        Assert.Equal(h, hc);

        f.Iommu.DmaUnmapPage(a, h, K4, DmaDataDirection.Bidirectional);

        Assert.Equal(0UL, f.Iommu.IovaToPhys(oldDomain, h));
        Assert.Equal(0, LiveIovas(oldDomain));
        Flush(f);
        f.AssertDma(b, null, h, 0, "a's unmapped page, from the old group's other device");
        Assert.Equal(Pa + 0x20_0000, f.Iommu.IovaToPhys(newDomain, hc));
        f.AssertDma(c, null, hc, Pa + 0x20_0000, "c's own mapping in the new domain stays");
        f.Iommu.DmaUnmapPage(c, hc, K4, DmaDataDirection.Bidirectional);
    }
}
