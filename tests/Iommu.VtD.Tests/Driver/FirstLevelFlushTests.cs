using CsCheck;
using Iommu.Devices;
using Iommu.Domains;
using Iommu.VtD.Driver;
using static Iommu.VtD.Tests.Driver.DriverTestKit;
using static Iommu.VtD.Tests.Driver.FirstLevelTestKit;

namespace Iommu.VtD.Tests.Driver;

/// <summary>
/// The invalidations a first-level domain issues, read from the invalidation queue as the unit reads
/// them (pasid-sva.md §1.7 "What software invalidates", §2.4): P_IOTLB on unmap, nothing on map even
/// with caching mode, tear-down in the spec's order, and <c>qi_flush_piotlb</c>'s encoding.
/// </summary>
public sealed class FirstLevelFlushTests
{
    private const int GAllInPasid = 2, GPagesInPasid = 3;
    private const ulong IhBit = 1UL << 6;

    [Fact]
    public void Unmap_of_a_page_sends_one_page_selective_p_iotlb_for_rid2pasid()
    {
        using DriverBed f = NewFl("Fl48", FirstLevelPolicy.AllWhenEveryUnitHasFlts);
        PciDevice dev = f.AddDevice("0000:00:03.0");
        IDomain dom = f.Unmanaged();
        Assert.Equal(Errno.None, f.Iommu.AttachDevice(dom, dev));
        Assert.Equal(Errno.None, f.Iommu.Map(dom, 0x10_3000, 0x9000, K4, RW));
        var qi = new QiTrace(f);
        Assert.Equal(K4, f.Iommu.Unmap(dom, 0x10_3000, K4));
        ushort did = Did((DmarDomain)dom);
        Assert.Equal([(DescPiotlb, PiotlbQ0(did, 0, GPagesInPasid), 0x10_3000UL | IhBit)], qi.Since());
    }

    [Fact]
    public void An_unaligned_run_is_flushed_as_the_aligned_block_that_covers_it()
    {
        using DriverBed f = NewFl("Fl48", FirstLevelPolicy.AllWhenEveryUnitHasFlts);
        PciDevice dev = f.AddDevice("0000:00:03.0");
        IDomain dom = f.Unmanaged();
        Assert.Equal(Errno.None, f.Iommu.AttachDevice(dom, dev));
        Assert.Equal(Errno.None, f.Iommu.Map(dom, 0x10_0000, 0x9000, 8 * K4, RW));
        var qi = new QiTrace(f);
        Assert.Equal(3 * K4, f.Iommu.Unmap(dom, 0x10_3000, 3 * K4)); // pages 0x103..0x105: the 8-page block at 0x100
        Assert.Equal([(DescPiotlb, PiotlbQ0(Did((DmarDomain)dom), 0, GPagesInPasid), 0x10_0000UL | IhBit | 3)], qi.Since());
    }

    [Fact]
    public void An_aux_and_rid_first_level_domain_flushes_its_aux_pasid_then_rid2pasid()
    {
        using DriverBed f = NewFl("Fl48", FirstLevelPolicy.AllWhenEveryUnitHasFlts);
        PciDevice dev = f.AddDevice("0000:00:03.0");
        PciDevice parent = f.AuxParent("0000:00:02.0");
        IDomain dom = f.Unmanaged();
        Assert.Equal(Errno.None, f.Iommu.AttachDevice(dom, dev));
        Assert.Equal(Errno.None, f.Iommu.AttachDeviceAux(dom, parent));
        Assert.Equal(Errno.None, f.Iommu.Map(dom, 0x40_0000, 0x9000, K4, RW));
        ushort did = Did((DmarDomain)dom);
        var qi = new QiTrace(f);
        Assert.Equal(K4, f.Iommu.Unmap(dom, 0x40_0000, K4));
        Assert.Equal(
            [(DescPiotlb, PiotlbQ0(did, 1, GPagesInPasid), 0x40_0000UL | IhBit), (DescPiotlb, PiotlbQ0(did, 0, GPagesInPasid), 0x40_0000UL | IhBit)],
            qi.Since());

        // iotlb_flush_all: every entry of both PASIDs.
        qi.Mark();
        f.Iommu.FlushIotlbAll(dom);
        Assert.Equal([(DescPiotlb, PiotlbQ0(did, 1, GAllInPasid), 0UL), (DescPiotlb, PiotlbQ0(did, 0, GAllInPasid), 0UL)], qi.Since());
    }

    [Theory]
    [InlineData("Fl48")]
    [InlineData("Fl48Cm")]
    public void A_map_sends_no_iotlb_invalidation_even_with_caching_mode(string config)
    {
        using DriverBed f = NewFl(config, FirstLevelPolicy.AllWhenEveryUnitHasFlts);
        PciDevice dev = f.AddDevice("0000:00:03.0");
        IDomain dom = f.Unmanaged();
        Assert.Equal(Errno.None, f.Iommu.AttachDevice(dom, dev));
        var qi = new QiTrace(f);
        Assert.Equal(Errno.None, f.Iommu.Map(dom, 0x40_0000, 0x9000, 16 * K4, RW));
        Assert.Empty(qi.Since());
    }

    [Fact]
    public void Tearing_down_a_first_level_entry_invalidates_the_pasid_cache_then_the_whole_pasid()
    {
        using DriverBed f = NewFl("Fl48", FirstLevelPolicy.AllWhenEveryUnitHasFlts);
        PciDevice parent = f.AuxParent("0000:00:02.0");
        IDomain dom = f.Unmanaged();
        Assert.Equal(Errno.None, f.Iommu.AttachDeviceAux(dom, parent));
        ushort did = Did((DmarDomain)dom);
        var qi = new QiTrace(f);
        f.Iommu.DetachDeviceAux(dom, parent);
        Assert.Equal([(DescPasidCache, PasidCacheQ0(did, 1, 1), 0UL), (DescPiotlb, PiotlbQ0(did, 1, GAllInPasid), 0UL)], qi.Since());
        Assert.All(f.PasidEntry(parent, 1)!, w => Assert.Equal(0UL, w));
    }

    [Fact]
    public void Detaching_a_first_level_rid_domain_tears_rid2pasid_down_before_the_context_entry()
    {
        using DriverBed f = NewFl("Fl48", FirstLevelPolicy.AllWhenEveryUnitHasFlts);
        PciDevice dev = f.AddDevice("0000:00:03.0");
        IDomain dom = f.Unmanaged();
        Assert.Equal(Errno.None, f.Iommu.AttachDevice(dom, dev));
        ushort did = Did((DmarDomain)dom);
        var qi = new QiTrace(f);
        f.Iommu.DetachDevice(dom, dev);
        List<(int Type, ulong Q0, ulong Q1)> sent = qi.Since();
        Assert.True(sent.Count >= 2, $"{sent.Count} descriptors");
        Assert.Equal((DescPasidCache, PasidCacheQ0(did, 0, 1), 0UL), sent[0]);
        Assert.Equal((DescPiotlb, PiotlbQ0(did, 0, GAllInPasid), 0UL), sent[1]);
    }

    [Fact]
    public void Qi_flush_piotlb_encodes_every_page_count_as_the_kernel_does()
    {
        using DriverBed f = NewFl("Fl48");
        IntelIommuUnit unit = f.Driver.Units[0];
        var qi = new QiTrace(f);
        Gen.Select(Gen.UShort[2, 255], Gen.UInt[0, 0xF_FFFF], Gen.ULong[0, (1UL << 47) - 1], Gen.OneOf(Gen.ULong[0, 1 << 20], Gen.Const(ulong.MaxValue)), Gen.Bool)
            .Sample((did, pasid, addr, npages, ih) =>
            {
                qi.Mark();
                unit.FlushPiotlb(did, pasid, addr, npages, ih);
                List<(int Type, ulong Q0, ulong Q1)> sent = qi.Since();
                if (npages == 0)
                {
                    Assert.Empty(sent); // a WARN in the kernel, nothing sent
                    return;
                }

                if (npages == ulong.MaxValue)
                {
                    Assert.Equal([(DescPiotlb, PiotlbQ0(did, pasid, GAllInPasid), 0UL)], sent);
                    return;
                }

                int am = 0;
                while ((1UL << am) < npages)
                {
                    am++;
                }

                ulong aligned = addr & ~((4096UL << am) - 1);
                Assert.Equal([(DescPiotlb, PiotlbQ0(did, pasid, GPagesInPasid), aligned | (ih ? IhBit : 0UL) | (uint)am)], sent);
            }, iter: 300, threads: 1);
    }

    [Fact]
    public void The_range_flush_always_covers_the_whole_range()
    {
        using DriverBed f = NewFl("Fl48");
        PciDevice dev = f.AddDevice("0000:00:03.0");
        var d = (DmarDomain)f.Iommu.GetDomainForDev(dev)!;
        IntelIommuUnit unit = f.Driver.Units[0];
        var qi = new QiTrace(f);
        Gen.Select(Gen.ULong[0, (1UL << 40) - 1], Gen.ULong[1, 1UL << 30]).Sample((addr, size) =>
        {
            addr &= ~0xFFFUL;
            qi.Mark();
            IntelIommu.FlushFirstLevelRange(unit, d, addr, size, leavesOnly: false);
            (int type, ulong q0, ulong q1) = Assert.Single(qi.Since());
            Assert.Equal(DescPiotlb, type);
            if (((q0 >> 4) & 3) == GAllInPasid)
            {
                return; // wider than MAMV allows: the whole PASID
            }

            int am = (int)(q1 & 0x3F);
            ulong start = q1 & ~0xFFFUL, end = start + (4096UL << am);
            Assert.True(start <= addr && addr + size <= end, $"[0x{addr:x}, +0x{size:x}) not inside [0x{start:x}, 0x{end:x})");
            Assert.Equal(0UL, start & ((4096UL << am) - 1));
        }, iter: 300, threads: 1);
    }
}
