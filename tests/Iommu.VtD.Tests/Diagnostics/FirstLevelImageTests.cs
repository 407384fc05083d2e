using System.Globalization;
using CsCheck;
using Iommu.Devices;
using Iommu.Domains;
using Iommu.VtD.Diagnostics;
using Iommu.VtD.Driver;
using Iommu.VtD.Hardware;
using Iommu.VtD.Tests.Driver;
using static Iommu.VtD.Tests.Driver.DriverTestKit;
using static Iommu.VtD.Tests.Driver.FirstLevelTestKit;

namespace Iommu.VtD.Tests.Diagnostics;

/// <summary>
/// The structure dump follows a PASID entry's translation type: first-level tables from FLPTR
/// (PGTT = 001), nested first-level tables read through the second level (011), nothing below a
/// pass-through entry; the export, <see cref="VtdImage.Path"/>, the decoder, JSON and DOT alike.
/// </summary>
public sealed class FirstLevelImageTests
{
    private const ulong Iova = 0x1234_5000, Pa = 0x1_2000_0000;

    [Theory]
    [InlineData("Fl48", new[] { "PML4E", "PDPE", "PDE", "PTE" })]
    [InlineData("Fl57", new[] { "PML5E", "PML4E", "PDPE", "PDE", "PTE" })]
    public void A_first_level_domain_is_exported_and_walked_from_flptr_with_its_ia32e_bits_named(string config, string[] levels)
    {
        using DriverBed f = NewFl(config);
        PciDevice dev = f.AddDevice("0000:00:03.0");
        IDomain dom = f.Iommu.GetDomainForDev(dev)!;
        Assert.Equal(Errno.None, f.Iommu.Map(dom, Iova, Pa, K4, RW));
        Assert.Equal(Errno.None, f.Iommu.Map(dom, 0x4000_0000, 0x1_4000_0000, M2, IommuProt.Read));
        VtdImage image = f.Driver.ExportImage();

        // Only first-level tables hang below the PASID table: the exporter no longer reads SLPTPTR of a PGTT=001 entry.
        Assert.Contains(image.Chunks, c => c.Kind == VtdImageChunkKind.FirstLevelTable && c.Level == levels.Length);
        Assert.DoesNotContain(image.Chunks, c => c.Kind is VtdImageChunkKind.PageTable or VtdImageChunkKind.NestedFirstLevelTable);

        IReadOnlyList<VtdEntryDescription> walk = VtdDecoder.DescribeWalk(image, dev.RequesterId, null, Iova + 0x10);
        Assert.Equal(["root entry", "context entry (scalable)", "PASID directory entry", "PASID table entry", .. levels], walk.Select(e => e.Structure));
        Assert.All(walk, e => Assert.Equal(image.ReadUInt64(e.Address), e.Value));
        Assert.Matches($"^PGTT=first-level DID \\d+ FLPM {levels.Length}-level, FLPTR 0x{Hex(walk[4].Address & ~0xFFFUL)}$", walk[3].Meaning);
        Assert.Matches($"^P RW US( A)?( XD)? next table @0x{Hex(walk[5].Address & ~0xFFFUL)}$", walk[4].Meaning);
        Assert.Matches($"^P RW US( A)?( D)?( XD)? leaf: 4K page @0x{Hex(Pa)}$", walk[^1].Meaning);

        IReadOnlyList<VtdEntryDescription> large = VtdDecoder.DescribeWalk(image, dev.RequesterId, null, 0x4000_1234);
        Assert.Equal("PDE", large[^1].Structure);
        Assert.Matches("^P US( A)?( D)? PS( XD)? leaf: 2M page @0x140000000$", large[^1].Meaning);
        Assert.Equal(("PTE", "not present"), (walk[^1].Structure, VtdDecoder.DescribeWalk(image, dev.RequesterId, null, Iova + K4)[^1].Meaning));

        // Bit 7 of a PTE is PAT (a PTE is always a leaf); PWT and PCD are named as written.
        VtdImage pat = image.WithUInt64(walk[^1].Address, (walk[^1].Value & ~VtdFormat.FlExecuteDisable) | VtdFormat.FlPageSize | 0x18);
        Assert.Matches($"^P RW US PWT PCD( A)?( D)? PAT leaf: 4K page @0x{Hex(Pa)}$", VtdDecoder.DescribeWalk(pat, dev.RequesterId, null, Iova)[^1].Meaning);
    }

    [Fact]
    public void An_aux_first_level_pasid_entry_shows_sre_and_wpe_and_its_chunks_survive_json_dot_and_relocation()
    {
        using DriverBed f = NewFl("Fl48", FirstLevelPolicy.AllWhenEveryUnitHasFlts);
        PciDevice parent = f.AuxParent("0000:00:02.0");
        IDomain aux = f.Unmanaged();
        Assert.Equal(Errno.None, f.Iommu.Map(aux, 0x10_0000, 0x1_4000_0000, K4, RW));
        Assert.Equal(Errno.None, f.Iommu.AttachDeviceAux(aux, parent));
        uint pasid = (uint)f.Iommu.AuxGetPasid(aux, parent);
        VtdImage image = f.Driver.ExportImage();

        IReadOnlyList<VtdEntryDescription> walk = VtdDecoder.DescribeWalk(image, parent.RequesterId, pasid, 0x10_0000);
        Assert.EndsWith(" SRE WPE", walk[3].Meaning, StringComparison.Ordinal);
        Assert.EndsWith("leaf: 4K page @0x140000000", walk[^1].Meaning, StringComparison.Ordinal);

        VtdImage back = VtdImageJson.FromJson(image.ToJson());
        Assert.Equal(image.Chunks.Select(c => (c.Address, c.Kind, c.Level)), back.Chunks.Select(c => (c.Address, c.Kind, c.Level)));
        Assert.Contains("\"first-level-table\"", image.ToJson(), StringComparison.Ordinal);

        string dot = image.ToDot(parent.RequesterId, pasid);
        Assert.Contains("first-level PML4 table @0x", dot, StringComparison.Ordinal);
        Assert.Contains("FLPTR 0x", dot, StringComparison.Ordinal);
        Assert.Matches(@"0x10_0000–0x10_0FFF → 0x1_4000_0000 P RW US", dot);

        // Relocation rewrites FLPTR and the first-level table pointers: the moved image translates the same.
        VtdImage moved = image.Relocate(0x100_0000, 0x100_0000);
        VtdProbe probe = new(parent.RequesterId, pasid, 0x10_0008, DmaAccess.Write);
        VtdProbeResult r = moved.Probe(f.Unit.Config, [probe]).Probes[0];
        Assert.Equal((VtdTranslationStatus.Translated, 0x1_4000_0008UL), (r.Status, r.PhysicalAddress));
        Assert.All(VtdDecoder.DescribeWalk(moved, parent.RequesterId, pasid, 0x10_0008).Skip(4), e => Assert.InRange(e.Address, 0x100_0000UL, 0x1FF_FFFFUL));
    }

    [Fact]
    public void A_nested_walk_names_each_guest_physical_table_address_and_the_host_address_it_went_to()
    {
        using DriverBed f = NewFl("Fl48");
        PciDevice dev = f.AddDevice("0000:00:03.0");
        Assert.Equal(Errno.None, f.Driver.DomainAllocNestParent(f.Pci, out DmarDomain? parent));
        const ulong HostBase = 0x1_0000_0000, Table = 0x67;
        Assert.Equal(Errno.None, f.Iommu.Map(parent!, 0, HostBase, 8 * Sizes.MiB, RW));
        Assert.Equal(Errno.None, f.Iommu.Map(parent!, 0x80_0000, 0x1_8000_0000, 2 * K4, RW));
        f.Platform.Memory.WriteUInt64(HostBase + 0x1000, 0x2000 | Table);
        f.Platform.Memory.WriteUInt64(HostBase + 0x2000, 0x3000 | Table);
        f.Platform.Memory.WriteUInt64(HostBase + 0x3000, 0x4000 | Table);
        f.Platform.Memory.WriteUInt64(HostBase + 0x4000 + (7 * 8), 0x80_0000 | Table);
        Assert.Equal(Errno.None, f.Driver.DomainAllocNested(parent!, new IommuHwptVtdS1(IommuVtdS1.None, 0x1000, 48), out DmarDomain? nested));
        Assert.Equal(Errno.None, f.Driver.AttachNestedDev(nested!, dev));
        VtdImage image = f.Driver.ExportImage();

        Assert.Equal([HostBase + 0x1000, HostBase + 0x2000, HostBase + 0x3000, HostBase + 0x4000],
            image.Chunks.Where(c => c.Kind == VtdImageChunkKind.NestedFirstLevelTable).Select(c => c.Address));
        Assert.Contains(image.Chunks, c => c.Kind == VtdImageChunkKind.PageTable);

        IReadOnlyList<VtdImageEntry> path = image.Path(dev.RequesterId, null, 0x7010);
        VtdImageEntry[] fl = [.. path.Where(e => e.Kind == VtdImageChunkKind.NestedFirstLevelTable)];
        Assert.Equal([0x1000UL, 0x2000, 0x3000, 0x4000 + (7 * 8)], fl.Select(e => e.GuestAddress!.Value));
        Assert.Equal(fl.Select(e => e.GuestAddress!.Value + HostBase), fl.Select(e => e.Address));
        VtdImageEntry leaf = path[^1];
        Assert.Equal(VtdImageChunkKind.PageTable, leaf.Kind);
        Assert.Equal(0x1_8000_0000UL, leaf.Value & VtdFormat.SlAddressMask);
        Assert.Equal(0x1_8000_0010UL, f.Unit.Translate(dev.RequesterId, null, 0x7010, 8, DmaAccess.Read).PhysicalAddress);

        IReadOnlyList<VtdEntryDescription> walk = VtdDecoder.DescribeWalk(image, dev.RequesterId, null, 0x7010);
        Assert.Matches(@"^PGTT=nested DID \d+ AW 4-level, SLPTPTR 0x[0-9a-f]+, FLPM 4-level, FLPTR GPA 0x1000", walk[3].Meaning);
        Assert.Equal("P RW US A D next table @GPA 0x2000 (read at GPA 0x1000 → host 0x100001000)", walk[4].Meaning);
        Assert.Equal("P RW US A D leaf: 4K page @GPA 0x800000 (read at GPA 0x4038 → host 0x100004038)", walk[7].Meaning);
        Assert.Contains("first-level PML4 table @GPA 0x1000 → host 0x100001000", image.ToDot(dev.RequesterId), StringComparison.Ordinal);
    }

    [Fact]
    public void A_pass_through_pasid_entry_ends_the_walk()
    {
        using DriverBed f = NewFl("Fl48");
        PciDevice dev = f.AddDevice("0000:00:03.0");
        Assert.Equal(Errno.None, f.Iommu.AttachDevice(f.Iommu.DomainAllocType(f.Pci, DomainType.Identity)!, dev));
        IReadOnlyList<VtdEntryDescription> walk = VtdDecoder.DescribeWalk(f.Driver.ExportImage(), dev.RequesterId, null, 0x1000);
        Assert.Equal("PASID table entry", walk[^1].Structure);
        Assert.StartsWith("PGTT=pass-through DID", walk[^1].Meaning, StringComparison.Ordinal);
    }

    // For any first-level mappings the driver makes, the image's walk ends at the leaf whose page the
    // unit's translation returns, and at a non-leaf (or missing) entry where the unit faults.
    [Fact]
    public void The_image_path_ends_at_the_leaf_the_unit_translates_through()
    {
        Gen<(ulong Slot, bool Large, bool Write, ulong Offset)> map = Gen.Select(Gen.ULong[0, 63], Gen.Bool, Gen.Bool, Gen.ULong[0, M2 - 8]);
        Gen.Select(map.Array[1, 6], Gen.OneOfConst("Fl48", "Fl57"), Gen.ULong[0, (1UL << 20) - 1])
            .Sample((maps, config, pfn) =>
            {
                using DriverBed f = NewFl(config);
                PciDevice dev = f.AddDevice("0000:00:03.0");
                IDomain dom = f.Iommu.GetDomainForDev(dev)!;
                var mapped = new List<(ulong Iova, ulong Size)>();
                foreach ((ulong slot, bool large, bool write, ulong _) in maps)
                {
                    ulong iova = (slot * 0x4000_0000) + (large ? M2 : K4 * (slot + 1)), size = large ? M2 : K4;
                    ulong pa = 0x1_0000_0000 + ((pfn + (slot * 512)) * K4 & ~(size - 1));
                    if (f.Iommu.Map(dom, iova, pa, size, write ? RW : IommuProt.Read) == Errno.None)
                    {
                        mapped.Add((iova, size));
                    }
                }

                VtdImage image = f.Driver.ExportImage();
                foreach ((ulong slot, _, _, ulong offset) in maps)
                {
                    foreach (ulong iova in (ulong[])[.. mapped.Select(m => m.Iova + (offset % m.Size & ~7UL)), (slot * 0x4000_0000) + 0x3000_0000])
                    {
                        VtdTranslation t = f.Unit.Translate(dev.RequesterId, null, iova, 8, DmaAccess.Read);
                        VtdImageEntry last = image.Path(dev.RequesterId, null, iova)[^1];
                        Assert.Equal(VtdImageChunkKind.FirstLevelTable, last.Kind);
                        bool leaf = (last.Value & VtdFormat.FlPresent) != 0 && (last.Level == 1 || (last.Value & VtdFormat.FlPageSize) != 0);
                        Assert.Equal(!t.IsFault, leaf);
                        if (leaf)
                        {
                            ulong page = 1UL << (12 + (9 * (last.Level - 1)));
                            Assert.Equal(t.PhysicalAddress & ~(page - 1), last.Value & VtdFormat.FlAddressMask & ~(page - 1));
                        }
                    }
                }
            }, iter: 40);
    }

    private static string Hex(ulong v) => v.ToString("x", CultureInfo.InvariantCulture);
}
