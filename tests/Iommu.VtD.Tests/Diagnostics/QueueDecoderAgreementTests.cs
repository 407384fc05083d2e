using System.Globalization;
using System.Text.RegularExpressions;
using Iommu.Devices;
using Iommu.VtD.Diagnostics;
using Iommu.VtD.Tests.Hardware.Infrastructure;

namespace Iommu.VtD.Tests.Diagnostics;

/// <summary>
/// The queue decoder against a real unit: random descriptors of every type go through the invalidation queue
/// (MMIO IQA/IQT, then FSTS.IQE, IQERCD and IQH are read), and what the unit did must be what the decoded line says:
/// accepted or rejected (and why), which device-TLB translations went, what a wait descriptor wrote where. Page
/// requests the unit writes decode back to the fields the device sent. Seeds are printed on failure; set
/// IOMMU_SEED to replay one.
/// </summary>
public sealed partial class QueueDecoderAgreementTests
{
    private const ushort Did = 5;
    private const ulong Base = 0x4000_0000;
    private const int Pages = 16;
    private const uint Iqe = 1u << 4;

    [Theory]
    [InlineData(true)]
    [InlineData(false)]
    public void Every_descriptor_is_decoded_as_the_unit_executes_it(bool wide)
    {
        int seed = Seed();
        using var r = new AtsRig();
        r.Fl.Entry(1, Did);
        r.Fl.Entry(2, Did);
        // Each page maps to its frame A, then (with no invalidation) to frame B: a DMA read that still finds A
        // used a cached translation the descriptor left in place.
        ulong frames = r.B.AllocFrames(2 * Pages);
        ulong[] leaves = new ulong[Pages];
        for (int i = 0; i < 2 * Pages; i++)
        {
            r.B.Memory.WriteUInt64(frames + ((ulong)i << 12), (ulong)i);
        }

        for (int i = 0; i < Pages; i++)
        {
            leaves[i] = r.Fl.Map(Base + ((ulong)i << 12), frames + ((ulong)i << 13));
        }

        if (!wide)
        {
            r.B.GcmdClear(1u << 26);
            r.B.EnableQueue(wide: false);
        }

        ulong status = r.B.AllocFrame();
        var rng = new Random(seed);
        for (int n = 0; n < 3000; n++)
        {
            (ulong q0, ulong q1, ulong q2) = Generate(rng, status);
            int type = (int)((q0 & 0xF) | ((q0 >> 5) & 0x70));
            string decoded = VtdDecoder.DescribeInvalidation(q0, q1);
            string where = string.Create(CultureInfo.InvariantCulture, $"seed {seed}, step {n}, {(wide ? "256" : "128")}-bit: q0 0x{q0:x} q1 0x{q1:x} q2 0x{q2:x} \"{decoded}\"");
            bool atsType = type is 3 or 8;
            if (atsType)
            {
                Warm(r);
            }

            Stale(r, leaves, frames);
            r.B.Memory.WriteUInt32(status, 0xDEAD_BEEF);
            r.B.Memory.WriteUInt32(status + 4, 0xDEAD_BEEF);
            int before = r.Dev.AtcCount;
            r.B.Submit(q0, q1, wide ? q2 : 0, 0);
            bool rejected = (r.B.Fsts & Iqe) != 0;
            int iqei = (int)(r.Unit.Read64(0xB0) & 0xF);

            // What the line alone cannot say: the queue's width (types 6–9 need 256 bits, and there bits 255:128 are
            // reserved) and CAP.MAMV for an IOTLB page-selective AM.
            bool narrowPasidType = !wide && type is >= 6 and <= 9;
            bool upper = wide && q2 != 0;
            bool overMamv = type == 2 && ((q0 >> 4) & 3) == 3 && (int)(q1 & 0x3F) > r.Config.MaxAddressMaskValue && !SaysRejected(decoded);
            if (narrowPasidType || upper || overMamv)
            {
                Assert.True(rejected, $"accepted although {(narrowPasidType ? "a PASID-based type in a 128-bit queue" : upper ? "bits 255:128 set" : "AM above MAMV")}: {where}");
                Assert.True(iqei == (narrowPasidType ? 5 : 4), $"IQEI {iqei}: {where}");
            }
            else
            {
                Assert.True(rejected == SaysRejected(decoded), $"unit {(rejected ? $"rejected (IQEI {iqei})" : "accepted")}, decoder disagrees: {where}");
                if (rejected)
                {
                    Assert.True(iqei == (decoded.EndsWith("(reserved)", StringComparison.Ordinal) ? 3 : 4), $"IQEI {iqei}: {where}");
                }
            }

            bool[] expectedGone = rejected ? new bool[2 * Pages] : ExpectedIotlbDrops(decoded);
            byte[] buf = new byte[8];
            for (int k = 0; k < 2 * Pages; k++)
            {
                Assert.True(r.Dev.DmaRead((uint)(k / Pages) + 1, Base + ((ulong)(k % Pages) << 12), buf).IsOk, where);
                bool gone = BitConverter.ToUInt64(buf) % 2 == 1;
                Assert.True(gone == expectedGone[k], $"PASID {(k / Pages) + 1} page {k % Pages}: translation {(gone ? "dropped" : "still cached")}: {where}");
            }

            if (rejected)
            {
                Recover(r, wide);
                continue;
            }

            if (type == 5)
            {
                Match sw = WaitStatus().Match(decoded);
                uint written = r.B.Memory.ReadUInt32(status), next = r.B.Memory.ReadUInt32(status + 4);
                if (sw.Success)
                {
                    ulong addr = ulong.Parse(sw.Groups[2].Value, NumberStyles.HexNumber, CultureInfo.InvariantCulture);
                    uint data = uint.Parse(sw.Groups[1].Value, NumberStyles.HexNumber, CultureInfo.InvariantCulture);
                    Assert.True(addr is { } a && (a == status || a == status + 4), $"status address outside the test's slots: {where}");
                    Assert.True((addr == status ? written : next) == data, $"status 0x{written:x}/0x{next:x}: {where}");
                }
                else
                {
                    Assert.True(written == 0xDEAD_BEEF && next == 0xDEAD_BEEF, $"status written without SW: {where}");
                }
            }

            if (atsType)
            {
                Assert.True(before - r.Dev.AtcCount == ExpectedAtcDrops(decoded), $"ATC {before} -> {r.Dev.AtcCount}, expected {ExpectedAtcDrops(decoded)} dropped: {where}");
            }
        }
    }

    [Fact]
    public void Page_requests_the_unit_writes_decode_to_what_the_device_sent()
    {
        int seed = Seed();
        using var r = new AtsRig();
        var rng = new Random(seed);
        for (int n = 0; n < 2000; n++)
        {
            uint? pasid = rng.Next(3) == 0 ? null : (uint)rng.Next(0x10_0000);
            var m = new PageRequestMessage(pasid, (ulong)rng.NextInt64() & ((1UL << 57) - 1), rng.Next(2) == 0, rng.Next(2) == 0, rng.Next(2) == 0, rng.Next(2) == 0, rng.Next(512), rng.Next(2) == 0);
            ulong at = r.Pqt;
            Assert.True(r.Unit.PageRequest(r.Dev, m), $"seed {seed}, step {n}: not queued");
            (ulong q0, ulong q1, _, _) = r.Descriptor(at);
            r.Pqh = r.Pqt;

            // Execute and privileged travel in the PASID prefix: without one the device sends neither.
            var access = new List<string>();
            if (m.Read)
            {
                access.Add("read");
            }

            if (m.Write)
            {
                access.Add("write");
            }

            if (m.Execute && pasid is not null)
            {
                access.Add("execute");
            }

            if (m.Privileged && pasid is not null)
            {
                access.Add("privileged");
            }

            string expected = string.Create(CultureInfo.InvariantCulture,
                $"page request 03:00.0{(pasid is uint p ? $" PASID {p}" : " without PASID")} at 0x{m.Address & ~0xFFFUL:x}: {(access.Count == 0 ? "no access (stop marker)" : string.Join('+', access))}, {(m.LastInGroup ? "last in group" : "group")} {m.GroupIndex}");
            Assert.True(expected == VtdDecoder.DescribePageRequest(q0, q1), $"seed {seed}, step {n}: {m} wrote q0 0x{q0:x} q1 0x{q1:x}, decoded \"{VtdDecoder.DescribePageRequest(q0, q1)}\", expected \"{expected}\"");
        }
    }

    private static int Seed() =>
        Environment.GetEnvironmentVariable("IOMMU_SEED") is string s ? int.Parse(s, CultureInfo.InvariantCulture) : Random.Shared.Next();

    // Rejected, as the decoder words it: a reserved type, granularity or reserved bits.
    private static bool SaysRejected(string decoded) =>
        decoded.EndsWith("(reserved)", StringComparison.Ordinal) || decoded.Contains("reserved granularity", StringComparison.Ordinal)
        || decoded.Contains("reserved bits", StringComparison.Ordinal);

    // Every page on frame A, every (PASID 1 or 2, page) translation cached (first-level, DID 5), then every page
    // moved to frame B without an invalidation.
    private static void Stale(AtsRig r, ulong[] leaves, ulong frames)
    {
        byte[] buf = new byte[8];
        for (int i = 0; i < Pages; i++)
        {
            r.B.Memory.WriteUInt64(leaves[i], (frames + ((ulong)i << 13)) | FirstStageRig.P | FirstStageRig.RW | FirstStageRig.US);
        }

        r.B.Submit(2 | (1 << 4));
        for (int k = 0; k < 2 * Pages; k++)
        {
            Assert.True(r.Dev.DmaRead((uint)(k / Pages) + 1, Base + ((ulong)(k % Pages) << 12), buf).IsOk);
            Assert.Equal((ulong)(2 * (k % Pages)), BitConverter.ToUInt64(buf));
        }

        for (int i = 0; i < Pages; i++)
        {
            r.B.Memory.WriteUInt64(leaves[i], (frames + ((ulong)i << 13) + 0x1000) | FirstStageRig.P | FirstStageRig.RW | FirstStageRig.US);
        }
    }

    // The cached (PASID 1 or 2, page) translations of DID 5 the decoded line drops, indexed (PASID - 1) * Pages + page.
    private static bool[] ExpectedIotlbDrops(string decoded)
    {
        var gone = new bool[2 * Pages];
        Match m = Iotlb().Match(decoded);
        if (!m.Success)
        {
            return gone;
        }

        bool ours = !m.Groups["did"].Success || m.Groups["did"].Value == "5";
        bool wholeDid = m.Groups["global"].Success || (m.Groups["kind"].Value == "IOTLB" && (!m.Groups["page"].Success || m.Groups["fs"].Success));
        uint? pasid = m.Groups["pasid"].Success ? uint.Parse(m.Groups["pasid"].Value, CultureInfo.InvariantCulture) : null;
        ulong first = 0, last = ulong.MaxValue;
        if (m.Groups["page"].Success && !wholeDid)
        {
            int am = Math.Min(int.Parse(m.Groups["am"].Value, CultureInfo.InvariantCulture), 52);
            first = ulong.Parse(m.Groups["page"].Value, NumberStyles.HexNumber, CultureInfo.InvariantCulture);
            last = am == 52 ? ulong.MaxValue : first + ((1UL << (am + 12)) - 1);
        }

        for (int k = 0; k < 2 * Pages; k++)
        {
            ulong page = Base + ((ulong)(k % Pages) << 12);
            gone[k] = ours && (pasid is null || pasid == (uint)(k / Pages) + 1) && page >= first && page <= last;
        }

        return gone;
    }

    // Every (PASID 1 or 2, page) translation in the ATC.
    private static void Warm(AtsRig r)
    {
        byte[] buf = new byte[8];
        for (uint pasid = 1; pasid <= 2; pasid++)
        {
            for (int i = 0; i < Pages; i++)
            {
                Assert.True(r.Dev.AtsDmaRead(pasid, Base + ((ulong)i << 12), buf).IsOk);
            }
        }

        Assert.Equal(2 * Pages, r.Dev.AtcCount);
    }

    // The ATC entries the decoded device-TLB invalidation names (the ATC holds PASIDs 1 and 2 on every warm page).
    private static int ExpectedAtcDrops(string decoded)
    {
        Match m = DeviceTlb().Match(decoded);
        Assert.True(m.Success, decoded);
        if (m.Groups["rid"].Value != "03:00.0")
        {
            return 0;
        }

        (ulong first, ulong last) = m.Groups["whole"].Success ? (0UL, ulong.MaxValue)
            : m.Groups["page"].Success ? (Hex(m.Groups["page"].Value), Hex(m.Groups["page"].Value) + 0xFFF)
            : (Hex(m.Groups["addr"].Value), Hex(m.Groups["addr"].Value) + (Hex(m.Groups["size"].Value) - 1));
        int pages = 0;
        for (int i = 0; i < Pages; i++)
        {
            ulong page = Base + ((ulong)i << 12);
            pages += page <= last && page + 0xFFF >= first ? 1 : 0;
        }

        bool allPasids = m.Groups["kind"].Value.Length == 0 || m.Groups["all"].Success;
        if (allPasids)
        {
            return 2 * pages;
        }

        uint pasid = uint.Parse(m.Groups["pasid"].Value, CultureInfo.InvariantCulture);
        return pasid is 1 or 2 ? pages : 0;

        static ulong Hex(string s) => ulong.Parse(s, NumberStyles.HexNumber, CultureInfo.InvariantCulture);
    }

    // After IQE: the bad slot (at IQH) becomes a wait without flags, and clearing IQE lets the unit run it.
    private static void Recover(AtsRig r, bool wide)
    {
        ulong head = r.Unit.Read64(0x80);
        ulong slot = (r.Unit.Read64(0x90) & ~0xFFFUL) + head;
        r.B.Memory.WriteUInt64(slot, 5);
        r.B.Memory.WriteUInt64(slot + 8, 0);
        if (wide)
        {
            r.B.Memory.WriteUInt64(slot + 16, 0);
            r.B.Memory.WriteUInt64(slot + 24, 0);
        }

        r.Unit.Write32(0x34, Iqe);
        Assert.Equal(0u, r.B.Fsts & Iqe);
        Assert.Equal(r.B.QueueTailIndex, r.B.QueueHead);
    }

    private static (ulong Q0, ulong Q1, ulong Q2) Generate(Random rng, ulong status)
    {
        int type = rng.Next(16);
        ulong g = (ulong)rng.Next(4) << 4;
        ulong did = rng.Next(3) switch { 0 => Did, 1 => 1, _ => (ulong)rng.Next(0x1_0000) };
        ulong pasid = rng.Next(3) switch { 0 => 1, 1 => (ulong)rng.Next(4), _ => (ulong)rng.Next(0x10_0000) };
        ulong sid = rng.Next(3) == 0 ? (ulong)rng.Next(0x1_0000) : FirstStageRig.Rid;
        ulong page = Base + ((ulong)rng.Next(2 * Pages) << 12);
        ulong am = (ulong)(rng.Next(4) == 0 ? rng.Next(64) : rng.Next(6));
        ulong t = (ulong)type;
        (ulong q0, ulong q1) = type switch
        {
            1 => (t | g | (did << 16) | (sid << 32) | ((ulong)rng.Next(4) << 48), 0UL),
            2 => (t | g | ((ulong)rng.Next(4) << 6) | (did << 16), page | ((ulong)rng.Next(2) << 6) | am),
            3 => (t | ((ulong)rng.Next(32) << 16) | (sid << 32), DeviceTlbAddress(rng, page, 1)),
            4 => (t | ((ulong)rng.Next(2) << 4) | ((ulong)rng.Next(32) << 27) | ((ulong)rng.Next(0x1_0000) << 32), 0UL),
            5 => (t | ((ulong)rng.Next(16) << 4) | ((ulong)(uint)rng.Next() << 32), status + ((ulong)rng.Next(2) << 2)),
            6 => (t | g | (did << 16) | (pasid << 32), page | ((ulong)rng.Next(2) << 6) | am),
            7 => (t | g | (did << 16) | (pasid << 32), 0UL),
            8 => (t | ((ulong)rng.Next(32) << 4) | (sid << 16) | (pasid << 32), DeviceTlbAddress(rng, page, 1UL << 11) | (ulong)(uint)rng.Next(2)),
            9 => (t | ((ulong)rng.Next(2) << 4) | (rng.Next(8) == 0 ? 1UL << 5 : 0) | ((ulong)rng.Next(16) << 12) | (sid << 16) | (pasid << 32),
                ((ulong)rng.Next(2) << 2) | ((ulong)rng.Next(512) << 3)),
            _ => (t | ((ulong)rng.NextInt64() & ~0xFUL), (ulong)rng.NextInt64()),
        };

        // Stray bits anywhere (reserved fields, the type's high bits 11:9, fields of other meanings).
        if (rng.Next(3) == 0)
        {
            q0 |= 1UL << rng.Next(4, 64);
        }

        // (A wait's STADDR stays on the test's status slots: only its reserved bits 1:0 may be hit.)
        if (rng.Next(3) == 0)
        {
            q1 |= 1UL << rng.Next(type == 5 ? 2 : 64);
        }

        return (q0, q1, rng.Next(20) == 0 ? 1UL << rng.Next(64) : 0);
    }

    // S = 0: one page; S = 1: trailing ones from bit 12 give the size (sometimes all of them: the whole space).
    private static ulong DeviceTlbAddress(Random rng, ulong page, ulong sizeBit)
    {
        if (rng.Next(2) == 0)
        {
            return page;
        }

        if (rng.Next(12) == 0)
        {
            return ~0xFFFUL | sizeBit;
        }

        int ones = rng.Next(6);
        return (page | (((1UL << ones) - 1) << 12)) & ~(1UL << (12 + ones)) | sizeBit;
    }

    [GeneratedRegex(@"^(?<kind>IOTLB|PASID-IOTLB) invalidate:? (?:(?<global>global)|DID (?<did>\d+)(?: PASID (?<pasid>\d+))?(?::? (?:all|page 0x(?<page>[0-9a-f]+) \(AM (?<am>\d+)\)(?<fs>, and every first-stage entry of the DID)?))?)$")]
    private static partial Regex Iotlb();

    [GeneratedRegex(@"SW \(0x([0-9a-f]+) to 0x([0-9a-f]+)\)")]
    private static partial Regex WaitStatus();

    [GeneratedRegex(@"^(?<kind>PASID )?device-TLB invalidate (?<rid>[0-9a-f]{2}:[0-9a-f]{2}\.[0-7])( PASID (?<pasid>\d+))?(?<all> \(all PASIDs\))?: (?:(?<whole>the whole address space)|page 0x(?<page>[0-9a-f]+)|0x(?<addr>[0-9a-f]+) \+ 0x(?<size>[0-9a-f]+))")]
    private static partial Regex DeviceTlb();
}
