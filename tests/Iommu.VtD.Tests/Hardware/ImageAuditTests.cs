using Iommu.Memory;
using Iommu.VtD.Diagnostics;
using Iommu.VtD.Hardware;

namespace Iommu.VtD.Tests.Hardware;

/// <summary>
/// Audit of the image exporter and <see cref="VtdImage.Relocate"/>: hand-built tables on a bare
/// <see cref="VtdUnit"/>, exported, relocated and evaluated by a cold unit; every probe must
/// translate (or fault) exactly as on the original unit, and every followed pointer must land in the image.
/// </summary>
public sealed class ImageAuditTests
{
    private const ulong MemSize = 64UL << 20;
    private const ulong SlRw = VtdFormat.SlRead | VtdFormat.SlWrite;
    private const ulong FlRw = VtdFormat.FlPresent | VtdFormat.FlReadWrite | VtdFormat.FlUser;

    private sealed class Bed : IDisposable
    {
        private ulong _next = 0x10_0000;

        public Bed(VtdConfig config)
        {
            Config = config;
            Memory = new PhysicalMemory(MemSize);
            Unit = new VtdUnit(Memory, config);
        }

        public VtdConfig Config { get; }

        public PhysicalMemory Memory { get; }

        public VtdUnit Unit { get; }

        public ulong Page(int pages = 1)
        {
            ulong p = _next;
            _next += (ulong)pages * 0x1000;
            return p;
        }

        public void W(ulong pa, ulong v) => Memory.WriteUInt64(pa, v);

        public ulong R(ulong pa) => Memory.ReadUInt64(pa);

        public void Enable(ulong rtaddr)
        {
            Unit.Write64(VtdRegister.Rtaddr, rtaddr);
            Unit.Write32(VtdRegister.Gcmd, VtdRegister.GcmdSrtp);
            Unit.Write64(VtdRegister.Ccmd, VtdRegister.CcmdIcc | (1UL << VtdRegister.CcmdCirgShift));
            Unit.Write64(VtdConfig.IotlbRegisterOffset + VtdRegister.IotlbInPair, (1UL << 63) | (1UL << 60));
            Unit.Write32(VtdRegister.Gcmd, VtdRegister.GcmdTe);
        }

        // Second-level map of one page (4K, 2M or 1G) in a tree of `levels` levels at root; tables allocated as needed.
        public void SlMap(ulong root, int levels, ulong iova, ulong pa, int leafLevel)
        {
            ulong table = root;
            for (int level = levels; level > leafLevel; level--)
            {
                ulong at = table + (((iova >> (12 + (9 * (level - 1)))) & 0x1FF) * 8);
                ulong e = R(at);
                if ((e & SlRw) == 0)
                {
                    e = Page() | SlRw;
                    W(at, e);
                }

                table = e & VtdFormat.SlAddressMask;
            }

            W(table + (((iova >> (12 + (9 * (leafLevel - 1)))) & 0x1FF) * 8), pa | SlRw | (leafLevel > 1 ? VtdFormat.SlPageSize : 0));
        }

        // First-level map; `host` translates a table's address to where it is written (nested: GPA → host).
        public void FlMap(ulong root, int levels, ulong iova, ulong pa, int leafLevel, Func<ulong, ulong> host, Func<ulong> alloc)
        {
            ulong table = root;
            for (int level = levels; level > leafLevel; level--)
            {
                ulong at = host(table) + (((iova >> (12 + (9 * (level - 1)))) & 0x1FF) * 8);
                ulong e = R(at);
                if ((e & VtdFormat.FlPresent) == 0)
                {
                    e = alloc() | FlRw;
                    W(at, e);
                }

                table = e & VtdFormat.FlAddressMask;
            }

            W(host(table) + (((iova >> (12 + (9 * (leafLevel - 1)))) & 0x1FF) * 8), pa | FlRw | (leafLevel > 1 ? VtdFormat.FlPageSize : 0));
        }

        public void Dispose() => Memory.Dispose();
    }

    // The unit's export, the export relocated into [48 MiB, 52 MiB), and that sent through JSON: each answers the probes as the live unit does.
    private static void AssertSameExportedRelocatedAndThroughJson(Bed bed, IEnumerable<VtdProbe> probes)
    {
        VtdImage image = bed.Unit.ExportImage();
        AssertSame(bed, image, probes);
        VtdImage moved = image.Relocate(0x300_0000, 0x40_0000);
        AssertSame(bed, moved, probes);
        AssertSame(bed, VtdImageJson.FromJson(moved.ToJson()), probes);
    }

    private static void AssertSame(Bed bed, VtdImage image, IEnumerable<VtdProbe> probes)
    {
        VtdProbe[] ps = [.. probes];
        VtdImage probed = image.Probe(bed.Config, ps, MemSize);
        for (int i = 0; i < ps.Length; i++)
        {
            VtdProbe p = ps[i];
            VtdTranslation t = bed.Unit.Translate(p.RequesterId, p.Pasid, p.Iova, (ulong)p.Size, p.Access);
            VtdProbeResult r = probed.Probes[i];
            Assert.True((t.Status, t.PhysicalAddress, t.Reason) == (r.Status, r.PhysicalAddress, r.Reason),
                $"rid 0x{p.RequesterId:x} pasid {p.Pasid} iova 0x{p.Iova:x}: unit {t.Status} 0x{t.PhysicalAddress:x} {t.Reason}, image {r.Status} 0x{r.PhysicalAddress:x} {r.Reason}");
        }
    }

    // A nested (PGTT = 011) PASID entry: the first-level tables sit in guest-physical memory that the
    // second level maps to host pages. Relocation moves those chunks but cannot move the second-level
    // leaves that point at them, so the relocated image's nested walk reads empty memory.
    [Fact]
    public void A_relocated_nested_image_translates_as_the_original()
    {
        using var bed = new Bed(VtdConfig.ScalableModeFirstLevel48Bit);
        ulong rt = bed.Page(), ctx = bed.Page(), dir = bed.Page(), pt = bed.Page(), sl = bed.Page();
        bed.W(rt, ctx | 1);
        bed.W(ctx + (0x18 * 32), dir | 1);                        // devfn 03.0, PDTS 0, RID_PASID 0
        bed.W(dir, pt | 1);
        const ulong GuestRam = 0x200_0000;                       // GPA 0..4 MiB → host 32 MiB (2M pages)
        bed.SlMap(sl, 4, 0, GuestRam, 2);
        bed.SlMap(sl, 4, 0x20_0000, GuestRam + 0x20_0000, 2);
        ulong gpaNext = 0x1000;
        ulong flRoot = gpaNext;
        gpaNext += 0x1000;
        bed.FlMap(flRoot, 4, 0x4000_0000, 0x30_0000, 1, g => GuestRam + g, () => { ulong g = gpaNext; gpaNext += 0x1000; return g; });
        bed.W(pt, sl | (2UL << VtdFormat.PasidAwShift) | ((ulong)VtdFormat.PgttNested << VtdFormat.PasidPgttShift) | 1);
        bed.W(pt + 8, 1);                                         // DID 1
        bed.W(pt + 16, flRoot);                                   // FLPTR (GPA), FLPM 4-level
        bed.Enable(rt | (1UL << 10));

        VtdProbe[] probes = [new(0x18, null, 0x4000_0010, DmaAccess.Read), new(0x18, null, 0x4000_1010, DmaAccess.Read)];
        Assert.Equal(VtdTranslationStatus.Translated, bed.Unit.Translate(0x18, null, 0x4000_0010, 8, DmaAccess.Read).Status);
        VtdImage image = bed.Unit.ExportImage();
        AssertSame(bed, image, probes);
        AssertSame(bed, image.Relocate(0x300_0000, 0x40_0000), probes);
    }

    // Legacy mode, every width: TT 00/01/10 on two buses, 4K/2M/1G second-level leaves, unmapped addresses.
    [Theory]
    [InlineData("Legacy39Bit", 1)]
    [InlineData("Legacy48Bit", 2)]
    [InlineData("Legacy48Bit", 1)]
    public void A_relocated_legacy_image_translates_as_the_original(string config, int aw)
    {
        VtdConfig cfg = (VtdConfig)typeof(VtdConfig).GetProperty(config)!.GetValue(null)!;
        using var bed = new Bed(cfg);
        ulong rt = bed.Page(), ctx0 = bed.Page(), ctx5 = bed.Page(), sl = bed.Page(), sl2 = bed.Page();
        int levels = aw + 2;
        bed.W(rt, ctx0 | 1);
        bed.W(rt + (5 * 16), ctx5 | 1);
        bed.W(ctx0 + (0x08 * 16), sl | 1);                                               // 00:01.0 TT 00
        bed.W(ctx0 + (0x08 * 16) + 8, (ulong)aw | (1UL << 8));
        bed.W(ctx0 + (0x10 * 16), 0x1_0000 | ((ulong)VtdFormat.TtPassThrough << 2) | 1); // 00:02.0 TT 10
        bed.W(ctx0 + (0x10 * 16) + 8, (ulong)aw | (2UL << 8));
        bed.W(ctx5 + (0x18 * 16), sl2 | 1);                                              // 05:03.0 TT 00
        bed.W(ctx5 + (0x18 * 16) + 8, (ulong)aw | (3UL << 8));
        bed.SlMap(sl, levels, 0x1000, 0x30_0000, 1);
        bed.SlMap(sl, levels, 0x40_0000, 0x60_0000, 2);
        bed.SlMap(sl, levels, 0x4000_0000, 0x8000_0000, 3);
        bed.SlMap(sl2, levels, 0x2000, 0x31_0000, 1);
        bed.Enable(rt);
        VtdProbe[] probes = [.. new ushort[] { 0x08, 0x10, 0x0518, 0x0520, 0x0600 }.SelectMany(rid =>
            new ulong[] { 0x1000, 0x2000, 0x3000, 0x40_1234, 0x4000_5678, 0x7FFF_F000 }.Select(iova => new VtdProbe(rid, null, iova, DmaAccess.Write)))];
        AssertSameExportedRelocatedAndThroughJson(bed, probes);
    }

    // Scalable mode: second level (3/4/5 levels, 2M/1G), first level (4/5 levels, 1G), pass-through, a PASID beyond the first PASID table.
    [Theory]
    [InlineData("ScalableMode39Bit", 1, 4)]
    [InlineData("ScalableMode48Bit", 2, 4)]
    [InlineData("ScalableMode57Bit", 3, 4)]
    [InlineData("ScalableModeFirstLevel48Bit", 2, 4)]
    [InlineData("ScalableModeFirstLevel57Bit", 3, 5)]
    public void A_relocated_scalable_image_translates_as_the_original(string config, int aw, int flLevels)
    {
        VtdConfig cfg = (VtdConfig)typeof(VtdConfig).GetProperty(config)!.GetValue(null)!;
        using var bed = new Bed(cfg);
        ulong rt = bed.Page(), lo = bed.Page(), up = bed.Page(), dir = bed.Page(), pt0 = bed.Page(), pt2 = bed.Page(), sl = bed.Page(), fl = bed.Page();
        bed.W(rt + (2 * 16), lo | 1);
        bed.W(rt + (2 * 16) + 8, up | 1);
        foreach ((ulong c, ulong rid) in new[] { (lo, 0x08UL), (up, 0x88UL) })
        {
            bed.W(c + ((rid & 0x7F) * 32), dir | (1UL << VtdFormat.ScalableContextPdtsShift) | 1); // PDTS 1: 256 entries
        }

        bed.W(dir, pt0 | 1);
        bed.W(dir + (2 * 8), pt2 | 1);                                        // PASIDs 128..191
        void Pasid(ulong table, int i, ulong q0, ulong q2)
        {
            bed.W(table + ((ulong)i * 64), q0);
            bed.W(table + ((ulong)i * 64) + 8, 1);
            bed.W(table + ((ulong)i * 64) + 16, q2);
        }

        ulong slEntry = sl | ((ulong)aw << VtdFormat.PasidAwShift) | ((ulong)VtdFormat.PgttSecondLevel << VtdFormat.PasidPgttShift) | 1;
        Pasid(pt0, 0, slEntry, 0);
        Pasid(pt2, 5, slEntry, 0);                                            // PASID 133
        Pasid(pt2, 6, ((ulong)VtdFormat.PgttPassThrough << VtdFormat.PasidPgttShift) | (2UL << VtdFormat.PasidAwShift) | 1, 0);
        if (cfg.FirstLevelTranslation)
        {
            Pasid(pt2, 7, (2UL << VtdFormat.PasidAwShift) | ((ulong)VtdFormat.PgttFirstLevel << VtdFormat.PasidPgttShift) | 1,
                fl | (flLevels == 5 ? 1UL << VtdFormat.PasidFlpmShift : 0));
            bed.FlMap(fl, flLevels, 0x1000, 0x32_0000, 1, x => x, () => bed.Page());
            bed.FlMap(fl, flLevels, 0x40_0000, 0x60_0000, 2, x => x, () => bed.Page());
            bed.FlMap(fl, flLevels, 0x4000_0000, 0x8000_0000, 3, x => x, () => bed.Page());
        }

        int levels = aw + 2;
        bed.SlMap(sl, levels, 0x1000, 0x30_0000, 1);
        bed.SlMap(sl, levels, 0x40_0000, 0x60_0000, 2);
        bed.SlMap(sl, levels, 0x4000_0000, 0x8000_0000, 3);
        bed.Enable(rt | (1UL << 10));
        VtdProbe[] probes = [.. new ushort[] { 0x0208, 0x0288, 0x0210 }.SelectMany(rid =>
            new uint?[] { null, 0, 5, 133, 134, 135, 200 }.SelectMany(pasid =>
                new ulong[] { 0x1000, 0x3000, 0x40_1234, 0x4000_5678, 0x7FFF_F000 }.Select(iova => new VtdProbe(rid, pasid, iova, DmaAccess.Read))))];
        AssertSameExportedRelocatedAndThroughJson(bed, probes);
    }

    // The unit walks the root table latched by the last SRTP, not the RTADDR register: a driver that
    // has written a new RTADDR but not yet issued SRTP still translates through the old tables.
    [Fact]
    public void The_export_follows_the_latched_root_table_not_a_pending_rtaddr_write()
    {
        using var bed = new Bed(VtdConfig.Legacy48Bit);
        ulong rt = bed.Page(), ctx = bed.Page(), sl = bed.Page(), pending = bed.Page();
        bed.W(rt, ctx | 1);
        bed.W(ctx + (0x08 * 16), sl | 1);
        bed.W(ctx + (0x08 * 16) + 8, 2 | (1UL << 8));
        bed.SlMap(sl, 4, 0x1000, 0x30_0000, 1);
        bed.Enable(rt);
        bed.Unit.Write64(VtdRegister.Rtaddr, pending);           // not latched: no SRTP
        VtdProbe[] probes = [new(0x08, null, 0x1000, DmaAccess.Read)];
        Assert.Equal(VtdTranslationStatus.Translated, bed.Unit.Translate(0x08, null, 0x1000, 8, DmaAccess.Read).Status);
        AssertSame(bed, bed.Unit.ExportImage(), probes);
    }

    // A window above the host address width makes every rewritten pointer reserved: the unit faults
    // on the relocated image. Relocate must refuse such a window rather than produce it.
    [Fact]
    public void Relocation_refuses_a_window_the_unit_cannot_address()
    {
        using var bed = new Bed(VtdConfig.Legacy39Bit);
        ulong rt = bed.Page(), ctx = bed.Page(), sl = bed.Page();
        bed.W(rt, ctx | 1);
        bed.W(ctx + (0x08 * 16), sl | 1);
        bed.W(ctx + (0x08 * 16) + 8, 1 | (1UL << 8));
        bed.SlMap(sl, 3, 0x1000, 0x30_0000, 1);
        bed.Enable(rt);
        VtdImage image = bed.Unit.ExportImage();
        Assert.Throws<ArgumentException>(() => image.Relocate(1UL << 40, 1UL << 20));
        Assert.Throws<ArgumentException>(() => image.Relocate((1UL << 39) - 0x1000, 1UL << 20));
    }

    // Nested first-level tables cannot move (the second-level leaves that map them are kept): a window
    // that contains them is packed around them, and the relocated image still translates the same.
    [Fact]
    public void Relocation_packs_around_nested_first_level_tables_inside_the_window()
    {
        using var bed = new Bed(VtdConfig.ScalableModeFirstLevel48Bit);
        ulong rt = bed.Page(), ctx = bed.Page(), dir = bed.Page(), pt = bed.Page(), sl = bed.Page();
        bed.W(rt, ctx | 1);
        bed.W(ctx + (0x18 * 32), dir | 1);
        bed.W(dir, pt | 1);
        const ulong GuestRam = 0x200_0000;
        bed.SlMap(sl, 4, 0, GuestRam, 2);
        ulong gpaNext = 0x2000;
        bed.FlMap(0x1000, 4, 0x4000_0000, 0x30_0000, 1, g => GuestRam + g, () => { ulong g = gpaNext; gpaNext += 0x1000; return g; });
        bed.W(pt, sl | (2UL << VtdFormat.PasidAwShift) | ((ulong)VtdFormat.PgttNested << VtdFormat.PasidPgttShift) | 1);
        bed.W(pt + 8, 1);
        bed.W(pt + 16, 0x1000);
        bed.Enable(rt | (1UL << 10));
        VtdImage image = bed.Unit.ExportImage();
        VtdImage moved = image.Relocate(GuestRam, 0x40_0000);
        Assert.Equal(
            image.Chunks.Where(c => c.Kind == VtdImageChunkKind.NestedFirstLevelTable).Select(c => c.Address),
            moved.Chunks.Where(c => c.Kind == VtdImageChunkKind.NestedFirstLevelTable).Select(c => c.Address));
        Assert.All(moved.Chunks, c => Assert.InRange(c.Address, GuestRam, GuestRam + 0x40_0000 - 1));
        AssertSame(bed, moved, [new(0x18, null, 0x4000_0010, DmaAccess.Read), new(0x18, null, 0x4020_0010, DmaAccess.Read)]);
    }

    // Relocation rewrites only pointers the unit follows: a legacy context entry with the reserved
    // TT = 11 is not followed by the exporter (the unit faults on it) and its SLPTPTR must stay as written.
    [Fact]
    public void Relocation_leaves_the_pointer_of_a_reserved_tt_context_entry_alone()
    {
        using var bed = new Bed(VtdConfig.Legacy48Bit);
        ulong rt = bed.Page(), ctx = bed.Page(), sl = bed.Page();
        bed.W(rt, ctx | 1);
        bed.W(ctx + (0x08 * 16), sl | 1);
        bed.W(ctx + (0x08 * 16) + 8, 2 | (1UL << 8));
        bed.W(ctx + (0x10 * 16), sl | (3UL << VtdFormat.ContextTtShift) | 1);   // TT = 11, same SLPTPTR
        bed.W(ctx + (0x10 * 16) + 8, 2 | (2UL << 8));
        bed.SlMap(sl, 4, 0x1000, 0x30_0000, 1);
        bed.Enable(rt);
        VtdImage moved = bed.Unit.ExportImage().Relocate(0x300_0000, 0x40_0000);
        ulong ce = moved.ContextEntryAddress(0x10)!.Value;
        Assert.Equal(sl | (3UL << VtdFormat.ContextTtShift) | 1, moved.ReadUInt64(ce));
    }

    // One second-level root under a 3-level and a 4-level context entry: the export, which meets it
    // first as a 3-level root, must still export the level-1 tables only the 4-level reading reaches.
    [Fact]
    public void A_table_reached_again_at_a_higher_level_is_walked_again()
    {
        using var bed = new Bed(VtdConfig.Legacy48Bit);
        ulong rt = bed.Page(), ctx = bed.Page(), sl = bed.Page();
        bed.W(rt, ctx | 1);
        bed.W(ctx + (0x08 * 16), sl | 1);
        bed.W(ctx + (0x08 * 16) + 8, 1 | (1UL << 8));      // 3-level first
        bed.W(ctx + (0x10 * 16), sl | 1);
        bed.W(ctx + (0x10 * 16) + 8, 2 | (2UL << 8));      // 4-level, same root
        bed.SlMap(sl, 4, 0x1000, 0x30_0000, 1);
        bed.Enable(rt);
        VtdProbe[] probes = [new(0x10, null, 0x1000, DmaAccess.Read), new(0x08, null, 0x1000, DmaAccess.Read)];
        VtdImage image = bed.Unit.ExportImage();
        AssertSame(bed, image, probes);
        Assert.Equal(4, image.Chunks.Single(c => c.Address == sl).Level);
        AssertSame(bed, image.Relocate(0x300_0000, 0x40_0000), probes);   // both readings survive relocation
    }

    // The same root under a 3-level and a 4-level context entry: a word of a table both readings reach
    // is a table pointer in the 4-level reading and a 4 KiB leaf in the 3-level one, one level lower.
    // Relocation must keep that leaf's output (the table it points at stays where it is), so the
    // 3-level reading translates as before.
    [Fact]
    public void Relocation_keeps_the_outputs_of_a_table_also_read_one_level_lower()
    {
        using var bed = new Bed(VtdConfig.Legacy48Bit);
        ulong rt = bed.Page(), ctx = bed.Page(), sl = bed.Page();
        bed.W(rt, ctx | 1);
        bed.W(ctx + (0x08 * 16), sl | 1);
        bed.W(ctx + (0x08 * 16) + 8, 1 | (1UL << 8));      // 3-level
        bed.W(ctx + (0x10 * 16), sl | 1);
        bed.W(ctx + (0x10 * 16) + 8, 2 | (2UL << 8));      // 4-level, same root
        bed.SlMap(sl, 4, 0x1000, 0x30_0000, 1);
        bed.Enable(rt);

        // 00:01.0 reads the 4-level tree's level-2 table as its leaf table: IOVA 0 lands on the level-1 table.
        VtdProbe[] probes = [new(0x10, null, 0x1000, DmaAccess.Read), new(0x08, null, 0x0, DmaAccess.Read), new(0x08, null, 0x1000, DmaAccess.Write)];
        AssertSameExportedRelocatedAndThroughJson(bed, probes);
    }

    // One PASID directory under two context entries with different PDTS (1 KiB and 2 KiB): the entries
    // beyond the smaller size are reached through the larger one only, whichever context the export
    // meets first.
    [Theory]
    [InlineData(0, 1)]
    [InlineData(1, 0)]
    public void A_pasid_directory_shared_at_two_sizes_is_exported_at_the_larger(int pdtsLo, int pdtsUp)
    {
        using var bed = new Bed(VtdConfig.ScalableMode48Bit);
        ulong rt = bed.Page(), lo = bed.Page(), up = bed.Page(), dir = bed.Page(), pt0 = bed.Page(), pt200 = bed.Page(), sl = bed.Page();
        bed.W(rt, lo | 1);
        bed.W(rt + 8, up | 1);
        bed.W(lo + (0x08 * 32), dir | ((ulong)pdtsLo << VtdFormat.ScalableContextPdtsShift) | 1); // 00:01.0
        bed.W(up + (0x08 * 32), dir | ((ulong)pdtsUp << VtdFormat.ScalableContextPdtsShift) | 1); // 00:11.0
        bed.W(dir, pt0 | 1);
        bed.W(dir + (200 * 8), pt200 | 1);                                       // PASIDs 12800..12863
        ulong slEntry = sl | (2UL << VtdFormat.PasidAwShift) | ((ulong)VtdFormat.PgttSecondLevel << VtdFormat.PasidPgttShift) | 1;
        foreach (ulong t in new[] { pt0, pt200 })
        {
            bed.W(t + (3 * 64), slEntry);
            bed.W(t + (3 * 64) + 8, 1);
        }

        bed.SlMap(sl, 4, 0x1000, 0x30_0000, 1);
        bed.Enable(rt | (1UL << 10));
        VtdProbe[] probes = [.. new ushort[] { 0x08, 0x88 }.SelectMany(rid =>
            new uint?[] { 3, 12803 }.Select(pasid => new VtdProbe(rid, pasid, 0x1000, DmaAccess.Read)))];
        VtdImage image = bed.Unit.ExportImage();
        Assert.Equal(2048, image.Chunks.Single(c => c.Kind == VtdImageChunkKind.PasidDirectory).Size);
        AssertSame(bed, image, probes);
        AssertSame(bed, image.Relocate(0x300_0000, 0x40_0000), probes);
    }
}
