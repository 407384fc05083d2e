using Iommu.Devices;
using Iommu.Domains;
using Iommu.VtD.Driver;
using Iommu.VtD.Hardware;
using static Iommu.VtD.Tests.Driver.DriverTestKit;

namespace Iommu.VtD.Tests.Driver;

/// <summary>
/// The DMA API's masks, scatterlist maps and coherent buffers (5.15 <c>dma_set_mask</c>, <c>iommu_dma_map_sg</c> /
/// <c>__finalise_sg</c>, <c>dma_direct_map_sg</c>, <c>iommu_dma_alloc</c>), as a driver and its device see them:
/// the segments written into the list, the bytes the device reaches through them, errno, and what an unmap leaves.
/// </summary>
public sealed class DmaSgAndCoherentTests
{
    private static DriverBed New(DomainType type = DomainType.Dma) => new(Config("Sm48"), memory: SmallMemory, defaultDomain: type);

    private static DriverBed Identity() => new(Config("Sm48"), memory: SmallMemory, defaultDomain: DomainType.Identity);

    [Theory]
    [InlineData(DomainType.Dma)]
    [InlineData(DomainType.DmaFq)]
    public void A_list_maps_into_one_iova_range_and_entries_that_meet_on_a_granule_merge_into_one_segment(DomainType type)
    {
        using DriverBed f = New(type);
        PciDevice dev = f.AddDevice("0000:00:03.0");
        Scatterlist[] sg = [new(0x4000_0100, 0x1F00), new(0x5000_0000, 0x2000), new(0x6000_0010, 0x30)];

        int n = f.Iommu.DmaMapSg(dev, sg, DmaDataDirection.Bidirectional);

        // A ends on a granule and B starts on one: one segment of 0x3f00 bytes; C keeps its offset 0x10.
        Assert.Equal(2, n);
        ulong iova = sg[0].DmaAddress - 0x100;
        Assert.Equal(0UL, iova & 0x7FFF); // 5 granules round up to 8, aligned to 8
        Assert.Equal(0x3F00U, sg[0].DmaLength);
        Assert.Equal(iova + 0x4010, sg[1].DmaAddress);
        Assert.Equal(0x30U, sg[1].DmaLength);
        Assert.Equal(IommuCore.DmaMappingError, sg[2].DmaAddress);
        Assert.Equal(0U, sg[2].DmaLength);
        Assert.Equal((0x4000_0100UL, 0x1F00U), (sg[0].Phys, sg[0].Length)); // the buffer fields are never changed
        f.AssertDma(dev, null, sg[0].DmaAddress, 0x4000_0100);
        f.AssertDma(dev, null, sg[0].DmaAddress + 0x1F00, 0x5000_0000, "B follows A in the first segment");
        f.AssertDma(dev, null, sg[1].DmaAddress, 0x6000_0010);

        f.Iommu.DmaUnmapSg(dev, sg, DmaDataDirection.Bidirectional);
        if (type == DomainType.DmaFq)
        {
            f.Platform.Clock.Advance(IommuCore.IovaFqTimeout); // the deferred flush
        }

        f.AssertDma(dev, null, sg[0].DmaAddress, 0);
        f.AssertDma(dev, null, sg[1].DmaAddress, 0);
        Assert.Equal(0UL, f.Iommu.IovaToPhys(f.Iommu.GetDmaDomain(dev)!, iova + 0x2000));
        Assert.Throws<ArgumentException>(() => f.Iommu.DmaUnmapSg(dev, sg, DmaDataDirection.Bidirectional));
    }

    [Fact]
    public void The_max_segment_size_stops_merging_and_a_segment_boundary_pads_the_entry_before_it_as_the_kernel_does()
    {
        using DriverBed f = New();
        PciDevice dev = f.AddDevice("0000:00:03.0");
        Assert.Equal(65536U, IommuCore.DmaGetMaxSegSize(dev));
        Assert.Equal(0xFFFF_FFFFUL, IommuCore.DmaGetSegBoundary(dev));

        Assert.Equal(Errno.None, f.Iommu.DmaSetMaxSegSize(dev, 0x1000));
        Scatterlist[] split = [new(0x4000_0000, 0x1000), new(0x4000_1000, 0x1000)];
        Assert.Equal(2, f.Iommu.DmaMapSg(dev, split, DmaDataDirection.ToDevice));
        Assert.Equal(split[0].DmaAddress + 0x1000, split[1].DmaAddress);
        f.Iommu.DmaUnmapSg(dev, split, DmaDataDirection.ToDevice);

        // A 16 KiB boundary: B (2 pages) would cross it after A's 3 pages, so A's mapping is padded by a page. The
        // padding maps the page after A's buffer (the kernel extends the previous entry's length): the device reaches it.
        Assert.Equal(Errno.None, f.Iommu.DmaSetSegBoundary(dev, 0x3FFF));
        Scatterlist[] sg = [new(0x4000_0000, 0x3000), new(0x5000_0000, 0x2000)];
        Assert.Equal(2, f.Iommu.DmaMapSg(dev, sg, DmaDataDirection.Bidirectional));
        Assert.Equal(sg[0].DmaAddress + 0x4000, sg[1].DmaAddress);
        Assert.Equal(0UL, sg[1].DmaAddress & 0x3FFF);
        f.AssertDma(dev, null, sg[0].DmaAddress + 0x3000, 0x4000_3000, "the padding");
        f.AssertDma(dev, null, sg[1].DmaAddress + 0x1FF8, 0x5000_1FF8);
        f.Iommu.DmaUnmapSg(dev, sg, DmaDataDirection.Bidirectional);
        f.AssertDma(dev, null, sg[0].DmaAddress + 0x3000, 0);
        Assert.Throws<ArgumentOutOfRangeException>(() => f.Iommu.DmaSetSegBoundary(dev, 0x3000));
    }

    [Fact]
    public void A_failed_map_leaves_nothing_mapped_resets_the_list_and_says_why()
    {
        using DriverBed f = New();
        PciDevice dev = f.AddDevice("0000:00:03.0");
        Assert.Equal(0, f.Iommu.DmaMapSg(dev, Span<Scatterlist>.Empty, DmaDataDirection.ToDevice));
        Assert.Equal(Errno.EINVAL, ErrorDetail.LastErrno);
        Scatterlist[] zero = [new(0x4000_0000, 0x1000), new(0x5000_0000, 0)];
        Assert.Equal(0, f.Iommu.DmaMapSg(dev, zero, DmaDataDirection.ToDevice));
        Assert.Equal(Errno.EINVAL, ErrorDetail.LastErrno);
        Assert.Contains("entry 1", ErrorDetail.LastMessage, StringComparison.Ordinal);
        Assert.All(zero, s => Assert.Equal((IommuCore.DmaMappingError, 0U), (s.DmaAddress, s.DmaLength)));

        // The driver runs out of page-table pages (fail the n-th allocation, n = 1, 2, ...): somewhere in the sweep
        // the second piece fails after the first was mapped, and the map unmaps it (a synced unmap: an IOTLB flush).
        IDomain domain = f.Iommu.GetDmaDomain(dev)!;
        Scatterlist[] big = [new(0x4000_0000, 0x1000), new(0x8000_0000, 0x20_0000)];
        bool sawUndo = false;
        for (int nth = 1; nth <= 6; nth++)
        {
            var leaves = Leaves(domain);
            long flushes = f.Unit.Activity.IotlbInvalidations;
            f.Platform.Frames.FailNth(nth);
            int n = f.Iommu.DmaMapSg(dev, big, DmaDataDirection.ToDevice);
            bool fired = !f.Platform.Frames.FailurePending;
            f.Platform.Frames.FailNth(0);
            Assert.Equal(fired, n == 0);
            if (n == 0)
            {
                Assert.Equal(Errno.ENOMEM, ErrorDetail.LastErrno);
                Assert.All(big, s => Assert.Equal((IommuCore.DmaMappingError, 0U), (s.DmaAddress, s.DmaLength)));
                Assert.Equal(leaves, Leaves(domain));
                sawUndo |= f.Unit.Activity.IotlbInvalidations > flushes;
            }
            else
            {
                f.Iommu.DmaUnmapSg(dev, big, DmaDataDirection.ToDevice);
            }
        }

        Assert.True(sawUndo, "no failure hit the second piece");
        Assert.Equal(2, f.Iommu.DmaMapSg(dev, big, DmaDataDirection.Bidirectional));
        f.AssertDma(dev, null, big[1].DmaAddress + 0x1F_F000, 0x801F_F000);
    }

    [Fact]
    public void A_32_bit_dma_mask_keeps_iovas_below_4G_and_runs_out_where_a_64_bit_one_goes_above()
    {
        using DriverBed f = New();
        PciDevice dev32 = f.AddDevice("0000:00:03.0");
        PciDevice dev64 = f.AddDevice("0000:00:04.0");
        Assert.Equal(ulong.MaxValue, dev32.DmaMask);
        Assert.Equal(Errno.None, f.Iommu.DmaSetMaskAndCoherent(dev32, 0xFFFF_FFFF));
        Assert.Equal((0xFFFF_FFFFUL, 0xFFFF_FFFFUL), (dev32.DmaMask!.Value, dev32.CoherentDmaMask));
        Assert.Equal(0xFFFF_FFFFUL, IommuCore.DmaGetMask(dev32));

        // 1 GiB ranges are aligned to 1 GiB; below 4 GiB only [1G, 2G) and [2G, 3G) are free (the top one holds
        // the interrupt window).
        ulong[] got32 = [.. Enumerable.Range(0, 3).Select(i => f.Iommu.DmaMapPage(dev32, 0x4000_0000, Sizes.GiB, DmaDataDirection.ToDevice))];
        Assert.Equal([Sizes.GiB, 2 * Sizes.GiB, IommuCore.DmaMappingError], got32.Order());
        Assert.Equal(Errno.ENOMEM, ErrorDetail.LastErrno);
        ulong[] got64 = [.. Enumerable.Range(0, 3).Select(i => f.Iommu.DmaMapPage(dev64, 0x4000_0000, Sizes.GiB, DmaDataDirection.ToDevice))];
        Assert.Contains(got64, a => a >= 4 * Sizes.GiB && a != IommuCore.DmaMappingError);
        Assert.DoesNotContain(IommuCore.DmaMappingError, got64);
    }

    [Fact]
    public void Dma_direct_devices_map_lists_entry_by_entry_and_refuse_what_lies_above_their_mask()
    {
        using DriverBed f = Identity();
        PciDevice dev = f.AddDevice("0000:00:03.0");
        Scatterlist[] sg = [new(0x4000_0100, 0x1F00), new(0x4000_2000, 0x2000)];
        Assert.Equal(2, f.Iommu.DmaMapSg(dev, sg, DmaDataDirection.ToDevice));
        Assert.Equal((0x4000_0100UL, 0x1F00U, 0x4000_2000UL, 0x2000U), (sg[0].DmaAddress, sg[0].DmaLength, sg[1].DmaAddress, sg[1].DmaLength));
        f.Iommu.DmaUnmapSg(dev, sg, DmaDataDirection.ToDevice);

        Assert.Equal(Errno.EIO, f.Iommu.DmaSetMask(dev, 0xFFFF)); // below ZONE_DMA: dma_direct_supported refuses
        Assert.Equal(ulong.MaxValue, dev.DmaMask);
        Assert.Equal(Errno.None, f.Iommu.DmaSetMask(dev, 0xFFFF_FFFF));
        Scatterlist[] high = [new(0x4000_0000, 0x1000), new(0x1_0000_0000 - 0x800, 0x1000)];
        Assert.Equal(0, f.Iommu.DmaMapSg(dev, high, DmaDataDirection.ToDevice));
        Assert.Equal(Errno.EIO, ErrorDetail.LastErrno);
        // dma_direct_map_sg: the entry before the failure keeps its direct address (dma_direct_unmap_sg leaves it).
        Assert.Equal((0x4000_0000UL, IommuCore.DmaMappingError), (high[0].DmaAddress, high[1].DmaAddress));
        Assert.Equal(IommuCore.DmaMappingError, f.Iommu.DmaMapPage(dev, 0x1_0000_0000, 16, DmaDataDirection.ToDevice));
        Assert.Equal(Errno.EIO, ErrorDetail.LastErrno);
        Assert.Equal(0xFFFF_F000UL, f.Iommu.DmaMapPage(dev, 0xFFFF_F000, 0x1000, DmaDataDirection.ToDevice));
    }

    [Fact]
    public void Any_mask_is_accepted_for_a_device_behind_a_dma_domain()
    {
        using DriverBed f = New();
        PciDevice dev = f.AddDevice("0000:00:03.0");
        Assert.Equal(Errno.None, f.Iommu.DmaSetMask(dev, 0xFFFF)); // iommu_dma_ops has no dma_supported
        ulong a = f.Iommu.DmaMapPage(dev, 0x4000_0000, 0x1000, DmaDataDirection.ToDevice);
        Assert.True(a is not IommuCore.DmaMappingError and < 0x10000, $"0x{a:x}");
        Assert.Equal(IommuCore.DmaMappingError, f.Iommu.DmaMapPage(dev, 0x4000_0000, 0x10000, DmaDataDirection.ToDevice));
        Assert.Equal(Errno.ENOMEM, ErrorDetail.LastErrno);
    }

    [Theory]
    [InlineData(DomainType.Dma)]
    [InlineData(DomainType.DmaFq)]
    [InlineData(DomainType.Identity)]
    public void A_coherent_buffer_is_zeroed_reachable_by_the_device_and_freed_only_whole(DomainType type)
    {
        using DriverBed f = new(Config("Sm48"), memory: SmallMemory, defaultDomain: type);
        PciDevice dev = f.AddDevice("0000:00:03.0");
        ulong cpu = f.Iommu.DmaAllocCoherent(dev, 0x2100, out ulong handle);
        Assert.NotEqual(0UL, cpu);
        Assert.True(f.Platform.Frames.IsAllocated(cpu) && f.Platform.Frames.IsAllocated(cpu + 0x2000), "three frames");
        Assert.Equal(0UL, f.Platform.Memory.ReadUInt64(cpu + 0x2000));
        if (type == DomainType.Identity)
        {
            Assert.Equal(cpu, handle);
        }
        else
        {
            Assert.True(handle < 1UL << 32, "PCI devices get an address below 4 GiB first");
        }

        f.AssertDma(dev, null, handle + 0x2000, cpu + 0x2000);
        Assert.True(f.Write(dev, null, handle + 0x8, 0xFEED).IsOk);
        Assert.Equal(0xFEEDUL, f.Platform.Memory.ReadUInt64(cpu + 0x8));

        Assert.Throws<ArgumentException>(() => f.Iommu.DmaFreeCoherent(dev, 0x1000, cpu, handle));
        Assert.Throws<ArgumentException>(() => f.Iommu.DmaFreeCoherent(dev, 0x2100, cpu + 0x1000, handle));
        f.AssertDma(dev, null, handle, cpu, "a refused free changes nothing");
        f.Iommu.DmaFreeCoherent(dev, 0x2100, cpu, handle);
        if (type != DomainType.Identity)
        {
            f.Platform.Clock.Advance(IommuCore.IovaFqTimeout);
            f.AssertDma(dev, null, handle, 0);
        }

        Assert.False(f.Platform.Frames.IsAllocated(cpu) || f.Platform.Frames.IsAllocated(cpu + 0x2000));
        Assert.Throws<ArgumentException>(() => f.Iommu.DmaFreeCoherent(dev, 0x2100, cpu, handle));
    }

    [Fact]
    public void A_coherent_buffer_freed_while_its_domain_is_being_freed_still_gives_its_pages_back()
    {
        using DriverBed f = New();
        PciDevice dev = f.AddDevice("0000:00:03.0");
        ulong cpu = f.Iommu.DmaAllocCoherent(dev, 0x1000, out ulong handle);
        var domain = (IommuDomain)f.Iommu.GetDmaDomain(dev)!;

        // The race with iommu_domain_free, made deterministic: the free has begun (its mark is set) when the call enters.
        domain.Dying = 1;
        f.Iommu.DmaFreeCoherent(dev, 0x1000, cpu, handle);
        domain.Dying = 0;

        Assert.False(f.Platform.Frames.IsAllocated(cpu), "the pages went back");
        Assert.Throws<ArgumentException>(() => f.Iommu.DmaFreeCoherent(dev, 0x1000, cpu, handle));
    }

    [Fact]
    public void In_a_lazy_domain_a_freed_coherent_buffer_s_pages_wait_for_the_flush_so_a_stale_write_never_reaches_a_page_table()
    {
        using DriverBed f = New(DomainType.DmaFq);
        PciDevice dev = f.AddDevice("0000:00:03.0");
        ulong cpu = f.Iommu.DmaAllocCoherent(dev, 0x2000, out ulong handle);
        f.AssertDma(dev, null, handle + 0x1000, cpu + 0x1000); // the IOTLB caches the translation
        f.Iommu.DmaFreeCoherent(dev, 0x2000, cpu, handle);

        // The deferred window: the stale entry still reaches the buffer, which nobody else can have yet.
        Assert.True(f.Platform.Frames.IsAllocated(cpu) && f.Platform.Frames.IsAllocated(cpu + 0x1000));
        Assert.True(f.Write(dev, null, handle + 0x1000, 0xBAD).IsOk);
        Assert.Equal(0xBADUL, f.Platform.Memory.ReadUInt64(cpu + 0x1000));

        f.Platform.Clock.Advance(IommuCore.IovaFqTimeout); // the flush, then the pages go back
        Assert.False(f.Platform.Frames.IsAllocated(cpu) || f.Platform.Frames.IsAllocated(cpu + 0x1000));
        f.AssertDma(dev, null, handle + 0x1000, 0);
    }

    [Fact]
    public void Coherent_buffers_respect_the_coherent_mask()
    {
        using (DriverBed f = New())
        {
            PciDevice dev = f.AddDevice("0000:00:03.0");
            Assert.Equal(Errno.None, f.Iommu.DmaSetCoherentMask(dev, 0xF_FFFF));
            ulong cpu = f.Iommu.DmaAllocCoherent(dev, 0x1000, out ulong handle);
            Assert.True(cpu != 0 && handle <= 0xF_FFFF, $"0x{handle:x}");
            f.Iommu.DmaFreeCoherent(dev, 0x1000, cpu, handle);
        }

        using (DriverBed f = Identity())
        {
            // The frames lie at the top of 8 GiB: a 32-bit device on dma-direct gets none (the kernel would
            // retry from ZONE_DMA32; the model's frames come from one region).
            PciDevice dev = f.AddDevice("0000:00:03.0");
            long live = f.Platform.Frames.LiveFrames;
            Assert.Equal(Errno.None, f.Iommu.DmaSetCoherentMask(dev, 0xFFFF_FFFF));
            Assert.Equal(0UL, f.Iommu.DmaAllocCoherent(dev, 0x1000, out ulong handle));
            Assert.Equal((Errno.ENOMEM, IommuCore.DmaMappingError), (ErrorDetail.LastErrno, handle));
            Assert.Equal(live, f.Platform.Frames.LiveFrames);
            Assert.Equal(0UL, f.Iommu.DmaAllocCoherent(dev, 0, out _));
            Assert.Equal(Errno.EINVAL, ErrorDetail.LastErrno);
        }
    }
}
