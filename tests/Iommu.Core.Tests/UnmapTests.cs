using Iommu.Core.Tests.Infrastructure;
using Iommu.Domains;
using static Iommu.Core.Tests.Infrastructure.MockIommu;

namespace Iommu.Core.Tests;

/// <summary>iommu_unmap / iommu_unmap_fast / iommu_iotlb_sync (spec §1.8) and iommu_iova_to_phys (§1.9).</summary>
public sealed class UnmapTests : IDisposable
{
    private const OptionalOps UnmapOnly = OptionalOps.All & ~OptionalOps.MapPages;

    private readonly CoreBed _p = new();

    private MockIommu Driver => _p.Driver;

    private IommuCore Core => _p.Core;

    public void Dispose() => _p.Dispose();

    [Fact]
    public void Unmap_returns_the_bytes_unmapped_and_splits_by_iova_alignment_only()
    {
        IommuDomain d = Driver.NewDomain();

        ulong ret = Core.Unmap(d, 0x1000, 4 * Sizes.MiB);

        Assert.Equal(4 * Sizes.MiB, ret);
        Assert.Equal(
            [
                new DriverCall("unmap_pages", 0x1000, 0, Sz4K, 511, Domain: d),
                new DriverCall("unmap_pages", 0x200000, 0, Sz2M, 1, Domain: d),
                new DriverCall("unmap_pages", 0x400000, 0, Sz4K, 1, Domain: d),
            ],
            Driver.Calls("unmap_pages"));
        Assert.Empty(Driver.Calls("unmap"));
    }

    [Fact]
    public void Unmap_with_only_unmap_calls_it_once_per_page()
    {
        Driver.Optional = UnmapOnly;
        IommuDomain d = Driver.NewDomain();

        Assert.Equal(4 * Sizes.MiB, Core.Unmap(d, 0x1000, 4 * Sizes.MiB));

        IReadOnlyList<DriverCall> calls = Driver.Calls("unmap");
        Assert.Equal(513, calls.Count);
        Assert.Equal(new DriverCall("unmap", 0x1000, 0, Sz4K, 1, Domain: d), calls[0]);
        Assert.Equal(new DriverCall("unmap", 0x200000, 0, Sz2M, 1, Domain: d), calls[511]);
        Assert.Equal(new DriverCall("unmap", 0x400000, 0, Sz4K, 1, Domain: d), calls[512]);
    }

    [Fact]
    public void Unmap_of_4K_inside_a_2M_superpage_returns_the_2M_the_driver_removed()
    {
        Driver.Optional = UnmapOnly;
        IommuDomain d = Driver.NewDomain();
        Driver.UnmapBehaviour = (_, _, _) => Sz2M;

        ulong ret = Core.Unmap(d, 0x200000, Sz4K);

        Assert.Equal(Sz2M, ret);
        Assert.Single(Driver.Calls("unmap"));
    }

    [Fact]
    public void Unmap_advances_by_what_the_driver_reports_not_by_what_it_asked()
    {
        Driver.Optional = UnmapOnly;
        IommuDomain d = Driver.NewDomain();

        // A 2M superpage sits at 0: the first 4K request removes 2M, the next request starts at 2M.
        Driver.UnmapBehaviour = (iova, pgsize, _) => iova == 0 ? Sz2M : pgsize;

        ulong ret = Core.Unmap(d, 0, 2 * Sz2M);

        Assert.Equal(2 * Sz2M, ret);
        Assert.Equal(
            [
                new DriverCall("unmap", 0, 0, Sz2M, 1, Domain: d),
                new DriverCall("unmap", Sz2M, 0, Sz2M, 1, Domain: d),
            ],
            Driver.Calls("unmap"));
    }

    [Fact]
    public void Unmap_goes_past_holes_and_returns_the_total_the_driver_removed()
    {
        // iommu.c stops at the first piece that returns 0; we give every piece to the driver once (a
        // VT-d superpage removed with an earlier piece makes a later one return 0 with more behind it).
        Driver.Optional = UnmapOnly;
        IommuDomain d = Driver.NewDomain();
        Driver.UnmapBehaviour = (iova, pgsize, _) => iova is >= 0x3000 and < 0x6000 ? 0 : pgsize;

        ulong ret = Core.Unmap(d, 0x1000, 8 * Sz4K);

        Assert.Equal(5 * Sz4K, ret);
        Assert.Equal([0x1000UL, 0x2000, 0x3000, 0x4000, 0x5000, 0x6000, 0x7000, 0x8000], Driver.Calls("unmap").Select(c => c.Iova));
    }

    [Fact]
    public void Unmap_of_a_hole_returns_zero()
    {
        IommuDomain d = Driver.NewDomain();
        Driver.UnmapBehaviour = (_, _, _) => 0;

        Assert.Equal(0UL, Core.Unmap(d, 0x1000, 4 * Sz4K));
        Assert.Single(Driver.Calls("unmap_pages"));
    }

    [Theory]
    [InlineData(0x800UL, 0x1000UL)]
    [InlineData(0x1000UL, 0x800UL)]
    [InlineData(0x1000UL, 0x1001UL)]
    public void Unmap_unaligned_returns_zero_without_calling_the_driver_to_unmap(ulong iova, ulong size)
    {
        IommuDomain d = Driver.NewDomain();

        Assert.Equal(0UL, Core.Unmap(d, iova, size));

        Assert.Empty(Driver.Calls("unmap_pages"));
        Assert.Empty(Driver.Calls("unmap"));
    }

    [Theory]
    [InlineData(DomainType.Identity)]
    [InlineData(DomainType.Blocked)]
    public void Unmap_in_a_non_paging_domain_returns_zero(DomainType type)
    {
        IommuDomain d = Driver.NewDomain(type);

        Assert.Equal(0UL, Core.Unmap(d, 0x1000, Sz4K));

        Assert.Empty(Driver.Calls("unmap_pages"));
        Assert.Empty(Driver.Calls("unmap"));
    }

    [Fact]
    public void Unmap_without_unmap_callbacks_returns_zero()
    {
        Driver.Optional = OptionalOps.All & ~OptionalOps.Map & ~OptionalOps.MapPages;
        IommuDomain d = Driver.NewDomain();

        Assert.Equal(0UL, Core.Unmap(d, 0x1000, Sz4K));
    }

    [Fact]
    public void Unmap_in_a_domain_with_an_empty_pgsize_bitmap_returns_zero()
    {
        IommuDomain d = Driver.NewDomain(pgsizeBitmap: 0);

        Assert.Equal(0UL, Core.Unmap(d, 0x1000, Sz4K));
        Assert.Empty(Driver.Calls("unmap_pages"));
    }

    [Fact]
    public void Unmap_syncs_the_iotlb_once_after_the_loop_with_the_gathered_range()
    {
        Driver.Optional = UnmapOnly;
        IommuDomain d = Driver.NewDomain();

        Core.Unmap(d, 0x1000, 4 * Sizes.MiB);

        Assert.Equal([new DriverCall("iotlb_sync", 0x1000, 0, 4 * Sizes.MiB, Domain: d)], Driver.Calls("iotlb_sync"));
        Assert.Equal("iotlb_sync", Driver.OpNames()[^1]);
    }

    [Fact]
    public void Unmap_without_iotlb_sync_callback_still_unmaps()
    {
        Driver.Optional = OptionalOps.All & ~OptionalOps.Iotlb;
        IommuDomain d = Driver.NewDomain();

        Assert.Equal(Sz4K, Core.Unmap(d, 0x1000, Sz4K));
    }

    [Fact]
    public void UnmapFast_does_not_sync_and_leaves_the_range_in_the_gather_for_IotlbSync()
    {
        IommuDomain d = Driver.NewDomain();
        var gather = default(IommuIotlbGather);

        ulong ret = Core.UnmapFast(d, 0x1000, 2 * Sz4K, ref gather);

        Assert.Equal(2 * Sz4K, ret);
        Assert.Empty(Driver.Calls("iotlb_sync"));
        Assert.False(gather.IsEmpty);
        Assert.Equal(0x1000UL, gather.Start);
        Assert.Equal(0x2fffUL, gather.End);

        Core.IotlbSync(d, ref gather);

        Assert.Equal([new DriverCall("iotlb_sync", 0x1000, 0, 2 * Sz4K, Domain: d)], Driver.Calls("iotlb_sync"));
        Assert.True(gather.IsEmpty);
    }

    [Fact]
    public void UnmapFast_accumulates_several_calls_into_one_gather()
    {
        IommuDomain d = Driver.NewDomain();
        var gather = default(IommuIotlbGather);

        Core.UnmapFast(d, 0x1000, Sz4K, ref gather);
        Core.UnmapFast(d, 0x2000, Sz4K, ref gather);
        Core.IotlbSync(d, ref gather);

        Assert.Equal([new DriverCall("iotlb_sync", 0x1000, 0, 2 * Sz4K, Domain: d)], Driver.Calls("iotlb_sync"));
    }

    [Fact]
    public void IovaToPhys_of_an_identity_domain_is_the_iova_without_asking_the_driver()
    {
        IommuDomain d = Driver.NewDomain(DomainType.Identity);
        Driver.IovaToPhysBehaviour = _ => 0xdead000;

        Assert.Equal(0x12345678UL, Core.IovaToPhys(d, 0x12345678));
        Assert.DoesNotContain(Driver.Mock.Invocations, i => i.Method.Name == nameof(IIommuOps.IovaToPhys));
    }

    [Fact]
    public void IovaToPhys_of_a_blocked_domain_is_zero()
    {
        IommuDomain d = Driver.NewDomain(DomainType.Blocked);
        Driver.IovaToPhysBehaviour = _ => 0xdead000;

        Assert.Equal(0UL, Core.IovaToPhys(d, 0x12345678));
        Assert.DoesNotContain(Driver.Mock.Invocations, i => i.Method.Name == nameof(IIommuOps.IovaToPhys));
    }

    [Theory]
    [InlineData(DomainType.Unmanaged)]
    [InlineData(DomainType.Dma)]
    public void IovaToPhys_of_a_paging_domain_is_the_driver_answer(DomainType type)
    {
        IommuDomain d = Driver.NewDomain(type);
        Driver.IovaToPhysBehaviour = iova => 0x80000000 + (iova & 0xfff);

        Assert.Equal(0x80000042UL, Core.IovaToPhys(d, 0x5042));
        Assert.Contains(Driver.Mock.Invocations, i => i.Method.Name == nameof(IIommuOps.IovaToPhys) && (ulong)i.Arguments[1] == 0x5042);
    }

    [Fact]
    public void IotlbGatherAddPage_merges_adjacent_pages_and_flushes_on_a_disjoint_page_or_a_new_size()
    {
        IommuDomain d = Driver.NewDomain();
        var gather = default(IommuIotlbGather);

        Core.IotlbGatherAddPage(d, ref gather, 0x1000, Sz4K);
        Core.IotlbGatherAddPage(d, ref gather, 0x2000, Sz4K);
        Assert.Empty(Driver.Calls("iotlb_sync"));

        Core.IotlbGatherAddPage(d, ref gather, 0x10000, Sz4K); // disjoint
        Assert.Equal([new DriverCall("iotlb_sync", 0x1000, 0, 2 * Sz4K, Domain: d)], Driver.Calls("iotlb_sync"));

        Core.IotlbGatherAddPage(d, ref gather, 0x200000, Sz2M); // other granule
        Assert.Equal(new DriverCall("iotlb_sync", 0x10000, 0, Sz4K, Domain: d), Driver.Calls("iotlb_sync")[^1]);
        Assert.Equal((0x200000UL, 0x3fffffUL, Sz2M), (gather.Start, gather.End, gather.Pgsize));
    }

    [Fact]
    public void FlushIotlbAll_calls_the_driver_when_it_has_the_callback()
    {
        IommuDomain d = Driver.NewDomain();
        Core.FlushIotlbAll(d);
        Driver.IotlbMock.Verify(o => o.FlushIotlbAll(d), Moq.Times.Once);

        var noIotlb = new MockIommu(OptionalOps.All & ~OptionalOps.Iotlb);
        Core.FlushIotlbAll(noIotlb.NewDomain());
        Assert.DoesNotContain(noIotlb.Mock.Invocations, i => i.Method.Name == nameof(IIommuIotlbOps.FlushIotlbAll));
    }
}
