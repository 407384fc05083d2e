using System.Globalization;
using System.Numerics;
using CsCheck;
using Iommu.Devices;
using Iommu.VtD.Hardware;
using Iommu.VtD.Tests.Hardware.Infrastructure;

namespace Iommu.VtD.Tests.Hardware;

/// <summary>
/// The shape of the IOTLB, context cache and PASID cache (issue 15), as software observes it through
/// <see cref="VtdUnit.Statistics"/>: which lookups hit, which miss, and how many entries are held.
/// </summary>
/// <remarks>
/// The contract (<see cref="VtdConfig.IotlbCapacity"/> and its siblings): ways = min(associativity,
/// capacity); sets = the largest power of two with ways × sets ≤ capacity. IOTLB set = (page number
/// at its level + fixed multiples of DID and level) mod sets; context-cache set = source id mod sets;
/// PASID-cache set = (source id + a fixed multiple of the PASID) mod sets. A fill of a full set replaces
/// a way holding nothing valid, else the oldest fill of the set. The multiples are not documented, so
/// these tests only rely on what follows from the contract whatever they are: entries of one DID and
/// level whose page numbers are congruent modulo the set count share a set, page numbers that are not
/// congruent do not; likewise for source ids (with one PASID, or PASIDs congruent modulo the set count).
/// </remarks>
public sealed class CacheShapeTests
{
    private const ushort DidA = 0x21;
    private const ushort DidB = 0x22;
    private const ushort SidA = 0x0310;
    private const ushort SidB = 0x0318;

    public enum Lookup
    {
        /// <summary>Neither counter moved: the cache was not consulted.</summary>
        None,

        /// <summary>The hit counter moved by one.</summary>
        Hit,

        /// <summary>The miss counter moved by one.</summary>
        Miss,

        /// <summary>The counters moved in some other way (more than one lookup, or both).</summary>
        Inconsistent,
    }

    /// <summary>What one translation did to the three caches.</summary>
    public readonly record struct Outcome(Lookup Context, Lookup Pasid, Lookup Iotlb);

    // ---------------------------------------------------------------- IOTLB

    [Fact]
    public void Iotlb_set_overflow_replaces_the_oldest_page_of_that_set_only()
    {
        // 16 entries, 4 ways: 4 sets. Pages 1, 5, 9, 13, 17 share a set; 0, 2, 3 are in three others.
        using var rig = Rig.Legacy(VtdConfig.Legacy48Bit with { IotlbCapacity = 16, IotlbAssociativity = 4 });
        foreach (ulong p in new ulong[] { 0, 2, 3, 1, 5, 9, 13 })
        {
            Assert.Equal(Lookup.Miss, rig.Translate(SidA, null, p).Iotlb);
        }

        Assert.Equal(7, rig.Unit.Statistics.IotlbEntries);
        Assert.Equal(Lookup.Miss, rig.Translate(SidA, null, 17).Iotlb); // the set's fifth page
        Assert.Equal(7, rig.Unit.Statistics.IotlbEntries);             // one replaced, none added

        foreach (ulong p in new ulong[] { 0, 2, 3, 5, 9, 13, 17 })
        {
            Assert.Equal(Lookup.Hit, rig.Translate(SidA, null, p).Iotlb);
        }

        Assert.Equal(Lookup.Miss, rig.Translate(SidA, null, 1).Iotlb); // the oldest fill of the set went
    }

    [Fact]
    public void Iotlb_replacement_is_first_in_first_out_not_least_recently_used()
    {
        using var rig = Rig.Legacy(VtdConfig.Legacy48Bit with { IotlbCapacity = 16, IotlbAssociativity = 4 });
        foreach (ulong p in new ulong[] { 0, 4, 8, 12 })
        {
            rig.Translate(SidA, null, p);
        }

        Assert.Equal(Lookup.Hit, rig.Translate(SidA, null, 0).Iotlb); // page 0 is now the most recently used …
        Assert.Equal(Lookup.Miss, rig.Translate(SidA, null, 16).Iotlb);
        foreach (ulong p in new ulong[] { 4, 8, 12, 16 })
        {
            Assert.Equal(Lookup.Hit, rig.Translate(SidA, null, p).Iotlb);
        }

        Assert.Equal(Lookup.Miss, rig.Translate(SidA, null, 0).Iotlb); // … but it was the oldest fill
    }

    [Fact]
    public void Pages_in_different_iotlb_sets_do_not_evict_each_other()
    {
        using var rig = Rig.Legacy(VtdConfig.Legacy48Bit with { IotlbCapacity = 16, IotlbAssociativity = 4 });
        for (ulong p = 0; p < 16; p++)
        {
            Assert.Equal(Lookup.Miss, rig.Translate(SidA, null, p).Iotlb);
        }

        Assert.Equal(16, rig.Unit.Statistics.IotlbEntries);

        // Twenty more pages of set "0 mod 4" churn that set only.
        for (ulong p = 16; p < 96; p += 4)
        {
            Assert.Equal(Lookup.Miss, rig.Translate(SidA, null, p).Iotlb);
        }

        for (ulong p = 0; p < 16; p++)
        {
            if (p % 4 != 0)
            {
                Assert.Equal(Lookup.Hit, rig.Translate(SidA, null, p).Iotlb);
            }
        }

        Assert.Equal(16, rig.Unit.Statistics.IotlbEntries);
    }

    [Fact]
    public void Fill_of_a_set_with_an_invalidated_way_uses_that_way()
    {
        using var rig = Rig.Legacy(VtdConfig.Legacy48Bit with { IotlbCapacity = 16, IotlbAssociativity = 4 });
        foreach (ulong p in new ulong[] { 0, 4, 8, 12 })
        {
            rig.Translate(SidA, null, p);
        }

        InvalidatePages(rig.Bench, DidA, 8 << 12, 0);
        Assert.Equal(3, rig.Unit.Statistics.IotlbEntries);
        Assert.Equal(Lookup.Miss, rig.Translate(SidA, null, 16).Iotlb);
        foreach (ulong p in new ulong[] { 0, 4, 12, 16 })
        {
            Assert.Equal(Lookup.Hit, rig.Translate(SidA, null, p).Iotlb);
        }

        Assert.Equal(4, rig.Unit.Statistics.IotlbEntries);
    }

    // Expected ways and sets are written out, not computed: ways = min(associativity, capacity),
    // sets = the largest power of two with ways × sets ≤ capacity.
    [Theory]
    [InlineData(16, 4, 4, 4)]
    [InlineData(3, 8, 3, 1)]      // associativity clamped to the capacity: one fully associative set
    [InlineData(12, 4, 4, 2)]     // 12 is not 4 × 2^k: 8 entries used
    [InlineData(12, 8, 8, 1)]
    [InlineData(1, 1, 1, 1)]
    [InlineData(64, 32, 32, 2)]
    [InlineData(100, 1, 1, 64)]   // direct-mapped
    [InlineData(4096, 8, 8, 512)] // the default
    public void Iotlb_capacity_and_associativity_give_its_ways_and_sets(int capacity, int associativity, int ways, int sets)
    {
        VtdConfig config = VtdConfig.Legacy48Bit with { IotlbCapacity = capacity, IotlbAssociativity = associativity };

        // One set: `ways` pages whose numbers are `sets` apart fit; one more replaces the first.
        using (var rig = Rig.Legacy(config))
        {
            const ulong first = 1;
            for (ulong k = 0; k < (ulong)ways; k++)
            {
                Assert.Equal(Lookup.Miss, rig.Translate(SidA, null, first + (k * (ulong)sets)).Iotlb);
            }

            for (ulong k = 0; k < (ulong)ways; k++)
            {
                Assert.Equal(Lookup.Hit, rig.Translate(SidA, null, first + (k * (ulong)sets)).Iotlb);
            }

            Assert.Equal(Lookup.Miss, rig.Translate(SidA, null, first + ((ulong)ways * (ulong)sets)).Iotlb);
            for (ulong k = 1; k <= (ulong)ways; k++)
            {
                Assert.Equal(Lookup.Hit, rig.Translate(SidA, null, first + (k * (ulong)sets)).Iotlb);
            }

            Assert.Equal(Lookup.Miss, rig.Translate(SidA, null, first).Iotlb);
        }

        // All sets: twice the entries in consecutive pages; never more than ways × sets are held, and
        // the last ways × sets pages (the newest `ways` of every set) all hit.
        using (var rig = Rig.Legacy(config))
        {
            ulong held = (ulong)(ways * sets);
            for (ulong p = 0; p < 2 * held; p++)
            {
                Assert.Equal(Lookup.Miss, rig.Translate(SidA, null, p).Iotlb);
                if (held <= 64 || (p + 1) % (held / 4) == 0)
                {
                    Assert.Equal((int)Math.Min(p + 1, held), rig.Unit.Statistics.IotlbEntries);
                }
            }

            for (ulong p = held; p < 2 * held; p++)
            {
                Assert.Equal(Lookup.Hit, rig.Translate(SidA, null, p).Iotlb);
            }

            Assert.Equal(Lookup.Miss, rig.Translate(SidA, null, 0).Iotlb);
            Assert.Equal((int)held, rig.Unit.Statistics.IotlbEntries);
        }
    }

    [Fact]
    public void Iotlb_entries_of_one_domain_share_a_set_whatever_their_pasid()
    {
        // Direct-mapped, 4 sets. The set depends on page number, DID and level only (VtdConfig's remarks),
        // so (PASID 2, page 4) replaces (PASID 1, page 0) of the same domain; page 1 is in another set.
        using var rig = Rig.Scalable(VtdConfig.ScalableMode48Bit with { IotlbCapacity = 4, IotlbAssociativity = 1 });
        rig.Pasid(SidA, 1, DidA);
        rig.Pasid(SidA, 2, DidA);
        Assert.Equal(Lookup.Miss, rig.Translate(SidA, 1, 0).Iotlb);
        Assert.Equal(Lookup.Miss, rig.Translate(SidA, 2, 1).Iotlb);
        Assert.Equal(Lookup.Hit, rig.Translate(SidA, 1, 0).Iotlb);
        Assert.Equal(Lookup.Miss, rig.Translate(SidA, 2, 4).Iotlb);
        Assert.Equal(Lookup.Hit, rig.Translate(SidA, 2, 1).Iotlb);
        Assert.Equal(Lookup.Miss, rig.Translate(SidA, 1, 0).Iotlb);
    }

    // ---------------------------------------------------------------- context cache

    [Fact]
    public void Context_cache_set_overflow_replaces_the_oldest_device_of_that_set_only()
    {
        // 8 entries, 2 ways: 4 sets. Source ids 0x101, 0x105, 0x109 share a set; 0x102 is in another.
        using var rig = Rig.Legacy(VtdConfig.Legacy48Bit with { ContextCacheCapacity = 8, ContextCacheAssociativity = 2 });
        foreach (ushort sid in new ushort[] { 0x101, 0x102, 0x105 })
        {
            rig.Device(sid, DidA);
            Assert.Equal(Lookup.Miss, rig.Translate(sid, null, 0).Context);
        }

        rig.Device(0x109, DidA);
        Assert.Equal(Lookup.Miss, rig.Translate(0x109, null, 0).Context);
        Assert.Equal(3, rig.Unit.Statistics.ContextEntries);
        foreach (ushort sid in new ushort[] { 0x102, 0x105, 0x109 })
        {
            Assert.Equal(Lookup.Hit, rig.Translate(sid, null, 0).Context);
        }

        Assert.Equal(Lookup.Miss, rig.Translate(0x101, null, 0).Context);
    }

    [Theory]
    [InlineData(8, 2, 2, 4)]
    [InlineData(3, 8, 3, 1)]
    [InlineData(6, 4, 4, 1)]
    [InlineData(24, 2, 2, 8)]
    [InlineData(1, 4, 1, 1)]
    [InlineData(256, 4, 4, 64)] // the default
    public void Context_cache_capacity_and_associativity_give_its_ways_and_sets(int capacity, int associativity, int ways, int sets)
    {
        VtdConfig config = VtdConfig.Legacy48Bit with { ContextCacheCapacity = capacity, ContextCacheAssociativity = associativity };
        using (var rig = Rig.Legacy(config))
        {
            const int first = 0x103;
            for (int k = 0; k <= ways; k++)
            {
                rig.Device((ushort)(first + (k * sets)), DidA);
            }

            for (int k = 0; k < ways; k++)
            {
                Assert.Equal(Lookup.Miss, rig.Translate((ushort)(first + (k * sets)), null, 0).Context);
            }

            for (int k = 0; k < ways; k++)
            {
                Assert.Equal(Lookup.Hit, rig.Translate((ushort)(first + (k * sets)), null, 0).Context);
            }

            Assert.Equal(Lookup.Miss, rig.Translate((ushort)(first + (ways * sets)), null, 0).Context);
            for (int k = 1; k <= ways; k++)
            {
                Assert.Equal(Lookup.Hit, rig.Translate((ushort)(first + (k * sets)), null, 0).Context);
            }

            Assert.Equal(Lookup.Miss, rig.Translate(first, null, 0).Context);
        }

        using (var rig = Rig.Legacy(config))
        {
            int held = ways * sets;
            for (int sid = 0; sid < 2 * held; sid++)
            {
                rig.Device((ushort)sid, DidA);
                Assert.Equal(Lookup.Miss, rig.Translate((ushort)sid, null, 0).Context);
                Assert.Equal(Math.Min(sid + 1, held), rig.Unit.Statistics.ContextEntries);
            }

            for (int sid = held; sid < 2 * held; sid++)
            {
                Assert.Equal(Lookup.Hit, rig.Translate((ushort)sid, null, 0).Context);
            }
        }
    }

    // ---------------------------------------------------------------- PASID cache

    [Fact]
    public void Pasid_cache_set_overflow_replaces_the_oldest_pasid_of_that_set_only()
    {
        // 8 entries, 2 ways: 4 sets. On one device PASIDs 3, 7, 11 share a set; the same PASID 3 on
        // the next source id is in another set.
        using var rig = Rig.Scalable(VtdConfig.ScalableMode48Bit with { PasidCacheCapacity = 8, PasidCacheAssociativity = 2 });
        foreach (uint pasid in new uint[] { 3, 7, 11 })
        {
            rig.Pasid(SidA, pasid, DidA);
        }

        rig.Pasid(SidA + 1, 3, DidA);
        Assert.Equal(Lookup.Miss, rig.Translate(SidA, 3, 0).Pasid);
        Assert.Equal(Lookup.Miss, rig.Translate(SidA + 1, 3, 0).Pasid);
        Assert.Equal(Lookup.Miss, rig.Translate(SidA, 7, 0).Pasid);
        Assert.Equal(Lookup.Miss, rig.Translate(SidA, 11, 0).Pasid);
        Assert.Equal(3, rig.Unit.Statistics.PasidEntries);
        Assert.Equal(Lookup.Hit, rig.Translate(SidA + 1, 3, 0).Pasid);
        Assert.Equal(Lookup.Hit, rig.Translate(SidA, 7, 0).Pasid);
        Assert.Equal(Lookup.Hit, rig.Translate(SidA, 11, 0).Pasid);
        Assert.Equal(Lookup.Miss, rig.Translate(SidA, 3, 0).Pasid);
    }

    [Theory]
    [InlineData(8, 2, 2, 4)]
    [InlineData(3, 8, 3, 1)]
    [InlineData(20, 4, 4, 4)]
    [InlineData(64, 1, 1, 64)]
    [InlineData(512, 8, 8, 64)] // the default
    public void Pasid_cache_capacity_and_associativity_give_its_ways_and_sets(int capacity, int associativity, int ways, int sets)
    {
        VtdConfig config = VtdConfig.ScalableMode48Bit with { PasidCacheCapacity = capacity, PasidCacheAssociativity = associativity };

        // One device, PASIDs `sets` apart: one set.
        using (var rig = Rig.Scalable(config))
        {
            const uint first = 5;
            for (uint k = 0; k <= (uint)ways; k++)
            {
                rig.Pasid(SidA, first + (k * (uint)sets), DidA);
            }

            AssertOneSet(rig, k => (SidA, first + ((uint)k * (uint)sets)), ways);
        }

        // One PASID, source ids `sets` apart: one set.
        using (var rig = Rig.Scalable(config))
        {
            const int first = 0x107;
            for (int k = 0; k <= ways; k++)
            {
                rig.Pasid((ushort)(first + (k * sets)), 9, DidA);
            }

            AssertOneSet(rig, k => ((ushort)(first + (k * sets)), 9u), ways);
        }

        // One PASID on consecutive source ids: every set; at most ways × sets held.
        using (var rig = Rig.Scalable(config))
        {
            int held = ways * sets;
            for (int sid = 0; sid < 2 * held; sid++)
            {
                rig.Pasid((ushort)sid, 9, DidA);
                Assert.Equal(Lookup.Miss, rig.Translate((ushort)sid, 9, 0).Pasid);
                Assert.Equal(Math.Min(sid + 1, held), rig.Unit.Statistics.PasidEntries);
            }

            for (int sid = held; sid < 2 * held; sid++)
            {
                Assert.Equal(Lookup.Hit, rig.Translate((ushort)sid, 9, 0).Pasid);
            }
        }

        static void AssertOneSet(Rig rig, Func<int, (ushort Sid, uint Pasid)> member, int ways)
        {
            for (int k = 0; k < ways; k++)
            {
                Assert.Equal(Lookup.Miss, rig.Translate(member(k).Sid, member(k).Pasid, 0).Pasid);
            }

            for (int k = 0; k < ways; k++)
            {
                Assert.Equal(Lookup.Hit, rig.Translate(member(k).Sid, member(k).Pasid, 0).Pasid);
            }

            Assert.Equal(Lookup.Miss, rig.Translate(member(ways).Sid, member(ways).Pasid, 0).Pasid);
            for (int k = 1; k <= ways; k++)
            {
                Assert.Equal(Lookup.Hit, rig.Translate(member(k).Sid, member(k).Pasid, 0).Pasid);
            }

            Assert.Equal(Lookup.Miss, rig.Translate(member(0).Sid, member(0).Pasid, 0).Pasid);
        }
    }

    // ---------------------------------------------------------------- against a reference model

    // Random legacy-mode traffic: devices on bus 1 in two domains whose DIDs differ by 64 (a multiple
    // of every possible set count here, so the DID's unknown multiple moves both domains' entries by
    // the same number of sets), random pages. After every translation the hit/miss of the context
    // cache and IOTLB and the entry counts are those of a set-associative FIFO model.
    [Fact]
    public void Legacy_caches_agree_with_a_set_associative_fifo_model()
    {
        Gen.Select(Gen.Int[1, 64], Gen.Int[1, 32], Gen.Int[1, 32], Gen.Int[1, 8], Gen.Int[1, 24], Gen.Int[1, 96])
            .SelectMany(t => Gen.Select(Gen.Int[0, t.Item5 - 1], Gen.Int[0, t.Item6 - 1]).Array[1, 150]
                .Select(ops => new Traffic(t.Item1, t.Item2, t.Item3, t.Item4, 0, 0, 0, ops.Select(o => new Access(o.Item1, 0, o.Item2)).ToArray())))
            .Sample(RunLegacyTraffic, iter: 150, print: t => t.ToString());
    }

    // Random scalable-mode traffic: devices, PASIDs congruent modulo 64 (PASIDs p0, p0 + 64, p0 + 128,
    // so the PASID's unknown multiple moves all of them by the same number of sets), pages. The
    // IOTLB entry of a (DID, PASID, page) is in the page's set, as VtdConfig documents.
    [Fact]
    public void Scalable_caches_agree_with_a_set_associative_fifo_model()
    {
        Gen.Select(Gen.Int[1, 64], Gen.Int[1, 32], Gen.Int[1, 32], Gen.Int[1, 8], Gen.Int[1, 64], Gen.Int[1, 16], Gen.Int[0, 63])
            .SelectMany(t => Gen.Select(Gen.Int[0, 11], Gen.Int[0, 2], Gen.Int[0, 47]).Array[1, 150]
                .Select(ops => new Traffic(t.Item1, t.Item2, t.Item3, t.Item4, t.Item5, t.Item6, (uint)t.Item7, ops.Select(o => new Access(o.Item1, o.Item2, o.Item3)).ToArray())))
            .Sample(RunScalableTraffic, iter: 150, print: t => t.ToString());
    }

    private static void RunLegacyTraffic(Traffic t)
    {
        using var rig = Rig.Legacy(VtdConfig.Legacy48Bit with
        {
            IotlbCapacity = t.IotlbCapacity,
            IotlbAssociativity = t.IotlbAssociativity,
            ContextCacheCapacity = t.ContextCapacity,
            ContextCacheAssociativity = t.ContextAssociativity,
        });
        var iotlb = new FifoModel<(ushort Did, ulong Page)>(t.IotlbCapacity, t.IotlbAssociativity);
        var context = new FifoModel<ushort>(t.ContextCapacity, t.ContextAssociativity);
        foreach (int d in t.Accesses.Select(a => a.Device).Distinct())
        {
            rig.Device(LegacySid(d), LegacyDid(d));
        }

        for (int i = 0; i < t.Accesses.Length; i++)
        {
            Access a = t.Accesses[i];
            ushort sid = LegacySid(a.Device);
            ulong page = (ulong)a.Page;
            var expected = new Outcome(
                context.Access(sid, sid) ? Lookup.Hit : Lookup.Miss,
                Lookup.None,
                iotlb.Access((LegacyDid(a.Device), page), page) ? Lookup.Hit : Lookup.Miss);
            Outcome actual = rig.Translate(sid, null, page);
            VtdCacheStatistics s = rig.Unit.Statistics;
            if (actual != expected || s.ContextEntries != context.Count || s.IotlbEntries != iotlb.Count)
            {
                throw new InvalidOperationException(string.Create(CultureInfo.InvariantCulture,
                    $"Step {i} ({a}): expected {expected}, {context.Count} context and {iotlb.Count} IOTLB entries; got {actual}, {s.ContextEntries} and {s.IotlbEntries}."));
            }
        }

        static ushort LegacySid(int device) => (ushort)(0x0100 + device);

        static ushort LegacyDid(int device) => (ushort)(0x10 + (64 * (device % 2)));
    }

    private static void RunScalableTraffic(Traffic t)
    {
        using var rig = Rig.Scalable(VtdConfig.ScalableMode48Bit with
        {
            IotlbCapacity = t.IotlbCapacity,
            IotlbAssociativity = t.IotlbAssociativity,
            ContextCacheCapacity = t.ContextCapacity,
            ContextCacheAssociativity = t.ContextAssociativity,
            PasidCacheCapacity = t.PasidCapacity,
            PasidCacheAssociativity = t.PasidAssociativity,
        });
        var iotlb = new FifoModel<(ushort Did, uint Pasid, ulong Page)>(t.IotlbCapacity, t.IotlbAssociativity);
        var context = new FifoModel<ushort>(t.ContextCapacity, t.ContextAssociativity);
        var pasids = new FifoModel<(ushort Sid, uint Pasid)>(t.PasidCapacity, t.PasidAssociativity);
        foreach ((int d, int k) in t.Accesses.Select(a => (a.Device, a.PasidIndex)).Distinct())
        {
            rig.Pasid(ScalableSid(d), Pasid(k), ScalableDid(d, k));
        }

        for (int i = 0; i < t.Accesses.Length; i++)
        {
            Access a = t.Accesses[i];
            ushort sid = ScalableSid(a.Device);
            uint pasid = Pasid(a.PasidIndex);
            ulong page = (ulong)a.Page;
            var expected = new Outcome(
                context.Access(sid, sid) ? Lookup.Hit : Lookup.Miss,
                pasids.Access((sid, pasid), sid) ? Lookup.Hit : Lookup.Miss,
                iotlb.Access((ScalableDid(a.Device, a.PasidIndex), pasid, page), page) ? Lookup.Hit : Lookup.Miss);
            Outcome actual = rig.Translate(sid, pasid, page);
            VtdCacheStatistics s = rig.Unit.Statistics;
            if (actual != expected || s.ContextEntries != context.Count || s.PasidEntries != pasids.Count || s.IotlbEntries != iotlb.Count)
            {
                throw new InvalidOperationException(string.Create(CultureInfo.InvariantCulture,
                    $"Step {i} ({a}): expected {expected}, {context.Count}/{pasids.Count}/{iotlb.Count} context/PASID/IOTLB entries; got {actual}, {s.ContextEntries}/{s.PasidEntries}/{s.IotlbEntries}."));
            }
        }

        static ushort ScalableSid(int device) => (ushort)(0x0200 + device);

        uint Pasid(int index) => t.PasidBase + (64 * (uint)index);

        static ushort ScalableDid(int device, int pasidIndex) => (ushort)(0x10 + (64 * ((device + pasidIndex) % 2)));
    }

    // Remapping without invalidation, random IOTLB shapes: a request returns the page the tables held
    // when its IOTLB entry was filled for as long as the entry stays (a hit), and the tables' current
    // page once the entry was replaced or invalidated (a miss). Requests are Translate calls and 8-byte
    // DMA reads; between them pages are remapped (the PTE rewritten, nothing invalidated) or
    // invalidated page-selectively. The FIFO model says which requests hit. This is what a memo of
    // the caches' answers (TranslationShortcut) must never change.
    [Fact]
    public void A_translation_follows_its_iotlb_entry_until_the_entry_is_replaced_or_invalidated()
    {
        Gen.Select(Gen.Int[1, 32], Gen.Int[1, 8], Gen.Int[1, 24])
            .SelectMany(t => Gen.Select(Gen.Int[0, 3], Gen.Int[0, t.Item3 - 1]).Array[1, 200]
                .Select(ops => new RemapTraffic(t.Item1, t.Item2, ops.Select(o => ((RemapOp)o.Item1, o.Item2)).ToArray())))
            .Sample(RunRemapTraffic, iter: 150, print: t => t.ToString());
    }

    private static void RunRemapTraffic(RemapTraffic t)
    {
        using var rig = Rig.Legacy(VtdConfig.Legacy48Bit with { IotlbCapacity = t.IotlbCapacity, IotlbAssociativity = t.IotlbAssociativity });
        var iotlb = new FifoModel<ulong>(t.IotlbCapacity, t.IotlbAssociativity);
        var version = new Dictionary<ulong, int>();
        var cached = new Dictionary<ulong, ulong>();
        for (ulong page = 0; page < 24; page++)
        {
            rig.Bench.Map(rig.Sl, 4, page << 12, Rig.PageBase + (page << 12));
        }

        for (int i = 0; i < t.Ops.Length; i++)
        {
            (RemapOp op, int n) = t.Ops[i];
            ulong page = (ulong)n;
            ulong current = Rig.PageBase + (page << 12) + ((ulong)version.GetValueOrDefault(page) << 20);
            switch (op)
            {
                case RemapOp.Remap:
                    version[page] = (version.GetValueOrDefault(page) + 1) % 256;
                    rig.Bench.Map(rig.Sl, 4, page << 12, Rig.PageBase + (page << 12) + ((ulong)version[page] << 20));
                    continue;
                case RemapOp.Invalidate:
                    InvalidatePages(rig.Bench, DidA, page << 12, 0);
                    iotlb.Remove(page, page);
                    continue;
            }

            bool hit = iotlb.Access(page, page);
            if (!hit)
            {
                cached[page] = current;
            }

            (Outcome caches, ulong pa) = rig.Request(SidA, (page << 12) | 0x28, dma: op == RemapOp.Dma);
            if (caches.Iotlb != (hit ? Lookup.Hit : Lookup.Miss) || pa != (cached[page] | 0x28))
            {
                throw new InvalidOperationException(string.Create(CultureInfo.InvariantCulture,
                    $"Step {i} ({op} page {page}): expected an IOTLB {(hit ? "hit" : "miss")} giving 0x{cached[page] | 0x28:X}; got {caches.Iotlb} giving 0x{pa:X}."));
            }
        }
    }

    /// <summary>One step of <see cref="A_translation_follows_its_iotlb_entry_until_the_entry_is_replaced_or_invalidated"/>.</summary>
    public enum RemapOp
    {
        /// <summary>Translate 8 bytes of the page.</summary>
        Translate,

        /// <summary>Read 8 bytes of the page by DMA.</summary>
        Dma,

        /// <summary>Point the page's PTE at a new frame without invalidating.</summary>
        Remap,

        /// <summary>Page-selective IOTLB invalidation of the page, through the queue.</summary>
        Invalidate,
    }

    /// <summary>A random IOTLB shape and sequence of steps.</summary>
    public sealed record RemapTraffic(int IotlbCapacity, int IotlbAssociativity, (RemapOp Op, int Page)[] Ops)
    {
        public override string ToString() =>
            string.Create(CultureInfo.InvariantCulture, $"IOTLB {IotlbCapacity}/{IotlbAssociativity}: ")
            + string.Join(' ', Ops.Select(o => string.Create(CultureInfo.InvariantCulture, $"{o.Op}.{o.Page}")));
    }

    /// <summary>One access of a random sequence: device index, PASID index (scalable mode), page number.</summary>
    public readonly record struct Access(int Device, int PasidIndex, int Page);

    /// <summary>A random cache shape and access sequence.</summary>
    public sealed record Traffic(
        int IotlbCapacity, int IotlbAssociativity, int ContextCapacity, int ContextAssociativity,
        int PasidCapacity, int PasidAssociativity, uint PasidBase, Access[] Accesses)
    {
        public override string ToString() =>
            string.Create(CultureInfo.InvariantCulture, $"IOTLB {IotlbCapacity}/{IotlbAssociativity}, context {ContextCapacity}/{ContextAssociativity}, PASID {PasidCapacity}/{PasidAssociativity} (base {PasidBase}): ")
            + string.Join(' ', Accesses.Select(a => string.Create(CultureInfo.InvariantCulture, $"{a.Device}.{a.PasidIndex}.{a.Page}")));
    }

    /// <summary>
    /// The documented cache, written from the contract alone: ways = min(associativity, capacity),
    /// sets = largest power of two with ways × sets ≤ capacity, each set a FIFO of its fills.
    /// </summary>
    private sealed class FifoModel<TKey>
        where TKey : notnull
    {
        private readonly List<TKey>[] _sets;
        private readonly int _ways;

        public FifoModel(int capacity, int associativity)
        {
            _ways = Math.Min(associativity, capacity);
            int sets = 1;
            while (_ways * sets * 2 <= capacity)
            {
                sets *= 2;
            }

            _sets = new List<TKey>[sets];
            for (int i = 0; i < sets; i++)
            {
                _sets[i] = [];
            }
        }

        public int Count => _sets.Sum(s => s.Count);

        /// <summary>Looks <paramref name="key"/> up in set (<paramref name="index"/> mod sets); fills it on a miss. Returns true on a hit.</summary>
        public bool Access(TKey key, ulong index)
        {
            List<TKey> set = _sets[(int)(index % (ulong)_sets.Length)];
            if (set.Contains(key))
            {
                return true;
            }

            if (set.Count == _ways)
            {
                set.RemoveAt(0);
            }

            set.Add(key);
            return false;
        }

        /// <summary>Removes <paramref name="key"/> from set (<paramref name="index"/> mod sets), if there.</summary>
        public void Remove(TKey key, ulong index) => _sets[(int)(index % (ulong)_sets.Length)].Remove(key);
    }

    // ---------------------------------------------------------------- invalidation

    // Two domains cache random subsets of 64 pages and maybe a 2 MiB page; a page-selective
    // invalidation of domain A (random address mask, near the small pages or near the 2 MiB page)
    // removes exactly A's entries that overlap its range: they miss, everything else hits.
    [Fact]
    public void Page_selective_invalidation_removes_exactly_the_overlapping_entries()
    {
        Gen.Select(Gen.ULong, Gen.Bool, Gen.ULong, Gen.Bool, Gen.Int[0, 10],
                Gen.OneOf(Gen.Int[0, 80], Gen.Int[(int)Rig.SuperpageFirstFrame - 64, (int)Rig.SuperpageFirstFrame + 600]))
            .Sample((maskA, superA, maskB, superB, am, target) =>
            {
                using Rig rig = TwoDomains(maskA, superA, maskB, superB);
                ulong first = (ulong)target & ~((1UL << am) - 1);
                ulong end = first + (1UL << am);
                bool Overlaps(ulong start, ulong frames) => start < end && first < start + frames;

                InvalidatePages(rig.Bench, DidA, first << 12, am);
                Assert.Equal(0u, rig.Bench.Fsts);
                int removed = Pages(maskA).Count(p => Overlaps(p, 1)) + (superA && Overlaps(Rig.SuperpageFirstFrame, 512) ? 1 : 0);
                Assert.Equal(BitOperations.PopCount(maskA) + BitOperations.PopCount(maskB) + (superA ? 1 : 0) + (superB ? 1 : 0) - removed,
                    rig.Unit.Statistics.IotlbEntries);

                foreach (ulong p in Pages(maskA))
                {
                    Assert.Equal(Overlaps(p, 1) ? Lookup.Miss : Lookup.Hit, rig.Translate(SidA, null, p).Iotlb);
                }

                if (superA)
                {
                    Assert.Equal(Overlaps(Rig.SuperpageFirstFrame, 512) ? Lookup.Miss : Lookup.Hit, rig.TranslateSuperpage(SidA, null).Iotlb);
                }

                AssertAllHit(rig, SidB, maskB, superB);
            }, iter: 60);
    }

    [Fact]
    public void Domain_selective_invalidation_removes_every_entry_of_that_domain_only()
    {
        Gen.Select(Gen.ULong, Gen.Bool, Gen.ULong, Gen.Bool)
            .Sample((maskA, superA, maskB, superB) =>
            {
                using Rig rig = TwoDomains(maskA, superA, maskB, superB);
                rig.Bench.Submit(2 | (2UL << 4) | ((ulong)DidA << 16));
                Assert.Equal(0u, rig.Bench.Fsts);
                Assert.Equal(BitOperations.PopCount(maskB) + (superB ? 1 : 0), rig.Unit.Statistics.IotlbEntries);
                foreach (ulong p in Pages(maskA))
                {
                    Assert.Equal(Lookup.Miss, rig.Translate(SidA, null, p).Iotlb);
                }

                if (superA)
                {
                    Assert.Equal(Lookup.Miss, rig.TranslateSuperpage(SidA, null).Iotlb);
                }

                AssertAllHit(rig, SidB, maskB, superB);
            }, iter: 40);
    }

    // Device A: PASIDs 1 and 2 in domain A; device B: PASID 1 in domain B. Eight pages each.
    // Target 3 is (domain A, PASID 3), which nothing uses.
    [Theory]
    [InlineData(0)]
    [InlineData(1)]
    [InlineData(2)]
    [InlineData(3)]
    public void Pasid_based_iotlb_invalidation_removes_the_entries_of_one_domain_and_pasid_only(int target)
    {
        (ushort Sid, uint Pasid, ushort Did)[] users = [(SidA, 1, DidA), (SidA, 2, DidA), (SidB, 1, DidB)];
        (ushort Did, uint Pasid)[] targets = [(DidA, 1), (DidA, 2), (DidB, 1), (DidA, 3)];
        using var rig = Rig.Scalable(VtdConfig.ScalableMode48Bit);
        foreach ((ushort sid, uint pasid, ushort did) in users)
        {
            rig.Pasid(sid, pasid, did);
            for (ulong p = 0; p < 8; p++)
            {
                Assert.Equal(Lookup.Miss, rig.Translate(sid, pasid, p).Iotlb);
            }
        }

        (ushort tDid, uint tPasid) = targets[target];
        rig.Bench.Submit(6 | (2UL << 4) | ((ulong)tDid << 16) | ((ulong)tPasid << 32));
        Assert.Equal(0u, rig.Bench.Fsts);
        Assert.Equal(target < 3 ? 16 : 24, rig.Unit.Statistics.IotlbEntries);
        foreach ((ushort sid, uint pasid, ushort did) in users)
        {
            bool gone = did == tDid && pasid == tPasid;
            for (ulong p = 0; p < 8; p++)
            {
                Outcome o = rig.Translate(sid, pasid, p);
                Assert.Equal(gone ? Lookup.Miss : Lookup.Hit, o.Iotlb);
                Assert.Equal(Lookup.Hit, o.Pasid); // the PASID cache is not touched
            }
        }
    }

    private static Rig TwoDomains(ulong maskA, bool superA, ulong maskB, bool superB)
    {
        Rig rig = Rig.Legacy(VtdConfig.Legacy48Bit);
        rig.Device(SidB, DidB);
        foreach ((ushort sid, ulong mask, bool super) in new[] { (SidA, maskA, superA), (SidB, maskB, superB) })
        {
            foreach (ulong p in Pages(mask))
            {
                Assert.Equal(Lookup.Miss, rig.Translate(sid, null, p).Iotlb);
            }

            if (super)
            {
                Assert.Equal(Lookup.Miss, rig.TranslateSuperpage(sid, null).Iotlb);
            }
        }

        return rig;
    }

    private static void AssertAllHit(Rig rig, ushort sid, ulong mask, bool super)
    {
        foreach (ulong p in Pages(mask))
        {
            Assert.Equal(Lookup.Hit, rig.Translate(sid, null, p).Iotlb);
        }

        if (super)
        {
            Assert.Equal(Lookup.Hit, rig.TranslateSuperpage(sid, null).Iotlb);
        }
    }

    private static IEnumerable<ulong> Pages(ulong mask)
    {
        for (ulong p = 0; p < 64; p++)
        {
            if ((mask & (1UL << (int)p)) != 0)
            {
                yield return p;
            }
        }
    }

    // IOTLB descriptor, page-selective: type 2, G = 11, DID in bits 31:16; ADDR | AM.
    private static void InvalidatePages(VtdBench bench, ushort did, ulong address, int am) =>
        bench.Submit(2 | (3UL << 4) | ((ulong)did << 16), address | (uint)am);

    /// <summary>
    /// One unit, translation and queued invalidation enabled, every device and PASID on the same
    /// 4-level second-level table: 4 KiB page n (n &lt; 8192) maps to <see cref="PageBase"/> + n·4 KiB
    /// (mapped on first use), and a 2 MiB page at <see cref="SuperpageIova"/>.
    /// </summary>
    private sealed class Rig : IDisposable
    {
        public const ulong PageBase = 0x2000_0000;
        public const ulong SuperpageIova = 0x4000_0000;
        public const ulong SuperpagePa = 0x3000_0000;
        public const ulong SuperpageFirstFrame = SuperpageIova >> 12;

        private readonly HashSet<ulong> _mapped = [];
        private readonly Dictionary<ushort, ulong> _pasidDirectories = [];
        private readonly bool _scalable;

        private Rig(VtdConfig config)
        {
            Bench = new VtdBench(config);
            _scalable = config.ScalableMode;
            Sl = Bench.AllocFrame();
            Bench.Map(Sl, 4, SuperpageIova, SuperpagePa, leafLevel: 2);
            Bench.Enable(_scalable);
            Bench.EnableQueue(wide: _scalable);
        }

        public VtdBench Bench { get; }

        public VtdUnit Unit => Bench.Unit;

        public ulong Sl { get; }

        /// <summary>A legacy-mode unit with device <see cref="SidA"/> in domain <see cref="DidA"/>.</summary>
        public static Rig Legacy(VtdConfig config)
        {
            var rig = new Rig(config);
            rig.Device(SidA, DidA);
            return rig;
        }

        public static Rig Scalable(VtdConfig config) => new(config);

        /// <summary>Legacy context entry of <paramref name="sid"/>: translated, 4-level, <paramref name="did"/>.</summary>
        public void Device(ushort sid, ushort did) =>
            Bench.LegacyContext(Bench.ContextTableFor(sid >> 8, false), sid & 0xFF, VtdBench.LegacyContextLow(Sl), VtdBench.LegacyContextHigh(2, did));

        /// <summary>Scalable context entry of <paramref name="sid"/> (created once) and a second-level PASID entry.</summary>
        public void Pasid(ushort sid, uint pasid, ushort did)
        {
            if (!_pasidDirectories.TryGetValue(sid, out ulong dir))
            {
                dir = Bench.AllocFrame();
                Bench.ScalableContext(sid, dir, pdts: 7);
                _pasidDirectories[sid] = dir;
            }

            Bench.PasidEntry(dir, pasid, VtdBench.PasidEntryLow(Sl, 2, 2), did);
        }

        /// <summary>Translates 8 bytes of page <paramref name="page"/>, checks the output address, returns what the caches did.</summary>
        public Outcome Translate(ushort sid, uint? pasid, ulong page)
        {
            Assert.InRange(page, 0UL, 8191UL);
            if (_mapped.Add(page))
            {
                Bench.Map(Sl, 4, page << 12, PageBase + (page << 12));
            }

            return Observe(sid, pasid, (page << 12) | 0x18, (PageBase + (page << 12)) | 0x18);
        }

        /// <summary>
        /// Translates (or, with <paramref name="dma"/>, reads by DMA) 8 bytes at <paramref name="iova"/>,
        /// already mapped by the caller; returns what the caches did and the physical address used.
        /// </summary>
        public (Outcome Caches, ulong Pa) Request(ushort sid, ulong iova, bool dma)
        {
            VtdCacheStatistics before = Unit.Statistics;
            ulong pa;
            if (dma)
            {
                Span<byte> bytes = stackalloc byte[8];
                DmaResult r = Unit.Transfer(sid, null, iova, bytes, DmaAccess.Read);
                Assert.True(r.IsOk, r.ToString());
                pa = r.Address;
            }
            else
            {
                VtdTranslation t = Unit.Translate(sid, null, iova, 8, DmaAccess.Read);
                Assert.Equal(VtdTranslationStatus.Translated, t.Status);
                pa = t.PhysicalAddress;
            }

            VtdCacheStatistics after = Unit.Statistics;
            return (new Outcome(
                Of(after.ContextHits - before.ContextHits, after.ContextMisses - before.ContextMisses),
                Of(after.PasidHits - before.PasidHits, after.PasidMisses - before.PasidMisses),
                Of(after.IotlbHits - before.IotlbHits, after.IotlbMisses - before.IotlbMisses)), pa);
        }

        public Outcome TranslateSuperpage(ushort sid, uint? pasid) => Observe(sid, pasid, SuperpageIova + 0x1_2340, SuperpagePa + 0x1_2340);

        private Outcome Observe(ushort sid, uint? pasid, ulong iova, ulong expectedPa)
        {
            VtdCacheStatistics before = Unit.Statistics;
            VtdTranslation t = Unit.Translate(sid, pasid, iova, 8, DmaAccess.Read);
            VtdCacheStatistics after = Unit.Statistics;
            Assert.Equal(VtdTranslationStatus.Translated, t.Status);
            Assert.Equal(expectedPa, t.PhysicalAddress);
            return new Outcome(
                Of(after.ContextHits - before.ContextHits, after.ContextMisses - before.ContextMisses),
                Of(after.PasidHits - before.PasidHits, after.PasidMisses - before.PasidMisses),
                Of(after.IotlbHits - before.IotlbHits, after.IotlbMisses - before.IotlbMisses));
        }

        private static Lookup Of(long hits, long misses) => (hits, misses) switch
        {
            (0, 0) => Lookup.None,
            (1, 0) => Lookup.Hit,
            (0, 1) => Lookup.Miss,
            _ => Lookup.Inconsistent,
        };

        public void Dispose() => Bench.Dispose();
    }
}
