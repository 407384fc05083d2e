using CsCheck;
using Iommu.Devices;
using Iommu.Domains;
using Iommu.VtD.Hardware;
using static Iommu.VtD.Tests.Driver.DriverTestKit;

namespace Iommu.VtD.Tests.Driver;

/// <summary>
/// The DMA API with arguments at the edges (0 bytes, the last byte of the 64-bit space, masks that are not
/// 2^n - 1) on the dma-direct path (a device whose default domain is IDENTITY): what 5.15's
/// <c>dma_capable</c> / <c>dma_coherent_ok</c> arithmetic gives, as a caller observes it.
/// </summary>
public sealed class DmaDirectCapableTests
{
    // A device served by dma-direct: its group's default domain is IDENTITY.
    private static (DriverBed Bed, PciDevice Dev) Direct()
    {
        var f = new DriverBed(VtdConfig.ScalableMode48Bit, memory: SmallMemory, defaultDomain: DomainType.Identity);
        PciDevice dev = f.AddDevice("0000:00:03.0");
        Assert.Equal(DomainType.Identity, f.Iommu.GetDmaDomain(dev)!.Type);
        return (f, dev);
    }

    // 5.15 dma_map_page_attrs has no size check and goes to dma_direct_map_page, which calls
    // dma_capable(dev, phys, size = 0, true): end = addr + size - 1 = phys - 1 (unsigned), and the map
    // fails (no swiotlb: dev_WARN_ONCE and DMA_MAPPING_ERROR) when end > *dev->dma_mask. For phys 2^33 or
    // 2^32 + 4 KiB and a 32-bit mask end is above the mask; for phys 0 end wraps to 2^64 - 1. We skip the
    // mask test for 0 bytes and hand back phys: a DMA address above the device's mask, reported as success.
    [Theory]
    [InlineData(0x2_0000_0000UL)]
    [InlineData(0x1_0000_1000UL)]
    [InlineData(0UL)]
    public void Dma_direct_map_of_0_bytes_whose_end_is_above_the_dma_mask_fails_as_dma_capable_says(ulong phys)
    {
        (DriverBed f, PciDevice dev) = Direct();
        using (f)
        {
            Assert.Equal(Errno.None, f.Iommu.DmaSetMask(dev, 0xFFFF_FFFF));
            ulong dma = f.Iommu.DmaMapPage(dev, phys, 0, DmaDataDirection.Bidirectional);
            Assert.True(dma == IommuCore.DmaMappingError, $"dma_map_page of 0 bytes at 0x{phys:x} with a 32-bit mask gave DMA address 0x{dma:x}; 5.15 dma_capable refuses it");
        }
    }

    // The class of the two tests around it: any buffer, any mask, against dma_capable's arithmetic (end = phys + size - 1,
    // not DMA_MAPPING_ERROR, end <= mask), plus our one stricter rule (a buffer that wraps past 2^64 is refused, where
    // dma_capable tests only its end). Values cluster at 0, at the mask and at 2^64, where the arithmetic wraps.
    [Fact]
    public void Dma_direct_map_page_agrees_with_dma_capable_for_any_buffer_and_mask()
    {
        (DriverBed f, PciDevice dev) = Direct();
        using (f)
        {
            Gen<ulong> masks = Gen.OneOfConst(0xFFFF_FFFFUL, 0xF_FFFF_FFFFUL, (1UL << 48) - 1, ulong.MaxValue);
            Gen<ulong> near = Gen.Select(Gen.OneOfConst(0UL, 0x1_0000_0000UL, 0x10_0000_0000UL, 1UL << 48, ulong.MaxValue - 0x1FFF), Gen.Long[-0x1800, 0x1800])
                .Select((a, d) => unchecked(a + (ulong)d));
            Gen<ulong> sizes = Gen.OneOf(Gen.ULong[0, 0x3000], Gen.OneOfConst(0UL, 1UL, 0x1000UL, ulong.MaxValue));
            Gen.Select(masks, near, sizes).Sample((mask, phys, size) =>
            {
                Assert.Equal(Errno.None, f.Iommu.DmaSetMask(dev, mask));
                ulong end = unchecked(phys + size - 1);
                bool wraps = size != 0 && end < phys;
                bool capable = phys != IommuCore.DmaMappingError && end <= mask;
                ErrorDetail.Clear();

                ulong dma = f.Iommu.DmaMapPage(dev, phys, size, DmaDataDirection.Bidirectional);

                if (capable && !wraps)
                {
                    Assert.Equal(phys, dma);
                    Assert.Equal(Errno.None, ErrorDetail.LastErrno);
                    f.Iommu.DmaUnmapPage(dev, dma, size, DmaDataDirection.Bidirectional);
                }
                else
                {
                    Assert.Equal(IommuCore.DmaMappingError, dma);
                    Assert.Equal(wraps ? Errno.EINVAL : Errno.EIO, ErrorDetail.LastErrno);
                }
            }, iter: 2000, threads: 1);
        }
    }

    // 5.15 dma_capable: "if (addr == DMA_MAPPING_ERROR) return false;", so a one-byte buffer at 2^64 - 1
    // fails even with a 64-bit mask (DMA_MAPPING_ERROR, as we return). Our DmaMapPage docs say that
    // ErrorDetail says why a map returned DmaMappingError; here we return it as the DMA address of a
    // successful map (ErrorDetail none), and DmaMapSg's EIO carries an empty reason.
    [Fact]
    public void Dma_direct_map_whose_dma_address_is_dma_mapping_error_records_why_it_failed()
    {
        (DriverBed f, PciDevice dev) = Direct();
        using (f)
        {
            Assert.Equal(Errno.None, f.Iommu.DmaSetMask(dev, ulong.MaxValue));
            ErrorDetail.Clear();
            ulong dma = f.Iommu.DmaMapPage(dev, ulong.MaxValue, 1, DmaDataDirection.Bidirectional);
            Assert.Equal(IommuCore.DmaMappingError, dma);
            Assert.NotEqual(Errno.None, ErrorDetail.LastErrno);
        }
    }

    // 5.15 dma_direct_alloc: size = PAGE_ALIGN(size) first, then __dma_direct_alloc_pages keeps a page only
    // when dma_coherent_ok(dev, page_to_phys(page), size): phys + PAGE_ALIGN(size) - 1 <= coherent_dma_mask
    // (else it retries from ZONE_DMA32 / ZONE_DMA; the model fails instead, ENOMEM). We test the unrounded
    // size, so with a coherent mask that ends inside the page the buffer gets a page that runs past the mask.
    [Fact]
    public void Dma_direct_coherent_buffer_whose_page_runs_past_the_coherent_mask_is_refused()
    {
        (DriverBed f, PciDevice dev) = Direct();
        using (f)
        {
            // The allocator hands the same block back after a free: learn where the next one-page buffer lands.
            ulong probe = f.Iommu.DmaAllocCoherent(dev, 0x100, out ulong probeHandle);
            Assert.NotEqual(0UL, probe);
            f.Iommu.DmaFreeCoherent(dev, 0x100, probe, probeHandle);

            ulong mask = probe + 0x7FF; // above 32 bits: dma_supported accepts it
            Assert.Equal(Errno.None, f.Iommu.DmaSetCoherentMask(dev, mask));
            ulong cpu = f.Iommu.DmaAllocCoherent(dev, 0x100, out ulong handle);
            Assert.True(cpu == 0 || handle + Sizes.Page - 1 <= mask, $"coherent buffer's page [0x{handle:x}, +0x1000) runs past the coherent mask 0x{mask:x}; 5.15 dma_coherent_ok(PAGE_ALIGN(size)) refuses that page");
        }
    }

    // The class of the test above: coherent buffers of any size under masks that end anywhere around the pages they get.
    // Whatever the allocator hands out, a buffer that comes back lies under the mask page-whole (dma_coherent_ok of
    // PAGE_ALIGN(size)); one that does not is ENOMEM and no buffer.
    [Fact]
    public void Dma_direct_coherent_buffers_lie_under_the_coherent_mask_page_whole()
    {
        (DriverBed f, PciDevice dev) = Direct();
        using (f)
        {
            Gen.Select(Gen.ULong[1, 0x3000], Gen.Long[-0x1800, 0x3800]).Sample((size, delta) =>
            {
                Assert.Equal(Errno.None, f.Iommu.DmaSetCoherentMask(dev, ulong.MaxValue));
                ulong probe = f.Iommu.DmaAllocCoherent(dev, size, out ulong probeHandle);
                Assert.NotEqual(0UL, probe);
                f.Iommu.DmaFreeCoherent(dev, size, probe, probeHandle);
                ulong mask = unchecked(probe + (ulong)delta);
                Assert.Equal(Errno.None, f.Iommu.DmaSetCoherentMask(dev, mask));
                ErrorDetail.Clear();

                ulong cpu = f.Iommu.DmaAllocCoherent(dev, size, out ulong handle);

                ulong pages = (size + Sizes.Page - 1) & ~(Sizes.Page - 1);
                if (cpu != 0)
                {
                    Assert.True(handle + pages - 1 <= mask, $"buffer [0x{handle:x}, +0x{pages:x}) runs past the coherent mask 0x{mask:x}");
                    f.Iommu.DmaFreeCoherent(dev, size, cpu, handle);
                }
                else
                {
                    Assert.Equal(Errno.ENOMEM, ErrorDetail.LastErrno);
                }
            }, iter: 300, threads: 1);
        }
    }
}
