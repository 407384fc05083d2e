using CsCheck;
using Iommu.Devices;
using Iommu.Domains;
using Iommu.VtD.Driver;
using Iommu.VtD.Hardware;
using static Iommu.VtD.Tests.Driver.DriverTestKit;
using static Iommu.VtD.Tests.Driver.FirstLevelTestKit;

namespace Iommu.VtD.Tests.Driver;

/// <summary>
/// Which domains get first-level tables (6.1 <c>first_level_by_default</c> and 5.15's rule), and what
/// follows for a user: aperture, page sizes, PTE bits through <c>iommu_map</c> (pasid-sva.md §2.1).
/// </summary>
public sealed class FirstLevelDomainTests
{
    private static readonly DomainType[] PagingTypes = [DomainType.Dma, DomainType.DmaFq, DomainType.Unmanaged];

    // A unit: scalable or legacy, with FLTS and SLTS as asked (FLTS/SLTS exist only in scalable mode).
    private static VtdConfig Unit(bool scalable, bool flts, bool slts) => scalable
        ? VtdConfig.ScalableMode48Bit with { FirstLevelTranslation = flts, SecondLevelTranslation = slts }
        : VtdConfig.Legacy48Bit;

    // The spec's table (§2.1), written out.
    private static bool Expected(FirstLevelPolicy policy, (bool Sm, bool Flts, bool Slts)[] units, DomainType type)
    {
        if (!Array.TrueForAll(units, u => u.Sm))
        {
            return false;
        }

        bool flts = Array.TrueForAll(units, u => u.Flts);
        if (policy == FirstLevelPolicy.AllWhenEveryUnitHasFlts)
        {
            return flts;
        }

        bool slts = Array.TrueForAll(units, u => u.Slts);
        return flts != slts ? flts : type != DomainType.Unmanaged;
    }

    [Fact]
    public void The_domain_level_follows_the_selected_rule_for_every_cap_combination_and_type()
    {
        Gen<(bool, bool, bool)> unit = Gen.Select(Gen.Bool, Gen.Bool, Gen.Bool);
        Gen.Select(Gen.OneOfConst(FirstLevelPolicy.FirstLevelByDefault, FirstLevelPolicy.AllWhenEveryUnitHasFlts), unit.Array[1, 3], Gen.Int[0, 2])
            .Sample((policy, units, typeIndex) =>
            {
                using var platform = new Platform(new PlatformOptions { MemorySize = 4 * Sizes.GiB, TableMemorySize = 64 * Sizes.MiB });
                VtdUnit[] hw = [.. units.Select(u => new VtdUnit(platform.Memory, Unit(u.Item1, u.Item2 && u.Item1, u.Item3 && u.Item1)))];
                var driver = new IntelIommu(platform, new IntelIommuOptions { FirstLevel = policy }, hw);
                var norm = units.Select(u => (u.Item1, u.Item2 && u.Item1, u.Item3 && u.Item1)).ToArray();
                DomainType type = PagingTypes[typeIndex];
                var d = (DmarDomain)driver.DomainAlloc(type)!;
                Assert.Equal(Expected(policy, norm, type), d.UseFirstLevel);
                Assert.Equal(d.UseFirstLevel, driver.UseFirstLevelFor(type));
                if (d.UseFirstLevel)
                {
                    Assert.Throws<InvalidOperationException>(() => d.PageTable);
                }
                else
                {
                    Assert.Equal(d.PageTable.Root, d.Pgd);
                }

                driver.DomainFree(d);
            }, iter: 120);
    }

    [Theory]
    [InlineData("Sm48")]
    [InlineData("Sm57")]
    [InlineData("Legacy48")]
    public void Presets_without_flts_give_second_level_domains_under_both_rules(string config)
    {
        foreach (FirstLevelPolicy policy in new[] { FirstLevelPolicy.FirstLevelByDefault, FirstLevelPolicy.AllWhenEveryUnitHasFlts })
        {
            using var f = new DriverBed(Config(config), new IntelIommuOptions { FirstLevel = policy }, SmallMemory);
            foreach (DomainType type in PagingTypes)
            {
                Assert.False(((DmarDomain)f.Iommu.DomainAllocType(f.Pci, type)!).UseFirstLevel);
            }
        }
    }

    [Theory]
    [InlineData("Fl48", 47, true)]
    [InlineData("Fl57", 56, true)]
    public void A_first_level_domain_covers_the_lower_canonical_half_and_gets_1g_pages_with_fl1gp(string config, int apertureBits, bool oneGig)
    {
        using DriverBed f = NewFl(config);
        PciDevice dev = f.AddDevice("0000:00:03.0");
        var d = (DmarDomain)f.Iommu.GetDomainForDev(dev)!;
        Assert.True(d.UseFirstLevel);
        Assert.Equal((1UL << apertureBits) - 1, d.Geometry.ApertureEnd);
        Assert.Equal(oneGig, (d.PgsizeBitmap & G1) != 0);
        Assert.True((d.PgsizeBitmap & M2) != 0);

        // A second-level (UNMANAGED) domain on the same unit keeps the full width.
        IDomain u = f.Unmanaged();
        PciDevice other = f.AddDevice("0000:00:04.0");
        Assert.Equal(Errno.None, f.Iommu.AttachDevice(u, other));
        Assert.False(((DmarDomain)u).UseFirstLevel);
        Assert.Equal((1UL << (apertureBits + 1)) - 1, u.Geometry.ApertureEnd);
    }

    [Fact]
    public void Without_fl1gp_first_level_gets_only_2m_pages_whatever_sllps_says()
    {
        using DriverBed f = NewFl(VtdConfig.ScalableModeFirstLevel48Bit with { FirstLevel1GiBPages = false, SecondLevel1GiBPages = true });
        PciDevice dev = f.AddDevice("0000:00:03.0");
        var d = (DmarDomain)f.Iommu.GetDomainForDev(dev)!;
        Assert.Equal(1, d.IommuSuperpage);
        Assert.Equal(0UL, d.PgsizeBitmap & G1);

        // And with FL1GP but no second-level 1 GiB pages, first level still gets 1 GiB.
        using DriverBed g = NewFl(VtdConfig.ScalableModeFirstLevel48Bit with { SecondLevel1GiBPages = false });
        var e = (DmarDomain)g.Iommu.GetDomainForDev(g.AddDevice("0000:00:03.0"))!;
        Assert.Equal(2, e.IommuSuperpage);
    }

    [Fact]
    public void Iommu_map_writes_first_level_leaves_with_1g_pages_into_the_domain_table()
    {
        using DriverBed f = NewFl("Fl48", FirstLevelPolicy.AllWhenEveryUnitHasFlts);
        PciDevice dev = f.AddDevice("0000:00:03.0");
        IDomain dom = f.Unmanaged();
        Assert.Equal(Errno.None, f.Iommu.AttachDevice(dom, dev));
        var d = (DmarDomain)dom;
        Assert.True(d.UseFirstLevel);
        Assert.Equal(Errno.None, f.Iommu.Map(dom, G1, 2 * G1, G1, IommuProt.Write));
        Assert.Equal(Errno.None, f.Iommu.Map(dom, 0x1000, 0x5000, K4, IommuProt.Read));

        // 4 levels after the trim on a 48-bit unit: PML4[0] → PDPT[1] is the 1 GiB leaf.
        ulong pml4e = f.Platform.Memory.ReadUInt64(d.Pgd);
        Assert.Equal(0x8000_0000_0000_0027UL, pml4e & ~0x000F_FFFF_FFFF_F000UL);
        ulong pdpte = f.Platform.Memory.ReadUInt64((pml4e & 0x000F_FFFF_FFFF_F000UL) + 8);
        Assert.Equal((2 * G1) | 0x8000_0000_0000_00E7UL, pdpte); // P | R/W | U/S | A | D | PS | XD: write-only maps readable
        Assert.Equal((2 * G1) + 0x1234, f.Iommu.IovaToPhys(dom, G1 + 0x1234));
        Assert.Equal(0x5008UL, f.Iommu.IovaToPhys(dom, 0x1008));
        Assert.Equal(G1, f.Iommu.Unmap(dom, G1, G1));
        Assert.Equal(0UL, f.Iommu.IovaToPhys(dom, G1));
    }
}
