using CsCheck;
using Iommu.Devices;
using Iommu.Domains;
using Iommu.VtD.Hardware;
using static Iommu.VtD.Tests.Driver.DriverTestKit;

namespace Iommu.VtD.Tests.Driver;

/// <summary>
/// <c>iommu_unmap</c> of ranges that start or end inside a leaf: exactly the whole leaves (4K/2M/1G)
/// that overlap the range go, their total is what unmap returns, and nothing else changes, in the
/// page table and for the hardware (whose IOTLB was warmed on every leaf first).
/// </summary>
public sealed class PartialUnmapTests
{
    private const ulong Window = 8 * G1;      // IOVAs [8G, 16G)
    private const ulong PaOffset = 8 * G1;    // pa = iova + 8G: IOVA and PA alignments agree, so superpages happen

    [Fact]
    public void A_4k_unmap_inside_one_of_two_adjacent_superpages_leaves_the_other()
    {
        // The held-back case: 5.15 grows the range to 2 MiB from the unaligned IOVA and clears both.
        using DriverBed f = New("Sm48", 32 * Sizes.GiB);
        PciDevice dev = f.AddDevice("0000:00:03.0");
        IDomain dom = f.Unmanaged();
        Assert.Equal(Errno.None, f.Iommu.AttachDevice(dom, dev));
        Assert.Equal(Errno.None, f.Iommu.Map(dom, 0x6080_0000, 0x2_6080_0000, 2 * M2, RW));
        Assert.Equal([(0x6080_0000UL, 0x2_6080_0000UL, M2), (0x60A0_0000UL, 0x2_60A0_0000UL, M2)], Leaves(dom));
        f.AssertDma(dev, null, 0x60A0_8000, 0x2_60A0_8000); // the IOTLB holds the second superpage

        Assert.Equal(M2, f.Iommu.Unmap(dom, 0x6080_8000, K4));

        Assert.Equal(0UL, f.Iommu.IovaToPhys(dom, 0x6080_8000));
        Assert.Equal(0x2_60A0_8000UL, f.Iommu.IovaToPhys(dom, 0x60A0_8000));
        f.AssertDma(dev, null, 0x60A0_8000, 0x2_60A0_8000);
        f.AssertDma(dev, null, 0x6080_0000, 0);
    }

    [Theory]
    [InlineData(0x4000_0000UL + 0x8000, K4, G1)]                  // inside a 1G page
    [InlineData(0x4000_0000UL + G1 - K4, 2 * K4, 2 * G1)]         // across the end of one 1G page into the next
    [InlineData(0x4000_0000UL - K4, 2 * K4, K4 + G1)]             // from the last 4K page below into a 1G page
    public void Ranges_that_cut_1g_pages_remove_them_whole_and_nothing_else(ulong iova, ulong size, ulong expected)
    {
        using DriverBed f = New("Sm48", 32 * Sizes.GiB);
        PciDevice dev = f.AddDevice("0000:00:03.0");
        IDomain dom = f.Unmanaged();
        Assert.Equal(Errno.None, f.Iommu.AttachDevice(dom, dev));
        Assert.Equal(Errno.None, f.Iommu.Map(dom, 0x4000_0000 - (4 * K4), 0x4000_0000 - (4 * K4), 4 * K4, RW)); // 4K run below
        Assert.Equal(Errno.None, f.Iommu.Map(dom, 0x4000_0000, 0x4000_0000, 2 * G1, RW));                    // two 1G pages
        Assert.Equal(Errno.None, f.Iommu.Map(dom, 0xC000_0000, 0xC000_0000, 4 * K4, RW));                    // 4K run above
        List<(ulong Iova, ulong Pa, ulong Size)> before = Leaves(dom);

        Assert.Equal(expected, f.Iommu.Unmap(dom, iova, size));

        Assert.Equal(Without(before, iova, size), Leaves(dom));
    }

    [Theory]
    [InlineData("Legacy48")]
    [InlineData("Sm48")]
    [InlineData("Sm57Cm")]
    [InlineData("Legacy39")]
    public void Random_maps_and_unaligned_unmaps_remove_exactly_the_overlapping_leaves(string config)
    {
        // Maps of 4K runs, 2M-aligned runs and 1G pages into free space; unmaps at any 4K offset and
        // length, near a leaf or anywhere. After each unmap: the leaves that went are exactly those
        // overlapping the range, unmap returned their total, every other leaf is as it was, and the
        // hardware (IOTLB warmed on every probe) agrees.
        Gen<Op> op = Gen.Int[0, 9].SelectMany(kind => Gen.Select(Gen.Int[0, 7], Gen.Int[0, 511], Gen.Int[0, 511], Gen.Int[1, 1100], (g, m, p, n) => new Op(kind, (ulong)g, (ulong)m, (ulong)p, n)));
        op.Array[4, 24].Sample(ops =>
        {
            using DriverBed f = New(config, 32 * Sizes.GiB);
            int width = Width(Config(config));
            PciDevice dev = f.AddDevice("0000:00:03.0");
            IDomain dom = f.Unmanaged();
            Assert.Equal(Errno.None, f.Iommu.AttachDevice(dom, dev));
            ulong top = Math.Min(Window + (8 * G1), 1UL << width);
            foreach (Op o in ops)
            {
                List<(ulong Iova, ulong Pa, ulong Size)> before = Leaves(dom);
                if (o.Kind < 5)
                {
                    (ulong iova, ulong size) = o.Kind switch
                    {
                        < 3 => (Window + (o.G * G1) + (o.M * M2) + (o.P * K4), (ulong)o.N * K4), // 4K run (superpages where it crosses 2M)
                        < 4 => (Window + (o.G * G1) + (o.M * M2), (ulong)((o.N % 3) + 1) * M2),  // 2M-aligned run
                        _ => (Window + (o.G * G1), G1),                                        // a 1G page
                    };
                    if (iova + size > top || before.Exists(l => l.Iova < iova + size && iova < l.Iova + l.Size))
                    {
                        continue;
                    }

                    Assert.Equal(Errno.None, f.Iommu.Map(dom, iova, iova + PaOffset, size, RW));
                }
                else
                {
                    // Near an existing leaf (most of the time), else anywhere in the window.
                    ulong iova = before.Count > 0 && o.Kind < 9
                        ? before[(int)(o.P % (ulong)before.Count)].Iova + ((o.M - 256) * K4 * (1 + (o.G % 3 * 255)))
                        : Window + (o.G * G1) + (o.M * M2) + (o.P * K4);
                    iova &= ~(K4 - 1);
                    ulong size = o.G % 4 == 0 ? (ulong)o.N * M2 : (ulong)o.N * K4;
                    if (iova < Window || iova + size > top)
                    {
                        continue;
                    }

                    // Warm the IOTLB on every leaf's first and last byte, so a flush that misses a leaf shows.
                    foreach ((ulong li, ulong lp, ulong ls) in before)
                    {
                        Assert.Equal(lp, f.Hw(dev, null, li).PhysicalAddress);
                        Assert.Equal(lp + ls - 1, f.Hw(dev, null, li + ls - 1).PhysicalAddress);
                    }

                    var gone = before.FindAll(l => l.Iova < iova + size && iova < l.Iova + l.Size);
                    ulong total = 0;
                    gone.ForEach(l => total += l.Size);
                    string what = $"unmap [0x{iova:x}, 0x{iova + size:x}) on {config}";

                    Assert.True(total == f.Iommu.Unmap(dom, iova, size), $"{what}: should return 0x{total:x}, the leaves overlapping it");
                    Assert.Equal(Without(before, iova, size), Leaves(dom));
                    foreach ((ulong li, ulong lp, ulong ls) in before)
                    {
                        bool removed = gone.Contains((li, lp, ls));
                        foreach (ulong at in (ReadOnlySpan<ulong>)[li, li + (ls / 2), li + ls - 1])
                        {
                            Assert.Equal(removed ? 0 : lp + (at - li), f.Iommu.IovaToPhys(dom, at));
                            VtdTranslation t = f.Hw(dev, null, at);
                            Assert.True(removed ? t.IsFault : !t.IsFault && t.PhysicalAddress == lp + (at - li), $"{what}: hardware at 0x{at:x} gave {t.Status} 0x{t.PhysicalAddress:x}, leaf 0x{li:x}+0x{ls:x} {(removed ? "removed" : "kept")}");
                        }
                    }
                }
            }
        }, iter: 40, threads: 1);
    }

    private static List<(ulong Iova, ulong Pa, ulong Size)> Without(List<(ulong Iova, ulong Pa, ulong Size)> leaves, ulong iova, ulong size) =>
        leaves.FindAll(l => !(l.Iova < iova + size && iova < l.Iova + l.Size));

    private readonly record struct Op(int Kind, ulong G, ulong M, ulong P, int N)
    {
        public override string ToString() => $"{(Kind < 5 ? "map" : "unmap")}({Kind}, g{G}, m{M}, p{P}, n{N})";
    }
}
