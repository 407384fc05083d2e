using CsCheck;
using Iommu.Core.Tests.Infrastructure;
using Iommu.Dma;

namespace Iommu.Core.Tests;

/// <summary>
/// The DMA API's IOVA allocator (5.15 <c>alloc_iova_fast</c> / <c>free_iova_fast</c> over the kernel's
/// tree with its cached nodes): the frames the kernel's search hands out in known cases, and, over
/// random orders, sizes and limits, that ranges are aligned, inside the limits, never overlap a live
/// one, and that an allocation fails only when no gap could hold it. Many live ranges cost nothing
/// on the GC heap once warm.
/// </summary>
public sealed class IovaDomainTests
{
    private const ulong Limit32 = 0xF_FFFF;       // DMA_BIT_MASK(32) >> 12
    private const ulong Limit64 = (1UL << 40) - 1;
    private const ulong Uncached = 64;            // 2^6 frames: no range cache (IOVA_RANGE_CACHE_MAX_SIZE 6)

    private static ulong Alloc(IovaDomain d, ulong pages, ulong limit = Limit32, bool flush = true)
    {
        ulong len = pages < 32 ? System.Numerics.BitOperations.RoundUpToPowerOf2(pages) : pages;
        return d.AllocFast(len, pages, limit, flush);
    }

    private static void Free(IovaDomain d, ulong pfn, ulong pages)
    {
        Assert.Null(d.BeginFree(pfn, pages));
        d.FreeFast(pfn, pages);
    }

    [Fact]
    public void The_range_cache_pops_in_the_kernel_s_magazine_order_not_as_one_stack()
    {
        // 5.15 __iova_rcache_insert: 128 frees fill the loaded magazine, the next swaps it to prev, and
        // once both are full the loaded one goes to the depot. __iova_rcache_get then pops the loaded
        // magazine, and when it is empty swaps prev back in: after 257 frees the second pop is the
        // 128th range freed (prev), not the 256th (in the depot).
        var d = new IovaDomain(4096, 1);
        ulong[] a = [.. Enumerable.Range(0, 257).Select(_ => Alloc(d, 1))];
        foreach (ulong pfn in a)
        {
            Free(d, pfn, 1);
        }

        Assert.Equal(a[256], Alloc(d, 1));
        Assert.Equal(a[127], Alloc(d, 1));
    }

    [Fact]
    public void A_cached_range_never_comes_back_above_a_limit_smaller_than_the_request()
    {
        // Deliberate difference from 5.15: __iova_rcache_get is given limit + 1 - size as its bound, which
        // wraps for a request larger than the limit, so the kernel then pops any cached range of that size,
        // above the device's mask. Here a range comes from the cache only when it ends at or below the limit.
        Gen.Select(Gen.Int[0, 5], Gen.OneOf(Gen.Const(0UL), Gen.ULong[0, 70], Gen.Const(Limit32)), Gen.Int[1, 300])
            .Sample((order, limit, cachedRanges) =>
            {
                var d = new IovaDomain(4096, 1);
                ulong len = 1UL << order;
                ulong[] cached = [.. Enumerable.Range(0, cachedRanges).Select(_ => Alloc(d, len))];
                foreach (ulong pfn in cached)
                {
                    Free(d, pfn, len);
                }

                ulong got = d.AllocFast(len, len, limit, flushRcache: false);
                Assert.True(got == 0 || got + len - 1 <= limit, $"0x{got:x} + {len} pages is above the limit 0x{limit:x}");
                // Below a small limit only the tree's free gap [1, limit] can serve it, aligned to its size.
                Assert.Equal(got != 0, limit >= (2 * len) - 1);
            });
    }

    [Fact]
    public void A_range_cache_pop_searches_only_the_loaded_magazine_for_one_below_the_limit()
    {
        // iova_magazine_pop falls back to the tree when the loaded magazine holds nothing below the
        // limit, even if prev does.
        var d = new IovaDomain(4096, 1);
        ulong[] low = [.. Enumerable.Range(0, 128).Select(_ => Alloc(d, 1))];          // below 4 GiB
        ulong high = Alloc(d, 1, limit: Limit64);                                        // above it
        foreach (ulong pfn in low)
        {
            Free(d, pfn, 1);                                                             // fill loaded
        }

        Free(d, high, 1);                                                                // loaded -> prev, high alone in loaded
        ulong got = Alloc(d, 1, flush: false);                                           // a 32-bit request
        Assert.DoesNotContain(got, low);
        Assert.NotEqual(0UL, got);
    }

    [Fact]
    public void Ranges_come_top_down_below_the_limit_aligned_to_their_rounded_size()
    {
        var d = new IovaDomain(4096, 1);
        Assert.Equal(0xF_FFFFUL, Alloc(d, 1));
        Assert.Equal(0xF_FFF8UL, Alloc(d, 3));          // 4 frames, aligned to 4, wholly below the first
        Assert.Equal(0xF_FF80UL, Alloc(d, Uncached));   // aligned to 64: [0xFFFC0, ...) would overlap
        Assert.Equal(0xF_FF7EUL, Alloc(d, 2));          // not 0xFFFFC above: the search starts below the cached node
        Assert.Null(d.ValidateTree());
    }

    [Fact]
    public void A_free_at_or_above_the_cached_node_moves_it_up_so_the_hole_is_found_again()
    {
        var d = new IovaDomain(4096, 1);
        ulong a = Alloc(d, Uncached), b = Alloc(d, Uncached), c = Alloc(d, Uncached);
        Assert.Equal([0xF_FFC0UL, 0xF_FF80UL, 0xF_FF40UL], new[] { a, b, c });

        Free(d, b, Uncached);                           // above the cached node (c): it moves to rb_next(b) = a
        Assert.Equal(b, Alloc(d, Uncached));
        Free(d, a, Uncached);                           // the cached node is now b; a is above it
        Assert.Equal(a, Alloc(d, Uncached));
        Free(d, c, Uncached);                           // c is below the cached node: it stays at a
        Assert.Equal(c, Alloc(d, Uncached));            // found by walking down from a
        Assert.Equal(3, d.TreeRanges);
    }

    [Fact]
    public void The_retry_pass_finds_room_freed_above_the_cached_node()
    {
        var d = new IovaDomain(4096, 0xF_FE00);         // room for 8 uncached ranges below 4 GiB
        ulong[] r = [.. Enumerable.Range(0, 8).Select(_ => Alloc(d, Uncached, flush: false))];
        Assert.Equal(0xF_FFC0UL, r[0]);
        Assert.Equal(0xF_FE00UL, r[7]);
        Assert.Equal(0UL, Alloc(d, Uncached, flush: false));

        Free(d, r[0], Uncached);                        // the top: the cached node moves up to the anchor
        Free(d, r[6], Uncached);
        Free(d, r[7], Uncached);                        // 128 frames free at the bottom
        Assert.Equal(0xF_FE00UL, Alloc(d, 128, flush: false)); // too big for the top hole; the cached node follows it down
        Assert.Equal(r[0], Alloc(d, Uncached, flush: false));  // nothing below it: the second pass, from the anchor, finds the top hole
        Assert.Equal(0UL, Alloc(d, Uncached, flush: false));
        Assert.Null(d.ValidateTree());
    }

    [Fact]
    public void A_32_bit_request_no_smaller_than_the_last_failure_fails_until_a_range_below_4G_is_freed()
    {
        var d = new IovaDomain(4096, 0xF_FF00);
        ulong small = Alloc(d, Uncached, flush: false);
        Alloc(d, Uncached, flush: false);
        Alloc(d, Uncached, flush: false);
        Assert.Equal(0UL, Alloc(d, 128, flush: false)); // no 128-frame gap: max32_alloc_size = 128
        Assert.NotEqual(0UL, Alloc(d, Uncached, flush: false)); // smaller still searches
        Assert.Equal(0UL, Alloc(d, 128, flush: false));
        Free(d, small, Uncached);                       // 64 frames free below 4 GiB: the estimate resets
        Assert.Equal(0UL, Alloc(d, 128, flush: false)); // searched (and still no room)
        Assert.Equal(small, Alloc(d, Uncached, flush: false));
    }

    [Fact]
    public void Reserved_frames_are_never_handed_out_and_split_the_space()
    {
        var d = new IovaDomain(4096, 1);
        d.Reserve(0xF_EE00, 0xF_EEFF);                  // the MSI window
        var got = new List<ulong>();
        for (int i = 0; i < 0x1200; i++)
        {
            got.Add(Alloc(d, 1));
        }

        Assert.Equal(0xF_FFFFUL, got[0]);
        Assert.DoesNotContain(got, p => p is >= 0xF_EE00 and <= 0xF_EEFF);
        Assert.Equal(0xF_EF00UL, got[0x10FF]);          // 0x1100 frames above the window, then below it
        Assert.Equal(0xF_EDFFUL, got[0x1100]);
        Assert.Equal("no DMA mapping starts there", d.BeginFree(0xF_EE00, 0x100));
    }

    [Fact]
    public void A_byte_granule_domain_with_no_limit_allocates_below_the_anchor()
    {
        // Frame = byte: the 64-bit limit is the last frame, which the kernel's limit_pfn + 1 would wrap.
        var d = new IovaDomain(1, 1);
        Assert.Equal(ulong.MaxValue - 2, d.AllocFast(1, 1, ulong.MaxValue, flushRcache: true));
        Assert.Equal(0xFFFF_FFFFUL, d.AllocFast(1, 1, 0xFFFF_FFFF, flushRcache: false));
        d.Reserve(ulong.MaxValue - 100, ulong.MaxValue);
        Assert.Equal(ulong.MaxValue - 107, d.AllocFast(4, 4, ulong.MaxValue, flushRcache: true)); // below the reserve, aligned to 4
        Assert.Null(d.ValidateTree());
    }

    [Fact]
    public void Random_orders_sizes_and_limits_keep_ranges_disjoint_aligned_inside_the_limits_and_complete()
    {
        ulong[] sizes = [1, 2, 3, 5, 8, 16, 31, 32, 33, 64, 100, 128];
        Gen.Select(Gen.Int[0, 9], Gen.Int[0, sizes.Length - 1], Gen.Int[0, 1000], Gen.Bool).Array[1, 400]
            .Select(Gen.OneOf(Gen.Const(1UL), Gen.Const(0xF_F000UL), Gen.Const(0xF_FE00UL)), (ops, start) => (ops, start))
            .Sample(t =>
            {
                var d = new IovaDomain(4096, t.start);
                d.Reserve(0xF_FE40, 0xF_FE7F);
                var live = new SortedDictionary<ulong, (ulong Len, ulong Pages)>();
                foreach ((int kind, int sizeIndex, int pick, bool wide) in t.ops)
                {
                    if (kind < 6 || live.Count == 0)
                    {
                        ulong pages = sizes[sizeIndex];
                        ulong len = pages < 32 ? System.Numerics.BitOperations.RoundUpToPowerOf2(pages) : pages;
                        ulong limit = wide ? Limit64 : Limit32;
                        bool flush = kind != 5;
                        ulong pfn = d.AllocFast(len, pages, limit, flush);
                        if (pfn == 0)
                        {
                            // With the caches flushed the tree holds only live and reserved ranges: no
                            // aligned gap of len frames may remain between StartPfn and the limit.
                            if (flush)
                            {
                                Assert.False(GapExists(live, t.start, limit, len), $"no room found for {len} frames below 0x{limit:x} though a gap exists");
                            }

                            continue;
                        }

                        Assert.True(pfn >= t.start && pfn + len - 1 <= limit, $"[0x{pfn:x}, +{len}) outside [0x{t.start:x}, 0x{limit:x}]");
                        Assert.Equal(0UL, pfn & (System.Numerics.BitOperations.RoundUpToPowerOf2(len) - 1));
                        Assert.False(pfn + len - 1 >= 0xF_FE40 && pfn <= 0xF_FE7F, "overlaps the reserved range");
                        foreach ((ulong other, (ulong otherLen, _)) in live)
                        {
                            Assert.False(pfn <= other + otherLen - 1 && other <= pfn + len - 1, $"[0x{pfn:x}, +{len}) overlaps live [0x{other:x}, +{otherLen})");
                        }

                        live.Add(pfn, (len, pages));
                    }
                    else
                    {
                        (ulong pfn, (ulong len, ulong pages)) = live.ElementAt(pick % live.Count);
                        Assert.NotNull(d.BeginFree(pfn, pages + 1));  // the wrong size is refused
                        if (!live.ContainsKey(pfn + 1))
                        {
                            Assert.NotNull(d.BeginFree(pfn + 1, pages)); // so is a frame no live range starts at
                        }

                        Free(d, pfn, pages);
                        Assert.NotNull(d.BeginFree(pfn, pages));      // and a second free
                        live.Remove(pfn);
                    }
                }

                Assert.Null(d.ValidateTree());
            }, iter: 300);
    }

    // Whether an aligned run of len frames fits in [start, limit] outside every live range and the
    // reserved one (brute force over the gaps).
    private static bool GapExists(SortedDictionary<ulong, (ulong Len, ulong Pages)> live, ulong start, ulong limit, ulong len)
    {
        ulong align = System.Numerics.BitOperations.RoundUpToPowerOf2(len);
        var taken = live.Select(kv => (Lo: kv.Key, Hi: kv.Key + kv.Value.Len - 1)).Append((Lo: 0xF_FE40UL, Hi: 0xF_FE7FUL)).OrderBy(r => r.Lo).ToList();
        ulong lo = start;
        foreach ((ulong tLo, ulong tHi) in taken.Append((Lo: limit + 1, Hi: limit + 1)))
        {
            ulong gapHi = Math.Min(tLo == 0 ? 0 : tLo - 1, limit);
            ulong first = (lo + align - 1) & ~(align - 1);
            if (tLo > lo && first >= lo && first + len - 1 <= gapHi)
            {
                return true;
            }

            lo = Math.Max(lo, tHi + 1);
            if (lo > limit)
            {
                break;
            }
        }

        return false;
    }

    [Fact]
    public void Tens_of_thousands_of_live_ranges_allocate_and_free_without_gc_allocations_once_warm()
    {
        // Beyond the range caches' capacity, so that every round also takes the tree's path: the old
        // sorted-set search walked every live range and allocated for each such request.
        var d = new IovaDomain(4096, 1);
        for (int i = 0; i < 30_000; i++)
        {
            Assert.NotEqual(0UL, Alloc(d, 1, Limit64));
        }

        var handles = new ulong[10_000];
        void Round()
        {
            for (int i = 0; i < handles.Length; i++)
            {
                handles[i] = Alloc(d, 1, Limit64);
            }

            foreach (ulong h in handles)
            {
                Free(d, h, 1);
            }
        }

        Round();
        Round();
        Assert.Equal(0, Allocations.Fewest(Round));
        Assert.Null(d.ValidateTree());
    }
}
