using System.Numerics;
using Iommu.Dma;

namespace Iommu.Core.Tests;

/// <summary>
/// Random sequences of <c>alloc_iova_fast</c> (through the range caches and the tree, 32-bit and full
/// limits, with and without the rcache flush), <c>free_iova_fast</c> in random order and
/// <c>reserve_iova</c>, checked call by call against <see cref="IovaReferenceModel"/>, a rendering of
/// 5.15 iova.c: the same first frame (or the same failure) for every request, and, independently of
/// the reference, that live ranges never overlap, stay below their limit and above start_pfn, and are
/// aligned to their size rounded up to a power of two.
/// </summary>
public sealed class IovaDomainPropertyTests
{
    private const ulong Dma32Pfn = 1UL << 20;   // 4 GiB in 4 KiB frames

    private sealed record Live(ulong Pfn, ulong Len, ulong Mapped);

    // Sizes as iommu_dma_alloc_iova hands them to the allocator: small ones rounded up to a power of
    // two (so their order matches at free time), 32 and above as they are (non-powers of two too).
    private static (ulong Len, ulong Mapped) RandomSize(Random rng, bool smallBias)
    {
        ulong mapped = smallBias && rng.Next(10) < 7 ? 1 : rng.Next(10) switch
        {
            < 6 => (ulong)rng.Next(1, 9),
            < 8 => (ulong)rng.Next(9, 33),
            _ => (ulong)rng.Next(33, 200),
        };
        ulong len = mapped < 32 ? BitOperations.RoundUpToPowerOf2(mapped) : mapped;
        return (len, mapped);
    }

    private static IovaReferenceModel RunOne(int seed, int steps, int phase = 150)
    {
        var rng = new Random(seed);
        // A small window below 4 GiB (so the 32-bit space fills up and max32_alloc_size matters) and
        // a small one above it (so full-limit requests fail too, and the rcache flush is exercised).
        ulong start = phase > 150 ? Dma32Pfn - 0x1000 : rng.Next(3) switch { 0 => Dma32Pfn - 0x400, 1 => Dma32Pfn - 0x1000, _ => Dma32Pfn - 0x180 };
        ulong top = Dma32Pfn + (ulong)rng.Next(0, 0x800);
        var model = new IovaDomain(4096, start);
        var reference = new IovaReferenceModel(4096, start);
        var live = new List<Live>();

        string Where(int step, string op) => $"seed {seed}, step {step} ({op})";

        // Reserved regions at init, overlapping each other at random (as the RMRR / MSI windows may).
        for (int i = rng.Next(4); i > 0; i--)
        {
            ulong lo = start + (ulong)rng.Next(0, (int)(top - start));
            ulong hi = Math.Min(top, lo + (ulong)rng.Next(0, 64));
            model.Reserve(lo, hi);
            reference.Reserve(lo, hi);
        }

        for (int step = 0; step < steps; step++)
        {
            // Alternating alloc-heavy and free-heavy phases, so that the space fills up and whole
            // magazines of one order are freed and popped again.
            int op = rng.Next(100);
            int allocShare = (step / phase) % 2 == 0 ? 75 : 20;
            if (op < allocShare || live.Count == 0)
            {
                (ulong len, ulong mapped) = RandomSize(rng, smallBias: phase > 150);
                int kind = rng.Next(4);
                ulong limit = kind switch
                {
                    0 => Dma32Pfn - 1,
                    1 => top,
                    2 => start + (ulong)rng.Next(0, (int)(top - start)), // an odd device limit
                    _ => top,
                };
                bool flush = rng.Next(3) != 0;
                ulong got, want;
                string what;
                if (kind == 3)
                {
                    // The PCI SAC order of iommu_dma_alloc_iova: 32-bit without the flush, then full.
                    what = $"sac alloc len {len} mapped {mapped}";
                    got = model.AllocFast(len, mapped, Dma32Pfn - 1, flushRcache: false);
                    want = reference.AllocFast(len, Dma32Pfn - 1, flushRcache: false);
                    Assert.True(got == want, $"{Where(step, what)} 32-bit pass: model 0x{got:x}, 5.15 0x{want:x}");
                    if (got == 0)
                    {
                        got = model.AllocFast(len, mapped, limit, flushRcache: true);
                        want = reference.AllocFast(len, limit, flushRcache: true);
                    }
                }
                else
                {
                    what = $"alloc len {len} mapped {mapped} limit 0x{limit:x} flush {flush}";
                    got = model.AllocFast(len, mapped, limit, flush);
                    want = reference.AllocFast(len, limit, flush);
                }

                Assert.True(got == want, $"{Where(step, what)}: model 0x{got:x}, 5.15 0x{want:x}");
                if (got != 0)
                {
                    ulong last = got + len - 1;
                    Assert.True(last <= limit, $"{Where(step, what)}: 0x{got:x} ends past the limit");
                    Assert.True(got >= start, $"{Where(step, what)}: 0x{got:x} below start_pfn");
                    Assert.True(got % BitOperations.RoundUpToPowerOf2(len) == 0, $"{Where(step, what)}: 0x{got:x} not size-aligned");
                    foreach (Live l in live)
                    {
                        Assert.False(got <= l.Pfn + l.Len - 1 && l.Pfn <= last, $"{Where(step, what)}: 0x{got:x} overlaps live 0x{l.Pfn:x}+{l.Len}");
                    }

                    live.Add(new Live(got, len, mapped));
                }
            }
            else if (op < 96)
            {
                int i = rng.Next(live.Count);
                Live l = live[i];
                live[i] = live[^1];
                live.RemoveAt(live.Count - 1);
                Assert.Null(model.BeginFree(l.Pfn, l.Mapped));
                model.FreeFast(l.Pfn, l.Mapped);
                reference.FreeFast(l.Pfn, l.Mapped);
            }
            else
            {
                // reserve_iova later on, of a range no handed-out or cached range overlaps (the kernel
                // would widen such a range, and the DMA API reserves only before its first map).
                ulong lo = start + (ulong)rng.Next(0, (int)(top - start));
                ulong hi = Math.Min(top, lo + (ulong)rng.Next(0, 16));
                if (!reference.Ranges.Any(r => !r.Reserved && r.Lo <= hi && lo <= r.Hi))
                {
                    model.Reserve(lo, hi);
                    reference.Reserve(lo, hi);
                }
            }

            if (step % 64 == 0)
            {
                Assert.True(model.ValidateTree() is null, $"{Where(step, "tree")}: {model.ValidateTree()}");
            }
        }

        return reference;
    }

    /// <summary>Many short random runs: each alloc returns what 5.15 returns.</summary>
    [Fact]
    public void Random_allocs_frees_and_reserves_hand_out_exactly_what_5_15_does()
    {
        for (int seed = 1; seed <= 300; seed++)
        {
            RunOne(seed, 300);
        }
    }

    /// <summary>Longer runs that fill magazines past IOVA_MAG_SIZE so prev and the depot are used.</summary>
    [Fact]
    public void Long_runs_through_full_magazines_and_the_depot_match_5_15()
    {
        int most = 0;
        bool missed = false;
        for (int seed = 1001; seed <= 1012; seed++)
        {
            IovaReferenceModel r = RunOne(seed, 4000, phase: 800);
            most = Math.Max(most, r.MostCached);
            missed |= r.MissedInOtherMagazine;
        }

        Assert.True(most > 2 * 128, $"the runs should push more than two magazines of one order into the cache, at most {most}");
        Assert.True(missed, "the runs should see a pop miss that another magazine could have served");
    }
}
