using Iommu.Devices;
using Iommu.Domains;
using Iommu.VtD.Driver;
using Iommu.VtD.Hardware;
using static Iommu.VtD.Tests.Driver.DriverTestKit;

namespace Iommu.VtD.Tests.Driver;

/// <summary>
/// The DMA API (dma_map_page / dma_unmap_page) over strict DMA and lazy DMA_FQ default domains, as a
/// driver and its device see it: the DMA addresses handed out, what the device reaches, when the
/// IOTLB is invalidated, and when an IOVA is handed out again.
/// </summary>
public sealed class DmaApiTests
{
    private static readonly TimeSpan Ms = TimeSpan.FromMilliseconds(1);

    private static DriverBed New(DomainType defaultDomain, string config = "Sm48") =>
        new(Config(config), memory: SmallMemory, defaultDomain: defaultDomain);

    private static long Invalidations(DriverBed f) => f.Unit.Activity.IotlbInvalidations;

    [Theory]
    [InlineData(DomainType.Dma)]
    [InlineData(DomainType.DmaFq)]
    public void A_mapping_keeps_the_offset_lies_below_4G_outside_the_msi_window_and_has_the_direction_s_rights(DomainType type)
    {
        using DriverBed f = New(type);
        PciDevice dev = f.AddDevice("0000:00:03.0");
        Assert.Equal(type, f.Iommu.GetDmaDomain(dev)!.Type);

        ulong toDev = f.Iommu.DmaMapPage(dev, 0x1234_5678, 100, DmaDataDirection.ToDevice);
        ulong fromDev = f.Iommu.DmaMapPage(dev, 0x2000_0000, 3 * K4, DmaDataDirection.FromDevice);
        Assert.NotEqual(IommuCore.DmaMappingError, toDev);
        Assert.Equal(0x678UL, toDev & 0xfff);
        Assert.True(toDev < 1UL << 32 && fromDev < 1UL << 32, "PCI devices get an address below 4 GiB first (SAC)");
        Assert.True(toDev is < 0xFEE0_0000 or > 0xFEEF_FFFF && fromDev is < 0xFEE0_0000 or > 0xFEEF_FFFF, "the interrupt window is reserved");
        Assert.Equal(0UL, (fromDev & 0x3fff) % (4 * K4)); // 3 pages reserve 4, aligned to 4

        // TO_DEVICE: the device reads the buffer and cannot write it; FROM_DEVICE the other way round
        // (5.15 Intel also lets a device read a write-only leaf: every leaf has the read bit).
        f.Platform.Memory.WriteUInt64(0x1234_5678, 0xC0FFEE);
        Span<byte> buf = stackalloc byte[8];
        Assert.True(dev.DmaRead(null, toDev, buf).IsOk);
        Assert.Equal(0xC0FFEEUL, BitConverter.ToUInt64(buf));
        Assert.Equal(DmaStatus.Fault, f.Write(dev, null, toDev, 1).Status);
        Assert.True(f.Write(dev, null, fromDev + (2 * K4), 0xBEEF).IsOk);
        Assert.Equal(0xBEEFUL, f.Platform.Memory.ReadUInt64(0x2000_2000));
    }

    [Fact]
    public void A_strict_unmap_invalidates_before_it_returns_and_the_iova_is_handed_out_again()
    {
        using DriverBed f = New(DomainType.Dma);
        PciDevice dev = f.AddDevice("0000:00:03.0");
        ulong a = f.Iommu.DmaMapPage(dev, 0x4000_0000, K4, DmaDataDirection.Bidirectional);
        f.AssertDma(dev, null, a, 0x4000_0000); // the IOTLB now holds the translation
        long before = Invalidations(f);

        f.Iommu.DmaUnmapPage(dev, a, K4, DmaDataDirection.Bidirectional);

        Assert.Equal(before + 1, Invalidations(f));
        f.AssertDma(dev, null, a, 0, "a strict unmap leaves no stale translation");
        ulong b = f.Iommu.DmaMapPage(dev, 0x5000_0000, K4, DmaDataDirection.Bidirectional);
        Assert.Equal(a, b);
        f.AssertDma(dev, null, b, 0x5000_0000);
    }

    [Fact]
    public void A_lazy_unmap_leaves_a_stale_window_until_the_timer_flush_and_the_iova_is_not_reused_before_it()
    {
        using DriverBed f = New(DomainType.DmaFq);
        PciDevice dev = f.AddDevice("0000:00:03.0");
        ulong a = f.Iommu.DmaMapPage(dev, 0x4000_0000, K4, DmaDataDirection.Bidirectional);
        f.AssertDma(dev, null, a, 0x4000_0000);
        long before = Invalidations(f);

        f.Iommu.DmaUnmapPage(dev, a, K4, DmaDataDirection.Bidirectional);

        // The deferred window: no invalidation yet, the device still reaches the old page through its
        // IOTLB entry, and nobody gets the IOVA.
        Assert.Equal(before, Invalidations(f));
        Assert.Equal(0UL, f.Iommu.IovaToPhys(f.Iommu.GetDmaDomain(dev)!, a));
        f.AssertDma(dev, null, a, 0x4000_0000, "stale IOTLB entry inside the deferred window");
        ulong b = f.Iommu.DmaMapPage(dev, 0x5000_0000, K4, DmaDataDirection.Bidirectional);
        Assert.NotEqual(a, b);
        f.Platform.Clock.Advance(IommuCore.IovaFqTimeout - Ms);
        Assert.Equal(before, Invalidations(f));
        f.AssertDma(dev, null, a, 0x4000_0000, "1 ms before the timer");

        f.Platform.Clock.Advance(Ms); // the flush-queue timer fires: one domain-wide flush

        Assert.Equal(before + 1, Invalidations(f));
        f.AssertDma(dev, null, a, 0, "after the flush");
        ulong c = f.Iommu.DmaMapPage(dev, 0x6000_0000, K4, DmaDataDirection.Bidirectional);
        Assert.Equal(a, c);
        f.AssertDma(dev, null, c, 0x6000_0000);
        f.AssertDma(dev, null, b, 0x5000_0000);
    }

    [Fact]
    public void The_timer_is_armed_by_the_first_queued_entry_and_not_pushed_back_by_later_ones()
    {
        using DriverBed f = New(DomainType.DmaFq);
        PciDevice dev = f.AddDevice("0000:00:03.0");
        ulong a = f.Iommu.DmaMapPage(dev, 0x4000_0000, K4, DmaDataDirection.Bidirectional);
        ulong b = f.Iommu.DmaMapPage(dev, 0x4100_0000, K4, DmaDataDirection.Bidirectional);
        f.AssertDma(dev, null, b, 0x4100_0000);
        long before = Invalidations(f);
        f.Iommu.DmaUnmapPage(dev, a, K4, DmaDataDirection.Bidirectional);
        f.Platform.Clock.Advance(6 * Ms);
        f.Iommu.DmaUnmapPage(dev, b, K4, DmaDataDirection.Bidirectional);
        f.Platform.Clock.Advance(4 * Ms); // 10 ms after the first: both go

        Assert.Equal(before + 1, Invalidations(f));
        f.AssertDma(dev, null, b, 0, "queued 4 ms before the timer fired");
        Assert.Equal(TimeSpan.FromMilliseconds(10), f.Platform.Clock.Now);

        f.Platform.Clock.Advance(TimeSpan.FromSeconds(1)); // no entry, no timer: nothing
        Assert.Equal(before + 1, Invalidations(f));
    }

    [Fact]
    public void A_full_queue_flushes_once_for_255_unmaps_and_frees_their_iovas()
    {
        const int N = 300;
        using DriverBed f = New(DomainType.DmaFq);
        PciDevice dev = f.AddDevice("0000:00:03.0");
        var handles = new ulong[N];
        for (int i = 0; i < N; i++)
        {
            handles[i] = f.Iommu.DmaMapPage(dev, 0x4000_0000 + ((ulong)i * K4), K4, DmaDataDirection.Bidirectional);
        }

        long before = Invalidations(f);
        for (int i = 0; i < N; i++)
        {
            f.AssertDma(dev, null, handles[i], 0x4000_0000 + ((ulong)i * K4)); // the device uses it last just before the unmap
            f.Iommu.DmaUnmapPage(dev, handles[i], K4, DmaDataDirection.Bidirectional);
            Assert.Equal(before + (i < IommuCore.IovaFqSize - 1 ? 0 : 1), Invalidations(f));
        }

        // The 256th unmap found 255 entries waiting: it flushed the whole IOTLB (its own page, already
        // unmapped, included), freed them, and queued itself after the flush.
        for (int i = 0; i < N; i++)
        {
            f.AssertDma(dev, null, handles[i], i < IommuCore.IovaFqSize ? 0 : 0x4000_0000 + ((ulong)i * K4), $"entry {i}");
        }

        // The flushed IOVAs are free again; the 45 still queued are not.
        var queued = handles.Skip(IommuCore.IovaFqSize - 1).ToHashSet();
        for (int i = 0; i < IommuCore.IovaFqSize - 1; i++)
        {
            Assert.DoesNotContain(f.Iommu.DmaMapPage(dev, 0x6000_0000, K4, DmaDataDirection.Bidirectional), queued);
        }

        f.Platform.Clock.Advance(IommuCore.IovaFqTimeout);
        Assert.Equal(before + 2, Invalidations(f));
        f.AssertDma(dev, null, handles[N - 1], 0, "after the timer");
    }

    [Fact]
    public void Page_table_pages_a_lazy_unmap_frees_stay_allocated_until_the_flush()
    {
        using DriverBed f = New(DomainType.DmaFq);
        PciDevice dev = f.AddDevice("0000:00:03.0");

        // 512 pages at a physical address that is not 2 MiB aligned: one full leaf table of 4K leaves.
        ulong h = f.Iommu.DmaMapPage(dev, 0x4000_1000, M2, DmaDataDirection.Bidirectional);
        Assert.Equal(0UL, h % M2);
        Assert.Contains(Leaves(f.Iommu.GetDmaDomain(dev)!), l => l.Iova == h && l.Size == K4);
        long live = f.Platform.Frames.LiveFrames;

        f.Iommu.DmaUnmapPage(dev, h, M2, DmaDataDirection.Bidirectional);
        Assert.Equal(live, f.Platform.Frames.LiveFrames); // the leaf table waits for the flush

        f.Platform.Clock.Advance(IommuCore.IovaFqTimeout);
        Assert.Equal(live - 1, f.Platform.Frames.LiveFrames);
    }

    [Fact]
    public void A_lazy_unmap_split_into_pages_of_two_sizes_is_strict_as_in_5_15()
    {
        using DriverBed f = New(DomainType.DmaFq);
        PciDevice dev = f.AddDevice("0000:00:03.0");

        // 513 pages: a 4 MiB-aligned range unmapped as one 2 MiB piece and one 4 KiB piece.
        ulong h = f.Iommu.DmaMapPage(dev, 0x4000_0000, M2 + K4, DmaDataDirection.Bidirectional);
        f.AssertDma(dev, null, h + M2, 0x4000_0000 + M2);
        long before = Invalidations(f);

        f.Iommu.DmaUnmapPage(dev, h, M2 + K4, DmaDataDirection.Bidirectional);

        Assert.True(Invalidations(f) > before, "the gather was synced between the pieces and then at the end");
        f.AssertDma(dev, null, h + M2, 0, "no deferred window for this unmap");
        Assert.Equal(h, f.Iommu.DmaMapPage(dev, 0x4000_0000, M2 + K4, DmaDataDirection.Bidirectional)); // freed at once
    }

    [Fact]
    public void Caching_mode_makes_dma_domains_strict()
    {
        using DriverBed f = New(DomainType.DmaFq, "Sm48Cm");
        PciDevice dev = f.AddDevice("0000:00:03.0");
        Assert.Equal(DomainType.Dma, f.Iommu.DefaultDomainType);
        Assert.Equal(DomainType.Dma, f.Iommu.GetDmaDomain(dev)!.Type);
        ulong a = f.Iommu.DmaMapPage(dev, 0x4000_0000, K4, DmaDataDirection.Bidirectional);
        f.AssertDma(dev, null, a, 0x4000_0000);
        f.Iommu.DmaUnmapPage(dev, a, K4, DmaDataDirection.Bidirectional);
        f.AssertDma(dev, null, a, 0);
    }

    [Fact]
    public void Identity_default_domains_use_dma_direct()
    {
        using var p = new Platform(new PlatformOptions { MemorySize = SmallMemory, DefaultDomainType = DomainType.Identity });
        PciBus pci = p.AddPciBus();
        var unit = new VtdUnit(p.Memory, VtdConfig.ScalableMode48Bit);
        pci.AddDmaRemapper(unit, includeAll: true);
        pci.SetIommuOps(new IntelIommu(p, unit)).ThrowIfError();
        PciDevice dev = pci.AddDevice(new PciDeviceSpec("0000:00:03.0") { Acs = true });
        Assert.Equal(0x1234_5678UL, p.Iommu.DmaMapPage(dev, 0x1234_5678, 16, DmaDataDirection.ToDevice));
        p.Iommu.DmaUnmapPage(dev, 0x1234_5678, 16, DmaDataDirection.ToDevice);
        Assert.Equal(IommuCore.DmaMappingError, p.Iommu.DmaMapPage(dev, ulong.MaxValue - 7, 16, DmaDataDirection.ToDevice));
    }

    [Theory]
    [InlineData(DomainType.Dma)]
    [InlineData(DomainType.DmaFq)]
    public void Unmapping_what_is_not_mapped_is_refused_before_anything_changes(DomainType type)
    {
        using DriverBed f = New(type);
        PciDevice dev = f.AddDevice("0000:00:03.0");
        ulong a = f.Iommu.DmaMapPage(dev, 0x4000_0000, 2 * K4, DmaDataDirection.Bidirectional);
        Assert.Throws<ArgumentException>(() => f.Iommu.DmaUnmapPage(dev, a + 0x10_0000, 2 * K4, DmaDataDirection.Bidirectional));
        Assert.Throws<ArgumentException>(() => f.Iommu.DmaUnmapPage(dev, a, K4, DmaDataDirection.Bidirectional));
        f.AssertDma(dev, null, a + K4, 0x4000_1000, "still mapped");
        f.Iommu.DmaUnmapPage(dev, a, 2 * K4, DmaDataDirection.Bidirectional);
        Assert.Throws<ArgumentException>(() => f.Iommu.DmaUnmapPage(dev, a, 2 * K4, DmaDataDirection.Bidirectional));
        Assert.Throws<ArgumentOutOfRangeException>(() => f.Iommu.DmaMapPage(dev, 0x4000_0000, K4, DmaDataDirection.None));
        Assert.Equal(IommuCore.DmaMappingError, f.Iommu.DmaMapPage(dev, 0x4000_0000, 0, DmaDataDirection.ToDevice));
        Assert.Equal(Errno.EINVAL, ErrorDetail.LastErrno);
    }

    [Fact]
    public void Freeing_a_dma_fq_domain_releases_its_queue_without_waiting_for_the_timer()
    {
        using DriverBed f = New(DomainType.DmaFq);
        PciDevice dev = f.AddDevice("0000:00:03.0");
        long liveBefore = f.Platform.Frames.LiveFrames;
        ulong h = f.Iommu.DmaMapPage(dev, 0x4000_1000, M2, DmaDataDirection.Bidirectional);
        f.Iommu.DmaUnmapPage(dev, h, M2, DmaDataDirection.Bidirectional);

        f.Pci.RemoveDevice(dev); // the group goes, and its default domain with it

        Assert.True(f.Platform.Frames.LiveFrames < liveBefore, "the domain's tables, the queued leaf table included, are freed");
        f.Platform.Clock.Advance(IommuCore.IovaFqTimeout); // the timer was disarmed: nothing runs
    }

    [Theory]
    [InlineData(DomainType.Dma)]
    [InlineData(DomainType.DmaFq)]
    public void Map_and_unmap_allocate_nothing_once_warm(DomainType type)
    {
        using DriverBed f = New(type);
        PciDevice dev = f.AddDevice("0000:00:03.0");
        var handles = new ulong[64];
        void Round() => MapAndUnmapAll(f, dev, handles, 0x4000_0000);
        for (int i = 0; i < 10; i++)
        {
            Round();
        }

        Assert.Equal(0, Infrastructure.Allocations.Fewest(Round));
    }

    [Theory]
    [InlineData(DomainType.Dma)]
    [InlineData(DomainType.DmaFq)]
    public void Thousands_of_live_mappings_each_reach_their_page_and_more_allocate_nothing_once_warm(DomainType type)
    {
        // A NIC ring's worth of mappings held at once, beyond what the IOVA range caches hold, so that
        // allocations take the tree's search: each mapping translates to its own page, and mapping and
        // unmapping more on top of them allocates nothing (the old sorted-set search walked every live
        // range and allocated on each such request).
        using DriverBed f = New(type);
        PciDevice dev = f.AddDevice("0000:00:03.0");
        const int Live = 20_000;
        var live = new ulong[Live];
        for (int i = 0; i < Live; i++)
        {
            live[i] = f.Iommu.DmaMapPage(dev, 0x4000_0000 + ((ulong)i * K4), K4, DmaDataDirection.Bidirectional);
        }

        Assert.Equal(Live, live.Distinct().Count());
        IDomain dom = f.Iommu.GetDmaDomain(dev)!;
        for (int i = 0; i < Live; i += 97)
        {
            Assert.Equal(0x4000_0000 + ((ulong)i * K4) + 8, f.Iommu.IovaToPhys(dom, live[i] + 8));
        }

        var more = new ulong[6_000];
        void Round() => MapAndUnmapAll(f, dev, more, 0x1_0000_0000);
        Round();
        Round();
        Assert.Equal(0, Infrastructure.Allocations.Fewest(Round));
        Assert.DoesNotContain(more, live.Contains);
        f.AssertDma(dev, null, live[Live - 1], 0x4000_0000 + ((ulong)(Live - 1) * K4));
    }

    // Maps handles.Length consecutive pages from phys, unmaps them all, then lets a flush queue's timer run.
    private static void MapAndUnmapAll(DriverBed f, PciDevice dev, ulong[] handles, ulong phys)
    {
        for (int i = 0; i < handles.Length; i++)
        {
            handles[i] = f.Iommu.DmaMapPage(dev, phys + ((ulong)i * K4), K4, DmaDataDirection.Bidirectional);
        }

        foreach (ulong h in handles)
        {
            f.Iommu.DmaUnmapPage(dev, h, K4, DmaDataDirection.Bidirectional);
        }

        f.Platform.Clock.Advance(IommuCore.IovaFqTimeout);
    }

    [Fact]
    public void The_kernel_gather_unmaps_256_pages_with_one_invalidation()
    {
        using DriverBed f = New(DomainType.Dma);
        PciDevice dev = f.AddDevice("0000:00:03.0");
        IDomain dom = f.Unmanaged();
        Assert.Equal(Errno.None, f.Iommu.AttachDevice(dom, dev));
        Assert.Equal(Errno.None, f.Iommu.Map(dom, 0x100_0000, 0x200_0000, 256 * K4, RW));
        for (ulong i = 0; i < 256; i++)
        {
            f.AssertDma(dev, null, 0x100_0000 + (i * K4), 0x200_0000 + (i * K4));
        }

        long before = Invalidations(f);
        var gather = default(IommuIotlbGather);
        for (ulong i = 0; i < 256; i++)
        {
            Assert.Equal(K4, f.Iommu.UnmapFast(dom, 0x100_0000 + (i * K4), K4, ref gather));
        }

        Assert.Equal(before, Invalidations(f));
        f.AssertDma(dev, null, 0x100_0000, 0x200_0000, "not synced yet");
        f.Iommu.IotlbSync(dom, ref gather);
        Assert.Equal(before + 1, Invalidations(f));
        Assert.True(gather.IsEmpty);
        for (ulong i = 0; i < 256; i++)
        {
            f.AssertDma(dev, null, 0x100_0000 + (i * K4), 0);
        }
    }
}
