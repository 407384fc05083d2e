using Iommu.Devices;
using Iommu.Domains;
using static Iommu.VtD.Tests.Driver.DriverTestKit;

namespace Iommu.VtD.Tests.Driver;

/// <summary>
/// Edge cases of the DMA API over DMA / DMA_FQ default domains and of the default domain's lifetime,
/// found in an audit against 5.15 dma-iommu.c / iommu.c.
/// </summary>
public sealed class DmaApiAuditTests
{
    private static DriverBed New(DomainType type) => new(Config("Sm48"), memory: SmallMemory, defaultDomain: type);

    [Theory]
    [InlineData(DomainType.Dma)]
    [InlineData(DomainType.DmaFq)]
    public void A_physical_range_that_wraps_past_the_top_is_einval_and_maps_nothing(DomainType type)
    {
        // dma-direct refuses it (dma_capable); through the IOMMU the tail page's physical address would
        // wrap to 0 and the device would reach physical page 0, a page it was never given.
        using DriverBed f = New(type);
        PciDevice dev = f.AddDevice("0000:00:03.0");
        ulong first = f.Iommu.DmaMapPage(dev, 0x4000_0000, K4, DmaDataDirection.Bidirectional);
        f.Iommu.DmaUnmapPage(dev, first, K4, DmaDataDirection.Bidirectional);
        f.Platform.Clock.Advance(IommuCore.IovaFqTimeout);

        ulong h = f.Iommu.DmaMapPage(dev, ulong.MaxValue - 0x7ff, K4, DmaDataDirection.Bidirectional);

        Assert.Equal(IommuCore.DmaMappingError, h);
        Assert.Equal(Errno.EINVAL, ErrorDetail.LastErrno);
        IDomain dom = f.Iommu.GetDmaDomain(dev)!;
        Assert.Equal(0UL, f.Iommu.IovaToPhys(dom, first));
        Assert.Equal(0UL, f.Iommu.IovaToPhys(dom, first + K4));
        Assert.Equal(first, f.Iommu.DmaMapPage(dev, 0x5000_0000, K4, DmaDataDirection.Bidirectional)); // no IOVA was consumed
    }

    [Fact]
    public void Freeing_the_default_domain_a_group_uses_is_refused_and_the_device_keeps_working()
    {
        using DriverBed f = New(DomainType.Dma);
        PciDevice dev = f.AddDevice("0000:00:03.0");
        IDomain def = f.Iommu.GetDmaDomain(dev)!;
        ulong h = f.Iommu.DmaMapPage(dev, 0x4000_0000, K4, DmaDataDirection.Bidirectional);

        Assert.Throws<InvalidOperationException>(() => f.Iommu.DomainFree(def));

        f.AssertDma(dev, null, h, 0x4000_0000, "the default domain is still the group's");
        f.Iommu.DmaUnmapPage(dev, h, K4, DmaDataDirection.Bidirectional);
        f.Pci.RemoveDevice(dev); // the group's release frees its default domain, once
        Assert.Null(dev.IommuGroup);
    }
}
