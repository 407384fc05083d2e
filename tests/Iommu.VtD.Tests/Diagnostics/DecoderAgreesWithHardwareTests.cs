using System.Buffers.Binary;
using System.Globalization;
using System.Text.RegularExpressions;
using Iommu.Devices;
using Iommu.VtD.Diagnostics;
using Iommu.VtD.Hardware;

namespace Iommu.VtD.Tests.Diagnostics;

/// <summary>
/// What the decoder says about raw entry bytes is what the hardware model does with them: random root,
/// context and PASID structures and first- and second-level entries at every level (not present, table
/// pointers, leaves, PS where it is reserved, random permission and ignored bits, and now and then reserved
/// bits: address bits at or above HAW, bit 62, SNP, bits inside a large page, AW outside SAGAW, TT 01 without
/// ECAP.DT, capability-gated context and PASID-entry bits) are written into an image for a unit of random
/// capabilities, decoded with <see cref="VtdDecoder.DescribeWalk(VtdImage, VtdConfig, ushort, uint?, ulong)"/>,
/// and the same request is sent through the unit (<see cref="VtdImage.Probe"/>). Every claim the decoder
/// makes ("not present", "next table @X", "leaf: S page @A", "…: fault 0xNN") must match the unit's
/// translation or fault.
/// </summary>
public sealed partial class DecoderAgreesWithHardwareTests
{
    private const ulong RootTable = 0x10000, ContextTable = 0x11000, FirstTable = 0x20000;
    private const ushort Rid = 0x0018; // 00:03.0

    [Fact]
    public void Property_a_decoded_legacy_walk_is_the_walk_the_unit_does()
    {
        var master = new Random(0x5d17);
        for (int i = 0; i < 3000; i++)
        {
            Seeded(master.Next(), LegacyCase);
        }
    }

    // Names the seed in any failure: rerun one case with that method and seed.
    internal static void Seeded(int seed, Action<int> run)
    {
        try
        {
            run(seed);
        }
        catch (Exception ex) when (ex is not Xunit.Sdk.XunitException || !ex.Message.Contains("Case(", StringComparison.Ordinal))
        {
            throw new Xunit.Sdk.XunitException(string.Create(CultureInfo.InvariantCulture, $"{run.Method.Name}({seed}) failed: {ex.Message}"), ex);
        }
    }

    internal static void LegacyCase(int seed)
    {
        var rng = new Random(seed);
        VtdConfig config = (rng.Next(2) == 0 ? VtdConfig.Legacy39Bit : VtdConfig.Legacy48Bit) with
        {
            // Capabilities that decide what is reserved: superpage sizes (CAP.SLLPS), SNP in leaves (ECAP.SC), ECAP.PT.
            SecondLevel2MiBPages = rng.Next(4) != 0,
            SecondLevel1GiBPages = rng.Next(4) != 0,
            SnoopControl = rng.Next(2) == 0,
            PassThrough = rng.Next(4) != 0,
        };
        string tag = string.Create(CultureInfo.InvariantCulture, $"LegacyCase({seed}) on {config.HostAddressWidth}-bit HAW, 2M {config.SecondLevel2MiBPages} 1G {config.SecondLevel1GiBPages} SC {config.SnoopControl} PT {config.PassThrough}");
        int aw = config.SupportsAw(2) && rng.Next(2) == 0 ? 2 : 1;
        int levels = aw + 2;
        ulong iova = RandomInput(rng, 30 + (9 * aw));

        // TT 00 (translated), 01 (with device-TLB: no legacy unit has ECAP.DT), 10 (pass-through) or 11 (reserved).
        int tt = rng.Next(6) switch { 0 => VtdFormat.TtPassThrough, 1 => 3, 2 => VtdFormat.TtTranslatedWithDeviceTlb, _ => VtdFormat.TtTranslated };
        ulong c0 = VtdFormat.Present | ((ulong)tt << VtdFormat.ContextTtShift) | TableAt(levels) | Sometimes(rng, 8, 0xFF0 | AboveHaw(rng, config.HostAddressWidth));
        // AW: the table depth, or now and then a value outside SAGAW (0, 4-7, or 2 on a 39-bit unit).
        int awField = rng.Next(8) == 0 ? rng.Next(8) : aw;
        ulong c1 = (uint)awField | ((uint)rng.Next(1, 256) << VtdFormat.ContextDidShift) | Sometimes(rng, 8, 0xFFFF_FFFF_FF00_0080);
        if (awField != aw && config.SupportsAw(awField))
        {
            awField = aw;
            c1 = (c1 & ~7UL) | (uint)aw;
        }

        var chunks = new List<VtdImageChunk>
        {
            Table(RootTable, VtdImageChunkKind.RootTable, 0, (Rid >> 8) * 16, VtdFormat.Present | ContextTable | Sometimes(rng, 10, 0xFFE | AboveHaw(rng, config.HostAddressWidth)), Sometimes(rng, 10, ulong.MaxValue)),
            Table(ContextTable, VtdImageChunkKind.LegacyContextTable, 0, (Rid & 0xFF) * 16, c0, c1),
        };
        for (int level = levels; level >= 1; level--)
        {
            int index = (int)((iova >> (12 + (9 * (level - 1)))) & 0x1FF);
            chunks.Add(Table(TableAt(level), VtdImageChunkKind.PageTable, level, index * 8, WithReservedBits(rng, RandomSecondLevelEntry(rng, level, config.HostAddressWidth), level, config.HostAddressWidth, firstLevel: false)));
        }

        var image = new VtdImage(RootTable, config.HostAddressWidth, true, chunks);
        // Now and then a request with PASID, which a legacy-mode root table refuses.
        uint? pasid = rng.Next(20) == 0 ? (uint)rng.Next(1 << 20) : null;
        tag += pasid is uint pv ? string.Create(CultureInfo.InvariantCulture, $" PASID {pv}") : "";
        IReadOnlyList<VtdEntryDescription> walk = VtdDecoder.DescribeWalk(image, config, Rid, pasid, iova);
        VtdProbeResult hw = image.Probe(config, [new VtdProbe(Rid, pasid, iova, DmaAccess.Read)]).Probes[0];
        string decoded = string.Join(" | ", walk.Select(e => $"{e.Structure} @0x{e.Address:x} = 0x{e.Value:x}: {e.Meaning}"));
        string why = $"{tag}: iova 0x{iova:x}, decoded [{decoded}], unit {hw.Status} 0x{hw.PhysicalAddress:x} {hw.Reason}";
        if (CheckFaultClaim(walk, hw, why))
        {
            return;
        }

        // An address in the interrupt window (a request without PASID) is an interrupt message, not a DMA request.
        if (pasid is null && iova >> 20 == 0xFEE)
        {
            Assert.True(walk.Count == 0 && hw.Status == VtdTranslationStatus.InterruptRange, why);
            return;
        }

        VtdEntryDescription ctx = walk[1];
        if (ctx.Meaning.StartsWith("TT=pass-through", StringComparison.Ordinal))
        {
            // Pass-through output is the input, which must fit the host address width.
            Assert.True(iova < (1UL << config.HostAddressWidth)
                ? hw.IsTranslated && hw.PhysicalAddress == iova
                : hw.IsFault && hw.Reason == VtdFaultReason.AddressBeyondMgaw, why);
            Assert.Equal(2, walk.Count);
            return;
        }

        if (ctx.Meaning.Contains("reserved", StringComparison.Ordinal))
        {
            Assert.True(hw.IsFault && hw.Reason == VtdFaultReason.ContextEntryInvalid, why);
            return;
        }

        Assert.True(ctx.Meaning.StartsWith("TT=translated", StringComparison.Ordinal), why);
        Assert.Contains(string.Create(CultureInfo.InvariantCulture, $"AW {levels}-level"), ctx.Meaning, StringComparison.Ordinal);
        CheckSecondLevel(walk.Skip(2).ToList(), levels, iova, hw, VtdFaultReason.Read, VtdFaultReason.PagingEntryReserved, why);
    }

    [Fact]
    public void Property_a_decoded_scalable_walk_is_the_walk_the_unit_does()
    {
        var master = new Random(0x5d18);
        for (int i = 0; i < 3000; i++)
        {
            Seeded(master.Next(), ScalableCase);
        }
    }

    /// <summary>
    /// A request without PASID (RID_PASID 0, a user request) through a random PASID entry (every PGTT value,
    /// FLPM 00/10/11) and then random first- or second-level entries; the decoder's reading of each must be
    /// what the unit does.
    /// </summary>
    internal static void ScalableCase(int seed)
    {
        var rng = new Random(seed);
        bool secondLevel = rng.Next(4) != 0;
        bool dt = rng.Next(3) == 0;
        bool pasidSupport = rng.Next(4) != 0;
        VtdConfig config = VtdConfig.ScalableModeFirstLevel48Bit with
        {
            // Capabilities that decide what is reserved or accepted in the PASID entry and the paging entries.
            SecondLevelTranslation = secondLevel,
            NestedTranslation = secondLevel,
            PassThrough = rng.Next(4) != 0,
            SupervisorRequests = rng.Next(2) == 0,
            ExecuteRequests = rng.Next(2) == 0,
            ExtendedAccessedFlag = rng.Next(2) == 0,
            FirstLevel1GiBPages = rng.Next(3) != 0,
            SecondLevel2MiBPages = rng.Next(4) != 0,
            SecondLevel1GiBPages = rng.Next(4) != 0,
            SnoopControl = rng.Next(2) == 0,
            DeviceTlb = dt,
            PageRequests = dt && pasidSupport && rng.Next(2) == 0,
            RidPasidSupport = rng.Next(4) != 0,
            PasidSupport = pasidSupport,
        };
        string tag = string.Create(CultureInfo.InvariantCulture, $"ScalableCase({seed}) on CAP 0x{config.Cap:x} ECAP 0x{config.Ecap:x} (SL {config.SecondLevelTranslation} PT {config.PassThrough} SRS {config.SupervisorRequests} ERS {config.ExecuteRequests} EAFS {config.ExtendedAccessedFlag} FL1GP {config.FirstLevel1GiBPages} SL 2M {config.SecondLevel2MiBPages} 1G {config.SecondLevel1GiBPages} SC {config.SnoopControl} DT {config.DeviceTlb} PRS {config.PageRequests} RPS {config.RidPasidSupport})");
        const int Levels = 4;
        int haw = config.HostAddressWidth;
        ulong iova = RandomInput(rng, 47);
        int pgtt = rng.Next(10) switch { < 5 => VtdFormat.PgttFirstLevel, < 7 => VtdFormat.PgttSecondLevel, 7 => VtdFormat.PgttPassThrough, _ => rng.Next(2) == 0 ? 0 : rng.Next(5, 8) };
        // FLPM 01 (5-level) only where the unit lacks CAP.FL5LP: the tables here are 4-level.
        int flpm = rng.Next(8) == 0 ? rng.Next(1, 4) : 0;
        // AW 2 (4-level) or now and then one outside SAGAW (0, 4-7).
        ulong awField = rng.Next(10) == 0 ? (ulong)(rng.Next(4) switch { 0 => 0, _ => rng.Next(4, 8) }) : 2;
        ulong q0 = VtdFormat.Present | (awField << VtdFormat.PasidAwShift) | ((ulong)pgtt << VtdFormat.PasidPgttShift) | TableAt(Levels)
            | Sometimes(rng, 12, 0xE00 | AboveHaw(rng, haw));
        ulong q1 = (uint)rng.Next(1, 256) | Sometimes(rng, 12, 0x7F_0000);
        ulong q2 = TableAt(Levels) | ((ulong)flpm << VtdFormat.PasidFlpmShift) | ((ulong)rng.Next(256) & (VtdFormat.PasidWpe | VtdFormat.PasidSre | VtdFormat.PasidEre | VtdFormat.PasidEafe))
            | Sometimes(rng, 12, 0xF00 | AboveHaw(rng, haw));
        const ulong ContextTable0 = ContextTable, PasidDirectory = 0x12000, PasidTable = 0x13000;
        // Context entry: DTE/PASIDE/PRE at random (reserved without ECAP.DT/PASID/PRS), RID_PRIV and a RID_PASID
        // below 64 now and then (reserved without ECAP.RPRIVS / ECAP.RPS; with RPS it names another PASID-table slot).
        int pdts = rng.Next(3) == 0 ? rng.Next(8) : 0;
        ulong c0 = VtdFormat.Present | PasidDirectory | ((ulong)rng.Next(8) << 2) | ((ulong)pdts << VtdFormat.ScalableContextPdtsShift) | Sometimes(rng, 10, 0x1E0 | AboveHaw(rng, haw));
        ulong c1 = Sometimes(rng, 10, 0xFFFF_FFFF_FFF0_003F);
        if (rng.Next(10) == 0)
        {
            // A RID_PASID anywhere in 20 bits: now and then beyond the directory PDTS sizes.
            c1 = (c1 & ~VtdFormat.ScalableContextRidPasidMask) | InDirectoryOrBeyond((uint)rng.Next(1 << 20), pdts);
        }

        // A request with PASID now and then (PASID 0, an empty PASID-table slot, or any 20-bit PASID).
        uint? pasid = rng.Next(4) != 0 ? null : rng.Next(3) switch { 0 => 0u, 1 => (uint)rng.Next(64), _ => InDirectoryOrBeyond((uint)rng.Next(1 << 20), pdts) };
        // devfn 0x18 (root entry's lower half) or 0x98 (upper); now and then the entry is in the other half.
        ushort rid = rng.Next(2) == 0 ? Rid : (ushort)(Rid | 0x80);
        bool wrongHalf = rng.Next(10) == 0;
        ulong rootEntry = VtdFormat.Present | ContextTable0 | Sometimes(rng, 10, 0xFFE | AboveHaw(rng, haw));
        ulong otherHalf = Sometimes(rng, 4, ulong.MaxValue) & (wrongHalf ? ~VtdFormat.Present : ulong.MaxValue);
        bool upper = ((rid & 0x80) != 0) ^ wrongHalf;
        tag += string.Create(CultureInfo.InvariantCulture, $" PASID {(pasid is uint pv ? pv.ToString(CultureInfo.InvariantCulture) : "none")} RID 0x{rid:x4}{(wrongHalf ? " (root entry in the other half)" : "")} PDTS {pdts} PASID {config.PasidSupport}");
        var chunks = new List<VtdImageChunk>
        {
            Table(RootTable, VtdImageChunkKind.RootTable, 0, (rid >> 8) * 16, upper ? otherHalf : rootEntry, upper ? rootEntry : otherHalf),
            Table(ContextTable0, VtdImageChunkKind.ScalableContextTable, 0, (rid & 0x7F) * 32, c0, c1, Sometimes(rng, 20, ulong.MaxValue), Sometimes(rng, 20, ulong.MaxValue)),
            Table(PasidDirectory, VtdImageChunkKind.PasidDirectory, 0, 0, VtdFormat.Present | PasidTable | Sometimes(rng, 10, 0xFFC | AboveHaw(rng, haw))),
            Table(PasidTable, VtdImageChunkKind.PasidTable, 0, 0, q0, q1, q2, 0, 0, Sometimes(rng, 20, ulong.MaxValue)),
        };
        bool firstLevel = pgtt == VtdFormat.PgttFirstLevel;
        for (int level = Levels; level >= 1; level--)
        {
            int index = (int)((iova >> (12 + (9 * (level - 1)))) & 0x1FF);
            ulong entry = WithReservedBits(rng, firstLevel ? RandomFirstLevelEntry(rng, level, haw) : RandomSecondLevelEntry(rng, level, haw), level, haw, firstLevel);
            chunks.Add(Table(TableAt(level), firstLevel ? VtdImageChunkKind.FirstLevelTable : VtdImageChunkKind.PageTable, level, index * 8, entry));
        }

        var image = new VtdImage(RootTable | (1UL << 10), config.HostAddressWidth, true, chunks);
        IReadOnlyList<VtdEntryDescription> walk = VtdDecoder.DescribeWalk(image, config, rid, pasid, iova);
        VtdProbeResult hw = image.Probe(config, [new VtdProbe(rid, pasid, iova, DmaAccess.Read)]).Probes[0];
        string decoded = string.Join(" | ", walk.Select(e => $"{e.Structure} @0x{e.Address:x} = 0x{e.Value:x}: {e.Meaning}"));
        string why = $"{tag}: iova 0x{iova:x}, decoded [{decoded}], unit {hw.Status} 0x{hw.PhysicalAddress:x} {hw.Reason}";
        if (CheckFaultClaim(walk, hw, why))
        {
            return;
        }

        // An address in the interrupt window without PASID is an interrupt message, not a DMA request.
        if (pasid is null && iova >> 20 == 0xFEE)
        {
            Assert.True(walk.Count == 0 && hw.Status == VtdTranslationStatus.InterruptRange, why);
            return;
        }

        if (walk.Count <= 4 && walk[^1].Meaning.EndsWith("not present", StringComparison.Ordinal))
        {
            // A RID_PASID other than 0 names an empty PASID-table slot.
            VtdFaultReason expected = (walk.Count - 1) switch
            {
                0 => VtdFaultReason.ScalableRootEntryNotPresent,
                1 => VtdFaultReason.ScalableContextEntryNotPresent,
                2 => VtdFaultReason.PasidDirectoryEntryNotPresent,
                _ => VtdFaultReason.PasidEntryNotPresent,
            };
            Assert.True(hw.IsFault && hw.Reason == expected, why);
            return;
        }

        string pe = walk[3].Meaning;
        if (pe.Contains("reserved", StringComparison.Ordinal))
        {
            Assert.True(hw.IsFault && hw.Reason == VtdFaultReason.PasidEntryInvalid, why);
            return;
        }

        if (pe.StartsWith("PGTT=pass-through", StringComparison.Ordinal))
        {
            Assert.True(walk.Count == 4 && (iova < (1UL << config.HostAddressWidth)
                ? hw.IsTranslated && hw.PhysicalAddress == iova
                : hw.IsFault && hw.Reason == VtdFaultReason.ScalableAddressBeyondWidth), why);
            return;
        }

        if (pe.StartsWith("PGTT=second-level", StringComparison.Ordinal))
        {
            CheckSecondLevel(walk.Skip(4).ToList(), Levels, iova, hw, VtdFaultReason.ScalableRead, VtdFaultReason.SecondLevelReserved, why);
            return;
        }

        Assert.True(pe.StartsWith("PGTT=first-level", StringComparison.Ordinal) && pe.Contains("FLPM 4-level", StringComparison.Ordinal), why);
        CheckFirstLevel(walk.Skip(4).ToList(), Levels, iova, hw, why);
    }

    // A user read: P and U/S needed at every level; R/W, A/D, PWT/PCD, G and ignored bits change nothing for it.
    private static void CheckFirstLevel(List<VtdEntryDescription> entries, int levels, ulong iova, VtdProbeResult hw, string why)
    {
        bool user = true, write = true;
        for (int i = 0; i < entries.Count; i++)
        {
            VtdEntryDescription e = entries[i];
            int level = levels - i;
            bool last = i == entries.Count - 1;
            ulong expectedAt = i == 0 ? TableAt(levels) : (entries[i - 1].Value & VtdFormat.FlAddressMask);
            Assert.True(e.Address == expectedAt + (((iova >> (12 + (9 * (level - 1)))) & 0x1FF) * 8), why);
            if (e.Meaning == "not present")
            {
                Assert.True(last && hw.IsFault && hw.Reason == VtdFaultReason.FirstLevelNotPresent, why);
                return;
            }

            string[] bits = e.Meaning.Split(':', ' ');
            user &= bits.Contains("US");
            write &= bits.Contains("RW");
            if (e.Meaning.Contains("reserved", StringComparison.Ordinal))
            {
                Assert.True(last && hw.IsFault && hw.Reason == VtdFaultReason.FirstLevelReserved, why);
                return;
            }

            Match next = FirstLevelNextTable().Match(e.Meaning);
            if (next.Success)
            {
                Assert.False(last, why);
                Assert.Equal(ulong.Parse(next.Groups[1].Value, NumberStyles.HexNumber, CultureInfo.InvariantCulture), entries[i + 1].Address & ~0xFFFUL);
                continue;
            }

            Match leaf = FirstLevelLeaf().Match(e.Meaning);
            Assert.True(leaf.Success && last, why);
            ulong size = leaf.Groups[1].Value switch { "4K" => 1UL << 12, "2M" => 1UL << 21, _ => 1UL << 30 };
            Assert.Equal(size, 1UL << (12 + (9 * (level - 1))));
            ulong page = ulong.Parse(leaf.Groups[2].Value, NumberStyles.HexNumber, CultureInfo.InvariantCulture);
            if (!user)
            {
                Assert.True(hw.IsFault && hw.Reason == VtdFaultReason.UserAccessDenied, why);
                return;
            }

            if ((page + (iova & (size - 1))) >> 20 == 0xFEE)
            {
                Assert.True(hw.IsFault, why);
                return;
            }

            // The page address the decoder names is the unit's output base, exactly.
            Assert.True(hw.IsTranslated, why);
            Assert.True(hw.PhysicalAddress == page + (iova & (size - 1)) && hw.PageSize == size && hw.Writable == write, why);
            return;
        }

        Assert.Fail("The decoded walk ended without a leaf, a fault or a not-present entry. " + why);
    }

    // Not present (P = 0), a table pointer (PS in PML4Es sometimes: reserved), or a leaf (PS at levels 2 and 3,
    // PAT in bit 12 of a large leaf sometimes); U/S mostly set; R/W, PWT, PCD, A, D, G and ignored bits random.
    internal static ulong RandomFirstLevelEntry(Random rng, int level, int haw)
    {
        ulong noise = (ulong)rng.NextInt64() & (VtdFormat.FlReadWrite | VtdFormat.FlWriteThrough | VtdFormat.FlCacheDisable | VtdFormat.FlAccessed
            | VtdFormat.FlDirty | (1UL << 8) | (1UL << 9) | (1UL << 11) | (0x7FFUL << 52));
        ulong us = rng.Next(6) == 0 ? 0 : VtdFormat.FlUser;
        ulong p = VtdFormat.FlPresent;
        switch (rng.Next(level == 1 ? 3 : 4))
        {
            case 0:
                return noise | us | ((ulong)rng.NextInt64() & VtdFormat.FlAddressMask & ((1UL << haw) - 1));
            case 1 when level > 1:
                return noise | us | p | TableAt(level - 1) | (level >= 4 && rng.Next(3) == 0 ? VtdFormat.FlPageSize : 0);
            default:
                ulong page = InterruptWindowSometimes(rng, level, (ulong)rng.NextInt64() & VtdFormat.FlAddressMask & ((1UL << haw) - 1) & ~((1UL << (12 + (9 * (level - 1)))) - 1));
                ulong pat = level is 2 or 3 && rng.Next(3) == 0 ? 1UL << 12 : 0;
                return level > 3
                    ? noise | us | p | TableAt(level - 1)
                    : noise | us | p | page | pat | (level > 1 ? VtdFormat.FlPageSize : (ulong)rng.Next(2) << 7);
        }
    }

    /// <summary>Holds the decoder's reading of the paging entries of a walk to the unit's answer for a read.</summary>
    internal static void CheckSecondLevel(List<VtdEntryDescription> entries, int levels, ulong iova, VtdProbeResult hw, VtdFaultReason notPresent, VtdFaultReason reserved, string why)
    {
        bool read = true, write = true;
        for (int i = 0; i < entries.Count; i++)
        {
            VtdEntryDescription e = entries[i];
            int level = levels - i;
            bool last = i == entries.Count - 1;
            ulong expectedAt = i == 0 ? TableAt(levels) : (entries[i - 1].Value & VtdFormat.SlAddressMask);
            Assert.True(e.Address == expectedAt + (((iova >> (12 + (9 * (level - 1)))) & 0x1FF) * 8), why);
            if (e.Meaning == "not present")
            {
                Assert.True(last && hw.IsFault && hw.Reason == notPresent, why);
                return;
            }

            read &= e.Meaning.StartsWith('R');
            write &= e.Meaning.Contains('W', StringComparison.Ordinal);
            if (e.Meaning.Contains("reserved", StringComparison.Ordinal))
            {
                Assert.True(last && hw.IsFault && hw.Reason == reserved, why);
                return;
            }

            Match next = NextTable().Match(e.Meaning);
            if (next.Success)
            {
                Assert.False(last, why);
                Assert.Equal(ulong.Parse(next.Groups[1].Value, NumberStyles.HexNumber, CultureInfo.InvariantCulture), entries[i + 1].Address & ~0xFFFUL);
                continue;
            }

            Match leaf = Leaf().Match(e.Meaning);
            Assert.True(leaf.Success && last, why);
            ulong size = leaf.Groups[1].Value switch { "4K" => 1UL << 12, "2M" => 1UL << 21, _ => 1UL << 30 };
            Assert.Equal(size, 1UL << (12 + (9 * (level - 1))));
            ulong page = ulong.Parse(leaf.Groups[2].Value, NumberStyles.HexNumber, CultureInfo.InvariantCulture);
            if (!read)
            {
                Assert.True(hw.IsFault && hw.Reason == notPresent, why);
                return;
            }

            ulong pa = (page & ~(size - 1)) + (iova & (size - 1));
            if (pa >> 20 == 0xFEE)
            {
                Assert.True(hw.IsFault && hw.Reason is VtdFaultReason.InterruptAddress or VtdFaultReason.ScalableInterruptAddress, why);
                return;
            }

            Assert.True(hw.IsTranslated, why);
            Assert.True(hw.PhysicalAddress == pa && hw.PageSize == size && hw.Writable == write, why);
            return;
        }

        Assert.Fail("The decoded walk ended without a leaf, a fault or a not-present entry. " + why);
    }

    // A 4K or 2M page in the interrupt window 0xFEEx_xxxx one time in three, else `page`.
    internal static ulong InterruptWindowSometimes(Random rng, int level, ulong page) =>
        level <= 2 && rng.Next(3) == 0 ? 0xFEE0_0000UL | (level == 1 ? (ulong)rng.Next(256) << 12 : 0) : page;

    // Tables at fixed addresses, one per level; a table pointer at level L points at level L-1's.
    internal static ulong TableAt(int level) => FirstTable + ((ulong)(5 - level) * 0x1000);

    // Not present (R = W = 0, anything else), a table pointer (PS at levels 4 and 5 sometimes: reserved there),
    // or a leaf (PS at levels 2 and 3); random A/D/X/ignored bits and output addresses below the host width.
    internal static ulong RandomSecondLevelEntry(Random rng, int level, int haw)
    {
        ulong noise = (ulong)rng.NextInt64() & (VtdFormat.SlExecute | VtdFormat.SlAccessed | VtdFormat.SlDirty | (0x7UL << 3) | (1UL << 10) | (0x3FFUL << 52));
        // R and W half the time, so that walks granting both reach the leaf's output checks.
        ulong perms = rng.Next(2) == 0 ? VtdFormat.SlRead | VtdFormat.SlWrite : (ulong)rng.Next(1, 4);
        switch (rng.Next(level == 1 ? 3 : 4))
        {
            case 0:
                return noise & ~(VtdFormat.SlRead | VtdFormat.SlWrite) | ((ulong)rng.NextInt64() & VtdFormat.SlAddressMask & ((1UL << haw) - 1));
            case 1 when level > 1:
                return noise & ~VtdFormat.SlPageSize | perms | TableAt(level - 1) | (level >= 4 && rng.Next(3) == 0 ? VtdFormat.SlPageSize : 0);
            default:
                ulong page = InterruptWindowSometimes(rng, level, (ulong)rng.NextInt64() & VtdFormat.SlAddressMask & ((1UL << haw) - 1) & ~((1UL << (12 + (9 * (level - 1)))) - 1));
                return level == 1 || level > 3
                    ? (noise & ~VtdFormat.SlPageSize) | perms | (level > 3 ? TableAt(level - 1) : page)
                    : noise | VtdFormat.SlPageSize | perms | page;
        }
    }

    /// <summary>
    /// When the decoder ends an entry's meaning with "…: fault 0xNN", the unit must fault there with that reason;
    /// true when it did (the case is decided). Any "reserved" the decoder names must carry such a claim.
    /// </summary>
    internal static bool CheckFaultClaim(IReadOnlyList<VtdEntryDescription> walk, VtdProbeResult hw, string why)
    {
        for (int i = 0; i < walk.Count; i++)
        {
            Match m = FaultClaim().Match(walk[i].Meaning);
            Assert.True(m.Success || !walk[i].Meaning.Contains("reserved", StringComparison.Ordinal), "A reserved field without the fault it causes. " + why);
            if (m.Success)
            {
                Assert.True(hw.IsFault && (byte)hw.Reason == byte.Parse(m.Groups[1].Value, NumberStyles.HexNumber, CultureInfo.InvariantCulture), why);
                return true;
            }
        }

        return false;
    }

    // `bits` one time in `oneIn`, else 0; mostly one bit of them, sometimes all.
    internal static ulong Sometimes(Random rng, int oneIn, ulong bits)
    {
        if (bits == 0 || rng.Next(oneIn) != 0)
        {
            return 0;
        }

        if (rng.Next(4) == 0)
        {
            return bits & (ulong)rng.NextInt64() & ((ulong)rng.NextInt64() << 1);
        }

        int[] set = Enumerable.Range(0, 64).Where(b => ((bits >> b) & 1) != 0).ToArray();
        return 1UL << set[rng.Next(set.Length)];
    }

    // One address bit between HAW and 51, or bit 62 or 63 (reserved in every pointer of the root, context and PASID structures).
    internal static ulong AboveHaw(Random rng, int haw) => rng.Next(4) switch
    {
        0 => 1UL << rng.Next(52, 64),
        _ => 1UL << rng.Next(haw, 52),
    };

    /// <summary>
    /// Now and then a bit the unit may refuse in a paging entry: an address bit at or above HAW, bit 62 (second
    /// level), SNP (bit 11), or an address bit inside a large page (20:12 / 29:12; first level 20:13 / 29:13,
    /// bit 12 being PAT there).
    /// </summary>
    internal static ulong WithReservedBits(Random rng, ulong entry, int level, int haw, bool firstLevel)
    {
        if (rng.Next(5) != 0)
        {
            return entry;
        }

        int lowFrom = firstLevel ? 13 : 12;
        return entry | (rng.Next(4) switch
        {
            0 => 1UL << rng.Next(haw, 52),
            1 => firstLevel ? 0 : 1UL << 62,
            2 => 1UL << 11,
            // Only in leaves (PS): in a table pointer these bits name another table, which the image lacks.
            _ => level is 2 or 3 && (entry & (1UL << 7)) != 0 ? 1UL << rng.Next(lowFrom, 12 + (9 * (level - 1))) : 0,
        });
    }

    // An 8-byte-aligned input address: mostly below 2^bits, now and then anywhere in 64 bits (beyond AW/MGAW,
    // non-canonical), a canonical upper-half address, or one in the interrupt window.
    internal static ulong RandomInput(Random rng, int bits) => rng.Next(16) switch
    {
        0 => ((ulong)rng.NextInt64() << 1) & ~7UL,
        1 => ((ulong)rng.NextInt64(0, 1L << 47) | 0xFFFF_8000_0000_0000UL) & ~7UL,
        2 => (ulong)rng.NextInt64(0, 1L << Math.Min(bits + 4, 62)) & ~7UL,
        3 => 0xFEE0_0000UL | ((ulong)rng.Next(1 << 20) & ~7UL),
        _ => (ulong)rng.NextInt64(0, 1L << bits) & ~7UL,
    };

    // A PASID whose directory index is beyond PDTS, or inside it and in the image's 4 KiB directory (index below 512).
    internal static uint InDirectoryOrBeyond(uint pasid, int pdts) =>
        (pasid >> 6) < (1u << (pdts + 7)) ? pasid & 0x7FFF : pasid;

    internal static VtdImageChunk Table(ulong address, VtdImageChunkKind kind, int level, int offset, params ulong[] words)
    {
        var data = new byte[4096];
        for (int i = 0; i < words.Length; i++)
        {
            BinaryPrimitives.WriteUInt64LittleEndian(data.AsSpan(offset + (8 * i)), words[i]);
        }

        return new VtdImageChunk(address, kind, level, data);
    }

    [GeneratedRegex(@": fault 0x([0-9a-f]{2})$")]
    private static partial Regex FaultClaim();

    [GeneratedRegex(@" next table @0x([0-9a-f]+)$")]
    private static partial Regex FirstLevelNextTable();

    [GeneratedRegex(@" leaf: (4K|2M|1G) page @0x([0-9a-f]+)$")]
    private static partial Regex FirstLevelLeaf();

    [GeneratedRegex(@"^R?W? ?next table @0x([0-9a-f]+)$")]
    private static partial Regex NextTable();

    [GeneratedRegex(@"^R?W? leaf: (4K|2M|1G) page @0x([0-9a-f]+)$")]
    private static partial Regex Leaf();
}
