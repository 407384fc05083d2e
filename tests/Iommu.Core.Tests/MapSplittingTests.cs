using Iommu.Core.Tests.Infrastructure;
using Iommu.Domains;
using Moq;
using static Iommu.Core.Tests.Infrastructure.MockIommu;

namespace Iommu.Core.Tests;

/// <summary>iommu_map (spec §1.7): page splitting, error paths, unwinding and iotlb_sync_map.</summary>
public sealed class MapSplittingTests : IDisposable
{
    private const OptionalOps MapPagesOnly = OptionalOps.All & ~OptionalOps.Map;
    private const OptionalOps MapOnly = OptionalOps.All & ~OptionalOps.MapPages;

    private readonly CoreBed _p = new();

    private MockIommu Driver => _p.Driver;

    private IommuCore Core => _p.Core;

    public void Dispose() => _p.Dispose();

    [Fact]
    public void Map_4MiB_at_0x1000_with_map_pages_ramps_up_4Kx511_then_2Mx1_then_4Kx1()
    {
        Driver.Optional = MapPagesOnly;
        IommuDomain d = Driver.NewDomain();

        Errno ret = Core.Map(d, 0x1000, 0x201000, 4 * Sizes.MiB, IommuProt.Read | IommuProt.Write);

        Assert.Equal(Errno.None, ret);
        Assert.Equal(
            [
                new DriverCall("map_pages", 0x1000, 0x201000, Sz4K, 511, Domain: d),
                new DriverCall("map_pages", 0x200000, 0x400000, Sz2M, 1, Domain: d),
                new DriverCall("map_pages", 0x400000, 0x600000, Sz4K, 1, Domain: d),
            ],
            Driver.Calls("map_pages"));
        Assert.Empty(Driver.Calls("map"));
    }

    [Fact]
    public void Map_4MiB_at_0x1000_with_only_map_issues_513_single_page_calls()
    {
        Driver.Optional = MapOnly;
        IommuDomain d = Driver.NewDomain();

        Assert.Equal(Errno.None, Core.Map(d, 0x1000, 0x201000, 4 * Sizes.MiB, IommuProt.Read));

        IReadOnlyList<DriverCall> maps = Driver.Calls("map");
        Assert.Equal(513, maps.Count);
        for (int i = 0; i < 511; i++)
        {
            ulong off = (ulong)i * Sz4K;
            Assert.Equal(new DriverCall("map", 0x1000 + off, 0x201000 + off, Sz4K, 1, Domain: d), maps[i]);
        }

        Assert.Equal(new DriverCall("map", 0x200000, 0x400000, Sz2M, 1, Domain: d), maps[511]);
        Assert.Equal(new DriverCall("map", 0x400000, 0x600000, Sz4K, 1, Domain: d), maps[512]);
        Assert.Empty(Driver.Calls("map_pages"));
    }

    [Fact]
    public void Map_prefers_map_pages_when_the_driver_has_both()
    {
        IommuDomain d = Driver.NewDomain();

        Assert.Equal(Errno.None, Core.Map(d, 0x1000, 0x2000, 2 * Sz4K, IommuProt.Read));

        Assert.Equal([new DriverCall("map_pages", 0x1000, 0x2000, Sz4K, 2, Domain: d)], Driver.Calls("map_pages"));
        Assert.Empty(Driver.Calls("map"));
    }

    [Fact]
    public void Map_3GiB_gigabyte_aligned_uses_three_1G_pages()
    {
        Driver.Optional = MapPagesOnly;
        IommuDomain d = Driver.NewDomain();

        Assert.Equal(Errno.None, Core.Map(d, 0, 0x40000000, 3 * Sizes.GiB, IommuProt.Read));

        Assert.Equal([new DriverCall("map_pages", 0, 0x40000000, Sz1G, 3, Domain: d)], Driver.Calls("map_pages"));
    }

    [Fact]
    public void Map_3GiB_gigabyte_aligned_with_only_map_uses_three_1G_calls()
    {
        Driver.Optional = MapOnly;
        IommuDomain d = Driver.NewDomain();

        Assert.Equal(Errno.None, Core.Map(d, 0, 0x40000000, 3 * Sizes.GiB, IommuProt.Read));

        Assert.Equal(
            [
                new DriverCall("map", 0, 0x40000000, Sz1G, 1, Domain: d),
                new DriverCall("map", Sz1G, 2 * Sz1G, Sz1G, 1, Domain: d),
                new DriverCall("map", 2 * Sz1G, 3 * Sz1G, Sz1G, 1, Domain: d),
            ],
            Driver.Calls("map"));
    }

    [Fact]
    public void Map_8K_at_offsets_that_differ_within_2M_uses_4K_pages()
    {
        Driver.Optional = MapPagesOnly;
        IommuDomain d = Driver.NewDomain();

        Assert.Equal(Errno.None, Core.Map(d, 0x1000, 0x2000, 8 * Sizes.KiB, IommuProt.Read));

        Assert.Equal([new DriverCall("map_pages", 0x1000, 0x2000, Sz4K, 2, Domain: d)], Driver.Calls("map_pages"));
    }

    [Fact]
    public void Map_does_not_ramp_up_when_iova_and_paddr_have_different_offsets_in_the_larger_page()
    {
        Driver.Optional = MapPagesOnly;
        IommuDomain d = Driver.NewDomain();

        // iova is 2M-aligned after 0x1ff000 bytes, but paddr is not: every page must stay 4K.
        Assert.Equal(Errno.None, Core.Map(d, 0x1000, 0x2000, 4 * Sizes.MiB, IommuProt.Read));

        Assert.Equal([new DriverCall("map_pages", 0x1000, 0x2000, Sz4K, 1024, Domain: d)], Driver.Calls("map_pages"));
    }

    [Fact]
    public void Map_passes_the_protection_through_to_the_driver()
    {
        Driver.Optional = MapOnly;
        IommuDomain d = Driver.NewDomain();
        const IommuProt prot = IommuProt.Read | IommuProt.Write | IommuProt.Cache;

        Assert.Equal(Errno.None, Core.Map(d, 0x1000, 0x5000, Sz4K, prot));

        Driver.MapMock.Verify(o => o.Map(d, 0x1000, 0x5000, Sz4K, prot), Times.Once);
    }

    [Theory]
    [InlineData(0x800UL, 0x2000UL, 0x1000UL)]
    [InlineData(0x1000UL, 0x2800UL, 0x1000UL)]
    [InlineData(0x1000UL, 0x2000UL, 0x1800UL)]
    [InlineData(0x1000UL, 0x2000UL, 0x1UL)]
    public void Map_unaligned_to_the_smallest_page_is_EINVAL_without_any_driver_call(ulong iova, ulong paddr, ulong size)
    {
        IommuDomain d = Driver.NewDomain();

        Assert.Equal(Errno.EINVAL, Core.Map(d, iova, paddr, size, IommuProt.Read));

        Assert.Empty(Driver.Log);
    }

    [Fact]
    public void Map_alignment_uses_the_smallest_page_of_the_domain_not_of_the_driver()
    {
        IommuDomain d = Driver.NewDomain(pgsizeBitmap: Sz2M | Sz1G);

        Assert.Equal(Errno.EINVAL, Core.Map(d, 0x1000, 0x1000, Sz4K, IommuProt.Read));
        Assert.Equal(Errno.None, Core.Map(d, Sz2M, Sz2M, Sz2M, IommuProt.Read));
        Assert.Equal([new DriverCall("map_pages", Sz2M, Sz2M, Sz2M, 1, Domain: d)], Driver.Calls("map_pages"));
    }

    [Fact]
    public void Map_without_map_or_map_pages_callback_is_ENODEV()
    {
        Driver.Optional = OptionalOps.All & ~OptionalOps.Map & ~OptionalOps.MapPages;
        IommuDomain d = Driver.NewDomain();

        Assert.Equal(Errno.ENODEV, Core.Map(d, 0x1000, 0x1000, Sz4K, IommuProt.Read));

        Assert.Empty(Driver.Log);
    }

    [Fact]
    public void Map_in_a_domain_with_an_empty_pgsize_bitmap_is_ENODEV()
    {
        IommuDomain d = Driver.NewDomain(pgsizeBitmap: 0);

        Assert.Equal(Errno.ENODEV, Core.Map(d, 0x1000, 0x1000, Sz4K, IommuProt.Read));

        Assert.Empty(Driver.Log);
    }

    [Fact]
    public void Map_in_a_domain_without_ops_is_ENODEV()
    {
        var d = new IommuDomain { Type = DomainType.Unmanaged, PgsizeBitmap = Sz4K };

        Assert.Equal(Errno.ENODEV, Core.Map(d, 0x1000, 0x1000, Sz4K, IommuProt.Read));
    }

    [Theory]
    [InlineData(DomainType.Identity)]
    [InlineData(DomainType.Blocked)]
    public void Map_in_a_non_paging_domain_is_EINVAL(DomainType type)
    {
        IommuDomain d = Driver.NewDomain(type);

        Assert.Equal(Errno.EINVAL, Core.Map(d, 0x1000, 0x1000, Sz4K, IommuProt.Read));

        Assert.Empty(Driver.Log);
    }

    [Theory]
    [InlineData(DomainType.Unmanaged)]
    [InlineData(DomainType.Dma)]
    [InlineData(DomainType.DmaFq)]
    public void Map_in_any_paging_domain_type_reaches_the_driver(DomainType type)
    {
        IommuDomain d = Driver.NewDomain(type);

        Assert.Equal(Errno.None, Core.Map(d, 0x1000, 0x1000, Sz4K, IommuProt.Read));

        Assert.Single(Driver.Calls("map_pages"));
    }

    [Fact]
    public void Map_of_zero_bytes_succeeds_and_maps_nothing()
    {
        IommuDomain d = Driver.NewDomain();

        Assert.Equal(Errno.None, Core.Map(d, 0x1000, 0x1000, 0, IommuProt.Read));

        Assert.Empty(Driver.Calls("map_pages"));
        Assert.Empty(Driver.Calls("map"));
    }

    [Fact]
    public void Map_calls_iotlb_sync_map_once_with_the_whole_range_after_the_last_map()
    {
        Driver.Optional = MapPagesOnly;
        IommuDomain d = Driver.NewDomain();

        Assert.Equal(Errno.None, Core.Map(d, 0x1000, 0x201000, 4 * Sizes.MiB, IommuProt.Read));

        Assert.Equal([new DriverCall("iotlb_sync_map", 0x1000, 0, 4 * Sizes.MiB, Domain: d)], Driver.Calls("iotlb_sync_map"));
        Assert.Equal("iotlb_sync_map", Driver.OpNames()[^1]);
    }

    [Fact]
    public void Map_without_iotlb_sync_map_callback_still_succeeds()
    {
        Driver.Optional = OptionalOps.All & ~OptionalOps.Iotlb;
        IommuDomain d = Driver.NewDomain();

        Assert.Equal(Errno.None, Core.Map(d, 0x1000, 0x1000, Sz4K, IommuProt.Read));
        // The ops object has no IIommuIotlbOps, so the core cannot call iotlb_sync_map.
    }

    [Fact]
    public void Map_failure_with_only_map_unmaps_exactly_the_pages_mapped_so_far_and_returns_the_driver_errno()
    {
        Driver.Optional = MapOnly;
        IommuDomain d = Driver.NewDomain();
        int calls = 0;
        Driver.MapBehaviour = (_, _, _) => ++calls == 3 ? Errno.ENOMEM : Errno.None;

        Errno ret = Core.Map(d, 0x10000, 0x20000, 8 * Sz4K, IommuProt.Read);

        Assert.Equal(Errno.ENOMEM, ret);
        Assert.Equal(3, Driver.Calls("map").Count);
        AssertUnmappedExactly(0x10000, 2 * Sz4K);
        Assert.Empty(Driver.Calls("iotlb_sync_map"));
    }

    [Fact]
    public void Map_failure_on_the_superpage_unwinds_the_511_small_pages_before_it()
    {
        Driver.Optional = MapPagesOnly;
        IommuDomain d = Driver.NewDomain();
        Driver.MapPagesBehaviour = (_, _, pgsize, count) => pgsize == Sz2M ? (Errno.EFAULT, 0UL) : (Errno.None, pgsize * count);

        Errno ret = Core.Map(d, 0x1000, 0x201000, 4 * Sizes.MiB, IommuProt.Read);

        Assert.Equal(Errno.EFAULT, ret);
        AssertUnmappedExactly(0x1000, 511 * Sz4K);
        Assert.Empty(Driver.Calls("iotlb_sync_map"));
    }

    [Fact]
    public void Map_failure_of_map_pages_also_unwinds_the_partial_run_it_reported()
    {
        Driver.Optional = MapPagesOnly;
        IommuDomain d = Driver.NewDomain();

        // The first run (4K x 511) fails after mapping 100 pages.
        Driver.MapPagesBehaviour = (_, _, pgsize, count) => count == 511 ? (Errno.ENOMEM, 100 * pgsize) : (Errno.None, pgsize * count);

        Errno ret = Core.Map(d, 0x1000, 0x201000, 4 * Sizes.MiB, IommuProt.Read);

        Assert.Equal(Errno.ENOMEM, ret);
        Assert.Single(Driver.Calls("map_pages"));
        AssertUnmappedExactly(0x1000, 100 * Sz4K);
        Assert.Empty(Driver.Calls("iotlb_sync_map"));
    }

    [Fact]
    public void Map_failure_of_a_later_run_unwinds_earlier_runs_plus_its_partial_bytes()
    {
        Driver.Optional = MapPagesOnly;
        IommuDomain d = Driver.NewDomain();

        // Every 1G run fails after mapping one 1G page.
        Driver.MapPagesBehaviour = (iova, _, pgsize, count) => pgsize == Sz1G ? (Errno.EIO, Sz1G) : (Errno.None, pgsize * count);

        Errno ret = Core.Map(d, Sz2M, Sz2M, 3 * Sz1G, IommuProt.Read);

        // 2M x 511 up to 1G, then 1G x 2 which fails after one 1G page.
        Assert.Equal(Errno.EIO, ret);
        Assert.Equal(
            [
                new DriverCall("map_pages", Sz2M, Sz2M, Sz2M, 511, Domain: d),
                new DriverCall("map_pages", Sz1G, Sz1G, Sz1G, 2, Domain: d),
            ],
            Driver.Calls("map_pages"));
        AssertUnmappedExactly(Sz2M, (511 * Sz2M) + Sz1G);
    }

    [Fact]
    public void Map_failure_on_the_first_page_unmaps_nothing()
    {
        Driver.Optional = MapOnly;
        IommuDomain d = Driver.NewDomain();
        Driver.MapBehaviour = (_, _, _) => Errno.EFAULT;

        Assert.Equal(Errno.EFAULT, Core.Map(d, 0x1000, 0x1000, 4 * Sz4K, IommuProt.Read));

        Assert.Single(Driver.Calls("map"));
        Assert.Empty(Driver.Calls("unmap"));
        Assert.Empty(Driver.Calls("unmap_pages"));
        Assert.Empty(Driver.Calls("iotlb_sync_map"));
    }

    private void AssertUnmappedExactly(ulong iova, ulong size)
    {
        ulong next = iova;
        foreach (DriverCall c in Driver.Log.Where(c => c.Op is "unmap" or "unmap_pages"))
        {
            Assert.Equal(next, c.Iova);
            next += c.Size * c.Count;
        }

        Assert.Equal(iova + size, next);
    }
}
