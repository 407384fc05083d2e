using Iommu;
using Iommu.Devices;
using Iommu.Domains;
using Vfio.Mdev;
using Vfio.Type1.Tests.Infrastructure;
using Vfio.Type1.Uapi;

namespace Vfio.Type1.Tests;

/// <summary>
/// Audit of the type1 ioctls against 5.15's <c>vfio_iommu_type1.c</c>: cases where the kernel's exact
/// arithmetic gives an answer a straightforward reading would not.
/// </summary>
public sealed class Type1IoctlAuditTests : IDisposable
{
    private const ulong I0 = 0x10_0000;
    private const ulong P = 0x1000;
    private readonly Type1Bed _bed = new();

    public void Dispose() => _bed.Dispose();

    private (VfioContainer C, IDomain Domain) MappedContainer(int type)
    {
        PciDevice dev = _bed.AddDevice("0000:00:03.0");
        (VfioContainer c, _) = _bed.Std(dev, type);
        Assert.Equal(Errno.None, c.MapDma(Type1Bed.Map(_bed.Buffer(2 * P), I0, 2 * P)));
        return (c, c.Backend!.Domains[0]);
    }

    // vfio_dma_do_unmap accepts iova + size == 2^64 (iova + size - 1 does not wrap), but then
    // vfio_find_dma_first_node tests dma->iova >= start + size with start + size == 0 and finds no node,
    // and the loop's own dma->iova >= iova + size stops at once: success, size 0, nothing removed.
    [Theory]
    [InlineData(VfioUapi.VFIO_TYPE1v2_IOMMU)]
    [InlineData(VfioUapi.VFIO_TYPE1_IOMMU)]
    public void Unmap_of_a_range_ending_at_2_pow_64_removes_nothing(int type)
    {
        (VfioContainer c, IDomain domain) = MappedContainer(type);

        var unmap = new VfioIommuType1DmaUnmap(24, 0, I0, unchecked(0UL - I0));
        Assert.Equal(Errno.None, c.UnmapDma(ref unmap));
        Assert.Equal(0UL, unmap.Size);
        Assert.Single(c.Backend!.Mappings);
        Assert.NotEqual(0UL, _bed.Iommu.IovaToPhys(domain, I0));
        Assert.NotEqual(0UL, _bed.Iommu.IovaToPhys(domain, I0 + P));

        // One page shorter ends inside the address space and removes the mapping.
        unmap = new VfioIommuType1DmaUnmap(24, 0, I0, unchecked(0UL - I0 - P));
        Assert.Equal(Errno.None, c.UnmapDma(ref unmap));
        Assert.Equal(2 * P, unmap.Size);
        Assert.Empty(c.Backend!.Mappings);
        Assert.Equal(0UL, _bed.Iommu.IovaToPhys(domain, I0));
    }

    // The same early stop applies with VADDR: nothing is invalidated, so MAP(VADDR) then finds a valid
    // mapping (-EINVAL) and a later UNMAP(VADDR) over a normal range still succeeds.
    [Fact]
    public void Unmap_vaddr_of_a_range_ending_at_2_pow_64_invalidates_nothing()
    {
        (VfioContainer c, _) = MappedContainer(VfioUapi.VFIO_TYPE1v2_IOMMU);

        var unmap = new VfioIommuType1DmaUnmap(24, VfioUapi.VFIO_DMA_UNMAP_FLAG_VADDR, I0, unchecked(0UL - I0));
        Assert.Equal(Errno.None, c.UnmapDma(ref unmap));
        Assert.Equal(0UL, unmap.Size);
        Assert.False(c.Backend!.Mappings[0].VaddrInvalid);
        Assert.Equal(Errno.EINVAL, c.MapDma(Type1Bed.Map(_bed.Buffer(2 * P), I0, 2 * P, VfioUapi.VFIO_DMA_MAP_FLAG_VADDR)));
    }

    // DIRTY_PAGES(START): vfio_dma_bitmap_alloc_all returns vfio_dma_bitmap_alloc's -EINVAL for a mapping
    // of more than DIRTY_BITMAP_PAGES_MAX (INT_MAX) pages and dirty_page_tracking stays false, so
    // GET_BITMAP is -EINVAL afterwards. Only a container without an IOMMU domain can hold such a mapping
    // (nothing is pinned, the IOVA list is empty).
    [Fact]
    public void Dirty_start_fails_when_a_mapping_has_more_than_int_max_pages()
    {
        MdevDevice m = _bed.AddMttyMdev();
        (VfioContainer c, _) = _bed.Std(m);
        ulong huge = (VfioUapi.DirtyBitmapPagesMax + 1) * P;
        ulong va = _bed.Proc.Mmap(P);
        Assert.Equal(Errno.None, c.MapDma(Type1Bed.Map(0x1000_0000_0000, 0, huge)));
        Assert.Equal(Errno.None, c.MapDma(Type1Bed.Map(va, huge, P)));

        Assert.Equal(Errno.EINVAL, c.DirtyPages(VfioUapi.VFIO_IOMMU_DIRTY_PAGES_FLAG_START));
        Assert.False(c.Backend!.DirtyTracking);
        ulong bm = _bed.Proc.Mmap(P);
        Assert.Equal(Errno.EINVAL, c.GetDirtyBitmap(huge, P, new VfioBitmap(P, 8, bm)));

        // Without the huge mapping START works.
        var unmap = new VfioIommuType1DmaUnmap(24, 0, 0, huge);
        Assert.Equal(Errno.None, c.UnmapDma(ref unmap));
        Assert.Equal(huge, unmap.Size);
        Assert.Equal(Errno.None, c.DirtyPages(VfioUapi.VFIO_IOMMU_DIRTY_PAGES_FLAG_START));
        Assert.True(c.Backend!.DirtyTracking);
        Assert.Equal(Errno.None, c.GetDirtyBitmap(huge, P, new VfioBitmap(P, 8, bm)));
    }
    // vfio_dma_do_map looks for an overlap with vfio_find_dma(iommu, iova, size), whose walk goes left while
    // start + size <= dma->iova: a request ending exactly at 2^64 makes that 0 <= dma->iova, so the walk finds
    // nothing even over an existing mapping. No -EEXIST then: -ENOSPC with no slot left, else the IOVA-range
    // check's -EINVAL; with VADDR, -ENOENT. (vaddr 0 keeps vaddr + size - 1 from wrapping.)
    [Fact]
    public void Map_ending_at_2_pow_64_does_not_see_an_overlapping_mapping()
    {
        (VfioContainer c, IDomain domain) = MappedContainer(VfioUapi.VFIO_TYPE1v2_IOMMU);
        ulong toTop = unchecked(0UL - I0);

        Assert.Equal(Errno.EINVAL, c.MapDma(Type1Bed.Map(0, I0, toTop)));
        Assert.Equal(Errno.ENOENT, c.MapDma(Type1Bed.Map(0, I0, toTop, VfioUapi.VFIO_DMA_MAP_FLAG_VADDR)));

        // One page less ends inside the address space: the overlap is found first.
        Assert.Equal(Errno.EEXIST, c.MapDma(Type1Bed.Map(0, I0, toTop - P)));
        Assert.Equal(Errno.EINVAL, c.MapDma(Type1Bed.Map(0, I0, toTop - P, VfioUapi.VFIO_DMA_MAP_FLAG_VADDR)));

        Assert.Single(c.Backend!.Mappings);
        Assert.NotEqual(0UL, _bed.Iommu.IovaToPhys(domain, I0));
    }

    [Fact]
    public void Map_ending_at_2_pow_64_over_a_mapping_is_ENOSPC_when_no_slot_is_left()
    {
        using var bed = new Type1Bed(options: new VfioType1Options { AllowUnsafeInterrupts = true, DmaEntryLimit = 1 });
        (VfioContainer c, _) = bed.Std(bed.AddDevice("0000:00:03.0"));
        Assert.Equal(Errno.None, c.MapDma(Type1Bed.Map(bed.Buffer(P), I0, P)));

        Assert.Equal(Errno.ENOSPC, c.MapDma(Type1Bed.Map(0, I0, unchecked(0UL - I0))));
        Assert.Equal(Errno.EEXIST, c.MapDma(Type1Bed.Map(0, I0, P)));
    }
}
