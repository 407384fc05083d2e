using CsCheck;
using Iommu.Core.Tests.Infrastructure;
using Iommu.Domains;
using static Iommu.Core.Tests.Infrastructure.MockIommu;

namespace Iommu.Core.Tests;

/// <summary>
/// Property: the runs iommu_map asks the driver for tile [iova, iova+size) exactly, in order, each
/// page aligned in IOVA and physical address, with a constant iova→paddr offset, and each run uses
/// the largest page the bitmap, the alignment and the remaining size allow (spec §1.7 iommu_pgsize).
/// </summary>
public sealed class MapTilingPropertyTests
{
    private static readonly ulong[] s_bitmaps = [Bitmap4K2M1G, Sz4K | Sz64K | Sz2M];

    // Addresses built from 1G, 2M, 64K and 4K parts, each part often zero, so that every alignment shows up.
    private static readonly Gen<ulong> s_addr = Gen.Select(
        Gen.ULong[0, 15],
        Gen.OneOf(Gen.Const(0UL), Gen.ULong[0, 511]),
        Gen.OneOf(Gen.Const(0UL), Gen.ULong[0, 31]),
        Gen.OneOf(Gen.Const(0UL), Gen.ULong[0, 15]),
        (g, m, k, p) => (g * Sz1G) + (m * Sz2M) + (k * Sz64K) + (p * Sz4K));

    // paddr independent of iova, or sharing its offset within 2M or within 1G (so superpages become possible).
    private static readonly Gen<(ulong Iova, ulong Paddr)> s_addrs = Gen.Select(s_addr, s_addr, Gen.Int[0, 2], (a, b, mode) => mode switch
    {
        0 => (a, b),
        1 => (a, (b & ~(Sz2M - 1)) | (a & (Sz2M - 1))),
        _ => (a, (b & ~(Sz1G - 1)) | (a & (Sz1G - 1))),
    });

    private static readonly Gen<ulong> s_pages = Gen.OneOf(
        Gen.ULong[1, 4096],
        Gen.Select(Gen.ULong[0, 3], Gen.ULong[0, 1024], (g, p) => (g * (Sz1G / Sz4K)) + p + 1));

    [Fact]
    public void Map_runs_tile_the_range_with_maximal_aligned_pages()
    {
        Gen.Select(s_addrs, s_pages, Gen.Int[0, s_bitmaps.Length - 1], Gen.Bool)
            .Sample(
                (addrs, pages, bitmapIndex, batched) =>
                {
                    ulong bitmap = s_bitmaps[bitmapIndex];
                    ulong min = bitmap & (~bitmap + 1);
                    ulong iova = addrs.Iova & ~(min - 1);
                    ulong paddr = addrs.Paddr & ~(min - 1);
                    ulong size = pages * Sz4K;
                    size = (size + min - 1) & ~(min - 1);
                    if (!batched)
                    {
                        size = Math.Min(size, 16 * Sizes.MiB); // one call per page: keep it quick
                    }

                    var ops = RecordingIommuOps.Create(batched, bitmap);
                    var domain = new IommuDomain { Type = DomainType.Unmanaged, Ops = ops, PgsizeBitmap = bitmap };
                    using var platform = new Platform(new PlatformOptions { MemorySize = 1UL << 30, TableMemorySize = 16UL << 20 });

                    Assert.Equal(Errno.None, platform.Iommu.Map(domain, iova, paddr, size, IommuProt.Read));

                    ulong at = iova, pa = paddr;
                    foreach ((ulong runIova, ulong runPa, ulong pgsize, ulong count) in ops.Maps)
                    {
                        Assert.Equal(at, runIova);
                        Assert.Equal(pa, runPa);
                        Assert.Equal(iova - paddr, runIova - runPa);
                        Assert.True((bitmap & pgsize) != 0 && ulong.IsPow2(pgsize), $"page size 0x{pgsize:x} not in bitmap 0x{bitmap:x}");
                        Assert.Equal(0UL, runIova & (pgsize - 1));
                        Assert.Equal(0UL, runPa & (pgsize - 1));
                        Assert.True(count >= 1);
                        Assert.True(batched || count == 1);
                        Assert.Equal(LargestAllowed(bitmap, at | pa, iova + size - at), pgsize);
                        AssertRampsUp(bitmap, runIova, runPa, pgsize, count, iova + size);
                        at += pgsize * count;
                        pa += pgsize * count;
                        Assert.True(at <= iova + size, "mapped past the end of the range");
                    }

                    Assert.Equal(iova + size, at);
                },
                iter: 300);
    }

    [Fact]
    public void Unmap_runs_tile_the_range_with_maximal_iova_aligned_pages()
    {
        Gen.Select(s_addr, s_pages, Gen.Int[0, s_bitmaps.Length - 1], Gen.Bool)
            .Sample(
                (addr, pages, bitmapIndex, batched) =>
                {
                    ulong bitmap = s_bitmaps[bitmapIndex];
                    ulong min = bitmap & (~bitmap + 1);
                    ulong iova = addr & ~(min - 1);
                    ulong size = ((pages * Sz4K) + min - 1) & ~(min - 1);
                    if (!batched)
                    {
                        size = Math.Min(size, 16 * Sizes.MiB);
                    }

                    var ops = RecordingIommuOps.Create(batched, bitmap);
                    var domain = new IommuDomain { Type = DomainType.Unmanaged, Ops = ops, PgsizeBitmap = bitmap };
                    using var platform = new Platform(new PlatformOptions { MemorySize = 1UL << 30, TableMemorySize = 16UL << 20 });

                    Assert.Equal(size, platform.Iommu.Unmap(domain, iova, size));

                    ulong at = iova;
                    foreach ((ulong runIova, ulong pgsize, ulong count) in ops.Unmaps)
                    {
                        Assert.Equal(at, runIova);
                        Assert.Equal(0UL, runIova & (pgsize - 1));
                        Assert.Equal(LargestAllowed(bitmap, at, iova + size - at), pgsize);
                        AssertRampsUp(bitmap, runIova, runIova, pgsize, count, iova + size);
                        at += pgsize * count;
                    }

                    Assert.Equal(iova + size, at);
                },
                iter: 300);
    }

    // A run of small pages must stop at the first boundary of the next larger size if a whole larger page fits after it.
    private static void AssertRampsUp(ulong bitmap, ulong runIova, ulong runPa, ulong pgsize, ulong count, ulong end)
    {
        ulong larger = bitmap & ~((pgsize << 1) - 1);
        if (larger == 0)
        {
            return;
        }

        ulong next = larger & (~larger + 1);
        if (((runIova ^ runPa) & (next - 1)) != 0)
        {
            return;
        }

        ulong boundary = (runIova + next) & ~(next - 1);
        ulong runEnd = runIova + (pgsize * count);
        Assert.False(
            boundary < runEnd && boundary + next <= end,
            $"run 0x{pgsize:x} x {count} at 0x{runIova:x} crosses 0x{boundary:x}, where a 0x{next:x} page would fit");
    }

    private static ulong LargestAllowed(ulong bitmap, ulong alignment, ulong remaining)
    {
        ulong best = 0;
        for (int bit = 0; bit < 64; bit++)
        {
            ulong s = 1UL << bit;
            if ((bitmap & s) != 0 && s <= remaining && (alignment & (s - 1)) == 0)
            {
                best = s;
            }
        }

        return best;
    }
}
