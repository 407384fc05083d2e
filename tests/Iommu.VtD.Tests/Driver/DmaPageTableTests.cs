using CsCheck;
using Iommu.Memory;
using Iommu.VtD.Driver;

namespace Iommu.VtD.Tests.Driver;

public sealed class DmaPageTableTests : IDisposable
{
    private const ulong K4 = 4096, M2 = 2UL << 20, G1 = 1UL << 30;
    private const ulong RW = DmaPte.Read | DmaPte.Write;
    private readonly PhysicalMemory _memory = new(64 * Sizes.GiB);
    private readonly FrameAllocator _frames;

    public DmaPageTableTests()
    {
        _frames = new FrameAllocator(_memory, 63 * Sizes.GiB, 512 * Sizes.MiB);
    }

    public void Dispose() => _memory.Dispose();

    private DmaPageTable NewTable(int levels = 4)
    {
        Assert.Equal(Errno.None, DmaPageTable.Create(_memory, _frames, levels, out DmaPageTable? t));
        return t!;
    }

    private static List<(ulong Iova, ulong Pa, ulong Size, ulong Pte)> Leaves(DmaPageTable t)
    {
        var list = new List<(ulong, ulong, ulong, ulong)>();
        t.ForEachLeaf((i, p, s, e) => list.Add((i, p, s, e)));
        return list;
    }

    [Theory]
    [InlineData(3)]
    [InlineData(4)]
    [InlineData(5)]
    public void Empty_table_translates_nothing(int levels)
    {
        DmaPageTable t = NewTable(levels);

        Assert.Equal(0UL, t.IovaToPhys(0));
        Assert.Equal(0UL, t.IovaToPhys(0x1234_5000));
        Assert.Equal(0UL, t.Unmap(0x1000, K4));
        Assert.Empty(Leaves(t));
        Assert.Equal(1, t.TableFrames);
    }

    [Theory]
    [InlineData(3, K4)]
    [InlineData(3, M2)]
    [InlineData(3, G1)]
    [InlineData(4, K4)]
    [InlineData(4, M2)]
    [InlineData(4, G1)]
    [InlineData(5, K4)]
    [InlineData(5, M2)]
    [InlineData(5, G1)]
    public void Map_one_page_of_each_size_translates_with_offset(int levels, ulong size)
    {
        DmaPageTable t = NewTable(levels);
        ulong iova = 3 * G1, pa = 5 * G1;

        Assert.Equal(Errno.None, t.Map(iova, pa, size, RW, superpageLevels: 2, out ulong mapped));

        Assert.Equal(size, mapped);
        Assert.Equal(pa + 42, t.IovaToPhys(iova + 42));
        Assert.Equal(pa + size - 1, t.IovaToPhys(iova + size - 1));
        Assert.Equal(0UL, t.IovaToPhys(iova + size));
        Assert.Equal(0UL, t.IovaToPhys(iova - 1));
        var leaf = Assert.Single(Leaves(t));
        Assert.Equal((iova, pa, size), (leaf.Iova, leaf.Pa, leaf.Size));
        Assert.Equal(size > K4, DmaPte.IsSuperpage(leaf.Pte));
        Assert.Equal(RW, leaf.Pte & 0xfff & ~DmaPte.LargePage);
    }

    [Fact]
    public void Map_ramps_up_to_superpages_as_alignment_allows()
    {
        DmaPageTable t = NewTable();

        Assert.Equal(Errno.None, t.Map(0x1000, 0x20_1000, 4 * Sizes.MiB, RW, 2, out ulong mapped));

        Assert.Equal(4 * Sizes.MiB, mapped);
        var sizes = Leaves(t).GroupBy(l => l.Size).ToDictionary(g => g.Key, g => g.Count());
        Assert.Equal(512, sizes[K4]); // 511 before the 2M page, 1 after it
        Assert.Equal(1, sizes[M2]);
        Assert.Equal(0x40_0abcUL, t.IovaToPhys(0x20_0abc));
    }

    [Fact]
    public void Without_superpage_support_everything_is_4k()
    {
        DmaPageTable t = NewTable();

        Assert.Equal(Errno.None, t.Map(0, 0, 4 * Sizes.MiB, RW, 0, out _));

        Assert.All(Leaves(t), l => Assert.Equal(K4, l.Size));
        Assert.Equal(1024, Leaves(t).Count);
    }

    [Fact]
    public void Misaligned_physical_address_prevents_superpages()
    {
        DmaPageTable t = NewTable();

        Assert.Equal(Errno.None, t.Map(0, 0x1000, 2 * Sizes.MiB, RW, 2, out _));

        Assert.All(Leaves(t), l => Assert.Equal(K4, l.Size));
    }

    [Fact]
    public void Unmapping_4k_inside_a_superpage_removes_and_reports_the_whole_superpage()
    {
        DmaPageTable t = NewTable();
        t.Map(M2, 4 * M2, M2, RW, 2, out _);

        Assert.Equal(M2, t.Unmap(M2 + (5 * K4), K4));

        Assert.Equal(0UL, t.IovaToPhys(M2));
        Assert.Empty(Leaves(t));
    }

    [Fact]
    public void Unmap_of_a_hole_returns_zero_and_changes_nothing()
    {
        DmaPageTable t = NewTable();
        t.Map(0x10_0000, 0x10_0000, K4, RW, 2, out _);

        Assert.Equal(0UL, t.Unmap(0x20_0000, K4));
        Assert.Equal(0UL, t.Unmap(0x10_1000, K4));
        Assert.Equal(0x10_0000UL, t.IovaToPhys(0x10_0000));
    }

    [Fact]
    public void Unmapping_a_whole_table_span_frees_the_table_after_the_flush()
    {
        DmaPageTable t = NewTable();
        t.Map(G1, 0, K4, RW, 2, out _); // needs L3 and L2 and L1 tables under the root
        Assert.Equal(4, t.TableFrames);
        long live = _frames.LiveFrames;

        Assert.Equal(K4, t.Unmap(G1, K4)); // a 4K range: the L1 table still spans more, so it stays
        Assert.Equal(0, t.ReleasePendingFrees());

        t.Map(G1, 0, K4, RW, 2, out _);
        Assert.Equal(K4, t.Unmap(G1, G1)); // covers the whole span of the L2 table below the L3 entry; one 4K leaf was mapped
        Assert.Equal(live, _frames.LiveFrames); // not yet: pending until the IOTLB flush
        Assert.Equal(2, t.ReleasePendingFrees());
        Assert.Equal(live - 2, _frames.LiveFrames);
        Assert.Equal(2, t.TableFrames);
    }

    [Fact]
    public void A_superpage_replaces_an_empty_table_left_by_earlier_unmaps()
    {
        DmaPageTable t = NewTable();
        t.Map(0, 0, K4, RW, 2, out _);
        t.Unmap(0, K4);
        long tables = t.TableFrames;

        t.Map(0, 8 * M2, M2, RW, 2, out _);
        t.ReleasePendingFrees();

        Assert.Equal(tables - 1, t.TableFrames);
        Assert.Equal(8 * M2 + 0x1234, t.IovaToPhys(0x1234));
        Assert.True(DmaPte.IsSuperpage(Assert.Single(Leaves(t)).Pte));
    }

    [Fact]
    public void Remapping_a_present_entry_keeps_the_old_one()
    {
        DmaPageTable t = NewTable();
        t.Map(0x5000, 0x9000, K4, RW, 2, out _);

        Assert.Equal(Errno.None, t.Map(0x5000, 0xA000, K4, DmaPte.Read, 2, out ulong mapped));

        Assert.Equal(K4, mapped);
        Assert.Equal(0x9000UL, t.IovaToPhys(0x5000));
    }

    [Fact]
    public void A_run_over_present_entries_keeps_them_and_fills_the_rest()
    {
        // Entries 5 and 6 form one 16-byte pair of the run below, 9 shares a pair with 8.
        DmaPageTable t = NewTable();
        foreach (ulong page in new ulong[] { 5, 6, 9 })
        {
            t.Map(page * K4, 0x100_0000 + (page * K4), K4, DmaPte.Read, 0, out _);
        }

        Assert.Equal(Errno.None, t.Map(3 * K4, 0x200_0000, 10 * K4, RW, 0, out ulong mapped));

        Assert.Equal(10 * K4, mapped);
        for (ulong page = 3; page < 13; page++)
        {
            bool old = page is 5 or 6 or 9;
            Assert.Equal(old ? 0x100_0000 + (page * K4) : 0x200_0000 + ((page - 3) * K4), t.IovaToPhys(page * K4));
        }

        Assert.Equal(0UL, t.IovaToPhys(2 * K4));
        Assert.Equal(0UL, t.IovaToPhys(13 * K4));
    }

    [Fact]
    public void A_long_run_over_present_entries_keeps_them_and_an_unmap_counts_only_what_was_present()
    {
        // Runs of 16 and more entries go eight at a time where the CPU has 64-byte vectors: present
        // entries inside one aligned group of eight (17..19, 24), at its edges (31, 32) and alone (45).
        DmaPageTable t = NewTable();
        ulong[] old = [17, 18, 19, 24, 31, 32, 45];
        foreach (ulong page in old)
        {
            t.Map(page * K4, 0x100_0000 + (page * K4), K4, DmaPte.Read, 0, out _);
        }

        Assert.Equal(Errno.None, t.Map(11 * K4, 0x200_0000, 40 * K4, RW, 0, out ulong mapped));

        Assert.Equal(40 * K4, mapped);
        for (ulong page = 11; page < 51; page++)
        {
            Assert.Equal(old.Contains(page) ? 0x100_0000 + (page * K4) : 0x200_0000 + ((page - 11) * K4), t.IovaToPhys(page * K4));
        }

        Assert.Equal(0UL, t.IovaToPhys(10 * K4));
        Assert.Equal(0UL, t.IovaToPhys(51 * K4));

        // Holes: 8 pages before the run and 13 after it were never mapped; the unmap reports the 40.
        Assert.Equal(40 * K4, t.Unmap(3 * K4, 61 * K4));
        for (ulong page = 0; page < 70; page++)
        {
            Assert.Equal(0UL, t.IovaToPhys(page * K4));
        }
    }

    [Theory]
    [InlineData(0, 256, 0, 256)]     // aligned run, unmapped whole
    [InlineData(1, 255, 1, 255)]     // odd start: a single entry before the first pair
    [InlineData(7, 300, 8, 33)]      // unmap from an even entry with an odd count: a single entry after the last pair
    [InlineData(7, 300, 9, 1)]
    [InlineData(500, 30, 501, 10)]   // the run crosses into the next leaf table; the unmap stays in the first
    [InlineData(500, 30, 505, 20)]   // the unmap crosses the table boundary too
    public void Unmapping_part_of_a_run_clears_exactly_that_part(int first, int count, int from, int pages)
    {
        DmaPageTable t = NewTable();
        ulong baseIova = 0x40_0000_0000;
        t.Map(baseIova + ((ulong)first * K4), 0x300_0000, (ulong)count * K4, RW, 0, out _);

        Assert.Equal((ulong)pages * K4, t.Unmap(baseIova + ((ulong)from * K4), (ulong)pages * K4));

        for (int page = first - 2; page < first + count + 2; page++)
        {
            bool mapped = page >= first && page < first + count && (page < from || page >= from + pages);
            ulong expected = mapped ? 0x300_0000 + ((ulong)(page - first) * K4) + 8 : 0;
            Assert.Equal(expected, page < 0 ? 0 : t.IovaToPhys(baseIova + ((ulong)page * K4) + 8));
        }
    }

    [Theory]
    [InlineData(3, 0x3FE0_0000UL)]      // straddles the 2 MiB and 1 GiB table boundaries
    [InlineData(4, 0x3FE0_0000UL)]      // low IOVAs: a walk taking the wrong level count finds real tables
    [InlineData(5, 0x3FE0_0000UL)]
    [InlineData(4, 0x7F_FFE0_0000UL)]   // straddles the 512 GiB boundary too
    [InlineData(5, 0x7F_FFE0_0000UL)]
    public void Runs_at_any_offset_agree_with_a_page_by_page_model(int levels, ulong baseIova)
    {
        // 4K runs at any page offset and length, over present entries or not, unmapped at any offset,
        // in two windows (IOVA 0 and baseIova): exercises the one-table fast paths, their single
        // entries around the 16-byte pairs, and runs that cross leaf tables, against a page-by-page
        // reference. The window at 0 makes a walk that assumes the wrong level count land in real
        // tables of the other window.
        Gen<(bool Map, int Window, int First, int Count)> op = Gen.Select(Gen.Bool, Gen.Int[0, 1], Gen.Int[0, 2047], Gen.Int[1, 700]);
        op.Array[1, 30].Sample(ops =>
        {
            using var mem = new PhysicalMemory(4 * Sizes.GiB);
            var frames = new FrameAllocator(mem, 2 * Sizes.GiB, 64 * Sizes.MiB);
            DmaPageTable.Create(mem, frames, levels, out DmaPageTable? t);
            var model = new Dictionary<(int, int), ulong>();
            ulong[] bases = [0, baseIova];
            foreach (var (map, w, first, count) in ops)
            {
                ulong iova = bases[w] + ((ulong)first * K4), size = (ulong)count * K4;
                if (map)
                {
                    ulong pa = 0x1000_0000 + ((ulong)w * 0x1000_0000) + ((ulong)first * 3 * K4);
                    Assert.Equal(Errno.None, t!.Map(iova, pa, size, RW, 0, out ulong mapped));
                    Assert.Equal(size, mapped);
                    for (int i = 0; i < count; i++)
                    {
                        model.TryAdd((w, first + i), pa + ((ulong)i * K4));
                    }
                }
                else
                {
                    // Every present page of the range goes, holes or not; the result is their total.
                    ulong present = 0;
                    for (int i = 0; i < count; i++)
                    {
                        present += model.Remove((w, first + i)) ? K4 : 0;
                    }

                    Assert.Equal(present, t!.Unmap(iova, size));

                    t.ReleasePendingFrees();
                }
            }

            for (int w = 0; w < 2; w++)
            {
                for (int page = 0; page < 2048 + 700; page++)
                {
                    ulong expected = model.TryGetValue((w, page), out ulong pa) ? pa + 0x10 : 0;
                    Assert.Equal(expected, t!.IovaToPhys(bases[w] + ((ulong)page * K4) + 0x10));
                }
            }

            Assert.Equal(model.Count, Leaves(t!).Count);
            t!.FreeAll();
            Assert.Equal(0, frames.LiveFrames);
        }, iter: 100);
    }

    [Fact]
    public void Mapping_without_read_or_write_is_einval()
    {
        DmaPageTable t = NewTable();

        Assert.Equal(Errno.EINVAL, t.Map(0, 0, K4, DmaPte.Snoop, 2, out ulong mapped));

        Assert.Equal(0UL, mapped);
        Assert.Empty(Leaves(t));
    }

    [Theory]
    [InlineData(0x1001UL, 0x2000UL, K4)]     // the one-page fast path
    [InlineData(0x1000UL, 0x2800UL, K4)]
    [InlineData(0x1000UL, 0x2000UL, K4 + 1)] // the general path used to loop on the last partial page
    [InlineData(0x1000UL, 0x2000UL, 3 * K4 - 8)]
    [InlineData(0x1800UL, 0x2000UL, 3 * K4)]
    public void Unaligned_iova_paddr_or_size_is_einval_and_maps_nothing(ulong iova, ulong paddr, ulong size)
    {
        DmaPageTable t = NewTable();
        t.Map(0, 0, K4, RW, 0, out _); // the leaf table exists, so every fast path is open

        Assert.Equal(Errno.EINVAL, t.Map(iova, paddr, size, RW, 0, out ulong mapped));

        Assert.Equal(0UL, mapped);
        Assert.Single(Leaves(t));
    }

    [Fact]
    public void Snoop_bit_is_kept_and_other_bits_are_dropped()
    {
        DmaPageTable t = NewTable();

        t.Map(0, 0x7000, K4, RW | DmaPte.Snoop | (1UL << 62), 2, out _);

        Assert.Equal(0x7000UL | RW | DmaPte.Snoop, Assert.Single(Leaves(t)).Pte);
    }

    [Theory]
    [InlineData(3)]
    [InlineData(4)]
    [InlineData(5)]
    public void The_last_page_of_the_address_space_maps(int levels)
    {
        DmaPageTable t = NewTable(levels);
        ulong last = (1UL << t.AddressWidth) - K4;

        Assert.Equal(Errno.None, t.Map(last, 0x3000, K4, RW, 2, out _));

        Assert.Equal(0x3000UL + 0xfff, t.IovaToPhys(last + 0xfff));
        Assert.Equal(K4, t.Unmap(last, K4));
        Assert.Equal(0UL, t.IovaToPhys(last));
    }

    [Fact]
    public void A_range_maps_where_asked_or_is_efault_and_changes_nothing_at_any_width()
    {
        // The walks index with the bits below the table's width: a range that reaches past it (or past
        // 2^64) used to map its alias, the IOVA modulo 2^width, and report success. Ranges at random
        // distances either side of the width's end, of 0 and of 2^64, of any level count, size and
        // superpage setting, against "fits": a map that fits lands exactly there; any other is EFAULT,
        // maps nothing and leaves every entry as it was.
        Gen<int> anchor = Gen.Int[0, 3];
        Gen<long> pagesFromAnchor = Gen.OneOf(Gen.Long[-1100, 1100], Gen.Long[-4, 4]);
        Gen<ulong> pages = Gen.OneOfConst(1UL, 2UL, 3UL, 511UL, 512UL, 513UL, 1024UL);
        Gen.Select(Gen.Int[2, 6], anchor, pagesFromAnchor, pages, Gen.Int[0, 2]).Sample((levels, a, delta, n, superpages) =>
        {
            using var mem = new PhysicalMemory(4 * Sizes.GiB);
            var frames = new FrameAllocator(mem, 2 * Sizes.GiB, 64 * Sizes.MiB);
            Assert.Equal(Errno.None, DmaPageTable.Create(mem, frames, levels, out DmaPageTable? created));
            DmaPageTable t = created!;
            int width = t.AddressWidth;
            ulong end = width >= 64 ? 0 : 1UL << width; // 0: the space ends at 2^64
            ulong last = unchecked(end - 1);

            // Sentinels near both ends of the space, out of the ranges' reach (at most 12.4 MiB from an anchor).
            Assert.Equal(Errno.None, t.Map(16 * Sizes.MiB, 0x7000_0000, K4, RW, 0, out _));
            Assert.Equal(Errno.None, t.Map(last - K4 + 1 - (16 * Sizes.MiB), 0x7100_0000, K4, RW, 0, out _));
            var before = Leaves(t);

            ulong anchorIova = unchecked(a switch { 0 => 0, 1 => end, 2 => ulong.MaxValue - (4 * M2) + 1, _ => end - (4 * M2) });
            ulong iova = unchecked(anchorIova + (ulong)(delta * (long)K4)); // wraps around 2^64 as an IOVA would
            ulong size = n * K4;
            ulong pa = 0x4000_0000;
            bool fits = iova <= last && size - 1 <= last - iova;

            Errno err = t.Map(iova, pa, size, RW, superpages, out ulong mapped);

            if (fits)
            {
                Assert.Equal(Errno.None, err);
                Assert.Equal(size, mapped);
                Assert.Equal(pa + 8, t.IovaToPhys(iova + 8));
                Assert.Equal(pa + size - 8, t.IovaToPhys(iova + size - 8));
                Assert.Equal(size, t.Unmap(iova, size));
                t.ReleasePendingFrees();
            }
            else
            {
                Assert.Equal(Errno.EFAULT, err);
                Assert.Equal(0UL, mapped);
                Assert.Contains($"{width}-bit", ErrorDetail.LastMessage, StringComparison.Ordinal);
                Assert.Equal(0UL, t.Unmap(iova, size)); // nothing there, and nothing else goes
            }

            Assert.Equal(before, Leaves(t));
            Assert.Equal(0x7000_0008UL, t.IovaToPhys((16 * Sizes.MiB) + 8));
            t.FreeAll();
            Assert.Equal(0, frames.LiveFrames);
        }, iter: 400);
    }

    [Fact]
    public void Any_superpage_count_maps_only_the_leaf_sizes_the_table_holds()
    {
        // superpageLevels beyond 2 (or beyond a 2-level table's top) used to write a 512 GiB "leaf" into a
        // PML4E, which every later walk took for a pointer to a table at 0, or to fail a 3-level map with
        // ENOMEM. Any count, any level count, sizes up to 512 GiB: the leaves are the largest of 4 KiB,
        // 2 MiB (count >= 1) and 1 GiB (count >= 2, and 3 levels or more) that alignment and size allow.
        Gen<ulong> sizes = Gen.OneOfConst(M2, G1, 2 * G1, 512 * G1);
        Gen.Select(Gen.Int[2, 6], Gen.Int[-3, 9], sizes, Gen.Int[0, 3]).Sample((levels, superpages, size, slot) =>
        {
            int allowed = Math.Clamp(superpages, 0, Math.Min(2, levels - 1));
            ulong leaf = allowed >= 2 && size >= G1 ? G1 : allowed >= 1 ? M2 : K4;
            using var mem = new PhysicalMemory(4 * Sizes.GiB);
            var frames = new FrameAllocator(mem, 2 * Sizes.GiB, 256 * Sizes.MiB);
            Assert.Equal(Errno.None, DmaPageTable.Create(mem, frames, levels, out DmaPageTable? created));
            DmaPageTable t = created!;
            ulong iova = (ulong)slot * size;
            if (size / leaf > 65536 || iova + size - 1 > (1UL << Math.Min(t.AddressWidth, 63)) - 1)
            {
                return; // too many 4 KiB leaves to be quick, or outside a small table (the width property covers that)
            }

            ulong pa = 0x40_0000_0000 + (ulong)slot * G1;

            Assert.Equal(Errno.None, t.Map(iova, pa, size, RW, superpages, out ulong mapped));

            Assert.Equal(size, mapped);
            var leaves = Leaves(t);
            Assert.Equal(size / leaf, (ulong)leaves.Count);
            Assert.All(leaves, l => Assert.Equal(leaf, l.Size));
            Assert.Equal(pa + size - 8, t.IovaToPhys(iova + size - 8));
            Assert.Equal(pa + (size / 2) + 8, t.IovaToPhys(iova + (size / 2) + 8));
            Assert.Equal(size, t.Unmap(iova, size));
            t.ReleasePendingFrees();
            t.FreeAll();
            Assert.Equal(0, frames.LiveFrames);
        }, iter: 300);
    }

    [Fact]
    public void An_unmap_at_any_byte_offset_removes_exactly_the_pages_it_overlaps()
    {
        // The one-page fast paths took "size is 4 KiB" for "one page": an unaligned 4 KiB range overlaps two
        // pages, and they removed only the first (the general path removed both). Random present pages, a range at
        // any byte offset and of any byte length, either overload, against the pages the range overlaps.
        Gen<int> offsets = Gen.OneOf(Gen.Int[0, 48 * 4096], Gen.Int[0, 47].Select(p => p * 4096), Gen.Select(Gen.Int[0, 47], Gen.Int[1, 4095]).Select((p, o) => (p * 4096) + o));
        Gen<int> lengths = Gen.OneOf(Gen.Int[1, 12 * 4096], Gen.Int[1, 12].Select(n => n * 4096), Gen.Const(4096));
        Gen.Select(Gen.Int[3, 5], Gen.Bool.Array[48], offsets, lengths, Gen.Bool)
            .Sample((levels, presentPages, offset, length, withSpan) =>
        {
            using var mem = new PhysicalMemory(4 * Sizes.GiB);
            var frames = new FrameAllocator(mem, 2 * Sizes.GiB, 64 * Sizes.MiB);
            Assert.Equal(Errno.None, DmaPageTable.Create(mem, frames, levels, out DmaPageTable? created));
            DmaPageTable t = created!;
            const ulong Base = 0x3FFE_0000; // the window straddles a leaf table's end
            for (int page = 0; page < 48; page++)
            {
                if (presentPages[page])
                {
                    Assert.Equal(Errno.None, t.Map(Base + ((ulong)page * K4), 0x1000_0000 + ((ulong)page * K4), K4, RW, 0, out _));
                }
            }

            ulong iova = Base + (ulong)offset, size = (ulong)length;
            ulong first = (iova - Base) / K4, last = (iova + size - 1 - Base) / K4;
            ulong expected = 0;
            for (ulong page = first; page <= last && page < 48; page++)
            {
                expected += presentPages[page] ? K4 : 0;
            }

            ulong removed = withSpan ? t.Unmap(iova, size, out _, out _) : t.Unmap(iova, size);

            Assert.Equal(expected, removed);
            for (int page = 0; page < 48; page++)
            {
                bool present = presentPages[page] && ((ulong)page < first || (ulong)page > last);
                Assert.Equal(present ? 0x1000_0008 + ((ulong)page * K4) : 0, t.IovaToPhys(Base + ((ulong)page * K4) + 8));
            }
        }, iter: 800);
    }

    [Fact]
    public void Enomem_reports_what_was_mapped_and_leaks_nothing()
    {
        DmaPageTable t = NewTable();
        long before = _frames.LiveFrames;
        _frames.FailNth(4); // root exists; L3, L2, L1 for the first 2M, then fails on the second L1

        Errno err = t.Map(0, 0, 4 * Sizes.MiB, RW, 0, out ulong mapped);

        Assert.Equal(Errno.ENOMEM, err);
        Assert.Equal(2 * Sizes.MiB, mapped);
        Assert.Equal(0x1f_f000UL, t.IovaToPhys(0x1f_f000));
        Assert.Equal(0UL, t.IovaToPhys(0x20_0000));
        t.FreeAll();
        Assert.Equal(before - 1, _frames.LiveFrames);
    }

    [Fact]
    public void Reducing_levels_keeps_low_mappings_and_frees_the_old_top()
    {
        DmaPageTable t = NewTable(5);
        t.Map(0x1234_5000, 0x6000, K4, RW, 2, out _);
        long tables = t.TableFrames;

        t.ReduceLevels(3);

        Assert.Equal(3, t.Levels);
        Assert.Equal(39, t.AddressWidth);
        Assert.Equal(tables - 2, t.TableFrames);
        Assert.Equal(0x6042UL, t.IovaToPhys(0x1234_5042));
    }

    [Fact]
    public void Map_unmap_and_translate_allocate_nothing()
    {
        DmaPageTable t = NewTable();
        Cycle(t); // warm-up: tables exist, code is jitted

        Assert.Equal(0, Iommu.VtD.Tests.Infrastructure.Allocations.Fewest(() =>
        {
            for (int r = 0; r < 10; r++)
            {
                Cycle(t);
            }
        }));

        static void Cycle(DmaPageTable t)
        {
            for (ulong i = 0; i < 256; i++)
            {
                t.Map(0x4000_0000 + (i * K4), 0x2_0000_0000 + (i * K4), K4, RW, 2, out _);
            }

            for (ulong i = 0; i < 256; i++)
            {
                if (t.IovaToPhys(0x4000_0000 + (i * K4) + 8) != 0x2_0000_0000 + (i * K4) + 8)
                {
                    throw new InvalidOperationException("bad translation");
                }
            }

            for (ulong i = 0; i < 256; i++)
            {
                t.Unmap(0x4000_0000 + (i * K4), K4);
            }

            t.ReleasePendingFrees();
        }
    }

    [Fact]
    public void Concurrent_maps_of_disjoint_ranges_are_all_visible()
    {
        DmaPageTable t = NewTable();
        Parallel.For(0, 8, thread =>
        {
            for (ulong i = 0; i < 2000; i++)
            {
                ulong page = ((ulong)thread * 2000) + i; // threads interleave inside shared tables
                ulong iova = (i * 8 * K4) + ((ulong)thread * K4);
                Assert.Equal(Errno.None, t.Map(iova, page * K4, K4, RW, 2, out _));
            }
        });

        for (int thread = 0; thread < 8; thread++)
        {
            for (ulong i = 0; i < 2000; i++)
            {
                ulong iova = (i * 8 * K4) + ((ulong)thread * K4);
                Assert.Equal((((ulong)thread * 2000) + i) * K4, t.IovaToPhys(iova));
            }
        }
    }

    [Fact]
    public void Random_maps_and_unmaps_agree_with_a_reference_model()
    {
        // Ops: map a free range (size in pages, page-aligned iova/pa with random extra alignment) or
        // unmap a range that was mapped as a whole, as VFIO does. Reference: range list.
        Gen<(bool Map, int Slot, int Pages, int PaShift)> op =
            Gen.Select(Gen.Bool, Gen.Int[0, 15], Gen.OneOfConst(1, 3, 512, 513, 1024, 262144), Gen.Int[0, 2]);
        op.Array[1, 40].Sample(ops =>
        {
            using var mem = new PhysicalMemory(64 * Sizes.GiB);
            var frames = new FrameAllocator(mem, 60 * Sizes.GiB, Sizes.GiB);
            DmaPageTable.Create(mem, frames, 4, out DmaPageTable? t);
            var model = new Dictionary<int, (ulong Iova, ulong Pa, ulong Size)>();
            foreach (var (map, slot, pages, paShift) in ops)
            {
                ulong iova = (ulong)slot * 2 * G1;          // slots are 2 GiB apart: ranges never overlap
                if (map && !model.ContainsKey(slot))
                {
                    ulong size = (ulong)pages * K4;
                    ulong pa = (ulong)slot * 2 * G1 + (paShift == 0 ? 0 : paShift == 1 ? K4 : M2);
                    Assert.Equal(Errno.None, t!.Map(iova, pa, size, RW, 2, out ulong mapped));
                    Assert.Equal(size, mapped);
                    model[slot] = (iova, pa, size);
                }
                else if (!map && model.Remove(slot, out var r))
                {
                    ulong done = 0;
                    while (done < r.Size)
                    {
                        ulong n = t!.Unmap(r.Iova + done, r.Size - done);
                        Assert.True(n > 0);
                        done += n;
                    }

                    Assert.Equal(r.Size, done);
                    t!.ReleasePendingFrees();
                }

                foreach (var (i, p, s) in model.Values)
                {
                    foreach (ulong off in new ulong[] { 0, 8, s / 2, s - 8 })
                    {
                        Assert.Equal(p + off, t!.IovaToPhys(i + off));
                    }

                    Assert.Equal(0UL, t!.IovaToPhys(i + s));
                }
            }

            ulong covered = 0;
            t!.ForEachLeaf((_, _, s, _) => covered += s);
            Assert.Equal(model.Values.Aggregate(0UL, (a, r) => a + r.Size), covered);
            t.FreeAll();
            Assert.Equal(0, frames.LiveFrames);
        }, iter: 60);
    }
}
