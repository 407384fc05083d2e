using CsCheck;
using Iommu.Memory;
using Iommu.VtD.Driver;

namespace Iommu.VtD.Tests.Driver;

/// <summary>
/// First-level tables through the generic walker (<c>PageTable&lt;FirstLevelFormat&gt;</c>): the bytes
/// Linux 5.15 writes (pasid-sva.md §1.4 "Entries Linux writes"), read back from memory as the unit reads
/// them, on 4 and 5 levels and every page size.
/// </summary>
public sealed class FirstLevelPageTableTests : IDisposable
{
    private const ulong K4 = 4096, M2 = 2UL << 20, G1 = 1UL << 30;
    private const ulong P = 1, RwBit = 1UL << 1, Us = 1UL << 2, A = 1UL << 5, D = 1UL << 6, Ps = 1UL << 7, Snp = 1UL << 11, Xd = 1UL << 63;
    private readonly PhysicalMemory _memory = new(64 * Sizes.GiB);
    private readonly FrameAllocator _frames;

    public FirstLevelPageTableTests()
    {
        _frames = new FrameAllocator(_memory, 63 * Sizes.GiB, 512 * Sizes.MiB);
    }

    public void Dispose() => _memory.Dispose();

    private PageTable<FirstLevelFormat> NewTable(int levels)
    {
        Assert.True(_frames.TryAllocate(out ulong root));
        return new PageTable<FirstLevelFormat>(_memory, _frames, root, levels);
    }

    // The entry the unit reads for iova at each level, top first (stops at a leaf or an absent entry).
    private List<ulong> Path(ulong root, int levels, ulong iova)
    {
        var path = new List<ulong>();
        ulong table = root;
        for (int level = levels; level >= 1; level--)
        {
            ulong e = _memory.ReadUInt64(table + (((iova >> (12 + (9 * (level - 1)))) & 511) * 8));
            path.Add(e);
            if ((e & P) == 0 || level == 1 || (level <= 3 && (e & Ps) != 0))
            {
                break;
            }

            table = e & 0x000F_FFFF_FFFF_F000UL;
        }

        return path;
    }

    private static ulong ExpectedLeaf(ulong pa, ulong attr, ulong size) =>
        pa | P | Us | A | Xd | ((attr & DmaPte.Write) != 0 ? RwBit | D : 0) | (attr & DmaPte.Snoop) | (size > K4 ? Ps : 0);

    public static TheoryData<int, ulong, ulong> Combinations()
    {
        var d = new TheoryData<int, ulong, ulong>();
        foreach (int levels in new[] { 4, 5 })
        {
            foreach (ulong size in new[] { K4, M2, G1 })
            {
                foreach (ulong attr in new[] { DmaPte.Read, DmaPte.Write, DmaPte.Read | DmaPte.Write, DmaPte.Read | DmaPte.Snoop, DmaPte.Read | DmaPte.Write | DmaPte.Snoop })
                {
                    d.Add(levels, size, attr);
                }
            }
        }

        return d;
    }

    [Theory]
    [MemberData(nameof(Combinations))]
    public void Leaves_and_tables_hold_the_bits_linux_writes(int levels, ulong size, ulong attr)
    {
        PageTable<FirstLevelFormat> t = NewTable(levels);
        const ulong Iova = 0x40_0000_0000, Pa = 0x8_0000_0000;
        Assert.Equal(Errno.None, t.Map(Iova, Pa, size, attr, superpageLevels: 2, out ulong mapped));
        Assert.Equal(size, mapped);

        List<ulong> path = Path(t.Root, levels, Iova);
        int leafLevel = size == K4 ? 1 : size == M2 ? 2 : 3;
        Assert.Equal(levels - leafLevel + 1, path.Count);
        for (int i = 0; i < path.Count - 1; i++)
        {
            // Non-leaf: next | P | R/W | U/S | A | XD = 0x8000_0000_0000_0027 besides the address.
            Assert.Equal(P | RwBit | Us | A | Xd, path[i] & ~0x000F_FFFF_FFFF_F000UL);
        }

        Assert.Equal(ExpectedLeaf(Pa, attr, size), path[^1]);
        Assert.Equal(Pa + 0x123, t.IovaToPhys(Iova + 0x123));
    }

    [Fact]
    public void The_spec_examples_come_out_byte_for_byte()
    {
        PageTable<FirstLevelFormat> t = NewTable(4);
        Assert.Equal(Errno.None, t.Map(0x1000, 0x8_0000_0000, K4, DmaPte.Read | DmaPte.Write, 2, out _));
        Assert.Equal(Errno.None, t.Map(0x2000, 0x8_0000_0000, K4, DmaPte.Read, 2, out _));
        Assert.Equal(0x8000_0008_0000_0067UL, Path(t.Root, 4, 0x1000)[^1]);
        Assert.Equal(0x8000_0008_0000_0025UL, Path(t.Root, 4, 0x2000)[^1]);
    }

    [Fact]
    public void A_mapping_without_read_or_write_is_refused_and_writes_nothing()
    {
        PageTable<FirstLevelFormat> t = NewTable(4);
        long frames = _frames.LiveFrames;
        Assert.Equal(Errno.EINVAL, t.Map(0x1000, 0x8_0000_0000, K4, DmaPte.Snoop, 2, out ulong mapped));
        Assert.Equal(0UL, mapped);
        Assert.Equal(frames, _frames.LiveFrames);
        Assert.Equal(0UL, _memory.ReadUInt64(t.Root));
    }

    [Theory]
    [InlineData(4)]
    [InlineData(5)]
    public void Unmap_clears_the_leaf_and_frees_emptied_tables_after_release(int levels)
    {
        PageTable<FirstLevelFormat> t = NewTable(levels);
        long frames = _frames.LiveFrames;
        Assert.Equal(Errno.None, t.Map(0x20_0000, 0x8_0000_0000, 4 * M2, DmaPte.Read | DmaPte.Write, 1, out _));
        Assert.Equal(4 * M2, t.Unmap(0x20_0000, 4 * M2, out _, out _));
        Assert.Equal(0UL, t.IovaToPhys(0x20_0000));
        t.ReleasePendingFrees();
        Assert.Equal(frames + levels - 2, _frames.LiveFrames); // the tables down to level 2 stay, as for the second level
    }

    [Fact]
    public void A_random_sequence_of_maps_and_unmaps_leaves_exactly_the_model_with_linux_bits()
    {
        // Ops over a 4 GiB window of a 4- or 5-level table: map (size 4K/2M/1G, R/RW) where free, unmap ranges.
        Gen<(bool Map, int Slot, int Size, bool Write)> op = Gen.Select(Gen.Bool, Gen.Int[0, 2047], Gen.Int[0, 2], Gen.Bool);
        Gen.Select(Gen.Int[4, 5], op.Array[1, 40]).Sample((levels, ops) =>
        {
            using var memory = new PhysicalMemory(16 * Sizes.GiB);
            var frames = new FrameAllocator(memory, 15 * Sizes.GiB, 256 * Sizes.MiB);
            Assert.True(frames.TryAllocate(out ulong root));
            var t = new PageTable<FirstLevelFormat>(memory, frames, root, levels);
            var model = new SortedDictionary<ulong, (ulong Pa, ulong Size, ulong Attr)>();
            foreach ((bool map, int slot, int sizeIndex, bool write) in ops)
            {
                ulong size = sizeIndex == 0 ? K4 : sizeIndex == 1 ? M2 : G1;
                ulong iova = ((ulong)slot * M2) & ~(size - 1);
                ulong pa = 0x1_0000_0000 + (iova & 0xFFFF_FFFF);
                bool overlaps = false;
                foreach (KeyValuePair<ulong, (ulong Pa, ulong Size, ulong Attr)> kv in model)
                {
                    overlaps |= kv.Key < iova + size && iova < kv.Key + kv.Value.Size;
                }

                if (map && !overlaps)
                {
                    ulong attr = DmaPte.Read | (write ? DmaPte.Write : 0);
                    Assert.Equal(Errno.None, t.Map(iova, pa, size, attr, 2, out _));
                    model[iova] = (pa, size, attr);
                }
                else if (!map)
                {
                    ulong removed = t.Unmap(iova, size, out _, out _);
                    ulong expected = 0;
                    foreach (ulong k in model.Keys.ToArray())
                    {
                        if (k < iova + size && iova < k + model[k].Size)
                        {
                            expected += model[k].Size;
                            model.Remove(k);
                        }
                    }

                    Assert.Equal(expected, removed);
                    t.ReleasePendingFrees();
                }
            }

            var leaves = new List<(ulong Iova, ulong Pte, ulong Size)>();
            t.ForEachLeaf((i, _, s, e) => leaves.Add((i, e, s)));
            Assert.Equal(model.Count, leaves.Count);
            foreach ((ulong iova, ulong pte, ulong size) in leaves)
            {
                (ulong pa, ulong msize, ulong attr) = model[iova];
                Assert.Equal(msize, size);
                Assert.Equal(ExpectedLeaf(pa, attr, size), pte);
                Assert.Equal(pa + size - 8, t.IovaToPhys(iova + size - 8));
            }
        });
    }
}
