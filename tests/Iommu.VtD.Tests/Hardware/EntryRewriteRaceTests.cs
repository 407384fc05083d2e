using System.Collections.Concurrent;
using System.Diagnostics;
using Iommu.VtD.Hardware;
using Iommu.VtD.Tests.Hardware.Infrastructure;

namespace Iommu.VtD.Tests.Hardware;

/// <summary>
/// Context and PASID entries that software rewrites one 64-bit word at a time while devices translate.
/// Software tears an entry down by clearing the word with P first and programs one by setting P last, with
/// any delay between the words; hardware fetches an entry in one read. A walk that read the entry word by
/// word could pair the old present word with a DID word already cleared and cache a live entry under DID 0:
/// the invalidations software then makes for the entry's real DID do not retire it, and the device keeps
/// translating through a domain it has left (found by the DMA API racing default-domain detach and reattach,
/// <c>DomainLifetimeRaceTests</c>). This is the class of test for it: random domains, the kernel's order or
/// random orders of the words other than P, random pauses between writes, readers translating throughout.
/// A second device lives in a domain with DID 0 (valid without caching mode), so an entry cached under DID 0
/// shows at once: its IOTLB entries answer that device's requests with another domain's page.
/// </summary>
public sealed class EntryRewriteRaceTests(Xunit.Abstractions.ITestOutputHelper output)
{
    public enum Entry
    {
        /// <summary>Legacy context entry: DID in the high word, P in the low one.</summary>
        LegacyContext,

        /// <summary>Scalable-mode PASID entry reached by a request without PASID (RID_PASID 0).</summary>
        RidPasid,

        /// <summary>Scalable-mode PASID entry of a request with PASID 9.</summary>
        Pasid,
    }

    private const ushort Rid = 0x0310;
    private const ushort StableRid = 0x0318;
    private const ushort StableDid = 0;
    private const uint TaggedPasid = 9;
    private const int Domains = 4;
    private const ulong Iova = 0x7654_3000;
    private const ulong DataBase = 0x1000_0000;

    [Theory]
    [InlineData(Entry.LegacyContext)]
    [InlineData(Entry.RidPasid)]
    [InlineData(Entry.Pasid)]
    public void An_entry_rewritten_word_by_word_is_never_cached_in_a_state_its_invalidations_miss(Entry kind)
    {
        bool scalable = kind != Entry.LegacyContext;
        uint? pasid = kind == Entry.Pasid ? TaggedPasid : null;
        uint tablePasid = pasid ?? 0;

        // One context and one PASID-cache entry: the readers alternate with a second device, so every request
        // walks the entry again (a cached entry would hide the words' changes from the walks).
        VtdConfig shape = scalable ? VtdConfig.ScalableMode48Bit : VtdConfig.Legacy48Bit;
        using var bench = new VtdBench(shape with { ContextCacheCapacity = 1, PasidCacheCapacity = 1 });

        // Domain k: DID k + 1, its own second-level table mapping Iova to its own page.
        var roots = new ulong[Domains];
        for (int k = 0; k < Domains; k++)
        {
            roots[k] = bench.AllocFrame();
            bench.Map(roots[k], 4, Iova, Output(k));
        }

        ulong entryPa;
        int words;
        ulong stableRoot;
        if (scalable)
        {
            ulong dir = bench.AllocFrame();
            bench.ScalableContext(Rid, dir, pdts: 7, ridPasid: 0);
            entryPa = bench.PasidEntryAddress(dir, tablePasid);
            words = 8;
            stableRoot = bench.SetupScalableDevice(StableRid, tablePasid, 2, StableDid).SlRoot;
        }
        else
        {
            entryPa = bench.ContextTableFor(Rid >> 8, scalableUpper: false) + ((ulong)(Rid & 0xFF) * 16);
            words = 2;
            stableRoot = bench.SetupLegacyDevice(StableRid, 2, StableDid);
        }

        bench.Map(stableRoot, 4, Iova, StablePage);

        ulong status = bench.AllocFrame();
        bench.Enable(scalable);
        bench.EnableQueue(wide: scalable);

        // The words of domain k's entry, word 0 last and P set only in it.
        ulong[] Image(int k)
        {
            var w = new ulong[words];
            if (scalable)
            {
                w[0] = VtdBench.PasidEntryLow(roots[k], aw: 2, pgtt: 2);
                w[1] = (ulong)(k + 1);
            }
            else
            {
                w[0] = VtdBench.LegacyContextLow(roots[k]);
                w[1] = VtdBench.LegacyContextHigh(aw: 2, did: (ushort)(k + 1));
            }

            return w;
        }

        int readers = Math.Clamp(Environment.ProcessorCount, 2, 4);
        bool done = false;
        long reads = 0;
        var wrong = new ConcurrentQueue<string>();
        using var start = new Barrier(readers + 1);
        Thread[] threads = [.. Enumerable.Range(0, readers).Select(r => new Thread(() =>
        {
            start.SignalAndWait();
            while (!Volatile.Read(ref done))
            {
                // Any domain's page or a fault: which one is checked on the writer's thread.
                VtdTranslation t = bench.Unit.Translate(Rid, pasid, Iova, 8, DmaAccess.Read);
                VtdTranslation s = bench.Unit.Translate(StableRid, pasid, Iova, 8, DmaAccess.Read);
                if ((t.Status == VtdTranslationStatus.Translated && !IsDomainPage(t.PhysicalAddress))
                    || s.Status != VtdTranslationStatus.Translated || s.PhysicalAddress != StablePage)
                {
                    wrong.Enqueue($"reader {r}: {t}; the other device: {s}");
                    Volatile.Write(ref done, true);
                }

                Interlocked.Add(ref reads, 2);
            }
        }) { IsBackground = true })];
        foreach (Thread t in threads)
        {
            t.Start();
        }

        var rng = new Random((int)ReliabilitySeed());
        int current = -1;
        int cycles = 0;
        uint waits = 0;
        var clock = Stopwatch.StartNew();
        start.SignalAndWait();
        try
        {
            while ((cycles < 200 || clock.Elapsed < TimeSpan.FromMilliseconds(400)) && cycles < 20_000 && wrong.IsEmpty)
            {
                cycles++;
                int next = (current + 1 + rng.Next(Domains - 1)) % Domains;
                if (current >= 0)
                {
                    // Tear-down: P first, then the other words: in the kernel's order at once (pasid_clear_entry,
                    // context_clear_entry), or in any order with pauses.
                    bool kernelOrder = rng.Next(2) == 0;
                    bench.Memory.WriteUInt64(entryPa, 0);
                    foreach (int i in kernelOrder ? Enumerable.Range(1, words - 1) : Shuffled(rng, words))
                    {
                        if (!kernelOrder)
                        {
                            Pause(rng);
                        }

                        bench.Memory.WriteUInt64(entryPa + ((ulong)i * 8), 0);
                    }

                    // What the kernel invalidates for the entry's DID (intel_pasid_tear_down_entry, domain_context_clear_one).
                    ushort did = (ushort)(current + 1);
                    if (scalable)
                    {
                        bench.Submit(7 | (1UL << 4) | ((ulong)did << 16) | ((ulong)tablePasid << 32)); // PASID cache, PASID-selective
                    }
                    else
                    {
                        bench.Submit(1 | (3UL << 4) | ((ulong)did << 16) | ((ulong)Rid << 32)); // context cache, device-selective
                    }

                    bench.Submit(2 | (2UL << 4) | ((ulong)did << 16)); // IOTLB, domain-selective
                    waits++;
                    bench.Submit(5 | (1UL << 5) | ((ulong)waits << 32), status);
                    SpinUntil(() => bench.Memory.ReadUInt32(status) == waits);

                    VtdTranslation gone = bench.Unit.Translate(Rid, pasid, Iova, 8, DmaAccess.Read);
                    if (gone.Status != VtdTranslationStatus.Fault)
                    {
                        wrong.Enqueue($"cycle {cycles}: domain {current} (DID {did}) torn down and invalidated, yet the request gave {gone}");
                        break;
                    }
                }

                // Set-up: every word but P in any order, word 0 without P, then with it. No invalidation: the
                // unit caches no not-present entry without caching mode.
                ulong[] image = Image(next);
                foreach (int i in Shuffled(rng, words))
                {
                    Pause(rng);
                    bench.Memory.WriteUInt64(entryPa + ((ulong)i * 8), image[i]);
                }

                Pause(rng);
                bench.Memory.WriteUInt64(entryPa, image[0] & ~1UL);
                Pause(rng);
                bench.Memory.WriteUInt64(entryPa, image[0]);
                current = next;

                VtdTranslation now = bench.Unit.Translate(Rid, pasid, Iova, 8, DmaAccess.Read);
                if (now.Status != VtdTranslationStatus.Translated || now.PhysicalAddress != Output(current))
                {
                    wrong.Enqueue($"cycle {cycles}: domain {current} (DID {current + 1}) programmed, yet the request gave {now}, not 0x{Output(current):X}");
                }
            }
        }
        finally
        {
            Volatile.Write(ref done, true);
            foreach (Thread t in threads)
            {
                Assert.True(t.Join(TimeSpan.FromSeconds(30)), "a reader did not finish");
            }
        }

        output.WriteLine($"{cycles} cycles, {Interlocked.Read(ref reads)} requests, {bench.Unit.Statistics}");
        Assert.True(wrong.IsEmpty, $"{string.Join(" | ", wrong.Take(3))} ({cycles} cycles, {Interlocked.Read(ref reads)} requests)");
        Assert.Equal(0u, bench.Fsts & 0x10); // no queue error (FSTS.IQE)
    }

    private static ulong StablePage => DataBase + 0x10_0000;

    private static ulong Output(int k) => DataBase + ((ulong)k * 0x1000);

    private static bool IsDomainPage(ulong pa) => pa >= DataBase && pa < DataBase + (Domains * 0x1000UL) && (pa & 0xFFF) == 0;

    // Words 1.. of an entry in a random order (word 0, which holds P, is written apart).
    private static int[] Shuffled(Random rng, int words)
    {
        int[] order = [.. Enumerable.Range(1, words - 1)];
        rng.Shuffle(order);
        return order;
    }

    // Software may take any time between two word writes (preemption, an interrupt): mostly none, sometimes long.
    private static void Pause(Random rng)
    {
        if (rng.Next(4) == 0)
        {
            Thread.SpinWait(rng.Next(1, 400));
        }
    }

    private static void SpinUntil(Func<bool> condition)
    {
        var clock = Stopwatch.StartNew();
        var spin = default(SpinWait);
        while (!condition())
        {
            Assert.True(clock.Elapsed < TimeSpan.FromSeconds(10), "the wait descriptor's status write never came");
            spin.SpinOnce(-1);
        }
    }

    private static ulong ReliabilitySeed() =>
        ulong.TryParse(Environment.GetEnvironmentVariable("RELIABILITY_SEED"), out ulong s) ? s : 0x5EED;
}
