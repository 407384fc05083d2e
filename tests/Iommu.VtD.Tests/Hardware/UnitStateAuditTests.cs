using System.Buffers.Binary;
using System.Globalization;
using CsCheck;
using Iommu.Devices;
using Iommu.Memory;
using Iommu.VtD.Hardware;
using Iommu.VtD.Tests.Hardware.Infrastructure;

namespace Iommu.VtD.Tests.Hardware;

/// <summary>
/// Audit of reset, save and restore as an emulator uses them for save/restore and live migration: a unit restored
/// from a snapshot taken at any moment behaves as the original would from that moment, mismatched or damaged
/// snapshots are refused without touching the target, and a restore or reset racing device DMA never mixes states.
/// </summary>
public sealed class UnitStateAuditTests
{
    private const ushort Rid = 0x0310;
    private const ulong DataBase = 0x2000_0000;
    private const int Records = 4;
    private const int HeaderSize = 40;

    // ---- the round-trip property ----

    // Random guest actions (DMA that hits, faults or is refused, fault-record and status clears, event masking,
    // RTADDR writes without SRTP, TE and QIE toggles, register-based invalidation, queue submissions with good,
    // invalid and unsupported descriptors, bad tails and IQE clears); at a random point the unit is snapshotted
    // into a fresh unit through bytes, and the rest of the actions must look the same on it as on the original:
    // every register the guest can read, every DMA outcome, wait-descriptor status writes and every interrupt.
    [Fact]
    public void Property_a_unit_restored_from_a_snapshot_at_any_point_behaves_as_the_original()
    {
        Gen.Select(Gen.Int[0, Actions - 1], Gen.Int[0, 15], Gen.UInt).Array[1, 40]
            .Select(Gen.Int[0, 40], (actions, at) => (actions, at: Math.Min(at, actions.Length)))
            .Sample(t =>
            {
                List<string> straight = Run(t.actions, snapshotAt: -1);
                List<string> restored = Run(t.actions, snapshotAt: t.at);
                int from = straight.FindIndex(s => s.StartsWith($"#{t.at}:", StringComparison.Ordinal));
                Assert.Equal(straight.Skip(from), restored.Skip(restored.FindIndex(s => s.StartsWith($"#{t.at}:", StringComparison.Ordinal))));
            }, iter: 200);
    }

    private const int Actions = 16;

    // One run over its own memory; with snapshotAt ≥ 0 the unit is saved before that action and the run goes on
    // with a fresh unit restored from the bytes.
    private static List<string> Run((int Op, int Arg, uint Value)[] actions, int snapshotAt)
    {
        using var b = new VtdBench(VtdConfig.Legacy48Bit with { FaultRecordCount = Records });
        ulong sl = b.SetupLegacyDevice(Rid, aw: 2, did: 1);
        for (ulong p = 0; p < 8; p++)
        {
            b.Map(sl, 4, p << 12, DataBase + (p << 12), write: p != 3);
            b.Memory.WriteUInt64(DataBase + (p << 12), 0xDA7A_0000 + p);
        }

        ulong queue = b.AllocFrame();
        ulong status = b.AllocFrame();
        b.Enable(scalable: false);
        var seen = new List<string>();
        VtdUnit unit = b.Unit;
        Watch(unit, seen);
        for (int i = 0; i <= actions.Length; i++)
        {
            if (i == snapshotAt)
            {
                byte[] bytes = unit.SaveState().ToBytes();
                unit = new VtdUnit(b.Memory, b.Config);
                Watch(unit, seen);
                unit.RestoreState(VtdUnitState.FromBytes(bytes));
            }

            seen.Add(string.Create(CultureInfo.InvariantCulture, $"#{i}: {Registers(unit, b)}"));
            if (i == actions.Length)
            {
                break;
            }

            (int op, int arg, uint value) = actions[i];
            seen.Add(Act(unit, b, queue, status, op, arg, value));
        }

        return seen;

        static void Watch(VtdUnit unit, List<string> seen)
        {
            unit.FaultEvent += (_, e) => seen.Add(string.Create(CultureInfo.InvariantCulture, $"fault MSI 0x{e.Address:X}/0x{e.Data:X}"));
            unit.InvalidationCompletionEvent += (_, e) => seen.Add(string.Create(CultureInfo.InvariantCulture, $"inv MSI 0x{e.Address:X}/0x{e.Data:X}"));
        }
    }

    private static string Act(VtdUnit unit, VtdBench b, ulong queue, ulong status, int op, int arg, uint value)
    {
        uint frcd = b.FaultRecordBase;
        switch (op)
        {
            case 0:
            case 1:
                return Dma(unit, (ulong)(arg % 12) << 12, op == 1 ? DmaAccess.Write : DmaAccess.Read);
            case 2:
                unit.Write32(frcd + (uint)(16 * (arg % Records)) + 12, 0x8000_0000); // clear a record's F
                return "clear record";
            case 3:
                unit.Write32(0x34, value); // FSTS: RW1C bits as the value says
                return "FSTS write";
            case 4:
                unit.Write32(0x3C, 0x4000 | (uint)arg); // FEDATA
                unit.Write32(0x40, 0xFEE0_0000);
                unit.Write32(0x38, (arg & 1) != 0 ? 0x8000_0000 : 0); // FECTL.IM
                return "FECTL";
            case 5:
                unit.Write32(0xA4, 0x5000 | (uint)arg); // IEDATA
                unit.Write32(0xA8, 0xFEE0_1000);
                unit.Write32(0xA0, (arg & 1) != 0 ? 0x8000_0000 : 0); // IECTL.IM
                return "IECTL";
            case 6:
                unit.Write32(0x9C, value); // ICS: IWC is RW1C
                return "ICS";
            case 7:
                unit.Write64(0x20, (ulong)value << 12); // RTADDR, no SRTP: the latched root stays
                return "RTADDR";
            case 8:
                unit.Write64(0x20, b.RootTable); // back to the real root, then SRTP and a flush (what a driver does)
                Gcmd(unit, 1u << 30, set: true);
                Flush(unit, b);
                return "SRTP";
            case 9:
                Gcmd(unit, 1u << 31, set: (arg & 1) != 0);
                return "TE";
            case 10:
                if ((arg & 1) != 0)
                {
                    unit.Write64(0x90, queue); // 4 KiB, 128-bit descriptors
                    unit.Write64(0x88, unit.Read64(0x80));
                }

                Gcmd(unit, 1u << 26, set: (arg & 1) != 0);

                return "QIE";
            case 11:
                Flush(unit, b);
                return "flush";
            case 12:
                {
                    // One descriptor at the tail: wait with IF (and a status write), IOTLB global, context global,
                    // a wait with a reserved bit, an unknown type.
                    ulong q0 = (arg % 5) switch
                    {
                        0 => 5 | (1UL << 4) | (1UL << 5) | ((ulong)value << 32),
                        1 => 2 | (1UL << 4),
                        2 => 1 | (1UL << 4),
                        3 => 5 | (1UL << 5) | (1UL << 12),
                        _ => 0xE,
                    };
                    ulong tail = unit.Read64(0x88) & 0xFF0;
                    b.Memory.WriteUInt64(queue + tail, q0);
                    b.Memory.WriteUInt64(queue + tail + 8, status);
                    b.Memory.WriteUInt64(status, 0);
                    unit.Write64(0x88, (tail + 16) & 0xFF0);
                    return string.Create(CultureInfo.InvariantCulture, $"submit {arg % 5}: status 0x{b.Memory.ReadUInt64(status):X}");
                }

            case 13:
                unit.Write64(0x88, 0x7FFF0); // a tail past a 4 KiB queue: IQE, IQEI 1
                return "bad tail";
            case 14:
                unit.Write32(0x34, 0x10); // clear IQE: the queue resumes from IQH
                return "clear IQE";
            default:
                Gcmd(unit, 1u << 27, set: true); // WBF (RWBF is not reported: ignored)
                return "WBF";
        }
    }

    // A driver's GCMD write: the level bits from GSTS, one bit changed (VtdBench's helpers drive its own unit).
    private static void Gcmd(VtdUnit unit, uint bit, bool set)
    {
        uint sts = unit.Read32(0x1C) & 0x96FF_FFFF;
        unit.Write32(0x18, set ? sts | bit : sts & ~bit);
    }

    // Register-based global context and IOTLB invalidation (ignored while QIE is set, as the model documents).
    private static void Flush(VtdUnit unit, VtdBench b)
    {
        unit.Write64(0x28, (1UL << 63) | (1UL << 61));
        unit.Write64(b.IotlbRegBase + 8, (1UL << 63) | (1UL << 60));
    }

    private static string Dma(VtdUnit unit, ulong iova, DmaAccess access)
    {
        Span<byte> bytes = stackalloc byte[8];
        BinaryPrimitives.WriteUInt64LittleEndian(bytes, 0x0BAD_0000 | iova);
        DmaResult r = unit.Transfer(Rid, null, iova | 0x10, bytes, access);
        return string.Create(CultureInfo.InvariantCulture, $"{access} 0x{iova:X}: {r.Status} 0x{r.Address:X} {r.FaultReason} {BinaryPrimitives.ReadUInt64LittleEndian(bytes):X}");
    }

    // Every register a guest reads, as it reads them (32-bit, so write-only fields read as 0).
    private static string Registers(VtdUnit unit, VtdBench b)
    {
        var s = new System.Text.StringBuilder();
        for (uint o = 0; o < 0x100; o += 4)
        {
            s.Append(CultureInfo.InvariantCulture, $"{unit.Read32(o):X},");
        }

        for (uint o = b.IotlbRegBase; o < b.IotlbRegBase + 16; o += 4)
        {
            s.Append(CultureInfo.InvariantCulture, $"{unit.Read32(o):X},");
        }

        for (uint o = b.FaultRecordBase; o < b.FaultRecordBase + (16 * Records); o += 4)
        {
            s.Append(CultureInfo.InvariantCulture, $"{unit.Read32(o):X},");
        }

        return s.ToString();
    }

    // The page request side of the same property: requests (queued, dropped on a full queue or PRO, refused for an
    // unknown PASID), software consuming the queue (PQH), clearing PRS, masking PECTL, faults recorded by ATS
    // translation requests; after a snapshot into a fresh unit the queue, PRS, PECTL, the fault state and every page
    // request event are as on the original.
    [Fact]
    public void Property_the_page_request_queue_and_its_event_survive_a_snapshot_at_any_point()
    {
        Gen.Select(Gen.Int[0, 6], Gen.Int[0, 127], Gen.UInt).Array[1, 40]
            .Select(Gen.Int[0, 40], (actions, at) => (actions, at: Math.Min(at, actions.Length)))
            .Sample(t =>
            {
                List<string> straight = RunPrq(t.actions, snapshotAt: -1);
                List<string> restored = RunPrq(t.actions, snapshotAt: t.at);
                string mark = $"#{t.at}:";
                Assert.Equal(straight.Skip(straight.FindIndex(s => s.StartsWith(mark, StringComparison.Ordinal))),
                    restored.Skip(restored.FindIndex(s => s.StartsWith(mark, StringComparison.Ordinal))));
            }, iter: 100);
    }

    private static List<string> RunPrq((int Op, int Arg, uint Value)[] actions, int snapshotAt)
    {
        using var rig = new AtsRig();
        rig.Fl.Entry(5, 9);
        rig.Fl.Map(0x40_0000, 0x10_0000);
        var seen = new List<string>();
        VtdUnit unit = rig.Unit;
        unit.PageRequestEvent += (_, e) => seen.Add(string.Create(CultureInfo.InvariantCulture, $"PR MSI 0x{e.Address:X}/0x{e.Data:X}"));
        for (int i = 0; i <= actions.Length; i++)
        {
            if (i == snapshotAt)
            {
                byte[] bytes = unit.SaveState().ToBytes();
                unit = new VtdUnit(rig.B.Memory, rig.Config);
                unit.PageRequestEvent += (_, e) => seen.Add(string.Create(CultureInfo.InvariantCulture, $"PR MSI 0x{e.Address:X}/0x{e.Data:X}"));
                unit.RestoreState(VtdUnitState.FromBytes(bytes));
            }

            var regs = new System.Text.StringBuilder();
            for (uint o = 0; o < 0x100; o += 4)
            {
                regs.Append(CultureInfo.InvariantCulture, $"{unit.Read32(o):X},");
            }

            for (uint o = rig.B.FaultRecordBase; o < rig.B.FaultRecordBase + 32; o += 4)
            {
                regs.Append(CultureInfo.InvariantCulture, $"{unit.Read32(o):X},");
            }

            seen.Add(string.Create(CultureInfo.InvariantCulture, $"#{i}: {regs}"));
            if (i == actions.Length)
            {
                break;
            }

            (int op, int arg, uint value) = actions[i];
            switch (op)
            {
                case 0:
                case 1:
                    uint? pasid = (arg & 3) switch { 0 => null, 1 => 6, _ => 5 };
                    bool queued = unit.PageRequest(rig.Dev, new PageRequestMessage(pasid, (ulong)arg << 12, true, (arg & 4) != 0, false, false, arg & 7, (arg & 8) == 0));
                    seen.Add(string.Create(CultureInfo.InvariantCulture, $"request {queued} {rig.B.Memory.ReadUInt64(rig.Prq + (unit.Read64(0xC8) & 0xFE0))}"));
                    break;
                case 2:
                    unit.Write64(0xC0, (ulong)arg << 5); // PQH: software consumed up to there
                    break;
                case 3:
                    unit.Write32(0xDC, value); // PRS: PPR and PRO are RW1C
                    break;
                case 4:
                    unit.Write32(0xE4, 0x4321);
                    unit.Write32(0xE8, 0xFEE0_1000);
                    unit.Write32(0xE0, (arg & 1) != 0 ? 0x8000_0000 : 0); // PECTL.IM
                    break;
                case 5:
                    AtsCompletion c = unit.TranslationRequest(rig.Dev, (arg & 1) != 0 ? 77u : 5u, (ulong)arg << 12, (arg & 2) != 0);
                    seen.Add(string.Create(CultureInfo.InvariantCulture, $"ats {c}"));
                    break;
                default:
                    unit.Write32(0x34, value); // FSTS
                    unit.Write32(rig.B.FaultRecordBase + 12, 0x8000_0000);
                    break;
            }
        }

        return seen;
    }

    // ---- configuration mismatches ----

    [Fact]
    public void Restore_into_a_unit_with_another_host_address_width_is_refused_naming_it_and_leaves_the_unit_unchanged()
    {
        AssertRefused(VtdConfig.Legacy48Bit, VtdConfig.Legacy48Bit with { HostAddressWidth = 39 }, "HostAddressWidth");
    }

    [Fact]
    public void Restore_into_a_unit_with_another_cache_shape_is_refused_naming_it_and_leaves_the_unit_unchanged()
    {
        AssertRefused(VtdConfig.Legacy48Bit, VtdConfig.Legacy48Bit with { IotlbCapacity = 1024 }, "IotlbCapacity");
        AssertRefused(VtdConfig.Legacy48Bit, VtdConfig.Legacy48Bit with { ContextCacheAssociativity = 2 }, "ContextCacheAssociativity");
    }

    [Fact]
    public void Restore_into_a_unit_with_other_capabilities_names_the_register_that_differs()
    {
        AssertRefused(VtdConfig.Legacy48Bit, VtdConfig.Legacy48Bit with { CachingMode = true }, "CAP");
        AssertRefused(VtdConfig.Legacy48Bit, VtdConfig.Legacy48Bit with { PageWalkCoherency = true }, "ECAP");
        AssertRefused(VtdConfig.Legacy48Bit, VtdConfig.Legacy48Bit with { Version = 0x30 }, "VER");
    }

    [Fact]
    public void Restore_into_a_unit_with_fewer_fault_records_names_the_index_and_the_count()
    {
        using var b = new VtdBench(VtdConfig.Legacy48Bit with { FaultRecordCount = 4 });
        b.Enable(scalable: false);
        for (int i = 0; i < 3; i++)
        {
            _ = b.Unit.Translate(0x18, null, 0x1000, 4, DmaAccess.Read); // no context entry: each DMA records a fault
        }

        VtdUnitState state = b.Unit.SaveState();
        Assert.Equal(3, state.NextFaultRecord);
        var one = new VtdUnit(b.Memory, VtdConfig.Legacy48Bit with { FaultRecordCount = 1 });
        ArgumentException e = Assert.Throws<ArgumentException>(() => one.RestoreState(state));
        Assert.True(e.Message.Contains("next fault record index 3, this unit has 1 fault record.", StringComparison.Ordinal), e.Message);
        var two = new VtdUnit(b.Memory, VtdConfig.Legacy48Bit with { FaultRecordCount = 2 });
        e = Assert.Throws<ArgumentException>(() => two.RestoreState(state));
        Assert.True(e.Message.Contains("next fault record index 3, this unit has 2 fault records.", StringComparison.Ordinal), e.Message);
    }

    private static void AssertRefused(VtdConfig saved, VtdConfig target, string named)
    {
        using var memory = new PhysicalMemory(VtdBench.MemorySize);
        var source = new VtdUnit(memory, saved);
        source.Write32(0x38, 0); // FECTL unmasked: a register the target does not hold
        VtdUnitState state = VtdUnitState.FromBytes(source.SaveState().ToBytes());
        var unit = new VtdUnit(memory, target);
        unit.Write64(0x20, 0x7000);
        byte[] before = unit.SaveState().ToBytes();
        ArgumentException e = Assert.Throws<ArgumentException>(() => unit.RestoreState(state));
        Assert.Contains(named, e.Message, StringComparison.Ordinal);
        Assert.Equal(before, unit.SaveState().ToBytes());
    }

    // ---- damaged and foreign blobs ----

    // The register block's VER, CAP and ECAP must be the ones the header names: a blob whose block says otherwise
    // would make the restored unit report capabilities it does not have.
    [Fact]
    public void A_blob_whose_register_block_disagrees_with_its_capabilities_is_refused()
    {
        using var b = new VtdBench(VtdConfig.Legacy48Bit);
        byte[] bytes = b.Unit.SaveState().ToBytes();
        bytes[HeaderSize + 0x08] ^= 0x80; // CAP bit 7 (CM) in the block only
        byte[] before = b.Unit.SaveState().ToBytes();
        Exception e = Record.Exception(() => b.Unit.RestoreState(VtdUnitState.FromBytes(bytes)));
        Assert.True(e is FormatException or ArgumentException, e?.ToString() ?? "restored");
        Assert.Equal(before, b.Unit.SaveState().ToBytes());
        Assert.Equal(b.Config.Cap, b.Unit.Read64(0x08));
    }

    // A flipped bit anywhere in a blob (storage or transfer damage) must not restore a unit in a state the original
    // never had.
    [Fact]
    public void Property_a_blob_with_any_bit_flipped_is_refused_as_a_format_error()
    {
        using var b = new VtdBench(VtdConfig.Legacy48Bit with { FaultRecordCount = Records });
        b.SetupLegacyDevice(Rid, aw: 2, did: 1);
        b.Enable(scalable: false);
        b.EnableQueue(wide: false);
        byte[] bytes = b.Unit.SaveState().ToBytes();
        Gen.Int[0, (bytes.Length * 8) - 1].Sample(bit =>
        {
            byte[] bad = (byte[])bytes.Clone();
            bad[bit / 8] ^= (byte)(1 << (bit % 8));
            Assert.Throws<FormatException>(() => VtdUnitState.FromBytes(bad));
        }, iter: 300);
    }

    // Blobs of every length and content: refused with a FormatException (or restored, when they happen to be
    // well formed), never another exception, and a refused one leaves the unit as it was.
    [Fact]
    public void Property_random_and_truncated_blobs_are_refused_without_crashing()
    {
        using var b = new VtdBench(VtdConfig.Legacy48Bit);
        byte[] good = b.Unit.SaveState().ToBytes();
        byte[] before = good;
        Gen.OneOf(
                Gen.Int[0, good.Length - 1].Select(n => good[..n]),
                Gen.Byte.Array[0, 64],
                Gen.Byte.Array[good.Length - HeaderSize].Select(block => good[..HeaderSize].Concat(block).ToArray()))
            .Sample(blob =>
            {
                try
                {
                    VtdUnitState s = VtdUnitState.FromBytes(blob);
                    b.Unit.RestoreState(s);
                    b.Unit.RestoreState(VtdUnitState.FromBytes(before));
                }
                catch (FormatException)
                {
                }
                catch (ArgumentException)
                {
                }

                Assert.Equal(before, b.Unit.SaveState().ToBytes());
            }, iter: 300);
    }

    // The format before the checksum: blobs already written must still be read.
    [Fact]
    public void A_version_1_blob_still_restores()
    {
        using var b = new VtdBench(VtdConfig.Legacy48Bit);
        b.SetupLegacyDevice(Rid, aw: 2, did: 1);
        b.Enable(scalable: false);
        b.Unit.Write32(0x38, 0);
        VtdUnitState state = b.Unit.SaveState();
        byte[] regs = state.Registers.ToArray();
        var v1 = new byte[HeaderSize + regs.Length];
        BinaryPrimitives.WriteUInt32LittleEndian(v1, 0x5644_5453);
        BinaryPrimitives.WriteInt32LittleEndian(v1.AsSpan(4), 1);
        BinaryPrimitives.WriteUInt64LittleEndian(v1.AsSpan(8), state.Cap);
        BinaryPrimitives.WriteUInt64LittleEndian(v1.AsSpan(16), state.Ecap);
        BinaryPrimitives.WriteUInt64LittleEndian(v1.AsSpan(24), state.LatchedRootTable);
        BinaryPrimitives.WriteInt32LittleEndian(v1.AsSpan(32), state.NextFaultRecord);
        BinaryPrimitives.WriteInt32LittleEndian(v1.AsSpan(36), regs.Length);
        regs.CopyTo(v1, HeaderSize);
        var fresh = new VtdUnit(b.Memory, b.Config);
        fresh.RestoreState(VtdUnitState.FromBytes(v1));
        Assert.Equal(b.Unit.SaveState().ToBytes(), fresh.SaveState().ToBytes());
    }

    // ---- restoring into a unit in use ----

    [Fact]
    public void Restore_into_a_unit_in_use_keeps_no_cached_translation_fault_state_or_pending_event_from_before()
    {
        using var b = new VtdBench(VtdConfig.Legacy48Bit with { FaultRecordCount = Records });
        ulong sl = b.SetupLegacyDevice(Rid, aw: 2, did: 1);
        b.Map(sl, 4, 0x5000, DataBase);
        var clean = new VtdUnit(b.Memory, b.Config);
        byte[] powerOn = clean.SaveState().ToBytes();

        b.Enable(scalable: false);
        Assert.Equal(DataBase + 0x10, b.Unit.Translate(Rid, null, 0x5010, 8, DmaAccess.Read).PhysicalAddress);
        Assert.True(b.Unit.Translate(Rid, null, 0x9000, 8, DmaAccess.Read).IsFault); // FECTL.IP set, masked
        Assert.NotEqual(0u, b.Unit.Read32(0x38) & 0x4000_0000);

        // The unit restored to the power-on state of the same configuration, then brought up on other tables.
        var events = new List<uint>();
        b.Unit.FaultEvent += (_, e) => events.Add(e.Data);
        b.Unit.RestoreState(VtdUnitState.FromBytes(powerOn));
        Assert.Equal(powerOn, b.Unit.SaveState().ToBytes());
        b.Unit.Write32(0x38, 0); // unmask: nothing from before the restore is pending
        Assert.Empty(events);
        b.Map(sl, 4, 0x5000, DataBase + 0x1000); // changed while the old entry may still be cached
        b.Enable(scalable: false);
        Assert.Equal(DataBase + 0x1010, b.Unit.Translate(Rid, null, 0x5010, 8, DmaAccess.Read).PhysicalAddress);
        Assert.True(b.Unit.Translate(Rid, null, 0x9000, 8, DmaAccess.Read).IsFault);
        Assert.Single(events); // the first fault after the restore signals (no stale PPF)
    }

    // A device that used the unit before the snapshot still has translations in its ATC: after the unit it is behind
    // is reset and restored in place (the emulator's rollback), the guest's device-TLB invalidation must reach it, as it
    // would have on the original. (A unit object the device is not behind never reaches it: the bus routes by unit.)
    [Fact]
    public void After_a_reset_and_restore_in_place_a_device_tlb_invalidation_reaches_a_device_that_used_the_unit()
    {
        using var rig = new AtsRig();
        const ulong iova = 0x7F00_0000_2000;
        rig.Fl.Entry(5, 9);
        rig.Fl.Map(iova, 0x0055_5000);
        Assert.True(rig.Dev.AtsDmaRead(5, iova, new byte[8]).IsOk);
        Assert.Equal(1, rig.Dev.AtcCount);
        byte[] bytes = rig.Unit.SaveState().ToBytes();

        rig.Unit.Reset();
        rig.Unit.RestoreState(VtdUnitState.FromBytes(bytes));

        // The guest, driving the restored unit: a PASID device-TLB invalidation of the page (type 8).
        VtdUnit unit = rig.Unit;
        ulong iqa = unit.Read64(0x90) & ~0xFFFUL, tail = unit.Read64(0x88);
        rig.B.Memory.WriteUInt64(iqa + tail, 8 | ((ulong)FirstStageRig.Rid << 16) | (5UL << 32));
        rig.B.Memory.WriteUInt64(iqa + tail + 8, iova);
        rig.B.Memory.WriteUInt64(iqa + tail + 16, 0);
        rig.B.Memory.WriteUInt64(iqa + tail + 24, 0);
        unit.Write64(0x88, (tail + 32) & 0x7FFE0);
        Assert.Equal(unit.Read64(0x88), unit.Read64(0x80));
        Assert.Equal(0u, unit.Read32(0x34) & 0x10);
        Assert.Equal(0, rig.Dev.AtcCount);
    }

    // ---- reset ----

    [Fact]
    public void Reset_in_every_state_gives_the_power_on_registers_of_the_configuration()
    {
        foreach (VtdConfig config in new[] { VtdConfig.Legacy48Bit, VtdConfig.ScalableMode48Bit, VtdConfig.Qemu72AwBits39 })
        {
            using var b = new VtdBench(config);
            using var memory = new PhysicalMemory(VtdBench.MemorySize);
            byte[] powerOn = new VtdUnit(memory, config).SaveState().ToBytes();
            b.SetupLegacyDevice(Rid, aw: 2, did: 1);
            b.Enable(scalable: false);
            b.EnableQueue(wide: false);
            b.Unit.Write64(0x88, 0x7FFF0); // IQE
            b.Unit.Write32(0x38, 0);
            b.Unit.Write32(0xA0, 0);
            b.Unit.Write64(0x20, 0x1234_5000);
            Assert.True(b.Unit.Translate(Rid, null, 0x9000, 8, DmaAccess.Read).IsFault);
            b.Unit.Reset();
            Assert.Equal(powerOn, b.Unit.SaveState().ToBytes());
            Assert.Equal(0x8000_0000u, b.Unit.Read32(0x38));
            Assert.Equal(0x8000_0000u, b.Unit.Read32(0xA0));
            Assert.Equal(0u, b.Unit.Read32(0x1C));
            Assert.Equal(0u, b.Unit.Read32(0x34));
        }
    }

    // ---- races with DMA ----

    // Device threads DMA while the vCPU thread restores one of two states (different root tables mapping the page to
    // different frames), resets and saves: every DMA sees one state or the other (or the reset unit, untranslated),
    // never a fault, a crash or a mix.
    [Fact]
    public void Save_restore_and_reset_racing_dma_never_crash_and_every_dma_sees_one_whole_state()
    {
        using var b = new VtdBench(VtdConfig.Legacy48Bit);
        ulong sl1 = b.SetupLegacyDevice(Rid, aw: 2, did: 1);
        b.Map(sl1, 4, 0x5000, DataBase);
        b.Enable(scalable: false);
        VtdUnitState first = b.Unit.SaveState();

        // A second root table with its own context and tables: 0x5000 → DataBase + 0x1000.
        ulong root2 = b.AllocFrame(), ctx2 = b.AllocFrame(), sl2 = b.AllocFrame();
        b.Memory.WriteUInt64(root2 + ((ulong)(Rid >> 8) * 16), ctx2 | 1);
        b.LegacyContext(ctx2, Rid & 0xFF, VtdBench.LegacyContextLow(sl2), VtdBench.LegacyContextHigh(2, 1));
        b.Map(sl2, 4, 0x5000, DataBase + 0x1000);
        b.Unit.Write64(0x20, root2);
        b.Gcmd(1u << 30);
        b.GlobalContextInvalidate();
        b.GlobalIotlbInvalidate();
        VtdUnitState second = b.Unit.SaveState();

        bool stop = false;
        var errors = new System.Collections.Concurrent.ConcurrentQueue<string>();
        var threads = Enumerable.Range(0, 2).Select(_ => new Thread(() =>
        {
            while (!Volatile.Read(ref stop))
            {
                try
                {
                    VtdTranslation t = b.Unit.Translate(Rid, null, 0x5010, 8, DmaAccess.Read);
                    if (t.Status != VtdTranslationStatus.Translated || t.PhysicalAddress is not (DataBase + 0x10 or DataBase + 0x1010 or 0x5010))
                    {
                        errors.Enqueue($"{t.Status} 0x{t.PhysicalAddress:X} {t.Reason}");
                    }
                }
                catch (Exception e) when (e is not OutOfMemoryException)
                {
                    errors.Enqueue(e.ToString());
                }
            }
        })).ToArray();
        foreach (Thread t in threads)
        {
            t.Start();
        }

        for (int i = 0; i < 3000 && errors.IsEmpty; i++)
        {
            b.Unit.RestoreState((i & 1) == 0 ? first : second);
            _ = b.Unit.SaveState();
            if (i % 7 == 0)
            {
                b.Unit.Reset();
            }
        }

        Volatile.Write(ref stop, true);
        foreach (Thread t in threads)
        {
            Assert.True(t.Join(TimeSpan.FromSeconds(30)));
        }

        Assert.True(errors.IsEmpty, string.Join("\n", errors.Take(5)));
    }
}
