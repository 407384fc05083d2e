using System.Globalization;
using System.Runtime.InteropServices;
using System.Text;
using Iommu.Devices;
using Iommu.Memory;
using Iommu.VtD.Hardware;
using Iommu.VtD.Tests.Hardware.Infrastructure;

namespace Iommu.VtD.Tests.Hardware;

/// <summary>
/// Edge cases an emulator embedding <see cref="VtdUnit"/> meets: snapshots taken with everything pending and
/// restored over a copy of guest RAM, guest register sequences in odd orders, and DMA over caller-owned RAM with a hole.
/// </summary>
public sealed class EmulatorEdgeTests
{
    private const ushort Rid = 0x0018;        // 00:03.0, mapped
    private const ushort Rid2 = 0x0120;       // 01:04.0, bus 1 has no root entry
    private const ulong Data = 0x0180_0000;   // data pages in low RAM
    private const uint Fsts = 0x34, Fectl = 0x38, Fedata = 0x3C, Feaddr = 0x40, Iqh = 0x80, Iqt = 0x88, Iqa = 0x90, Ics = 0x9C;
    private const uint Iectl = 0xA0, Iedata = 0xA4, Ieaddr = 0xA8, Iqercd = 0xB0, Gcmd = 0x18, Gsts = 0x1C, Rtaddr = 0x20;

    // ---- caller-owned RAM with a hole: [0, 32 MiB) RAM, [32, 48 MiB) hole, [48, 64 MiB) RAM ----

    private sealed unsafe class Ram : IDisposable
    {
        public const ulong LowSize = 0x0200_0000;
        public const ulong HoleEnd = 0x0300_0000;
        public const ulong HighSize = 0x0100_0000;
        public const ulong Size = 0x0400_0000;
        private readonly nint _low;
        private readonly nint _high;
        private bool _freed;

        public Ram()
        {
            _low = (nint)NativeMemory.AlignedAlloc((nuint)LowSize, 2 << 20);
            _high = (nint)NativeMemory.AlignedAlloc((nuint)HighSize, 2 << 20);
            new Span<byte>((void*)_low, (int)LowSize).Clear();
            new Span<byte>((void*)_high, (int)HighSize).Clear();
            Memory = new PhysicalMemory(Size, [new HostMemoryRange(0, LowSize, _low), new HostMemoryRange(HoleEnd, HighSize, _high)]);
        }

        public PhysicalMemory Memory { get; }

        public Ram Copy()
        {
            var r = new Ram();
            Buffer.MemoryCopy((void*)_low, (void*)r._low, LowSize, LowSize);
            Buffer.MemoryCopy((void*)_high, (void*)r._high, HighSize, HighSize);
            return r;
        }

        public void Dispose()
        {
            Memory.Dispose();
            if (!_freed)
            {
                _freed = true;
                NativeMemory.AlignedFree((void*)_low);
                NativeMemory.AlignedFree((void*)_high);
            }
        }
    }

    private static string Dump(VtdUnit u)
    {
        var sb = new StringBuilder();
        for (uint off = 0; off < u.RegisterBlockSize; off += 4)
        {
            uint v = u.Read32(off);
            if (v != 0)
            {
                sb.Append(CultureInfo.InvariantCulture, $"{off:X3}={v:X8} ");
            }
        }

        return sb.ToString();
    }

    private static void Command(VtdUnit u, uint bit, bool set)
    {
        uint sts = u.Read32(Gsts) & 0x96FF_FFFF;
        u.Write32(Gcmd, set ? sts | bit : sts & ~bit);
    }

    // ---- 1. save/restore with everything pending ----

    // A legacy unit with: three faults recorded (one cleared), the fault event pending behind IM, an invalidation
    // completion pending behind IM, the queue stopped by IQE at a reserved-bit descriptor with a wait after it, RTADDR
    // rewritten without SRTP. Saved, restored into a fresh unit over a copy of RAM: every register reads the same, and a
    // random guest/device script run on both gives the same results, events, status writes and register reads.
    [Theory]
    [InlineData(1)]
    [InlineData(2)]
    [InlineData(3)]
    [InlineData(4)]
    public void Legacy_snapshot_with_everything_pending_behaves_identically_after_restore(int seed)
    {
        var config = VtdConfig.Legacy48Bit with { FaultRecordCount = 4 };
        using var ram = new Ram();
        var b = new VtdBench(config, ram.Memory);
        ulong sl = b.SetupLegacyDevice(Rid, aw: 2, did: 1);
        for (ulong p = 0; p < 8; p++)
        {
            ulong pa = p == 5 ? Ram.LowSize + 0x1000 /* the hole */ : p == 6 ? Ram.HoleEnd + 0x2000 : Data + (p << 12);
            b.Map(sl, 4, p << 12, pa, write: p != 3);
        }

        b.Enable(scalable: false);
        b.EnableQueue(wide: false);
        ulong status = b.AllocFrame();
        b.Unit.Write32(Fedata, 0x41);
        b.Unit.Write32(Feaddr, 0xFEE0_0000);
        b.Unit.Write32(Iedata, 0x42);
        b.Unit.Write32(Ieaddr, 0xFEE0_1000);
        Span<byte> buf = stackalloc byte[16];
        b.Unit.Write(Rid, null, 0x3000, buf);          // 0x5 Write
        b.Unit.Read(Rid2, null, 0x1000, buf);          // 0x1 root not present
        b.Unit.Read(Rid, null, 0x9000, buf);           // unmapped
        b.ClearFaultRecord(1);
        b.Submit(5 | (1UL << 4) | (1UL << 5) | (0x1111UL << 32), status); // IF | SW
        ulong queueBase = b.Unit.Read64(Iqa) & ~0xFFFUL;
        // a reserved-bit IOTLB descriptor, then a wait: IQE stops at the first.
        ulong bad = b.QueueTailIndex;
        b.Memory.WriteUInt64(queueBase + ((bad + 1) * 16), 5 | (1UL << 5) | (0x2222UL << 32));
        b.Memory.WriteUInt64(queueBase + ((bad + 1) * 16) + 8, status + 8);
        b.Submit(2 | (1UL << 4) | (1UL << 8));
        b.Unit.Write64(Iqt, (bad + 2) << 4);
        b.Unit.Write64(Rtaddr, 0x0123_4000);           // not latched
        Assert.NotEqual(0u, b.Unit.Read32(Fsts) & 0x10);

        byte[] bytes = b.Unit.SaveState().ToBytes();
        using Ram copy = ram.Copy();
        var restored = new VtdUnit(copy.Memory, config);
        restored.RestoreState(VtdUnitState.FromBytes(bytes));
        Assert.Equal(Dump(b.Unit), Dump(restored));

        List<string> a = Script(b.Unit, ram.Memory, seed, queueBase, status, bad, config.FaultRecordCount, b.FaultRecordBase);
        List<string> c = Script(restored, copy.Memory, seed, queueBase, status, bad, config.FaultRecordCount, b.FaultRecordBase);
        Assert.Equal(a, c);
    }

    // The same with a scalable-mode unit: PASID-tagged and untagged requests, a 256-bit queue.
    [Theory]
    [InlineData(5)]
    [InlineData(6)]
    [InlineData(7)]
    public void Scalable_snapshot_with_everything_pending_behaves_identically_after_restore(int seed)
    {
        var config = VtdConfig.ScalableMode48Bit with { FaultRecordCount = 4 };
        using var ram = new Ram();
        var b = new VtdBench(config, ram.Memory);
        (ulong dir, ulong sl) = b.SetupScalableDevice(Rid, 5, aw: 2, did: 3);
        b.PasidEntry(dir, 0, VtdBench.PasidEntryLow(sl, 2, 2), 3); // RID_PASID 0 shares the table
        for (ulong p = 0; p < 8; p++)
        {
            b.Map(sl, 4, p << 12, Data + (p << 12), write: p != 3);
        }

        b.Enable(scalable: true);
        b.EnableQueue(wide: true);
        ulong status = b.AllocFrame();
        b.Unit.Write32(Fedata, 0x41);
        b.Unit.Write32(Feaddr, 0xFEE0_0000);
        Span<byte> buf = stackalloc byte[16];
        b.Unit.Write(Rid, 5, 0x3000, buf);
        b.Unit.Read(Rid, 9, 0x1000, buf);
        b.Unit.Read(Rid2, null, 0x1000, buf);
        ulong queueBase = b.Unit.Read64(Iqa) & ~0xFFFUL;
        ulong bad = b.QueueTailIndex;
        b.Submit(2 | (1UL << 4) | (1UL << 8));
        b.Unit.Write64(Rtaddr, 0x0123_4400);

        byte[] bytes = b.Unit.SaveState().ToBytes();
        using Ram copy = ram.Copy();
        var restored = new VtdUnit(copy.Memory, config);
        restored.RestoreState(VtdUnitState.FromBytes(bytes));
        Assert.Equal(Dump(b.Unit), Dump(restored));

        List<string> a = Script(b.Unit, ram.Memory, seed, queueBase, status, bad, config.FaultRecordCount, b.FaultRecordBase, wide: true);
        List<string> c = Script(restored, copy.Memory, seed, queueBase, status, bad, config.FaultRecordCount, b.FaultRecordBase, wide: true);
        Assert.Equal(a, c);
    }

    private static List<string> Script(VtdUnit u, PhysicalMemory mem, int seed, ulong queueBase, ulong status, ulong bad, int records, uint frcd, bool wide = false)
    {
        var log = new List<string>();
        u.FaultEvent += (_, e) => log.Add($"fault MSI {e.Address:X}/{e.Data:X}");
        u.InvalidationCompletionEvent += (_, e) => log.Add($"inv MSI {e.Address:X}/{e.Data:X}");
        var rng = new Random(seed);
        int shift = wide ? 5 : 4;
        Span<byte> buf = stackalloc byte[24];
        for (int i = 0; i < 150; i++)
        {
            int op = rng.Next(14);
            switch (op)
            {
                case 0:
                case 1:
                case 2:
                    {
                        ushort rid = rng.Next(4) == 0 ? Rid2 : Rid;
                        uint? pasid = wide && rng.Next(2) == 0 ? (uint)rng.Next(0, 10) : null;
                        ulong iova = ((ulong)(uint)rng.Next(12) << 12) | (uint)rng.Next(0, 4000);
                        ulong size = (ulong)rng.Next(1, (int)(4096 - (iova & 0xFFF)) + 1);
                        VtdTranslation t = u.Translate(rid, pasid, iova, size, op == 0 ? DmaAccess.Write : DmaAccess.Read);
                        log.Add($"T {rid:X} {pasid} {iova:X} {t.Status} {t.PhysicalAddress:X} {t.Reason} {t.FaultRecorded}");
                        break;
                    }

                case 3:
                    {
                        ulong iova = ((ulong)rng.Next(12) << 12) + 0xFF0;
                        rng.NextBytes(buf);
                        DmaResult r = rng.Next(2) == 0 ? u.Read(Rid, null, iova, buf) : u.Write(Rid, null, iova, buf);
                        log.Add($"D {iova:X} {r} {Convert.ToHexString(buf)}");
                        break;
                    }

                case 4:
                    u.Write32(frcd + (uint)(16 * rng.Next(records)) + 12, 0x8000_0000);
                    log.Add("clear F");
                    break;
                case 5:
                    u.Write32(Fsts, (uint)rng.Next());
                    log.Add("FSTS");
                    break;
                case 6:
                    u.Write32(Fectl, rng.Next(2) == 0 ? 0 : 0x8000_0000);
                    log.Add("FECTL");
                    break;
                case 7:
                    u.Write32(Iectl, rng.Next(2) == 0 ? 0 : 0x8000_0000);
                    u.Write32(Ics, 1);
                    log.Add("IECTL/ICS");
                    break;
                case 8:
                    // the guest repairs the bad descriptor (a global IOTLB flush) and clears IQE
                    mem.WriteUInt64(queueBase + (bad << shift), 2 | (1UL << 4));
                    u.Write32(Fsts, 0x10);
                    log.Add($"repair: status {mem.ReadUInt64(status):X} {mem.ReadUInt64(status + 8):X}");
                    break;
                case 9:
                    {
                        ulong tail = (u.Read64(Iqt) >> shift) & ((wide ? 256UL : 256UL) - 1);
                        ulong pa = queueBase + (tail << shift);
                        mem.WriteUInt64(pa, 5 | (1UL << 5) | (rng.Next(2) == 0 ? 1UL << 4 : 0) | ((ulong)(uint)i << 32));
                        mem.WriteUInt64(pa + 8, status + 16);
                        if (wide)
                        {
                            mem.WriteUInt64(pa + 16, 0);
                            mem.WriteUInt64(pa + 24, 0);
                        }

                        u.Write64(Iqt, ((tail + 1) % 256) << shift);
                        log.Add($"wait: status {mem.ReadUInt64(status + 16):X}");
                        break;
                    }

                case 10:
                    Command(u, 1u << 31, rng.Next(3) != 0);
                    log.Add("TE");
                    break;
                case 11:
                    u.Write64(Iqt, 0x7FFF0);
                    log.Add("bad tail");
                    break;
                case 12:
                    Command(u, 1u << 27, true);
                    log.Add("WBF");
                    break;
                default:
                    u.Write32(Fsts, 0x10);
                    log.Add("clear IQE");
                    break;
            }

            log.Add(Dump(u));
        }

        return log;
    }

    // ---- restore errors leave the unit unchanged ----

    [Fact]
    public void Refused_restores_leave_the_unit_exactly_as_it_was()
    {
        var config = VtdConfig.Legacy48Bit with { FaultRecordCount = 4 };
        using var ram = new Ram();
        var b = new VtdBench(config, ram.Memory);
        ulong sl = b.SetupLegacyDevice(Rid, aw: 2, did: 1);
        b.Map(sl, 4, 0x1000, Data, write: false);
        b.Enable(scalable: false);
        Span<byte> buf = stackalloc byte[8];
        b.Unit.Write(Rid, null, 0x1000, buf);
        string before = Dump(b.Unit);
        VtdTranslation t0 = b.Unit.Translate(Rid, null, 0x1000, 8, DmaAccess.Read);

        using var other = new PhysicalMemory(1 << 24);
        var foreign = new VtdUnit(other, VtdConfig.ScalableMode48Bit with { FaultRecordCount = 4 });
        Assert.Throws<ArgumentException>(() => b.Unit.RestoreState(foreign.SaveState()));
        var otherHaw = new VtdUnit(other, config with { HostAddressWidth = 39 });
        Assert.Throws<ArgumentException>(() => b.Unit.RestoreState(otherHaw.SaveState()));
        byte[] good = new VtdUnit(other, config).SaveState().ToBytes();
        for (int i = 0; i < good.Length; i += 97)
        {
            byte[] bad = (byte[])good.Clone();
            bad[i] ^= 0x40;
            Assert.Throws<FormatException>(() => b.Unit.RestoreState(VtdUnitState.FromBytes(bad)));
        }

        Assert.Throws<FormatException>(() => VtdUnitState.FromBytes(good.AsSpan(0, good.Length - 1)));
        Assert.Equal(before, Dump(b.Unit));
        Assert.Equal(t0, b.Unit.Translate(Rid, null, 0x1000, 8, DmaAccess.Read));
    }

    // ---- 2. guest register sequences ----

    // Random GCMD values (driver-style with one-shot bits masked, and raw): GCMD reads 0, TES/QIES/IRES/CFIS follow
    // the level bits written, RTPS and IRTPS set once their command was written and stay, WBFS/FLS/AFLS stay 0 (no
    // RWBF, no AFL), IQH is 0 after every QIE change, and with TES clear a request is untranslated.
    [Fact]
    public void Random_gcmd_writes_follow_the_level_and_one_shot_rules()
    {
        var rng = new Random(11);
        using var ram = new Ram();
        var b = new VtdBench(VtdConfig.Legacy48Bit, ram.Memory);
        ulong sl = b.SetupLegacyDevice(Rid, aw: 2, did: 1);
        b.Map(sl, 4, 0x4000, Data);
        b.Unit.Write64(Rtaddr, b.RootTable);
        ulong queue = b.AllocFrame();
        b.Unit.Write64(Iqa, queue);
        bool rtps = false, irtps = false;
        for (int i = 0; i < 3000; i++)
        {
            uint level = b.Unit.Read32(Gsts) & 0x96FF_FFFF;
            uint cmd = rng.Next(3) switch
            {
                0 => (uint)rng.NextInt64(0, 1L << 32),
                1 => level ^ (1u << rng.Next(23, 32)),
                _ => (level & ~(0xFFu << 23)) | ((uint)rng.Next(256) << 23 & 0x96FF_FFFF),
            };
            uint oldSts = b.Unit.Read32(Gsts);
            b.Unit.Write32(Gcmd, cmd);
            uint sts = b.Unit.Read32(Gsts);
            rtps |= (cmd & (1u << 30)) != 0;
            irtps |= (cmd & (1u << 24)) != 0;
            uint expected = (cmd & ((1u << 31) | (1u << 26) | (1u << 25) | (1u << 23))) | (rtps ? 1u << 30 : 0) | (irtps ? 1u << 24 : 0);
            Assert.True(expected == sts, $"step {i}: GCMD 0x{cmd:X8} after GSTS 0x{oldSts:X8} gives GSTS 0x{sts:X8}, expected 0x{expected:X8}");
            Assert.Equal(0u, b.Unit.Read32(Gcmd));
            if (((oldSts ^ sts) & (1u << 26)) != 0)
            {
                Assert.Equal(0UL, b.Unit.Read64(Iqh));
            }

            if ((sts & (1u << 31)) == 0)
            {
                VtdTranslation t = b.Unit.Translate(Rid, null, 0x4010, 8, DmaAccess.Write);
                Assert.Equal((VtdTranslationStatus.Translated, 0x4010UL), (t.Status, t.PhysicalAddress));
            }
        }
    }

    // IQA rewritten while QIE is set, shrinking the queue below IQH, then tails inside and outside the new size:
    // whatever the unit does, the MMIO write returns (no hang), nothing throws, and a guest that then disables QI,
    // sets IQT = 0 and a proper IQA, and re-enables gets working waits.
    [Fact]
    public async Task Iqa_rewritten_while_qi_is_on_never_hangs_and_the_queue_recovers_after_a_clean_restart()
    {
        using var ram = new Ram();
        var b = new VtdBench(VtdConfig.ScalableMode48Bit, ram.Memory);
        ulong status = b.AllocFrame();
        ulong big = b.AllocFrames(8);
        b.Unit.Write64(Iqt, 0);
        b.Unit.Write64(Iqa, big | 3); // 32 KiB, 2048 × 128-bit
        Command(b.Unit, 1u << 26, true);
        for (ulong i = 0; i < 1000; i++)
        {
            ram.Memory.WriteUInt64(big + (i * 16), 5 | (1UL << 5) | (i << 32));
            ram.Memory.WriteUInt64(big + (i * 16) + 8, status);
        }

        b.Unit.Write64(Iqt, 1000UL << 4);
        Assert.Equal(1000UL << 4, b.Unit.Read64(Iqh));
        var rng = new Random(3);
        var task = Task.Run(() =>
        {
            for (int k = 0; k < 200; k++)
            {
                b.Unit.Write64(Iqa, big | (uint)rng.Next(0, 4) | (rng.Next(2) == 0 ? 1UL << 11 : 0));
                b.Unit.Write64(Iqt, (ulong)rng.Next(0, 1 << 15) << 4);
                b.Unit.Write32(Fsts, 0x10);
            }
        });
        await task.WaitAsync(TimeSpan.FromSeconds(20)); // TimeoutException: an IQA/IQT sequence hung the unit

        Command(b.Unit, 1u << 26, false);
        b.Unit.Write32(Fsts, 0x10);
        b.Unit.Write64(Iqt, 0);
        b.Unit.Write64(Iqa, big);
        Command(b.Unit, 1u << 26, true);
        ram.Memory.WriteUInt64(big, 5 | (1UL << 5) | (0xABCDUL << 32));
        ram.Memory.WriteUInt64(big + 8, status);
        b.Unit.Write64(Iqt, 0x10);
        Assert.Equal(0xABCDu, ram.Memory.ReadUInt32(status));
        Assert.Equal(0x10UL, b.Unit.Read64(Iqh));
    }

    // Reserved bits in a descriptor: IQE with IQEI 4, IQH on it, later descriptors not executed; the guest rewrites it
    // and clears IQE and the unit goes on without a tail write. A tail past the queue: IQEI 1; clearing IQE with that
    // tail fetches nothing; a good tail then resumes. A wrap-around of the tail is followed.
    [Fact]
    public void Queue_errors_stop_processing_and_the_queue_recovers_once_software_clears_iqe()
    {
        using var ram = new Ram();
        var b = new VtdBench(VtdConfig.Legacy48Bit, ram.Memory);
        b.EnableQueue(wide: false);
        ulong queue = b.Unit.Read64(Iqa) & ~0xFFFUL;
        ulong status = b.AllocFrame();
        for (int i = 0; i < 250; i++)
        {
            b.Submit(5 | (1UL << 5) | ((ulong)i << 32), status);
        }

        ulong badIndex = b.QueueTailIndex;
        Assert.Equal(250UL, badIndex);
        ram.Memory.WriteUInt64(queue + (badIndex * 16), 1 | (1UL << 4) | (1UL << 7)); // context-cache with a reserved bit
        ram.Memory.WriteUInt64(queue + (badIndex * 16) + 8, 0);
        for (ulong i = 1; i <= 10; i++)
        {
            ulong slot = (badIndex + i) % 256;
            ram.Memory.WriteUInt64(queue + (slot * 16), 5 | (1UL << 5) | ((1000 + i) << 32));
            ram.Memory.WriteUInt64(queue + (slot * 16) + 8, status);
        }

        b.Unit.Write64(Iqt, ((badIndex + 11) % 256) << 4); // wraps
        Assert.Equal(0x10u, b.Unit.Read32(Fsts) & 0x10);
        Assert.Equal(4UL, b.Unit.Read64(Iqercd) & 0xF);
        Assert.Equal(badIndex << 4, b.Unit.Read64(Iqh));
        Assert.Equal(249u, ram.Memory.ReadUInt32(status));
        b.Unit.Write64(Iqt, ((badIndex + 11) % 256) << 4); // a tail write while IQE is set fetches nothing
        Assert.Equal(badIndex << 4, b.Unit.Read64(Iqh));

        ram.Memory.WriteUInt64(queue + (badIndex * 16), 1 | (1UL << 4));
        b.Unit.Write32(Fsts, 0x10);
        Assert.Equal(0u, b.Unit.Read32(Fsts) & 0x10);
        Assert.Equal(1010u, ram.Memory.ReadUInt32(status));
        Assert.Equal(((badIndex + 11) % 256) << 4, b.Unit.Read64(Iqh));

        b.Unit.Write64(Iqt, 0x7_FFF0);
        Assert.Equal(0x10u, b.Unit.Read32(Fsts) & 0x10);
        Assert.Equal(1UL, b.Unit.Read64(Iqercd) & 0xF);
        b.Unit.Write32(Fsts, 0x10);
        Assert.Equal(0u, b.Unit.Read32(Fsts) & 0x10);
        ulong head = b.Unit.Read64(Iqh) >> 4;
        ram.Memory.WriteUInt64(queue + (head * 16), 5 | (1UL << 5) | (77UL << 32));
        ram.Memory.WriteUInt64(queue + (head * 16) + 8, status);
        b.Unit.Write64(Iqt, ((head + 1) % 256) << 4);
        Assert.Equal(77u, ram.Memory.ReadUInt32(status));
    }

    // Spec: IQH "Hardware resets this field to 0 whenever the queued invalidation is disabled (QIES field Clear)".
    [Fact]
    public void Disabling_qi_with_iqe_pending_resets_iqh_and_a_clean_restart_works()
    {
        using var ram = new Ram();
        var b = new VtdBench(VtdConfig.Legacy48Bit, ram.Memory);
        b.EnableQueue(wide: false);
        ulong status = b.AllocFrame();
        b.Submit(5 | (1UL << 5) | (1UL << 32), status);
        b.Submit(0xF); // unknown type: IQE
        Assert.Equal(0x10UL, b.Unit.Read64(Iqh));
        Command(b.Unit, 1u << 26, false);
        Assert.Equal(0UL, b.Unit.Read64(Iqh));
        Assert.Equal(0u, b.Unit.Read32(Gsts) & (1u << 26));
        b.Unit.Write32(Fsts, 0x10);
        b.Unit.Write64(Iqt, 0);
        Command(b.Unit, 1u << 26, true);
        ulong queue = b.Unit.Read64(Iqa) & ~0xFFFUL;
        ram.Memory.WriteUInt64(queue, 5 | (1UL << 5) | (9UL << 32));
        ram.Memory.WriteUInt64(queue + 8, status);
        b.Unit.Write64(Iqt, 0x10);
        Assert.Equal(9u, ram.Memory.ReadUInt32(status));
    }

    // Primary fault logging with four records (spec 7.2.1): faults fill records 0..3 with FRI 0; a fifth sets PFO and
    // is lost; PFO stops recording even after records are freed until software clears it; the internal index wraps
    // to record 0; clearing every F clears PPF and the fault event's IP; disabling TE resets the index to 0.
    [Fact]
    public void Fault_overflow_fri_wrap_and_index_reset_follow_primary_fault_logging()
    {
        using var ram = new Ram();
        var b = new VtdBench(VtdConfig.Legacy48Bit with { FaultRecordCount = 4, InterruptRemapping = false }, ram.Memory);
        b.SetupLegacyDevice(Rid, aw: 2, did: 1);
        b.Enable(scalable: false);
        uint frcd = b.FaultRecordBase;
        ulong Hi(int i) => b.Unit.Read64(frcd + (uint)(16 * i) + 8);
        ulong Lo(int i) => b.Unit.Read64(frcd + (uint)(16 * i));
        void Fault(ulong page) => b.Unit.Translate(Rid, null, page << 12, 4, DmaAccess.Read);

        for (ulong p = 1; p <= 4; p++)
        {
            Fault(p);
        }

        Assert.Equal(0x2u, b.Unit.Read32(Fsts)); // PPF, FRI 0
        Assert.Equal(new ulong[] { 0x1000, 0x2000, 0x3000, 0x4000 }, new[] { Lo(0), Lo(1), Lo(2), Lo(3) });
        Fault(5);
        Assert.Equal(0x3u, b.Unit.Read32(Fsts)); // PFO
        Assert.Equal(0xC000_0000u, b.Unit.Read32(Fectl)); // IM | IP
        b.ClearFaultRecord(0);
        b.ClearFaultRecord(1);
        Fault(6); // PFO still set: lost
        Assert.Equal(0UL, Hi(0) >> 63);
        b.Unit.Write32(Fsts, 1); // clear PFO
        Fault(7); // internal index wrapped to 0
        Assert.Equal((0x7000UL, 1UL), (Lo(0), Hi(0) >> 63));
        Assert.Equal(0x2u, b.Unit.Read32(Fsts) & 0x3);
        for (int i = 0; i < 4; i++)
        {
            b.ClearFaultRecord(i);
        }

        Assert.Equal(0u, b.Unit.Read32(Fsts) & 0x3);
        Assert.Equal(0x8000_0000u, b.Unit.Read32(Fectl)); // IP cleared with the last status condition
        Fault(8); // record 1, FRI 1
        Assert.Equal((0x8000UL, 0x102u), (Lo(1), b.Unit.Read32(Fsts)));
        b.ClearFaultRecord(1);
        Command(b.Unit, 1u << 31, false);
        Command(b.Unit, 1u << 31, true);
        Fault(9);
        Assert.Equal((0x9000UL, 0x2u), (Lo(0), b.Unit.Read32(Fsts)));
    }

    // Isolation when TE goes off: a second vCPU polls GSTS; once it reads TES = 0 a device request on its thread
    // must be untranslated (spec: with TE clear the unit does not remap: DMA goes to the address the device named).
    // Conversely once TES reads 1 the request must be translated.
    [Fact]
    public async Task Once_gsts_reads_te_clear_no_request_is_translated_and_once_set_every_request_is()
    {
        using var ram = new Ram();
        var b = new VtdBench(VtdConfig.Legacy48Bit, ram.Memory);
        ulong sl = b.SetupLegacyDevice(Rid, aw: 2, did: 1);
        b.Map(sl, 4, 0x4000, Data);
        b.Enable(scalable: false);
        long stale = 0, identityWhileOn = 0, checks = 0, toggles = 0;
        using var stop = new CancellationTokenSource();
        var observer = Task.Run(() =>
        {
            Span<byte> buf = stackalloc byte[32];
            while (!stop.IsCancellationRequested)
            {
                // A sequence count bumped before and after every GCMD write (odd while one is in progress): even and
                // unchanged across the GSTS read and the request means no TE write was in progress or started in
                // between, so the GSTS value read still holds when the request runs. (During a write the request
                // may go either way: GSTS.TES reports completion.)
                long before = Interlocked.Read(ref toggles);
                uint sts = b.Unit.Read32(Gsts);
                VtdTranslation t = b.Unit.Translate(Rid, null, 0x4010, 8, DmaAccess.Read);
                if ((before & 1) != 0 || Interlocked.Read(ref toggles) != before)
                {
                    continue;
                }

                checks++;
                if ((sts & (1u << 31)) == 0 && t.PhysicalAddress != 0x4010)
                {
                    stale++;
                }
                else if ((sts & (1u << 31)) != 0 && t.PhysicalAddress == 0x4010)
                {
                    identityWhileOn++;
                }
            }
        });
        var sw = System.Diagnostics.Stopwatch.StartNew();
        while (sw.ElapsedMilliseconds < 5000 && Interlocked.Read(ref stale) == 0)
        {
            Interlocked.Increment(ref toggles);
            Command(b.Unit, 1u << 31, false);
            Interlocked.Increment(ref toggles);
            Thread.SpinWait(50);
            Interlocked.Increment(ref toggles);
            Command(b.Unit, 1u << 31, true);
            Interlocked.Increment(ref toggles);
            Thread.SpinWait(200);
        }

        stop.Cancel();
        await observer;
        Assert.True(checks > 0);
        Assert.True(stale == 0 && identityWhileOn == 0, $"{stale} translated answers after GSTS read TES = 0, {identityWhileOn} untranslated after TES = 1, of {checks}");
    }

    // ---- 3. DMA over caller-owned RAM with a hole ----

    [Fact]
    public void Untranslated_dma_across_the_hole_stops_at_the_first_hole_byte_in_both_directions()
    {
        using var ram = new Ram();
        var b = new VtdBench(VtdConfig.Legacy48Bit, ram.Memory);
        byte[] data = new byte[0x300];
        data.AsSpan().Fill(0x5A);
        DmaResult into = b.Unit.Write(Rid, null, Ram.LowSize - 0x100, data);
        Assert.Equal((DmaStatus.MemoryError, 0x100UL, (ulong?)Ram.LowSize), (into.Status, into.Transferred, into.StopAddress));
        Assert.Equal(0x5AUL, ram.Memory.ReadUInt64(Ram.LowSize - 8) & 0xFF);

        DmaResult outOf = b.Unit.Read(Rid, null, Ram.HoleEnd - 0x100, data);
        Assert.Equal((DmaStatus.MemoryError, 0UL, (ulong?)(Ram.HoleEnd - 0x100)), (outOf.Status, outOf.Transferred, outOf.StopAddress));
        DmaResult past = b.Unit.Read(Rid, null, Ram.Size - 0x10, data);
        Assert.Equal((DmaStatus.MemoryError, 0x10UL, (ulong?)Ram.Size), (past.Status, past.Transferred, past.StopAddress));
        DmaResult top = b.Unit.Read(Rid, null, ulong.MaxValue - 0xF, data.AsSpan(0, 16));
        Assert.Equal(DmaStatus.MemoryError, top.Status);
        DmaResult g = b.Unit.Gather(Rid, null, [new DmaSegment(0x1000, 0x10), new DmaSegment(Ram.LowSize - 8, 0x10)], data);
        Assert.Equal((DmaStatus.MemoryError, 0x18UL, (ulong?)Ram.LowSize), (g.Status, g.Transferred, g.StopAddress));
        Assert.Equal(0u, b.Unit.Read32(Fsts));
    }

    [Fact]
    public void Tables_and_queue_in_the_hole_give_the_read_error_faults_and_iqe()
    {
        using var ram = new Ram();
        var b = new VtdBench(VtdConfig.Legacy48Bit, ram.Memory);
        const ulong hole = Ram.LowSize + 0x4000;

        // a second-level table in the hole: 0x7 (paging entry read error)
        ulong sl = b.SetupLegacyDevice(Rid, aw: 2, did: 1);
        ram.Memory.WriteUInt64(sl, hole | 3);
        b.Enable(scalable: false);
        VtdTranslation t = b.Unit.Translate(Rid, null, 0x1000, 4, DmaAccess.Read);
        Assert.Equal((VtdTranslationStatus.Fault, VtdFaultReason.PagingEntryInvalid), (t.Status, t.Reason));

        // the root table in the hole: 0x8 (root table read error)
        b.Unit.Write64(Rtaddr, hole);
        Command(b.Unit, 1u << 30, true);
        b.GlobalContextInvalidate();
        b.GlobalIotlbInvalidate();
        t = b.Unit.Translate(Rid, null, 0x1000, 4, DmaAccess.Read);
        Assert.Equal((VtdTranslationStatus.Fault, VtdFaultReason.RootTableInvalid), (t.Status, t.Reason));

        // the queue in the hole: IQE with IQEI 2 (descriptor fetch error)
        b.Unit.Write64(Iqt, 0);
        b.Unit.Write64(Iqa, hole);
        Command(b.Unit, 1u << 26, true);
        b.Unit.Write64(Iqt, 0x10);
        Assert.Equal((0x10u, 2UL, 0UL), (b.Unit.Read32(Fsts) & 0x10, b.Unit.Read64(Iqercd) & 0xF, b.Unit.Read64(Iqh)));
    }

    // RTADDR_REG.RTA, IQA_REG.IQA: "Hardware ignores and does not implement bits 63:HAW"; QEMU masks both addresses
    // to its address width when it latches them. The model keeps those bits (VtdConfig.HostAddressWidth, deliberate):
    // a root table or queue programmed above HAW faults rather than landing on another address.
    [Fact]
    public void Rtaddr_bits_above_haw_are_kept_and_the_root_table_read_faults()
    {
        using var ram = new Ram();
        var b = new VtdBench(VtdConfig.Legacy48Bit, ram.Memory); // HAW 46
        ulong sl = b.SetupLegacyDevice(Rid, aw: 2, did: 1);
        b.Map(sl, 4, 0x4000, Data);
        b.Unit.Write64(Rtaddr, b.RootTable | (1UL << 50));
        Command(b.Unit, 1u << 30, true);
        Command(b.Unit, 1u << 31, true);
        VtdTranslation t = b.Unit.Translate(Rid, null, 0x4010, 8, DmaAccess.Read);
        Assert.Equal((VtdTranslationStatus.Fault, VtdFaultReason.RootTableInvalid), (t.Status, t.Reason));
        Assert.Equal(b.RootTable | (1UL << 50), b.Unit.Read64(Rtaddr));
    }

    [Fact]
    public void Iqa_bits_above_haw_are_kept_and_the_fetch_fails()
    {
        using var ram = new Ram();
        var b = new VtdBench(VtdConfig.Legacy48Bit, ram.Memory); // HAW 46
        ulong queue = b.AllocFrame();
        ulong status = b.AllocFrame();
        b.Unit.Write64(Iqt, 0);
        b.Unit.Write64(Iqa, queue | (1UL << 50));
        Command(b.Unit, 1u << 26, true);
        ram.Memory.WriteUInt64(queue, 5 | (1UL << 5) | (0x5151UL << 32));
        ram.Memory.WriteUInt64(queue + 8, status);
        b.Unit.Write64(Iqt, 0x10);
        Assert.Equal((0x10u, 2UL, 0u), (b.Unit.Read32(Fsts) & 0x10, b.Unit.Read64(Iqercd) & 0xF, ram.Memory.ReadUInt32(status)));

        // "Reads of this field return the value that was last programmed to it" (as QEMU, which keeps every bit).
        Assert.Equal(queue | (1UL << 50), b.Unit.Read64(Iqa));
    }

    // Dispose of the caller-owned memory while device threads DMA: Dispose waits for the calls in flight; a call
    // after it may only throw ObjectDisposedException (PhysicalMemory.EnterAccess); no crash, no other exception.
    [Fact]
    public async Task Disposing_the_memory_while_devices_dma_throws_only_object_disposed()
    {
        for (int round = 0; round < 10; round++)
        {
            var ram = new Ram();
            var b = new VtdBench(VtdConfig.Legacy48Bit, ram.Memory);
            ulong sl = b.SetupLegacyDevice(Rid, aw: 2, did: 1);
            for (ulong p = 0; p < 16; p++)
            {
                b.Map(sl, 4, p << 12, p == 7 ? Ram.LowSize : Data + (p << 12));
            }

            b.Enable(scalable: false);
            var others = new List<Exception>();
            using var start = new Barrier(3);
            Task[] tasks = Enumerable.Range(0, 2).Select(k => Task.Run(() =>
            {
                byte[] buf = new byte[k == 0 ? 32 : 5000];
                start.SignalAndWait();
                for (int i = 0; i < 200_000; i++)
                {
                    try
                    {
                        ulong iova = (ulong)(i % 16) << 12;
                        _ = (i % 5) switch
                        {
                            0 => b.Unit.Read(Rid, null, iova, buf).Status,
                            1 => b.Unit.Write(Rid, null, iova, buf).Status,
                            2 => b.Unit.Gather(Rid, null, [new DmaSegment(iova, 16), new DmaSegment(iova + 0x2000, 16)], buf).Status,
                            3 => b.Unit.Translate(Rid, null, iova, 8, DmaAccess.Read).Status == VtdTranslationStatus.Fault ? DmaStatus.Fault : DmaStatus.Ok,
                            _ => b.Unit.MmioRead(Fsts, 4) == 0 ? DmaStatus.Ok : DmaStatus.Fault,
                        };
                    }
                    catch (ObjectDisposedException)
                    {
                        return;
                    }
                    catch (Exception e)
                    {
                        lock (others)
                        {
                            others.Add(e);
                        }

                        return;
                    }
                }
            })).ToArray();
            start.SignalAndWait();
            Thread.Sleep(round);
            ram.Dispose();
            await Task.WhenAll(tasks).WaitAsync(TimeSpan.FromSeconds(30));
            Assert.True(others.Count == 0, string.Join("\n", others));
        }
    }
}
