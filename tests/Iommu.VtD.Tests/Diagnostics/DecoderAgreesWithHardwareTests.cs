using System.Buffers.Binary;
using System.Globalization;
using System.Text.RegularExpressions;
using Iommu.Devices;
using Iommu.VtD.Diagnostics;
using Iommu.VtD.Hardware;

namespace Iommu.VtD.Tests.Diagnostics;

/// <summary>
/// What the decoder says about raw entry bytes is what the hardware model does with them: random legacy
/// context entries and second-level entries at every level (not present, table pointers, leaves, PS where it
/// is reserved, random permission and ignored bits) are written into an image, decoded with
/// <see cref="VtdDecoder.DescribeWalk"/>, and the same request is sent through the unit
/// (<see cref="VtdImage.Probe"/>). Every claim the decoder makes ("not present", "next table @X",
/// "leaf: S page @A", "reserved") must match the unit's translation or fault.
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
        VtdConfig config = rng.Next(2) == 0 ? VtdConfig.Legacy39Bit : VtdConfig.Legacy48Bit;
        string tag = string.Create(CultureInfo.InvariantCulture, $"LegacyCase({seed}) on {(config == VtdConfig.Legacy39Bit ? "Legacy39Bit" : "Legacy48Bit")}");
        int aw = config.SupportsAw(2) && rng.Next(2) == 0 ? 2 : 1;
        int levels = aw + 2;
        ulong iova = (ulong)rng.NextInt64(0, 1L << (30 + (9 * aw))) & ~7UL;

        // TT 00 (translated), 10 (pass-through) or 11 (reserved); TT 01 depends on ECAP.DT and is left out.
        int tt = rng.Next(4) switch { 0 => VtdFormat.TtPassThrough, 1 => 3, _ => VtdFormat.TtTranslated };
        ulong c0 = VtdFormat.Present | ((ulong)tt << VtdFormat.ContextTtShift) | TableAt(levels);
        ulong c1 = (uint)aw | ((uint)rng.Next(1, 256) << VtdFormat.ContextDidShift);

        var chunks = new List<VtdImageChunk>
        {
            Table(RootTable, VtdImageChunkKind.RootTable, 0, (Rid >> 8) * 16, VtdFormat.Present | ContextTable),
            Table(ContextTable, VtdImageChunkKind.LegacyContextTable, 0, (Rid & 0xFF) * 16, c0, c1),
        };
        for (int level = levels; level >= 1; level--)
        {
            int index = (int)((iova >> (12 + (9 * (level - 1)))) & 0x1FF);
            chunks.Add(Table(TableAt(level), VtdImageChunkKind.PageTable, level, index * 8, RandomSecondLevelEntry(rng, level, config.HostAddressWidth)));
        }

        var image = new VtdImage(RootTable, config.HostAddressWidth, true, chunks);
        IReadOnlyList<VtdEntryDescription> walk = VtdDecoder.DescribeWalk(image, Rid, null, iova);
        VtdProbeResult hw = image.Probe(config, [new VtdProbe(Rid, null, iova, DmaAccess.Read)]).Probes[0];
        string decoded = string.Join(" | ", walk.Select(e => $"{e.Structure} @0x{e.Address:x} = 0x{e.Value:x}: {e.Meaning}"));
        string why = $"{tag}: iova 0x{iova:x}, decoded [{decoded}], unit {hw.Status} 0x{hw.PhysicalAddress:x} {hw.Reason}";

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
        VtdConfig config = VtdConfig.ScalableModeFirstLevel48Bit;
        string tag = string.Create(CultureInfo.InvariantCulture, $"ScalableCase({seed}) on ScalableModeFirstLevel48Bit");
        const int Levels = 4;
        ulong iova = (ulong)rng.NextInt64(0, 1L << 47) & ~7UL;
        int pgtt = rng.Next(10) switch { < 5 => VtdFormat.PgttFirstLevel, < 7 => VtdFormat.PgttSecondLevel, 7 => VtdFormat.PgttPassThrough, _ => rng.Next(2) == 0 ? 0 : rng.Next(5, 8) };
        int flpm = rng.Next(8) == 0 ? rng.Next(2, 4) : 0;
        ulong q0 = VtdFormat.Present | (2UL << VtdFormat.PasidAwShift) | ((ulong)pgtt << VtdFormat.PasidPgttShift) | TableAt(Levels);
        ulong q1 = (ulong)rng.Next(1, 256);
        ulong q2 = TableAt(Levels) | ((ulong)flpm << VtdFormat.PasidFlpmShift) | ((ulong)rng.Next(64) & (VtdFormat.PasidWpe | VtdFormat.PasidSre | VtdFormat.PasidEafe));
        const ulong ContextTable0 = ContextTable, PasidDirectory = 0x12000, PasidTable = 0x13000;
        var chunks = new List<VtdImageChunk>
        {
            Table(RootTable, VtdImageChunkKind.RootTable, 0, (Rid >> 8) * 16, VtdFormat.Present | ContextTable0),
            Table(ContextTable0, VtdImageChunkKind.ScalableContextTable, 0, (Rid & 0x7F) * 32, VtdFormat.Present | PasidDirectory, 0),
            Table(PasidDirectory, VtdImageChunkKind.PasidDirectory, 0, 0, VtdFormat.Present | PasidTable),
            Table(PasidTable, VtdImageChunkKind.PasidTable, 0, 0, q0, q1, q2),
        };
        bool firstLevel = pgtt == VtdFormat.PgttFirstLevel;
        for (int level = Levels; level >= 1; level--)
        {
            int index = (int)((iova >> (12 + (9 * (level - 1)))) & 0x1FF);
            ulong entry = firstLevel ? RandomFirstLevelEntry(rng, level, config.HostAddressWidth) : RandomSecondLevelEntry(rng, level, config.HostAddressWidth);
            chunks.Add(Table(TableAt(level), firstLevel ? VtdImageChunkKind.FirstLevelTable : VtdImageChunkKind.PageTable, level, index * 8, entry));
        }

        var image = new VtdImage(RootTable | (1UL << 10), config.HostAddressWidth, true, chunks);
        IReadOnlyList<VtdEntryDescription> walk = VtdDecoder.DescribeWalk(image, Rid, null, iova);
        VtdProbeResult hw = image.Probe(config, [new VtdProbe(Rid, null, iova, DmaAccess.Read)]).Probes[0];
        string decoded = string.Join(" | ", walk.Select(e => $"{e.Structure} @0x{e.Address:x} = 0x{e.Value:x}: {e.Meaning}"));
        string why = $"{tag}: iova 0x{iova:x}, decoded [{decoded}], unit {hw.Status} 0x{hw.PhysicalAddress:x} {hw.Reason}";

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
                ulong page = (ulong)rng.NextInt64() & VtdFormat.FlAddressMask & ((1UL << haw) - 1) & ~((1UL << (12 + (9 * (level - 1)))) - 1);
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

    // Tables at fixed addresses, one per level; a table pointer at level L points at level L-1's.
    internal static ulong TableAt(int level) => FirstTable + ((ulong)(5 - level) * 0x1000);

    // Not present (R = W = 0, anything else), a table pointer (PS at levels 4 and 5 sometimes: reserved there),
    // or a leaf (PS at levels 2 and 3); random A/D/X/ignored bits and output addresses below the host width.
    internal static ulong RandomSecondLevelEntry(Random rng, int level, int haw)
    {
        ulong noise = (ulong)rng.NextInt64() & (VtdFormat.SlExecute | VtdFormat.SlAccessed | VtdFormat.SlDirty | (0x7UL << 3) | (1UL << 10) | (0x3FFUL << 52));
        ulong perms = (ulong)rng.Next(1, 4);
        switch (rng.Next(level == 1 ? 3 : 4))
        {
            case 0:
                return noise & ~(VtdFormat.SlRead | VtdFormat.SlWrite) | ((ulong)rng.NextInt64() & VtdFormat.SlAddressMask & ((1UL << haw) - 1));
            case 1 when level > 1:
                return noise & ~VtdFormat.SlPageSize | perms | TableAt(level - 1) | (level >= 4 && rng.Next(3) == 0 ? VtdFormat.SlPageSize : 0);
            default:
                ulong page = (ulong)rng.NextInt64() & VtdFormat.SlAddressMask & ((1UL << haw) - 1) & ~((1UL << (12 + (9 * (level - 1)))) - 1);
                return level == 1 || level > 3
                    ? (noise & ~VtdFormat.SlPageSize) | perms | (level > 3 ? TableAt(level - 1) : page)
                    : noise | VtdFormat.SlPageSize | perms | page;
        }
    }

    internal static VtdImageChunk Table(ulong address, VtdImageChunkKind kind, int level, int offset, params ulong[] words)
    {
        var data = new byte[4096];
        for (int i = 0; i < words.Length; i++)
        {
            BinaryPrimitives.WriteUInt64LittleEndian(data.AsSpan(offset + (8 * i)), words[i]);
        }

        return new VtdImageChunk(address, kind, level, data);
    }

    [GeneratedRegex(@" next table @0x([0-9a-f]+)$")]
    private static partial Regex FirstLevelNextTable();

    [GeneratedRegex(@" leaf: (4K|2M|1G) page @0x([0-9a-f]+)$")]
    private static partial Regex FirstLevelLeaf();

    [GeneratedRegex(@"^R?W? ?next table @0x([0-9a-f]+)$")]
    private static partial Regex NextTable();

    [GeneratedRegex(@"^R?W? leaf: (4K|2M|1G) page @0x([0-9a-f]+)$")]
    private static partial Regex Leaf();
}
