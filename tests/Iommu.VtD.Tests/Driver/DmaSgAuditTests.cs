using Iommu.Devices;
using Iommu.Domains;
using Iommu.VtD.Driver;
using static Iommu.VtD.Tests.Driver.DriverTestKit;

namespace Iommu.VtD.Tests.Driver;

/// <summary>
/// Edge cases of the DMA API's scatterlist and coherent calls against 5.15: a max segment size of 0, lists whose
/// entries round up to 4 GiB or more, coherent buffers' alignment and frees after the device left its group.
/// </summary>
public sealed class DmaSgAuditTests
{
    private static DriverBed New(DomainType type = DomainType.Dma) => new(Config("Sm48"), memory: SmallMemory, defaultDomain: type);

    [Fact]
    public void A_max_segment_size_of_0_reads_as_64K_as_dma_get_max_seg_size_does()
    {
        // dma_get_max_seg_size: "if (dev->dma_parms && dev->dma_parms->max_segment_size) return it; return SZ_64K".
        using DriverBed f = New();
        PciDevice dev = f.AddDevice("0000:00:03.0");
        Assert.Equal(Errno.None, f.Iommu.DmaSetMaxSegSize(dev, 0));
        Assert.Equal(65536U, IommuCore.DmaGetMaxSegSize(dev));
        Scatterlist[] sg = [new(0x4000_0000, 0x10000), new(0x5000_0000, 0x10000)];
        Assert.Equal(2, f.Iommu.DmaMapSg(dev, sg, DmaDataDirection.ToDevice));
        Assert.Equal((0x10000U, 0x10000U), (sg[0].DmaLength, sg[1].DmaLength));
        f.Iommu.DmaUnmapSg(dev, sg, DmaDataDirection.ToDevice);
    }
}
