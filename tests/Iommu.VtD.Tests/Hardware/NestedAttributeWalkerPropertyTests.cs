using System.Globalization;
using Iommu.Devices;
using Iommu.VtD.Hardware;
using Iommu.VtD.Tests.Hardware.Infrastructure;

namespace Iommu.VtD.Tests.Hardware;

/// <summary>
/// First-level and nested translation with request attributes, request by request: the unit against
/// <see cref="IndependentWalker.Request"/> (written from the spec, no model code) over random tables —
/// random U/S, R/W, XD, A, D, EA and PS bits, random second-level permissions under nested guest tables and
/// outputs, random SRE/ERE/WPE/NXE/SMEP/EAFE in the PASID entry and random user/supervisor,
/// read/write/execute requests — comparing the output, page size, writability, fault reason and every
/// paging-structure word the request leaves in memory (the A, EA and D updates). Between requests software
/// sometimes changes an entry and invalidates, so cached answers are checked against the tables too.
/// </summary>
public sealed class NestedAttributeWalkerPropertyTests
{
    private const ushort Rid = 0x0300;
    private const uint Pasid = 0x2A;
    private const ushort Did = 9;
    private const ulong GpaOffset = 0x2000_0000; // nested guest tables sit this far above their host frames
    private const ulong K4 = 4096, M2 = 2UL << 20, G1 = 1UL << 30;

    // IA-32e bits.
    private const ulong P = 1, RW = 2, US = 4, PWT = 8, PCD = 0x10, A = 0x20, D = 0x40, PS = 0x80, G = 0x100, EA = 0x400, XD = 1UL << 63;

    /// <summary>
    /// Over 200 random scenarios every request gets the same answer from the unit and from the walker, and
    /// leaves the tables as the walker says (A/EA on every entry used, D on a written leaf, nothing on a fault).
    /// </summary>
    [Fact]
    public void Property_first_level_and_nested_requests_with_attributes_match_an_independent_walker()
    {
        int seed0 = Environment.GetEnvironmentVariable("NESTED_WALKER_SEED") is string s ? int.Parse(s, CultureInfo.InvariantCulture) : 0x5EED;
        int decided = 0, faults = 0, translated = 0, updates = 0;
        var reasons = new SortedDictionary<int, int>();
        for (int i = 0; i < 200; i++)
        {
            int seed = seed0 + i;
            (int d, int f, int t, int u) = Run(seed, reasons);
            decided += d;
            faults += f;
            translated += t;
            updates += u;
        }

        // The scenarios must reach both outcomes, A/D writes and every fault the walker decides often
        // enough to mean something.
        string stats = $"decided {decided}, faults {faults}, translated {translated}, A/D updates {updates}, reasons "
            + string.Join(", ", reasons.Select(kv => $"0x{kv.Key:x2}: {kv.Value}"));
        Assert.True(decided > 4000 && faults > 1000 && translated > 1500 && updates > 1000, stats);
        foreach (int reason in new[] { 0x5C, 0x5D, 0x71, 0x72, 0x75, 0x76, 0x77, 0x79, 0x80, 0x81, 0x82, 0x84, 0x85, 0x87 })
        {
            Assert.True(reasons.ContainsKey(reason), $"no request faulted 0x{reason:x2}: {stats}");
        }
    }

    private sealed class Scenario(VtdBench b, Random rng, bool nested, int levels, int slAw)
    {
        public VtdBench B { get; } = b;

        public bool Nested { get; } = nested;

        public int Levels { get; } = levels;

        public ulong FlRoot { get; } = b.AllocFrame();

        public ulong SlRoot { get; } = b.AllocFrame();

        public int SlLevels { get; } = slAw + 2;

        public List<(ulong Iova, ulong Size, ulong Output)> Maps { get; } = [];

        public List<ulong> FlEntries { get; } = [];

        public List<ulong> FlFrames { get; } = [];

        private readonly HashSet<(ulong Base, int Level)> _slMapped = [];
        private readonly Dictionary<ulong, int> _slRegionLevel = [];

        private static int Index(ulong a, int level) => (int)((a >> (12 + (9 * (level - 1)))) & 0x1FF);

        private bool Chance(double p) => rng.NextDouble() < p;

        // A new first-level table: host frame, mapped through the second level when nested (mostly
        // readable and writable, sometimes read-only, write-only or not at all).
        public ulong NewTable()
        {
            ulong f = B.AllocFrame();
            FlFrames.Add(f);
            if (Nested)
            {
                MapTableGpa(f);
            }

            return f;
        }

        public void MapTableGpa(ulong host)
        {
            if (Chance(0.015))
            {
                return;
            }

            bool r = !Chance(0.025), w = !Chance(0.1);
            B.Map(SlRoot, SlLevels, host + GpaOffset, host, 1, r, w);
        }

        private ulong Gpa(ulong host) => Nested ? host + GpaOffset : host;

        private ulong Host(ulong e) => (e & 0x000F_FFFF_FFFF_F000) - (Nested ? GpaOffset : 0);

        public ulong TableBits() =>
            P | (Chance(0.93) ? RW : 0) | (Chance(0.95) ? US : 0) | (Chance(0.08) ? XD : 0) | (Chance(0.3) ? A : 0)
            | (Chance(0.15) ? EA : 0) | (Chance(0.1) ? PWT | PCD : 0);

        public ulong LeafBits() =>
            P | (Chance(0.75) ? RW : 0) | (Chance(0.88) ? US : 0) | (Chance(0.25) ? XD : 0) | (Chance(0.3) ? A : 0)
            | (Chance(0.3) ? D : 0) | (Chance(0.15) ? EA : 0) | (Chance(0.2) ? G : 0);

        /// <summary>Maps iova → output with a leaf at leafLevel; false if the path is already used otherwise.</summary>
        public bool Map(ulong iova, int leafLevel, ulong output)
        {
            ulong t = FlRoot;
            for (int level = Levels; level > leafLevel; level--)
            {
                ulong slot = t + ((ulong)Index(iova, level) * 8);
                ulong e = B.Memory.ReadUInt64(slot);
                if ((e & P) == 0)
                {
                    ulong next = NewTable();
                    e = Gpa(next) | TableBits();
                    B.Memory.WriteUInt64(slot, e);
                    FlEntries.Add(slot);
                }
                else if (level <= 3 && (e & PS) != 0)
                {
                    return false;
                }

                t = Host(e);
            }

            ulong leafSlot = t + ((ulong)Index(iova, leafLevel) * 8);
            if (B.Memory.ReadUInt64(leafSlot) != 0)
            {
                return false;
            }

            B.Memory.WriteUInt64(leafSlot, output | LeafBits() | (leafLevel > 1 ? PS : 0));
            FlEntries.Add(leafSlot);
            Maps.Add((iova, 1UL << (12 + (9 * (leafLevel - 1))), output));
            return true;
        }

        /// <summary>Nested: maps the second-level page holding gpa (page size chosen once per 1 GiB region), sometimes not at all.</summary>
        public void SlMapData(ulong gpa)
        {
            ulong region = gpa & ~(G1 - 1);
            if (!_slRegionLevel.TryGetValue(region, out int level))
            {
                level = rng.Next(10) switch { < 6 => 1, < 9 => 2, _ => 3 };
                if ((level == 3 && !B.Config.SecondLevel1GiBPages) || gpa >> 48 != 0)
                {
                    level = 1;
                }

                _slRegionLevel[region] = level;
            }

            ulong size = 1UL << (12 + (9 * (level - 1)));
            ulong pageBase = gpa & ~(size - 1);
            if (!_slMapped.Add((pageBase, level)) || Chance(0.06) || gpa >> (30 + (9 * (SlLevels - 2))) != 0)
            {
                return;
            }

            ulong hpa = Chance(0.04) && level == 1 ? 0xFEE0_0000 : ((ulong)rng.NextInt64(1, 1L << 10) * G1) + ((ulong)rng.Next(0, 512) * size % G1);
            hpa &= ~(size - 1);
            B.Map(SlRoot, SlLevels, pageBase, hpa, level, !Chance(0.1), !Chance(0.25));
        }

        /// <summary>One random corruption of a first-level entry: P cleared, a reserved bit set, or PS where it is reserved.</summary>
        public void Corrupt()
        {
            if (FlEntries.Count == 0)
            {
                return;
            }

            ulong slot = FlEntries[rng.Next(FlEntries.Count)];
            ulong e = B.Memory.ReadUInt64(slot);
            e = rng.Next(4) switch
            {
                0 => e & ~P,
                1 => e | (1UL << 51),
                2 => e | (1UL << 13), // reserved only in a large leaf
                _ => e ^ XD,
            };
            B.Memory.WriteUInt64(slot, e);
        }
    }

    private static VtdConfig RandomConfig(Random rng)
    {
        VtdConfig c = rng.Next(3) == 0 ? VtdConfig.ScalableModeFirstLevel57Bit : VtdConfig.ScalableModeFirstLevel48Bit;
        return c with
        {
            ExecuteRequests = true,
            SupervisorRequests = true,
            RidPasidSupport = rng.Next(2) == 0,
            FirstLevel1GiBPages = rng.Next(4) != 0,
            SecondLevel1GiBPages = rng.Next(4) != 0,
            HostAddressWidth = rng.Next(3) == 0 ? 52 : 46,
        };
    }

    internal static (int Decided, int Faults, int Translated, int Updates) Run(int seed, SortedDictionary<int, int> reasons)
    {
        var rng = new Random(seed);
        VtdConfig config = RandomConfig(rng);
        using var b = new VtdBench(config);
        bool nested = rng.Next(3) != 0;
        int levels = config.FirstLevel5LevelPaging && rng.Next(2) == 0 ? 5 : 4;
        int slAw = config.Supports57BitTables && rng.Next(2) == 0 ? 3 : 2;
        ulong dir = b.AllocFrame();
        b.ScalableContext(Rid, dir, pdts: 7, ridPasid: config.RidPasidSupport ? Pasid : 0); // RID_PASID is reserved without ECAP.RPS in the model
        var s = new Scenario(b, rng, nested, levels, slAw);
        s.FlFrames.Add(s.FlRoot);
        if (nested)
        {
            s.MapTableGpa(s.FlRoot);
        }

        // Random PASID-entry controls: SRE, ERE, WPE, NXE, SMEP, EAFE.
        ulong q2Flags = 0;
        foreach (ulong bit in new ulong[] { 1, 2, 0x10, 0x20, 0x40, 0x80 })
        {
            q2Flags |= rng.Next(2) == 0 ? bit : 0;
        }

        ulong q0 = 1 | ((ulong)slAw << 2) | ((nested ? 3UL : 1UL) << 6) | (nested ? s.SlRoot : 0);
        ulong q2 = (s.FlRoot + (nested ? GpaOffset : 0)) | q2Flags | (levels == 5 ? 4UL : 0);
        b.PasidEntry(dir, Pasid, q0, Did, q2: q2);

        // Two clusters of IOVAs (so paths share upper tables), canonical for the first-level width.
        int width = levels == 4 ? 48 : 57;
        ulong Canonical(ulong a) => ((a >> (width - 1)) & 1) != 0 ? a | ~((1UL << width) - 1) : a & ((1UL << width) - 1);
        ulong[] clusters = [Canonical((ulong)rng.NextInt64() & ~(G1 - 1)), Canonical((ulong)rng.NextInt64(0, 1L << 40) & ~(G1 - 1))];
        int maps = rng.Next(3, 9);
        for (int i = 0; i < maps; i++)
        {
            int leafLevel = rng.Next(10) switch { < 6 => 1, < 9 => 2, _ => 3 };
            ulong size = 1UL << (12 + (9 * (leafLevel - 1)));
            ulong iova = Canonical((clusters[rng.Next(2)] + ((ulong)rng.NextInt64(0, 8L * (long)G1) & ~(size - 1))) & ~(size - 1));
            ulong output = rng.Next(25) switch
            {
                0 => 0xFEE0_0000UL & ~(size - 1), // the interrupt window
                1 or 2 => (1UL << 48) + ((ulong)rng.Next(1, 64) * G1), // beyond a 48-bit second level / a 46-bit host
                _ => ((ulong)rng.NextInt64(2, 1L << 12) * G1) + ((ulong)rng.NextInt64(0, (long)(G1 / size)) * size),
            };
            s.Map(iova, leafLevel, output);
        }

        // Request addresses: in and around every mapping, plus strays (unmapped, non-canonical).
        var iovas = new List<ulong>();
        foreach ((ulong iova, ulong size, _) in s.Maps)
        {
            iovas.Add(iova);
            iovas.Add(iova + ((ulong)rng.NextInt64(0, (long)size) & ~7UL));
            iovas.Add(iova + size - 8);
        }

        iovas.Add(clusters[0] + ((ulong)rng.NextInt64(0, 1L << 33) & ~7UL));
        iovas.Add(1UL << (width - 1)); // non-canonical
        if (nested)
        {
            foreach ((ulong iova, ulong size, ulong output) in s.Maps)
            {
                foreach (ulong a in iovas.Where(a => a - iova < size))
                {
                    s.SlMapData(output + (a - iova));
                }
            }
        }

        int corruptions = rng.Next(5) switch { < 3 => 0, 3 => 1, _ => 2 };
        for (int i = 0; i < corruptions; i++)
        {
            s.Corrupt();
        }

        b.Enable(scalable: true);
        b.EnableQueue(wide: true);

        // The frames A/D may land in (every first-level table), and when nested their guest-physical
        // aliases, where a unit that wrote to the guest-physical address instead of the host frame would leave it.
        var frames = new List<ulong>(s.FlFrames);
        if (nested)
        {
            frames.AddRange(s.FlFrames.Select(f => f + GpaOffset));
            frames.Add(s.SlRoot);
        }

        int decided = 0, faults = 0, translated = 0, updates = 0;
        var log = new List<string>();
        int requests = rng.Next(30, 60);
        for (int n = 0; n < requests; n++)
        {
            if (rng.Next(10) == 0 && s.FlEntries.Count > 0)
            {
                // Software changes a first-level entry (a permission, P, or clears A/D/EA as an OS
                // harvesting them does) and invalidates as Linux does for the PGTT: PASID-based IOTLB,
                // plus domain-selective IOTLB for nested. Cached answers must not outlive it.
                ulong slot = s.FlEntries[rng.Next(s.FlEntries.Count)];
                ulong flip = new[] { P, RW, US, XD, A, D, EA }[rng.Next(7)];
                b.Memory.WriteUInt64(slot, b.Memory.ReadUInt64(slot) ^ flip);
                b.Submit(0x6 | (2UL << 4) | ((ulong)Did << 16) | ((ulong)Pasid << 32));
                if (nested)
                {
                    b.Submit(0x2 | (2UL << 4) | ((ulong)Did << 16));
                }

                log.Add($"entry 0x{slot:x} ^= 0x{flip:x}, invalidated");
            }

            ulong iova = iovas[rng.Next(iovas.Count)];
            var kind = new ReferenceRequestKind(rng.Next(3) == 0, rng.Next(10) < 3, rng.Next(4) == 0);
            uint? pasid = config.RidPasidSupport && rng.Next(6) == 0 ? null : Pasid;
            var walker = new IndependentWalker(b.Unit, b.Memory);
            ReferenceOutcome want = walker.Request(Rid, pasid, iova, kind);
            ulong[] before = Snapshot(b, frames);
            DmaRequestAttributes attrs = (kind.Supervisor ? DmaRequestAttributes.Privileged : 0) | (kind.Execute ? DmaRequestAttributes.Execute : 0);
            VtdTranslation got = b.Unit.Translate(Rid, pasid, iova, 8, kind.Write ? DmaAccess.Write : DmaAccess.Read, attrs);
            string why = $"seed {seed} ({(nested ? "nested" : "first level")} {levels}-level, SL AW {slAw}, HAW {config.HostAddressWidth}, FL1GP {config.FirstLevel1GiBPages}, SL1G {config.SecondLevel1GiBPages}, q2 flags 0x{q2Flags:x}) "
                + $"request {n}: pasid {(pasid is null ? "-" : "0x" + pasid.Value.ToString("x", CultureInfo.InvariantCulture))} iova 0x{iova:x} {kind}\n  walker: {want}\n  unit:   {got}\n  earlier: " + string.Join("\n    ", log.TakeLast(6));
            log.Add($"{n}: 0x{iova:x} {kind} -> {got.Status} {got.Reason}");
            if (want.Undecided)
            {
                continue;
            }

            decided++;
            if (want.Translated)
            {
                translated++;
                Assert.True(got.Status == VtdTranslationStatus.Translated, why);
                Assert.True(got.PhysicalAddress == want.Pa && got.PageSize == want.PageSize && got.Writable == want.Writable, why);
            }
            else
            {
                faults++;
                Assert.True(got.Status == VtdTranslationStatus.Fault && want.Accepts((int)got.Reason), why);
                reasons[(int)got.Reason] = reasons.GetValueOrDefault((int)got.Reason) + 1;
            }

            // Memory: exactly the walker's A/EA/D updates, nothing else (a fault writes nothing).
            foreach ((ulong address, ulong value) in want.Updates)
            {
                int i = frames.IndexOf(address & ~0xFFFUL);
                Assert.True(i >= 0, why + $"\n  update at 0x{address:x} outside the first-level tables");
                before[(i * 512) + (int)((address & 0xFFF) / 8)] = value;
            }

            updates += want.Updates.Count;
            for (int f = 0; f < frames.Count; f++)
            {
                Span<ulong> now = b.Memory.Table(frames[f]);
                Span<ulong> expected = before.AsSpan(f * 512, 512);
                if (!now.SequenceEqual(expected))
                {
                    int w = 0;
                    while (now[w] == expected[w])
                    {
                        w++;
                    }

                    Assert.Fail(why + $"\n  memory at 0x{frames[f] + ((ulong)w * 8):x}: expected 0x{expected[w]:x}, found 0x{now[w]:x}");
                }
            }
        }

        return (decided, faults, translated, updates);
    }

    private static ulong[] Snapshot(VtdBench b, List<ulong> frames)
    {
        var result = new ulong[frames.Count * 512];
        for (int f = 0; f < frames.Count; f++)
        {
            b.Memory.Table(frames[f]).CopyTo(result.AsSpan(f * 512, 512));
        }

        return result;
    }
}
