using CsCheck;
using Iommu.VtD.Hardware;
using Iommu.VtD.Tests.Hardware.Infrastructure;

namespace Iommu.VtD.Tests.Hardware;

/// <summary>
/// Primary fault logging over random sequences of faulting (and succeeding) DMAs from several devices, software
/// reads of FSTS, FECTL and the fault-recording registers, F clears in any order (32- and 64-bit writes, some
/// without F), FSTS writes, FECTL mask changes and translation / interrupt-remapping enable toggles, checked after
/// every step against a reference model written from the specification's primary fault logging rules (with
/// invalidation-queue errors, which share the fault event):
/// the record at the internal index is used when its F is clear, otherwise PFO is set and the fault is lost;
/// nothing is recorded while PFO is set; PPF is the OR of the F bits; FRI names the record PPF was set for (and,
/// in this model, the first pending one from there on once software clears it); a fault event is an interrupt
/// condition only when no FSTS status was set before; IP is set on one, the message (FEADDR/FEDATA) is sent and IP
/// cleared at once when IM is clear, or later when software clears IM; IP clears when software has serviced every
/// status; FPD suppresses qualified faults only; the internal index returns to 0 when translation and interrupt
/// remapping are both disabled.
/// </summary>
public sealed class FaultRecordingPropertyTests
{
    private const uint FstsReg = 0x34;
    private const uint FectlReg = 0x38;
    private const uint FedataReg = 0x3C;
    private const uint FeaddrReg = 0x40;
    private const uint FeuaddrReg = 0x44;
    private const uint Te = 1u << 31;
    private const uint Ire = 1u << 25;

    // One requester with a fixed fault: which reason its requests meet, whether FPD may suppress it, and how to
    // make an address that faults (or, for Mapped, one that translates).
    private sealed record Device(ushort Rid, uint? Pasid, VtdFaultReason Reason, bool Qualified, bool Fpd, DmaAccess Access, Func<Random, ulong> Address);

    private sealed class Model(int count)
    {
        public readonly ulong[] Lo = new ulong[count];
        public readonly ulong[] Hi = new ulong[count];
        public int Next;
        public bool Pfo;
        public int Fri;
        public bool Iqe;
        public bool Im = true;
        public bool Ip;
        public int Messages;

        public bool Ppf => Array.Exists(Hi, h => (h & (1UL << 63)) != 0);

        public bool F(int i) => (Hi[i] & (1UL << 63)) != 0;

        // A recordable fault: dropped while PFO is set or when the record at the index is still pending (then PFO).
        public bool Record(ulong lo, ulong hi)
        {
            if (Pfo)
            {
                return false;
            }

            if (F(Next))
            {
                Pfo = true;
                return false;
            }

            bool wasPending = Ppf;
            Lo[Next] = lo;
            Hi[Next] = hi | (1UL << 63);
            if (!wasPending)
            {
                Fri = Next;
            }

            Next = (Next + 1) % Lo.Length;
            if (!wasPending && !Iqe)
            {
                // PFO is clear here (checked above): no status was set before, so this is a new interrupt condition.
                Ip = true;
                Deliver();
            }

            return true;
        }

        public void Deliver()
        {
            if (Ip && !Im)
            {
                Ip = false;
                Messages++;
            }
        }

        public void ClearF(int i)
        {
            Hi[i] &= ~(1UL << 63);
            if (Ppf)
            {
                // The first pending record from the old FRI on.
                for (int k = 0; k < Lo.Length; k++)
                {
                    int idx = (Fri + k) % Lo.Length;
                    if (F(idx))
                    {
                        Fri = idx;
                        break;
                    }
                }
            }

            Serviced();
        }

        // An invalidation-queue error shares the fault event under the same rule.
        public void QueueError()
        {
            if (Iqe)
            {
                return;
            }

            if (!Ppf && !Pfo)
            {
                Ip = true;
                Deliver();
            }

            Iqe = true;
        }

        public void Serviced()
        {
            if (!Ppf && !Pfo && !Iqe)
            {
                Ip = false;
            }
        }
    }

    [Fact]
    public void Property_fault_records_status_and_fault_event_follow_primary_fault_logging()
    {
        Gen.Select(Gen.Bool, Gen.Int[1, 8], Gen.UInt, Gen.Int[1, 60]).Sample(
            (scalable, records, seed, steps) => Run(scalable, records, seed, steps), iter: 300);
    }

    /// <summary>
    /// The internal index of the next fault record returns to 0 when translation and interrupt remapping are both
    /// disabled (QEMU clears it when TE is cleared); with interrupt remapping still enabled it keeps counting.
    /// </summary>
    [Theory]
    [InlineData(false, 0)]
    [InlineData(true, 2)]
    public void Disabling_translation_with_interrupt_remapping_off_resets_the_fault_record_index(bool ire, int expected)
    {
        using var b = new VtdBench(VtdConfig.Legacy48Bit); // 8 records
        b.Enable(scalable: false);
        b.SetupLegacyDevice(0x0018, 2, 1);
        if (ire)
        {
            b.Gcmd(Ire);
        }

        Assert.True(b.Unit.Translate(0x0018, null, 0x1000, 4, DmaAccess.Read).FaultRecorded);
        Assert.True(b.Unit.Translate(0x0018, null, 0x2000, 4, DmaAccess.Read).FaultRecorded);
        b.ClearFaultRecord(0);
        b.ClearFaultRecord(1);
        b.GcmdClear(Te);
        b.Gcmd(Te);

        Assert.True(b.Unit.Translate(0x0018, null, 0x3000, 4, DmaAccess.Read).FaultRecorded);
        Assert.Equal(2u | ((uint)expected << 8), b.Fsts); // PPF, FRI
        Assert.Equal(0x3000UL, b.FaultRecord(expected).Lo);
    }

    private static void Run(bool scalable, int records, uint seed, int steps)
    {
        var rng = new Random((int)seed);
        VtdConfig config = (scalable ? VtdConfig.ScalableMode48Bit : VtdConfig.Legacy48Bit) with { FaultRecordCount = records };
        using var b = new VtdBench(config);
        List<Device> devices = scalable ? ScalableDevices(b, rng) : LegacyDevices(b, rng);
        b.Enable(scalable);

        var model = new Model(records);
        var messages = new List<VtdInterruptEventArgs>();
        b.Unit.FaultEvent += (_, e) => messages.Add(e);
        uint fedata = (uint)rng.Next(0x10000);
        ulong feaddr = 0xFEE0_0000UL | ((ulong)rng.Next(0x400) << 2);
        b.Unit.Write32(FedataReg, fedata);
        b.Unit.Write32(FeaddrReg, (uint)feaddr);
        b.Unit.Write32(FeuaddrReg, 0);
        bool te = true, ire = false;

        // A one-page invalidation queue (128-bit descriptors in legacy mode, 256-bit in scalable mode).
        int descriptorSize = scalable ? 32 : 16;
        int entries = 4096 / descriptorSize;
        ulong queue = b.AllocFrame();
        int tail = 0;
        b.Unit.Write64(0x88, 0);
        b.Unit.Write64(0x90, queue | (scalable ? 1UL << 11 : 0));
        b.Gcmd(1u << 26);
        void Put(int index, ulong q0)
        {
            ulong at = queue + (ulong)(index * descriptorSize);
            b.Memory.WriteUInt64(at, q0);
            for (int w = 8; w < descriptorSize; w += 8)
            {
                b.Memory.WriteUInt64(at + (ulong)w, 0);
            }
        }

        var log = new List<string>();

        for (int step = 0; step < steps; step++)
        {
            int op = rng.Next(100);
            string what;
            if (op < 45)
            {
                Device d = devices[rng.Next(devices.Count)];
                ulong address = d.Address(rng);
                VtdTranslation t = b.Unit.Translate(d.Rid, d.Pasid, address, 4, d.Access);
                what = $"dma {d.Rid:x4}/{d.Pasid?.ToString("x", null) ?? "-"} {d.Access} {address:x} -> {(t.IsFault ? t.Reason.ToString() : "ok")}";
                if (d.Reason == VtdFaultReason.None || !te)
                {
                    Assert.False(t.IsFault, what);
                }
                else
                {
                    Assert.True(t.IsFault, what);
                    Assert.Equal(d.Reason, t.Reason);
                    bool expected = false;
                    if (!(d.Fpd && d.Qualified))
                    {
                        ulong hi = d.Rid | ((ulong)(byte)d.Reason << 32) | (d.Access == DmaAccess.Read ? 1UL << 62 : 0)
                            | (d.Pasid is uint p ? (1UL << 31) | ((ulong)p << 40) : 0);
                        expected = model.Record(address & ~0xFFFUL, hi);
                    }

                    Assert.True(expected == t.FaultRecorded, $"{what}: recorded {t.FaultRecorded}, expected {expected}\n{string.Join("\n", log)}");
                }
            }
            else if (op < 60)
            {
                // Clear one record's F: a 32-bit write of the top dword, a 64-bit write of the upper half, or a
                // write without F (no effect). Records not pending are written too (no effect either).
                int i = rng.Next(records);
                uint at = b.FaultRecordBase + (uint)(16 * i);
                int how = rng.Next(4);
                what = $"clear F[{i}] how {how}";
                switch (how)
                {
                    case 0:
                    case 1:
                        b.Unit.Write32(at + 12, 0x8000_0000u | (uint)rng.Next());
                        model.ClearF(i);
                        break;
                    case 2:
                        b.Unit.Write64(at + 8, (1UL << 63) | (ulong)rng.NextInt64());
                        model.ClearF(i);
                        break;
                    default:
                        b.Unit.Write32(at + 12, (uint)rng.Next() & 0x7FFF_FFFF);
                        b.Unit.Write32(at + 8, (uint)rng.Next());
                        b.Unit.Write64(at, (ulong)rng.NextInt64());
                        break;
                }
            }
            else if (op < 70)
            {
                // What Linux's handler does (clear every pending record from FRI on), sometimes stopping early.
                int limit = rng.Next(records + 1);
                what = $"service {limit}";
                if ((b.Unit.Read32(FstsReg) & 2) != 0)
                {
                    int index = (int)((b.Unit.Read32(FstsReg) >> 8) & 0xFF);
                    for (int k = 0; k < limit && (b.Unit.Read32(b.FaultRecordBase + (uint)(16 * index) + 12) & 0x8000_0000) != 0; k++)
                    {
                        b.ClearFaultRecord(index);
                        model.ClearF(index);
                        index = (index + 1) % records;
                    }
                }
            }
            else if (op < 80)
            {
                // FSTS: PFO and IQE are RW1C, PPF and FRI read-only. Before clearing IQE software rewrites the
                // descriptor the queue stopped at with a no-op wait, as Linux's qi_check_fault does.
                uint value = (uint)rng.Next() & (rng.Next(2) == 0 ? 0x13u : 0xFFFF_FFFFu);
                what = $"fsts {value:x}";
                if ((value & 0x10) != 0 && model.Iqe)
                {
                    Put((int)(b.Unit.Read64(0x80) >> (scalable ? 5 : 4)), 5 | (1UL << 6));
                }

                b.Unit.Write32(FstsReg, value);
                if ((value & 1) != 0)
                {
                    model.Pfo = false;
                }

                if ((value & 0x10) != 0)
                {
                    model.Iqe = false;
                }

                model.Serviced();
            }
            else if (op < 84)
            {
                // An invalid descriptor (unknown type): IQE, and a fault event by the same rule as a fault record.
                what = "queue error";
                if (!model.Iqe)
                {
                    Put(tail, 0xF);
                    tail = (tail + 1) % entries;
                    b.Unit.Write64(0x88, (ulong)tail << (scalable ? 5 : 4));
                    model.QueueError();
                }
            }
            else if (op < 92)
            {
                bool mask = rng.Next(2) == 0;
                what = $"fectl im={mask}";
                b.Unit.Write32(FectlReg, (mask ? 0x8000_0000u : 0) | ((uint)rng.Next() & 0x7FFF_FFFF));
                model.Im = mask;
                model.Deliver();
            }
            else if (op < 97)
            {
                te = !te;
                what = $"te={te}";
                if (te)
                {
                    b.Gcmd(Te);
                }
                else
                {
                    b.GcmdClear(Te);
                }

                if (!te && !ire)
                {
                    model.Next = 0;
                }
            }
            else if (config.InterruptRemapping)
            {
                ire = !ire;
                what = $"ire={ire}";
                if (ire)
                {
                    b.Gcmd(Ire);
                }
                else
                {
                    b.GcmdClear(Ire);
                }

                if (!te && !ire)
                {
                    model.Next = 0;
                }
            }
            else
            {
                continue;
            }

            log.Add(what);
            Check(b, model, messages, fedata, feaddr, records, log);
        }
    }

    private static void Check(VtdBench b, Model model, List<VtdInterruptEventArgs> messages, uint fedata, ulong feaddr, int records, List<string> log)
    {
        string trace = string.Join("\n", log);
        uint fsts = b.Unit.Read32(FstsReg);
        uint expectedLow = (model.Pfo ? 1u : 0) | (model.Ppf ? 2u : 0) | (model.Iqe ? 0x10u : 0);
        Assert.True(expectedLow == (fsts & 0xFF), $"FSTS {fsts:x}, expected low byte {expectedLow:x}\n{trace}");
        if (model.Ppf)
        {
            Assert.True(model.Fri == (int)((fsts >> 8) & 0xFF), $"FRI {(fsts >> 8) & 0xFF}, expected {model.Fri}\n{trace}");
        }

        Assert.Equal(0u, fsts >> 16);
        uint fectl = b.Unit.Read32(FectlReg);
        uint expectedFectl = (model.Im ? 1u << 31 : 0) | (model.Ip ? 1u << 30 : 0);
        Assert.True(expectedFectl == fectl, $"FECTL {fectl:x}, expected {expectedFectl:x}\n{trace}");
        Assert.True(model.Messages == messages.Count, $"{messages.Count} fault events, expected {model.Messages}\n{trace}");
        Assert.All(messages, m => Assert.Equal((feaddr, fedata), (m.Address, m.Data)));
        for (int i = 0; i < records; i++)
        {
            (ulong lo, ulong hi) = b.FaultRecord(i);
            Assert.True(model.Hi[i] == hi, $"FRCD[{i}] hi {hi:x16}, expected {model.Hi[i]:x16}\n{trace}");
            Assert.True(model.Lo[i] == lo, $"FRCD[{i}] lo {lo:x16}, expected {model.Lo[i]:x16}\n{trace}");
        }
    }

    private static ulong Page(Random rng, ulong basePage, int pages) => ((basePage + (ulong)rng.Next(pages)) << 12) | (uint)rng.Next(0x1000 - 4);

    private static List<Device> LegacyDevices(VtdBench b, Random rng)
    {
        var list = new List<Device>();
        bool Fpd() => rng.Next(3) == 0;

        // Context entry not present (its FPD still counts).
        bool fpd = Fpd();
        b.LegacyContext(b.ContextTableFor(0, false), 0x10, VtdBench.LegacyContextLow(0, fpd: fpd, present: false), 0);
        list.Add(new(0x0010, null, VtdFaultReason.ContextEntryNotPresent, true, fpd, DmaAccess.Read, r => Page(r, 0x10, 64)));

        // Read-only mappings: writes fault 0x5, reads of unmapped pages 0x6, reads of mapped pages succeed.
        fpd = Fpd();
        ulong sl = b.SetupLegacyDevice(0x0018, 2, 1, fpd: fpd);
        for (ulong p = 0; p < 16; p++)
        {
            b.Map(sl, 4, (0x100 + p) << 12, 0x0200_0000 + (p << 12), write: false);
        }

        list.Add(new(0x0018, null, VtdFaultReason.Write, true, fpd, DmaAccess.Write, r => Page(r, 0x100, 16)));
        list.Add(new(0x0018, null, VtdFaultReason.Read, true, fpd, DmaAccess.Read, r => Page(r, 0x200, 64)));
        list.Add(new(0x0018, null, VtdFaultReason.None, false, fpd, DmaAccess.Read, r => Page(r, 0x100, 16)));

        // A 39-bit domain: addresses at or above 2^39 fault 0x4.
        fpd = Fpd();
        b.SetupLegacyDevice(0x0020, 1, 2, fpd: fpd);
        list.Add(new(0x0020, null, VtdFaultReason.AddressBeyondMgaw, true, fpd, DmaAccess.Write, r => Page(r, 1UL << 27, 1 << 20)));

        // Root entry not present: not qualified (no context entry, so no FPD).
        list.Add(new(0x0508, null, VtdFaultReason.RootEntryNotPresent, false, false, DmaAccess.Read, r => Page(r, 0, 0xF_0000)));

        // Reserved bits in a context entry that has FPD set: not qualified, recorded anyway.
        b.LegacyContext(b.ContextTableFor(0, false), 0x28, VtdBench.LegacyContextLow(b.AllocFrame(), fpd: true) | (1UL << 4), VtdBench.LegacyContextHigh(2, 3));
        list.Add(new(0x0028, null, VtdFaultReason.ContextEntryReserved, false, true, DmaAccess.Write, r => Page(r, 0x40, 8)));
        return list;
    }

    private static List<Device> ScalableDevices(VtdBench b, Random rng)
    {
        var list = new List<Device>();
        bool Fpd() => rng.Next(3) == 0;

        // Context present with PASIDs enabled; PASID 0x2_042A mapped read-only, 0x55 without an entry.
        bool ctxFpd = Fpd();
        bool peFpd = Fpd();
        const uint Pasid = 0x2_042A;
        ulong dir = b.AllocFrame();
        ulong sl = b.AllocFrame();
        b.ScalableContext(0x0018, dir, pdts: 7, fpd: ctxFpd);
        b.PasidEntry(dir, Pasid, VtdBench.PasidEntryLow(sl, 2, 2, fpd: peFpd), did: 3);
        for (ulong p = 0; p < 16; p++)
        {
            b.Map(sl, 4, (0x100 + p) << 12, 0x0200_0000 + (p << 12), write: false);
        }

        bool fpd = ctxFpd || peFpd;
        list.Add(new(0x0018, Pasid, VtdFaultReason.ScalableWrite, true, fpd, DmaAccess.Write, r => Page(r, 0x100, 16)));
        list.Add(new(0x0018, Pasid, VtdFaultReason.ScalableRead, true, fpd, DmaAccess.Read, r => Page(r, 0x200, 64)));
        list.Add(new(0x0018, Pasid, VtdFaultReason.None, false, fpd, DmaAccess.Read, r => Page(r, 0x100, 16)));
        list.Add(new(0x0018, Pasid, VtdFaultReason.ScalableAddressBeyondWidth, true, fpd, DmaAccess.Read, r => Page(r, 1UL << 36, 1 << 20)));
        b.PasidTableFor(dir, 0x55);
        list.Add(new(0x0018, 0x55, VtdFaultReason.PasidEntryNotPresent, true, ctxFpd, DmaAccess.Write, r => Page(r, 0x100, 16)));

        // PASIDs disabled in the context entry: a request with PASID faults 0x45.
        fpd = Fpd();
        b.ScalableContext(0x0020, b.AllocFrame(), pdts: 7, paside: false, fpd: fpd);
        list.Add(new(0x0020, 0x7, VtdFaultReason.PasidDisabled, true, fpd, DmaAccess.Read, r => Page(r, 0, 256)));

        // Context not present (its FPD still counts), with and without PASID.
        fpd = Fpd();
        b.Memory.WriteUInt64(b.ContextTableFor(0, false) + (0x30 * 32), fpd ? 2UL : 0);
        list.Add(new(0x0030, null, VtdFaultReason.ScalableContextEntryNotPresent, true, fpd, DmaAccess.Read, r => Page(r, 0x10, 64)));
        list.Add(new(0x0030, 0xF_FFFF, VtdFaultReason.ScalableContextEntryNotPresent, true, fpd, DmaAccess.Write, r => Page(r, 0x10, 64)));

        // Upper half of a root entry not present: not qualified.
        list.Add(new(0x0188, 0x3, VtdFaultReason.ScalableRootEntryNotPresent, false, false, DmaAccess.Read, r => Page(r, 0, 0xF_0000)));
        b.ContextTableFor(1, scalableUpper: false);
        return list;
    }
}
