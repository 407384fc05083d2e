using Iommu.Core.Tests.Infrastructure;
using Iommu.Devices;
using Iommu.Domains;
using Moq;

namespace Iommu.Core.Tests;

/// <summary>
/// iommu_create_device_direct_mappings: a device's DIRECT and DIRECT_RELAXABLE reserved regions are
/// identity-mapped into its group's DMA default domain when it is probed, at hot-add and at bus_set_iommu.
/// </summary>
public sealed class DirectMappingTests : IDisposable
{
    private const string Dev0 = "0000:00:02.0";
    private const string Dev1 = "0000:00:03.0";

    private readonly CoreBed _p = new();

    // The regions every device reports, and the IOVAs the driver says are already mapped.
    private readonly List<IommuResvRegion> _regions = [];
    private readonly HashSet<ulong> _mapped = [];

    public DirectMappingTests()
    {
        _p.Driver.Mock.As<IIommuResvRegionsOps>()
            .Setup(o => o.GetResvRegions(It.IsAny<Device>(), It.IsAny<IList<IommuResvRegion>>()))
            .Callback((Device _, IList<IommuResvRegion> list) =>
            {
                foreach (IommuResvRegion r in _regions)
                {
                    list.Add(r);
                }
            });
        _p.Driver.IovaToPhysBehaviour = iova => _mapped.Contains(iova & ~0xFFFUL) ? iova : 0;
        _p.Driver.MapPagesBehaviour = (iova, _, pgsize, count) =>
        {
            for (ulong a = iova; a < iova + (pgsize * count); a += 0x1000)
            {
                _mapped.Add(a);
            }

            return (Errno.None, pgsize * count);
        };
    }

    public void Dispose() => _p.Dispose();

    // What the core asked the driver to map: (iova, paddr, bytes) per call.
    private List<(ulong Iova, ulong Paddr, ulong Size)> Maps() =>
        [.. _p.Driver.Calls("map_pages").Select(c => (c.Iova, c.Paddr, c.Size * c.Count)).Concat(_p.Driver.Calls("map").Select(c => (c.Iova, c.Paddr, c.Size)))];

    private static ulong Covered(List<(ulong Iova, ulong Paddr, ulong Size)> maps, ulong start, ulong end) =>
        (ulong)maps.Sum(m => (long)(Math.Min(m.Iova + m.Size, end) > Math.Max(m.Iova, start) ? Math.Min(m.Iova + m.Size, end) - Math.Max(m.Iova, start) : 0));

    [Fact]
    public void A_hot_added_device_gets_its_direct_and_relaxable_regions_identity_mapped_in_its_DMA_default_domain()
    {
        _regions.Add(new IommuResvRegion(0xE_0000, 0x2_0000, IommuProt.Read | IommuProt.Write, IommuResvType.Direct));
        _regions.Add(new IommuResvRegion(0x1_0000, 0x3000, IommuProt.Read | IommuProt.Write, IommuResvType.DirectRelaxable));
        _regions.Add(new IommuResvRegion(0xFEE0_0000, 0x10_0000, IommuProt.None, IommuResvType.Msi));
        _regions.Add(new IommuResvRegion(0x4000_0000, 0x1000, IommuProt.None, IommuResvType.Reserved));
        _p.WithIommu();

        PciDevice dev = _p.AddPci(Dev0);

        IDomain def = dev.IommuGroup!.DefaultDomain!;
        List<(ulong Iova, ulong Paddr, ulong Size)> maps = Maps();
        Assert.All(maps, m => Assert.Equal(m.Iova, m.Paddr));
        Assert.All(_p.Driver.Calls("map_pages").Concat(_p.Driver.Calls("map")), c => Assert.Same(def, c.Domain));
        Assert.Equal(0x2_0000UL, Covered(maps, 0xE_0000, 0x10_0000));
        Assert.Equal(0x3000UL, Covered(maps, 0x1_0000, 0x1_3000));
        Assert.Equal(0x2_3000UL, (ulong)maps.Sum(m => (long)m.Size)); // nothing for the MSI and RESERVED regions
        Assert.Equal(0xE_0000UL, _p.Core.IovaToPhys(def, 0xE_0000));
    }

    [Fact]
    public void Devices_probed_at_bus_set_iommu_get_their_direct_regions_mapped_before_DMA_starts()
    {
        _regions.Add(new IommuResvRegion(0xE_0000, 0x1_0000, IommuProt.Read | IommuProt.Write, IommuResvType.Direct));
        PciDevice dev0 = _p.AddPci(Dev0);
        PciDevice dev1 = _p.AddPci(Dev1);
        _p.Driver.IovaToPhysBehaviour = _ => 0; // two default domains: the page set above is not per domain

        _p.WithIommu();

        foreach (PciDevice dev in new[] { dev0, dev1 })
        {
            IDomain def = dev.IommuGroup!.DefaultDomain!;
            List<(ulong Iova, ulong Paddr, ulong Size)> maps = [.. _p.Driver.Calls("map_pages").Where(c => c.Domain == def).Select(c => (c.Iova, c.Paddr, c.Size * c.Count))];
            Assert.Equal(0x1_0000UL, Covered(maps, 0xE_0000, 0xF_0000));
            Assert.All(maps, m => Assert.Equal(m.Iova, m.Paddr));
        }
    }

    [Fact]
    public void Pages_already_mapped_are_skipped_and_an_unaligned_region_starts_at_its_first_whole_page()
    {
        // 0xE1800 rounds up to 0xE2000; the end (0xE1800 + 0x3000 = 0xE4800) rounds up to 0xE5000.
        _regions.Add(new IommuResvRegion(0xE_1800, 0x3000, IommuProt.Read, IommuResvType.Direct));
        _mapped.Add(0xE_3000);
        _p.WithIommu();

        _p.AddPci(Dev0);

        Assert.Equal([(0xE_2000UL, 0xE_2000UL, 0x1000UL), (0xE_4000UL, 0xE_4000UL, 0x1000UL)], Maps());
    }

    [Fact]
    public void A_second_device_of_the_group_maps_only_what_the_first_did_not()
    {
        _p.UseSharedGroupFor(Dev0, Dev1);
        _regions.Add(new IommuResvRegion(0xE_0000, 0x2000, IommuProt.Read | IommuProt.Write, IommuResvType.Direct));
        _p.WithIommu();
        _p.AddPci(Dev0);
        Assert.Equal(0x2000UL, (ulong)Maps().Sum(m => (long)m.Size));
        _p.Driver.ClearLog();

        _p.AddPci(Dev1);

        Assert.Empty(Maps());
    }

    [Fact]
    public void An_identity_default_domain_gets_no_direct_mappings()
    {
        using var p = new CoreBed(defaultDomainType: DomainType.Identity);
        p.Driver.Mock.As<IIommuResvRegionsOps>()
            .Setup(o => o.GetResvRegions(It.IsAny<Device>(), It.IsAny<IList<IommuResvRegion>>()))
            .Callback((Device _, IList<IommuResvRegion> list) => list.Add(new IommuResvRegion(0xE_0000, 0x1000, IommuProt.Read, IommuResvType.Direct)));
        p.WithIommu();

        PciDevice dev = p.AddPci(Dev0);

        Assert.Equal(DomainType.Identity, dev.IommuGroup!.DefaultDomain!.Type);
        Assert.Empty(p.Driver.Calls("map_pages"));
        Assert.Empty(p.Driver.Calls("map"));
    }
}
