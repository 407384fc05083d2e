using Iommu.Devices;
using Iommu.Domains;
using Iommu.VtD.Driver;
using Iommu.VtD.Hardware;
using static Iommu.VtD.Tests.Driver.DriverTestKit;

namespace Iommu.VtD.Tests.Driver;

public sealed class MapUnmapTests
{
    public static TheoryData<string, ulong> ConfigsBySize()
    {
        var d = new TheoryData<string, ulong>();
        foreach (string c in AllConfigNames)
        {
            foreach (ulong s in new[] { K4, M2, G1 })
            {
                d.Add(c, s);
            }
        }

        return d;
    }

    public static TheoryData<string, ulong> ScalableConfigsBySize()
    {
        var d = new TheoryData<string, ulong>();
        foreach (string c in ScalableConfigNames)
        {
            foreach (ulong s in new[] { K4, M2, G1 })
            {
                d.Add(c, s);
            }
        }

        return d;
    }

    // Map two pages of `size` at a low IOVA and one at the top of the address space, check the
    // hardware translates exactly where iova_to_phys says, unmap, and check everything faults.
    private static void MapDmaUnmap(DriverBed f, IDomain dom, PciDevice dev, uint? pasid, ulong size, int width)
    {
        ulong pa = 2 * G1;                         // 1G aligned
        ulong lowIova = 4 * G1;
        ulong highIova = (1UL << width) - (2 * size);
        Assert.Equal(Errno.None, f.Iommu.Map(dom, lowIova, pa, 2 * size, RW));
        Assert.Equal(Errno.None, f.Iommu.Map(dom, highIova, pa + (2 * size), size, IommuProt.Read));

        Assert.Equal(pa + 0x123, f.Iommu.IovaToPhys(dom, lowIova + 0x123));
        Assert.Equal(pa + size + size - 8, f.Iommu.IovaToPhys(dom, lowIova + size + size - 8));
        Assert.Equal(pa + (2 * size) + 0x10, f.Iommu.IovaToPhys(dom, highIova + 0x10));

        foreach ((ulong i, ulong _, ulong s) in Leaves(dom))
        {
            Assert.True(s == size, $"leaf at 0x{i:x} is 0x{s:x}, expected pages of 0x{size:x} (superpages must be used)");
        }

        Assert.Equal(3, Leaves(dom).Count);

        foreach (ulong off in new[] { 0UL, 0x8UL, size - 8, size, (2 * size) - 8 })
        {
            f.AssertDma(dev, pasid, lowIova + off, pa + off);
        }

        // Read-only page: reads translate, writes fault.
        VtdTranslation tr = f.Hw(dev, pasid, highIova + 0x40);
        Assert.Equal(VtdTranslationStatus.Translated, tr.Status);
        Assert.Equal(pa + (2 * size) + 0x40, tr.PhysicalAddress);
        Assert.Equal(DmaStatus.Fault, f.Write(dev, pasid, highIova, 1).Status);

        // Neighbours fault.
        f.AssertDma(dev, pasid, lowIova - 8, 0);
        f.AssertDma(dev, pasid, lowIova + (2 * size), 0);

        // Unmap the second page only (IOTLB is warm for it).
        Assert.Equal(size, f.Iommu.Unmap(dom, lowIova + size, size));
        f.AssertDma(dev, pasid, lowIova + size, 0, "after unmap of the second page");
        f.AssertDma(dev, pasid, lowIova + size + size - 8, 0, "after unmap of the second page");
        f.AssertDma(dev, pasid, lowIova + 8, pa + 8, "first page must survive");
        Assert.Equal(0UL, f.Iommu.IovaToPhys(dom, lowIova + size));

        Assert.Equal(size, f.Iommu.Unmap(dom, lowIova, size));
        Assert.Equal(size, f.Iommu.Unmap(dom, highIova, size));
        f.AssertDma(dev, pasid, lowIova + 8, 0, "after unmapping everything");
        Assert.Equal(VtdTranslationStatus.Fault, f.Hw(dev, pasid, highIova + 0x40).Status);
        Assert.Empty(Leaves(dom));
    }

    [Theory]
    [MemberData(nameof(ConfigsBySize))]
    public void Normal_attach_dma_matches_iova_to_phys_and_unmap_faults_at_once(string config, ulong size)
    {
        using DriverBed f = New(config);
        PciDevice dev = f.AddDevice("0000:00:03.0");
        IDomain dom = f.Unmanaged();
        Assert.Equal(Errno.None, f.Iommu.AttachDevice(dom, dev));
        MapDmaUnmap(f, dom, dev, null, size, Width(Config(config)));
    }

    [Theory]
    [MemberData(nameof(ScalableConfigsBySize))]
    public void Aux_attach_dma_matches_iova_to_phys_and_unmap_faults_at_once(string config, ulong size)
    {
        using DriverBed f = New(config);
        PciDevice dev = f.AuxParent("0000:00:02.0");
        IDomain dom = f.Unmanaged();
        Assert.Equal(Errno.None, f.Iommu.AttachDeviceAux(dom, dev));
        int pasid = f.Iommu.AuxGetPasid(dom, dev);
        Assert.True(pasid > 0);
        MapDmaUnmap(f, dom, dev, (uint)pasid, size, Width(Config(config)));
    }

    [Theory]
    [MemberData(nameof(Configs), MemberType = typeof(DriverTestKit))]
    public void Mapping_before_attach_is_visible_after_attach(string config)
    {
        using DriverBed f = New(config);
        PciDevice dev = f.AddDevice("0000:00:03.0");
        IDomain dom = f.Unmanaged();
        Assert.Equal(Errno.None, f.Iommu.Map(dom, 0x20_0000, 0x1_0000_0000, 4 * M2, RW)); // 4K only before attach
        Assert.Equal(Errno.None, f.Iommu.AttachDevice(dom, dev));
        f.AssertDma(dev, null, 0x20_0008, 0x1_0000_0008);
        f.AssertDma(dev, null, 0x9F_FFF8, 0x1_007F_FFF8);
        f.AssertDma(dev, null, 0xA0_0000, 0);
    }

    [Theory]
    [InlineData("Legacy39", 39)]
    [InlineData("Legacy48", 48)]
    [InlineData("Sm48", 48)]
    [InlineData("Sm57", 57)]
    public void Geometry_and_page_sizes_are_those_after_attach(string config, int width)
    {
        using DriverBed f = New(config);
        PciDevice dev = f.AddDevice("0000:00:03.0");
        IDomain dom = f.Unmanaged();
        Assert.Equal(K4, dom.PgsizeBitmap);
        Assert.Equal((1UL << 57) - 1, dom.Geometry.ApertureEnd);
        Assert.Equal(Errno.None, f.Iommu.AttachDevice(dom, dev));
        Assert.Equal(0x4020_1000UL, dom.PgsizeBitmap);
        Assert.Equal(0UL, dom.Geometry.ApertureStart);
        Assert.Equal((1UL << width) - 1, dom.Geometry.ApertureEnd);
        Assert.True(dom.Geometry.ForceAperture);
        Assert.Equal(width, ((DmarDomain)dom).Gaw);
    }

    [Fact]
    public void Without_1g_pages_the_bitmap_has_2m_only_and_1g_maps_as_2m_pages()
    {
        using var f = new DriverBed(VtdConfig.Legacy48Bit with { SecondLevel1GiBPages = false }, memory: SmallMemory);
        PciDevice dev = f.AddDevice("0000:00:03.0");
        IDomain dom = f.Unmanaged();
        Assert.Equal(Errno.None, f.Iommu.AttachDevice(dom, dev));
        Assert.Equal(K4 | M2, dom.PgsizeBitmap);
        Assert.Equal(Errno.None, f.Iommu.Map(dom, G1, G1, G1, RW));
        Assert.All(Leaves(dom), l => Assert.Equal(M2, l.Size));
        Assert.Equal(512, Leaves(dom).Count);
        f.AssertDma(dev, null, G1 + G1 - 8, G1 + G1 - 8);
    }

    [Fact]
    public void Without_superpages_the_bitmap_stays_4k()
    {
        using var f = new DriverBed(VtdConfig.Legacy48Bit with { SecondLevel1GiBPages = false, SecondLevel2MiBPages = false }, memory: SmallMemory);
        PciDevice dev = f.AddDevice("0000:00:03.0");
        IDomain dom = f.Unmanaged();
        Assert.Equal(Errno.None, f.Iommu.AttachDevice(dom, dev));
        Assert.Equal(K4, dom.PgsizeBitmap);
        Assert.Equal(Errno.None, f.Iommu.Map(dom, 0, 0, M2, RW));
        Assert.Equal(512, Leaves(dom).Count);
    }

    [Fact]
    public void Mixed_alignment_ramps_up_to_superpages()
    {
        using DriverBed f = New("Sm48");
        PciDevice dev = f.AddDevice("0000:00:03.0");
        IDomain dom = f.Unmanaged();
        Assert.Equal(Errno.None, f.Iommu.AttachDevice(dom, dev));
        // iova=0x1000, pa=0x201000, 4M → 4K×511, 2M×1, 4K×1 (§1.7 example), shifted to 1G+.
        Assert.Equal(Errno.None, f.Iommu.Map(dom, G1 + 0x1000, G1 + 0x20_1000, 4 * Sizes.MiB, RW));
        var leaves = Leaves(dom);
        Assert.Equal(511 + 1 + 1, leaves.Count);
        Assert.Single(leaves, l => l.Size == M2);
        for (ulong off = 0; off < 4 * Sizes.MiB; off += 0x3F000)
        {
            f.AssertDma(dev, null, G1 + 0x1000 + off, G1 + 0x20_1000 + off);
        }
    }

    [Theory]
    [InlineData("Legacy39")]
    [InlineData("Legacy39Cm")]
    public void Map_beyond_the_width_after_attach_to_a_39_bit_unit_is_efault(string config)
    {
        using DriverBed f = New(config);
        PciDevice dev = f.AddDevice("0000:00:03.0");
        IDomain dom = f.Unmanaged();
        Assert.Equal(Errno.None, f.Iommu.AttachDevice(dom, dev));
        Assert.Equal(Errno.EFAULT, f.Iommu.Map(dom, 1UL << 39, 0, K4, RW));
        Assert.Equal(Errno.EFAULT, f.Iommu.Map(dom, (1UL << 39) - K4, 0, 2 * K4, RW));
        Assert.Equal(0UL, f.Iommu.IovaToPhys(dom, (1UL << 39) - K4));
        Assert.Equal(Errno.None, f.Iommu.Map(dom, (1UL << 39) - K4, 0x1000, K4, RW)); // end exactly at 2^39 is fine
        f.AssertDma(dev, null, (1UL << 39) - 8, 0x1FF8);
    }

    [Fact]
    public void Attach_of_a_domain_with_a_mapping_above_2_39_to_a_39_bit_unit_is_efault()
    {
        using DriverBed f = New("Legacy39");
        PciDevice dev = f.AddDevice("0000:00:03.0");
        IDomain dom = f.Unmanaged();
        Assert.Equal(Errno.None, f.Iommu.Map(dom, 1UL << 39, 0, K4, RW));
        Assert.Equal(Errno.EFAULT, f.Iommu.AttachDevice(dom, dev));

        // Ending exactly at 2^39 is fine (strictly greater fails).
        IDomain ok = f.Unmanaged();
        Assert.Equal(Errno.None, f.Iommu.Map(ok, (1UL << 39) - K4, 0x5000, K4, RW));
        Assert.Equal(Errno.None, f.Iommu.AttachDevice(ok, dev));
        f.AssertDma(dev, null, (1UL << 39) - K4, 0x5000);
    }

    [Fact]
    public void Unmapping_the_top_mapping_lowers_max_addr_to_its_iova()
    {
        // §2.7: unmap sets max_addr = iova when max_addr == iova + size.
        using DriverBed f = New("Legacy39");
        PciDevice dev = f.AddDevice("0000:00:03.0");
        IDomain dom = f.Unmanaged();
        Assert.Equal(Errno.None, f.Iommu.Map(dom, (1UL << 39) - K4, 0x3000, K4, RW));
        Assert.Equal(Errno.None, f.Iommu.Map(dom, 1UL << 39, 0, K4, RW));
        Assert.Equal(K4, f.Iommu.Unmap(dom, 1UL << 39, K4));
        Assert.Equal(1UL << 39, ((DmarDomain)dom).MaxAddr);
        Assert.Equal(Errno.None, f.Iommu.AttachDevice(dom, dev));
        f.AssertDma(dev, null, (1UL << 39) - 8, 0x3FF8);
    }

    [Fact]
    public void Unmapping_a_lower_mapping_keeps_max_addr()
    {
        using DriverBed f = New("Legacy39");
        PciDevice dev = f.AddDevice("0000:00:03.0");
        IDomain dom = f.Unmanaged();
        Assert.Equal(Errno.None, f.Iommu.Map(dom, 1UL << 40, 0, K4, RW));
        Assert.Equal(Errno.None, f.Iommu.Map(dom, 1UL << 41, 0, K4, RW));
        Assert.Equal(K4, f.Iommu.Unmap(dom, 1UL << 40, K4));
        Assert.Equal((1UL << 41) + K4, ((DmarDomain)dom).MaxAddr);
        Assert.Equal(Errno.EFAULT, f.Iommu.AttachDevice(dom, dev));
    }

    [Fact]
    public void Aux_attach_of_a_wide_domain_to_a_narrow_unit_is_efault()
    {
        using var f = new DriverBed(VtdConfig.ScalableMode48Bit with { Supports48BitTables = false, MaxGuestAddressWidth = 39 }, memory: SmallMemory);
        PciDevice dev = f.AuxParent("0000:00:02.0");
        IDomain dom = f.Unmanaged();
        Assert.Equal(Errno.None, f.Iommu.Map(dom, 1UL << 40, 0, K4, RW));
        Assert.Equal(Errno.EFAULT, f.Iommu.AttachDeviceAux(dom, dev));
        Assert.Equal(0, f.Driver.PasidsInUse);
    }

    [Theory]
    [InlineData(0x2000UL, 0UL, 0UL)]       // not 4K/2M/1G
    [InlineData(4 * Sizes.MiB, 0UL, 0UL)]
    [InlineData(2UL << 20, 0x1000UL, 0UL)] // iova not aligned to 2M
    [InlineData(2UL << 20, 0UL, 0x1000UL)] // paddr not aligned to 2M
    [InlineData(1UL << 30, 2UL << 20, 0UL)]
    [InlineData(4096UL, 0x800UL, 0UL)]
    public void Map_pages_with_a_bad_page_size_or_alignment_is_einval(ulong pgsize, ulong iova, ulong pa)
    {
        using DriverBed f = New("Sm48");
        PciDevice dev = f.AddDevice("0000:00:03.0");
        IDomain dom = f.Unmanaged();
        Assert.Equal(Errno.None, f.Iommu.AttachDevice(dom, dev));
        Assert.Equal(Errno.EINVAL, f.Driver.MapPages(dom, G1 + iova, G1 + pa, pgsize, 1, RW, out ulong mapped));
        Assert.Equal(0UL, mapped);
        Assert.Empty(Leaves(dom));
    }

    [Fact]
    public void Map_without_read_or_write_is_einval_and_maps_nothing()
    {
        using DriverBed f = New("Legacy48");
        PciDevice dev = f.AddDevice("0000:00:03.0");
        IDomain dom = f.Unmanaged();
        Assert.Equal(Errno.None, f.Iommu.AttachDevice(dom, dev));
        Assert.Equal(Errno.EINVAL, f.Iommu.Map(dom, 0x10000, 0x10000, K4, IommuProt.Cache));
        Assert.Equal(0UL, f.Iommu.IovaToPhys(dom, 0x10000));
    }

    [Fact]
    public void Unmap_of_4k_inside_a_superpage_removes_the_whole_superpage()
    {
        using DriverBed f = New("Sm48");
        PciDevice dev = f.AddDevice("0000:00:03.0");
        IDomain dom = f.Unmanaged();
        Assert.Equal(Errno.None, f.Iommu.AttachDevice(dom, dev));
        Assert.Equal(Errno.None, f.Iommu.Map(dom, M2, M2, M2, RW));
        f.AssertDma(dev, null, M2 + 0x1_0000, M2 + 0x1_0000);
        Assert.Equal(M2, f.Iommu.Unmap(dom, M2, K4));
        f.AssertDma(dev, null, M2 + 0x1_0000, 0);
        f.AssertDma(dev, null, M2, 0);
    }

    [Fact]
    public void Unmap_of_an_unmapped_iova_returns_zero()
    {
        using DriverBed f = New("Sm48");
        PciDevice dev = f.AddDevice("0000:00:03.0");
        IDomain dom = f.Unmanaged();
        Assert.Equal(Errno.None, f.Iommu.AttachDevice(dom, dev));
        Assert.Equal(0UL, f.Iommu.Unmap(dom, 0x40_0000, K4));
    }

    [Theory]
    [MemberData(nameof(Configs), MemberType = typeof(DriverTestKit))]
    public void Failed_allocation_during_a_large_map_is_enomem_and_leaves_nothing(string config)
    {
        using DriverBed f = New(config);
        PciDevice dev = f.AddDevice("0000:00:03.0");
        long baseline = f.Platform.Frames.LiveFrames;
        int failures = 0;
        for (int n = 1; n <= 6; n++)
        {
            IDomain dom = f.Unmanaged();
            Assert.Equal(Errno.None, f.Iommu.AttachDevice(dom, dev));
            // 4K pages over 8M with a misaligned pa: 4 last-level tables, so several table allocations.
            const ulong iova = 0x3F_FFE0_0000, size = 8 * Sizes.MiB;
            f.AssertDma(dev, null, iova, 0);
            f.Platform.Frames.FailNth(n);
            Errno err = f.Iommu.Map(dom, iova, 0x1000, size, RW);
            bool fired = !f.Platform.Frames.FailurePending;
            f.Platform.Frames.FailNth(0);
            if (fired)
            {
                failures++;
                Assert.Equal(Errno.ENOMEM, err);
                for (ulong off = 0; off < size; off += K4)
                {
                    Assert.Equal(0UL, f.Iommu.IovaToPhys(dom, iova + off));
                }

                Assert.Empty(Leaves(dom));
                f.AssertDma(dev, null, iova, 0);
                f.AssertDma(dev, null, iova + size - K4, 0);
            }
            else
            {
                Assert.Equal(Errno.None, err);
                f.AssertDma(dev, null, iova + size - 8, 0x1000 + size - 8);
            }

            f.Iommu.DetachDevice(dom, dev);
            f.Iommu.DomainFree(dom);
            Assert.Equal(baseline, f.Platform.Frames.LiveFrames);
        }

        Assert.True(failures >= 4, $"only {failures} injected failures hit the map");
    }

    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public void A_queued_gather_carries_the_freed_tables_until_whoever_flushes_frees_them(bool syncIt)
    {
        using DriverBed f = New("Sm48");
        PciDevice dev = f.AddDevice("0000:00:03.0");
        IDomain dom = f.Unmanaged();
        Assert.Equal(Errno.None, f.Iommu.AttachDevice(dom, dev));
        Assert.Equal(Errno.None, f.Iommu.Map(dom, 0x4000_0000, 0x1000, M2, RW)); // 512 4K leaves: one leaf table
        long live = f.Platform.Frames.LiveFrames;
        var table = ((DmarDomain)dom).PageTable;

        var gather = default(IommuIotlbGather);
        gather.Queued = true;
        Assert.Equal(M2, f.Iommu.UnmapFast(dom, 0x4000_0000, M2, ref gather));

        Assert.NotEqual(0UL, gather.Freelist);
        Assert.Equal(0, table.PendingFrees);
        Assert.Equal(live, f.Platform.Frames.LiveFrames);
        if (syncIt)
        {
            f.Iommu.IotlbSync(dom, ref gather); // intel_iommu_tlb_sync frees gather->freelist after its flush
            Assert.Equal(0UL, gather.Freelist);
        }
        else
        {
            Assert.Equal(1, f.Platform.Frames.FreeList(gather.Freelist)); // a flush queue's entry destructor
        }

        Assert.Equal(live - 1, f.Platform.Frames.LiveFrames);
    }

    [Fact]
    public void Domain_free_after_use_returns_every_frame()
    {
        using DriverBed f = New("Sm57");
        PciDevice dev = f.AuxParent("0000:00:02.0");
        PciDevice dev2 = f.AddDevice("0000:00:04.0");
        long baseline = f.Platform.Frames.LiveFrames;
        IDomain a = f.Unmanaged(), b = f.Unmanaged();
        Assert.Equal(Errno.None, f.Iommu.AttachDeviceAux(a, dev));
        Assert.Equal(Errno.None, f.Iommu.AttachDevice(b, dev2));
        Assert.Equal(Errno.None, f.Iommu.Map(a, 1UL << 52, 0, 3 * M2 + K4, RW));
        Assert.Equal(Errno.None, f.Iommu.Map(b, 1UL << 47, 0, G1 + K4, RW));
        f.Iommu.DetachDeviceAux(a, dev);
        f.Iommu.DetachDevice(b, dev2);
        f.Iommu.DomainFree(a);
        f.Iommu.DomainFree(b);
        Assert.Equal(baseline, f.Platform.Frames.LiveFrames);
    }
}
