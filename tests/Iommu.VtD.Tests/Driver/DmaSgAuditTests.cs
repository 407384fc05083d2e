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

    [Theory]
    [InlineData(0x1_0000_0800UL, 0xFFFF_F900U, 0UL, 0U)] // one entry that rounds up to 4 GiB + 4 KiB
    [InlineData(0x1_0000_0000UL, 0x8000_0000U, 0x2_0000_0000UL, 0x8000_2000U)] // the first entry padded up to 4 GiB by the boundary
    public void An_entry_whose_iova_length_reaches_4G_fails_with_einval_and_maps_nothing(ulong phys0, uint len0, ulong phys1, uint len1)
    {
        // iommu_dma_map_sg keeps each entry's IOVA length in s->length (unsigned int): it truncates, __iommu_map_sg maps
        // less than iova_len, and the map fails with -EINVAL (leaving what it mapped mapped; the model maps nothing).
        using DriverBed f = New();
        PciDevice dev = f.AddDevice("0000:00:03.0");
        IDomain domain = f.Iommu.GetDmaDomain(dev)!;
        Assert.Equal(Errno.None, f.Iommu.DmaSetMaxSegSize(dev, uint.MaxValue));
        Scatterlist[] sg = len1 == 0 ? [new(phys0, len0)] : [new(phys0, len0), new(phys1, len1)];
        Assert.Equal(0, f.Iommu.DmaMapSg(dev, sg, DmaDataDirection.ToDevice));
        Assert.Equal(Errno.EINVAL, ErrorDetail.LastErrno);
        Assert.All(sg, s => Assert.Equal((IommuCore.DmaMappingError, 0U), (s.DmaAddress, s.DmaLength)));
        Assert.Empty(Leaves(domain));
        Assert.Equal(1, f.Iommu.DmaMapSg(dev, [new(0x4000_0000, 0x1000), new(0x5000_0000, 0x1000)], DmaDataDirection.ToDevice)); // still usable: one merged segment
    }

    [Theory]
    [InlineData(DomainType.Identity)]
    [InlineData(DomainType.Dma)]
    public void A_coherent_buffer_is_aligned_to_its_size_s_page_order(DomainType type)
    {
        // iommu_dma_alloc_pages / __dma_direct_alloc_pages: alloc_pages_node(node, gfp, get_order(size)), a block
        // aligned to its order (DMA-API.txt: "aligned to the smallest PAGE_SIZE order which is greater than or equal
        // to the requested size"), so a buffer of up to 64 KiB never crosses a 64 KiB line.
        using DriverBed f = new(Config("Sm48"), memory: SmallMemory, defaultDomain: type);
        PciDevice dev = f.AddDevice("0000:00:03.0");
        var held = new List<(ulong Cpu, ulong Size, ulong Handle)>();
        foreach (ulong size in new ulong[] { 0x1000, 0x3000, 0x1000, 0x10000, 0x1000, 0x5000, 0x2000 })
        {
            ulong cpu = f.Iommu.DmaAllocCoherent(dev, size, out ulong handle);
            Assert.NotEqual(0UL, cpu);
            ulong align = System.Numerics.BitOperations.RoundUpToPowerOf2(size);
            Assert.True(cpu % align == 0, $"CPU address 0x{cpu:x} of 0x{size:x} bytes is not aligned to 0x{align:x}");
            Assert.True(handle % align == 0, $"DMA address 0x{handle:x} of 0x{size:x} bytes is not aligned to 0x{align:x}");
            held.Add((cpu, size, handle));
        }

        long live = f.Platform.Frames.LiveFrames;
        foreach ((ulong cpu, ulong size, ulong handle) in held)
        {
            f.Iommu.DmaFreeCoherent(dev, size, cpu, handle);
        }

        // The whole power-of-two block is held (5 pages take 8), and goes back with the free.
        Assert.Equal(live - held.Sum(h => (long)System.Numerics.BitOperations.RoundUpToPowerOf2(h.Size / 0x1000)), f.Platform.Frames.LiveFrames);
    }

    [Fact]
    public void Freeing_a_coherent_buffer_after_its_device_left_a_group_whose_domain_lives_on_unmaps_it()
    {
        using DriverBed f = New();
        PciDevice a = f.Pci.AddDevice(new PciDeviceSpec("0000:00:03.0") { Multifunction = true });
        PciDevice b = f.Pci.AddDevice(new PciDeviceSpec("0000:00:03.1") { Multifunction = true });
        Assert.Same(a.IommuGroup, b.IommuGroup);
        IDomain domain = f.Iommu.GetDmaDomain(a)!;
        ulong cpu = f.Iommu.DmaAllocCoherent(a, 0x1000, out ulong handle);
        f.AssertDma(b, null, handle, cpu, "one domain for the group");

        f.Pci.RemoveDevice(a);
        Assert.Null(a.IommuGroup);
        f.Iommu.DmaFreeCoherent(a, 0x1000, cpu, handle);

        Assert.False(f.Platform.Frames.IsAllocated(cpu));
        Assert.Equal(0UL, f.Iommu.IovaToPhys(domain, handle));
        f.AssertDma(b, null, handle, 0, "the freed page is reachable by no device");
    }

    [Fact]
    public void A_dma_direct_map_sg_that_fails_leaves_the_entries_before_the_failure_mapped_as_dma_direct_map_sg_does()
    {
        // 5.15 dma_direct_map_sg: each entry's dma_address is dma_direct_map_page's result; at the first
        // DMA_MAPPING_ERROR it calls dma_direct_unmap_sg on the i entries before (a no-op without swiotlb, which
        // leaves their DMA fields as they are) and returns -EIO. The failed entry holds DMA_MAPPING_ERROR, the
        // entries after it are not touched.
        using DriverBed f = new(Config("Sm48"), memory: SmallMemory, defaultDomain: DomainType.Identity);
        PciDevice dev = f.AddDevice("0000:00:03.0");
        Assert.Equal(Errno.None, f.Iommu.DmaSetMask(dev, 0xFFFF_FFFF));
        Scatterlist[] sg = [new(0x4000_0000, 0x1000), new(0x5000_0800, 0x800), new(0x1_0000_0000, 0x1000), new(0x6000_0000, 0x1000)];
        Assert.Equal(0, f.Iommu.DmaMapSg(dev, sg, DmaDataDirection.ToDevice));
        Assert.Equal(Errno.EIO, ErrorDetail.LastErrno);
        Assert.Equal((0x4000_0000UL, 0x1000U), (sg[0].DmaAddress, sg[0].DmaLength));
        Assert.Equal((0x5000_0800UL, 0x800U), (sg[1].DmaAddress, sg[1].DmaLength));
        Assert.Equal((IommuCore.DmaMappingError, 0U), (sg[2].DmaAddress, sg[2].DmaLength));
        Assert.Equal((IommuCore.DmaMappingError, 0U), (sg[3].DmaAddress, sg[3].DmaLength));
    }

    [Fact]
    public void Freeing_a_null_coherent_buffer_does_nothing()
    {
        // dma_free_attrs: "if (!cpu_addr) return;"
        using DriverBed f = New();
        PciDevice dev = f.AddDevice("0000:00:03.0");
        long live = f.Platform.Frames.LiveFrames;
        f.Iommu.DmaFreeCoherent(dev, 0x1000, 0, IommuCore.DmaMappingError);
        Assert.Equal(live, f.Platform.Frames.LiveFrames);
    }
}
