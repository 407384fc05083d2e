using Iommu.Devices;
using Iommu.Domains;
using Iommu.VtD.Driver;
using static Iommu.VtD.Tests.Driver.DriverTestKit;
using static Iommu.VtD.Tests.Driver.FirstLevelTestKit;

namespace Iommu.VtD.Tests.Driver;

/// <summary>
/// The bytes the unit reads for first-level, aux first-level and nested attachments made through the public
/// API, walked by a reference walker written here — root → context → PASID entry → first-level tables
/// (and, nested, every guest-physical address through the parent's second level) — checking the output
/// page and the accumulated R/W and U/S. The same scenarios run as device DMA on the unit's own walk in
/// <see cref="FirstLevelDmaTests"/>; a disagreement between the two points at the driver or at the unit.
/// </summary>
public sealed class FirstLevelEndToEndBytesTests
{
    private const ulong AddrMask = 0x000F_FFFF_FFFF_F000UL;

    // The IA-32e walk the spec describes, over the bytes: (output address, writable, user) or null.
    private static (ulong Pa, bool Write, bool User)? WalkFirstLevel(DriverBed f, ulong root, int levels, ulong va, Func<ulong, ulong?> gpaToHpa)
    {
        ulong? table = gpaToHpa(root);
        bool write = true, user = true;
        for (int level = levels; level >= 1 && table is ulong t; level--)
        {
            ulong e = f.Platform.Memory.ReadUInt64(t + (((va >> (12 + (9 * (level - 1)))) & 511) * 8));
            if ((e & 1) == 0)
            {
                return null;
            }

            write &= (e & 2) != 0;
            user &= (e & 4) != 0;
            if (level == 1 || (level <= 3 && (e & 0x80) != 0))
            {
                ulong size = 1UL << (12 + (9 * (level - 1)));
                ulong? pa = gpaToHpa((e & AddrMask & ~(size - 1)) | (va & (size - 1)));
                return pa is ulong p ? (p, write, user) : null;
            }

            table = gpaToHpa(e & AddrMask);
        }

        return null;
    }

    // The second-level walk of a nested entry's SLPTPTR (R bit 0, W bit 1, PS bit 7).
    private static ulong? WalkSecondLevel(DriverBed f, ulong root, int levels, ulong gpa)
    {
        ulong table = root;
        for (int level = levels; level >= 1; level--)
        {
            ulong e = f.Platform.Memory.ReadUInt64(table + (((gpa >> (12 + (9 * (level - 1)))) & 511) * 8));
            if ((e & 3) == 0)
            {
                return null;
            }

            if (level == 1 || (level <= 3 && (e & 0x80) != 0))
            {
                ulong size = 1UL << (12 + (9 * (level - 1)));
                return (e & AddrMask & ~(size - 1)) | (gpa & (size - 1));
            }

            table = e & AddrMask;
        }

        return null;
    }

    private static (ulong Pa, bool Write, bool User)? Translate(DriverBed f, PciDevice dev, uint pasid, ulong va)
    {
        ulong[] e = f.PasidEntry(dev, pasid)!;
        int pgtt = (int)((e[0] >> 6) & 7);
        int flLevels = ((e[2] >> 2) & 3) == 1 ? 5 : 4;
        if ((e[0] & 1) == 0)
        {
            return null;
        }

        if (pgtt == 1)
        {
            return WalkFirstLevel(f, e[2] & AddrMask, flLevels, va, gpa => gpa);
        }

        Assert.Equal(3, pgtt);
        int slLevels = (int)((e[0] >> 2) & 7) + 2;
        return WalkFirstLevel(f, e[2] & AddrMask, flLevels, va, gpa => WalkSecondLevel(f, e[0] & AddrMask, slLevels, gpa));
    }

    [Theory]
    [InlineData("Fl48")]
    [InlineData("Fl57")]
    public void A_dma_domain_reaches_exactly_its_pages_through_rid2pasid(string config)
    {
        using DriverBed f = NewFl(config);
        PciDevice dev = f.AddDevice("0000:00:03.0");
        IDomain dom = f.Iommu.GetDomainForDev(dev)!;
        Assert.Equal(Errno.None, f.Iommu.Map(dom, 0x1234_5000, 0x1_2000_0000, K4, RW));
        Assert.Equal(Errno.None, f.Iommu.Map(dom, 0x4000_0000, 0x1_C000_0000, G1, IommuProt.Read));
        Assert.Equal((0x1_2000_0008UL, true, true), Translate(f, dev, 0, 0x1234_5008));
        Assert.Equal((0x1_C000_0000UL + 0xABC, false, true), Translate(f, dev, 0, 0x4000_0ABC));
        Assert.Null(Translate(f, dev, 0, 0x1234_6000));
        Assert.Equal(K4, f.Iommu.Unmap(dom, 0x1234_5000, K4));
        Assert.Null(Translate(f, dev, 0, 0x1234_5008));
    }

    [Fact]
    public void An_aux_first_level_domain_reaches_its_pages_through_its_pasid_only()
    {
        using DriverBed f = NewFl("Fl48", FirstLevelPolicy.AllWhenEveryUnitHasFlts);
        PciDevice parent = f.AuxParent("0000:00:02.0");
        IDomain aux = f.Unmanaged();
        Assert.Equal(Errno.None, f.Iommu.Map(aux, 0x10_0000, 0x1_4000_0000, 2 * M2, RW));
        Assert.Equal(Errno.None, f.Iommu.AttachDeviceAux(aux, parent));
        Assert.Equal((0x1_4020_0010UL, true, true), Translate(f, parent, 1, 0x30_0010));
        Assert.Null(Translate(f, parent, 0, 0x30_0010));
    }

    [Fact]
    public void A_nested_domain_walks_the_guest_tables_through_the_parent()
    {
        using DriverBed f = NewFl("Fl48");
        PciDevice dev = f.AddDevice("0000:00:03.0");
        Assert.Equal(Errno.None, f.Driver.DomainAllocNestParent(f.Pci, out DmarDomain? parent));

        // Guest memory: GPA [0, 8 MiB) → host 0x1_0000_0000; the guest's 4-level table at GPA 0x1000..0x4000
        // maps VA 0x7000 → GPA 0x20_0000 (U/S, R/W at every level).
        const ulong HostBase = 0x1_0000_0000;
        Assert.Equal(Errno.None, f.Iommu.Map(parent!, 0, HostBase, 8 * Sizes.MiB, RW));
        Assert.Equal(Errno.None, f.Iommu.Map(parent!, 0x80_0000, 0x1_8000_0000, K4, IommuProt.Read));
        const ulong Table = 0x7UL; // P | R/W | U/S
        f.Platform.Memory.WriteUInt64(HostBase + 0x1000, 0x2000 | Table);
        f.Platform.Memory.WriteUInt64(HostBase + 0x2000, 0x3000 | Table);
        f.Platform.Memory.WriteUInt64(HostBase + 0x3000, 0x4000 | Table);
        f.Platform.Memory.WriteUInt64(HostBase + 0x4000 + (7 * 8), 0x80_0000 | Table);
        Assert.Equal(Errno.None, f.Driver.DomainAllocNested(parent!, new IommuHwptVtdS1(IommuVtdS1.None, 0x1000, 48), out DmarDomain? nested));
        Assert.Equal(Errno.None, f.Driver.AttachNestedDev(nested!, dev));
        Assert.Equal((0x1_8000_0010UL, true, true), Translate(f, dev, 0, 0x7010));
        Assert.Null(Translate(f, dev, 0, 0x8000));
    }
}
