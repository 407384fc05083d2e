// snippet-begin: guest-create
using Iommu.Devices;
using Iommu.Memory;
using Iommu.VtD.Hardware;
// snippet-end: guest-create

namespace Snippets;

/// <summary>
/// docs/embedding-vtd.md, "Programming the unit as the guest does": the guest's driver brings the unit up through
/// its registers and tables it writes into guest RAM, a device DMAs by requester id, a fault is read from the
/// fault-recording registers, and an unmap is invalidated through the invalidation queue.
/// </summary>
internal static class GuestDriverDoc
{
    /// <summary>Runs the walkthrough; <paramref name="check"/> receives each claim of the page's prose.</summary>
    public static void Run(Action<bool, string> check)
    {
        // snippet-begin: guest-create
        using var ram = new PhysicalMemory(64 << 20);                  // the guest's RAM (owned and sparse here)
        var unit = new VtdUnit(ram, VtdConfig.Legacy48Bit);

        // What the guest's driver reads first.
        ulong cap = unit.Read64(VtdRegister.Cap), ecap = unit.Read64(VtdRegister.Ecap);
        bool fourLevels = (VtdCap.Sagaw(cap) & 0b100) != 0;           // SAGAW bit 2: 48-bit, 4-level tables
        uint frcd = VtdCap.FaultRecordingOffset(cap);                  // CAP.FRO × 16: fault record 0
        int records = VtdCap.FaultRecordCount(cap);                    // CAP.NFR + 1
        bool queued = (ecap & VtdEcap.Qi) != 0;                        // ECAP.QI
        // snippet-end: guest-create
        check(fourLevels && frcd == 0x220 && records == 8 && queued && VtdEcap.IotlbRegisterOffset(ecap) == 0xF0,
            $"guest: Legacy48Bit reports 4-level tables, {records} fault records at 0x{frcd:x}, queued invalidation");

        // snippet-begin: guest-tables
        const ulong root = 0x10_0000, context = 0x10_1000, pml4 = 0x10_2000, pdpt = 0x10_3000, pd = 0x10_4000, pt = 0x10_5000;
        const ulong queue = 0x10_6000, status = 0x10_7000, buffer = 0x20_0000;
        const ushort rid = 0x0018;                                     // 00:03.0: bus 0, devfn 3 << 3 | 0
        const ushort did = 7;                                          // the guest's domain id for it
        const ulong iova = 0x4000_0000;                                // PML4 0, PDPT 1, PD 0, PT 0 and 1

        ram.Fill(root, 0x8000, 0);                                     // the guest clears its tables and queue
        const ulong rw = VtdFormat.SlRead | VtdFormat.SlWrite;
        ram.WriteUInt64(root + ((rid >> 8) * 16), context | VtdFormat.Present);        // root entry, bus 0
        ulong entry = context + ((rid & 0xFFUL) * 16);                                // context entry, devfn 0x18
        ram.WriteUInt64(entry + 8, ((ulong)did << VtdFormat.ContextDidShift) | 2);    // DID, AW = 010: 4 levels
        ram.WriteUInt64(entry, pml4 | VtdFormat.Present);              // SLPTPTR, TT = 00, P (written last)
        ram.WriteUInt64(pml4 + (((iova >> 39) & 0x1FF) * 8), pdpt | rw);   // non-leaf: next table, R, W
        ram.WriteUInt64(pdpt + (((iova >> 30) & 0x1FF) * 8), pd | rw);
        ram.WriteUInt64(pd + (((iova >> 21) & 0x1FF) * 8), pt | rw);
        ram.WriteUInt64(pt + (((iova >> 12) & 0x1FF) * 8), buffer | rw);   // 4 KiB leaves
        ram.WriteUInt64(pt + ((((iova + 0x1000) >> 12) & 0x1FF) * 8), (buffer + 0x1000) | VtdFormat.SlRead);
        // snippet-end: guest-tables

        // snippet-begin: guest-enable
        void Command(uint bit)                                         // GCMD, then poll GSTS
        {
            uint persistent = unit.Read32(VtdRegister.Gsts) & VtdRegister.GcmdOneShotClearMask;
            unit.Write32(VtdRegister.Gcmd, persistent | bit);
            if ((unit.Read32(VtdRegister.Gsts) & bit) == 0)            // done within the write: no spinning
            {
                throw new InvalidOperationException($"GSTS does not show 0x{bit:x}");
            }
        }

        uint waits = 0;
        void Submit(ulong q0, ulong q1)                                // one 128-bit descriptor at the tail
        {
            ulong tail = unit.Read64(VtdRegister.Iqt);
            ram.WriteUInt64(queue + tail, q0);
            ram.WriteUInt64(queue + tail + 8, q1);
            unit.Write64(VtdRegister.Iqt, (tail + 16) % 4096);         // the unit processes the queue now
        }

        void Wait(bool interrupt = false)                              // wait descriptor: SW, optionally IF
        {
            uint token = ++waits;
            ulong q0 = VtdFormat.DescWait | VtdFormat.DescWaitSw | ((ulong)token << VtdFormat.DescWaitDataShift);
            Submit(interrupt ? q0 | VtdFormat.DescWaitIf : q0, status);
            if (ram.ReadUInt32(status) != token)                       // qi_submit_sync polls the status
            {
                throw new InvalidOperationException($"wait {token} did not complete: FSTS 0x{unit.Read32(VtdRegister.Fsts):x}");
            }
        }

        unit.Write64(VtdRegister.Rtaddr, root);                        // TTM = 00: legacy mode
        Command(VtdRegister.GcmdSrtp);                                 // latch the root table (GSTS.RTPS)
        unit.Write64(VtdRegister.Iqt, 0);
        unit.Write64(VtdRegister.Iqa, queue);                          // QS = 0, DW = 0: 256 descriptors of 16 bytes
        Command(VtdRegister.GcmdQie);                                  // GSTS.QIES
        Submit(VtdFormat.DescContextCache | (1 << VtdFormat.DescGranularityShift), 0);   // global
        Submit(VtdFormat.DescIotlb | (1 << VtdFormat.DescGranularityShift), 0);          // global
        Wait();
        Command(VtdRegister.GcmdTe);                                   // GSTS.TES: translation on
        // snippet-end: guest-enable
        uint gsts = unit.Read32(VtdRegister.Gsts);
        const uint on = VtdRegister.GcmdTe | VtdRegister.GcmdSrtp | VtdRegister.GcmdQie;
        check((gsts & on) == on && unit.Read32(VtdRegister.Gcmd) == 0 && unit.Read64(VtdRegister.Iqh) == 0x30 && unit.Read64(VtdRegister.Iqa) == queue,
            $"guest: GSTS 0x{gsts:x8} (TES, RTPS, QIES), GCMD reads 0, IQH 0x{unit.Read64(VtdRegister.Iqh):x} after three descriptors");

        // snippet-begin: guest-dma
        DmaResult written = unit.Write(rid, pasid: null, iova + 0x10, "hello"u8);
        byte[] landed = new byte[5];
        ram.Read(buffer + 0x10, landed);                               // "hello", at buffer + 0x10
        Span<byte> back = stackalloc byte[5];
        DmaResult read = unit.Read(rid, null, iova + 0x10, back);      // "hello" again
        // snippet-end: guest-dma
        check(written.Status == DmaStatus.Ok && written.PhysicalAddress == buffer + 0x10 && "hello"u8.SequenceEqual(landed)
            && read.Status == DmaStatus.Ok && "hello"u8.SequenceEqual(back),
            $"guest: device 00:03.0 wrote \"hello\" at 0x{written.PhysicalAddress:x} and read it back");

        var fectlWhenSent = new List<uint>();                          // IP is clear once the message is sent
        unit.FaultEvent += (_, _) => fectlWhenSent.Add(unit.Read32(VtdRegister.Fectl));

        // snippet-begin: guest-fault
        var faultMsis = new List<VtdInterruptEventArgs>();
        unit.FaultEvent += (_, msi) => faultMsis.Add(msi);             // your interrupt controller
        unit.Write32(VtdRegister.Feaddr, 0xFEE0_0000);                 // the guest's MSI address and data
        unit.Write32(VtdRegister.Fedata, 0x41);

        DmaResult denied = unit.Write(rid, null, iova + 0x1008, "nope"u8); // the page is read-only
        uint fsts = unit.Read32(VtdRegister.Fsts);                     // PPF, FRI = the record's index
        uint fectl = unit.Read32(VtdRegister.Fectl);                   // IM | IP: pending, still masked
        unit.Write32(VtdRegister.Fectl, 0);                            // unmasking sends it: faultMsis[0]

        uint record = frcd + (((fsts & VtdRegister.FstsFriMask) >> VtdRegister.FstsFriShift) * VtdRegister.FaultRecordSize);
        ulong fi = unit.Read64(record);                                // the page of the faulting address
        ulong hi = unit.Read64(record + 8);                            // F, T (1 = read), FR, SID
        ushort source = (ushort)hi;
        byte reason = (byte)(hi >> VtdRegister.FrcdFrShift);           // 0x05: write to a page without W
        bool wasRead = (hi & VtdRegister.FrcdT) != 0;
        unit.Write32(record + 12, 1u << 31);                           // F is RW1C: the record is free again
        uint fstsAfter = unit.Read32(VtdRegister.Fsts);                // PPF clear
        // snippet-end: guest-fault
        check(denied.Status == DmaStatus.Fault && denied.Transferred == 0 && denied.StopAddress == iova + 0x1008 && denied.FaultReason.Code == 0x5,
            $"guest: write to the read-only page {denied.Status}, {denied.FaultReason}");
        check((fsts & VtdRegister.FstsPpf) != 0 && fectl == (VtdRegister.EventControlIm | VtdRegister.EventControlIp),
            $"guest: FSTS 0x{fsts:x8} (PPF, FRI), FECTL 0x{fectl:x8} (IM, IP) while masked");
        check(faultMsis.Count == 1 && faultMsis[0].Address == 0xFEE0_0000 && faultMsis[0].Data == 0x41 && fectlWhenSent.SequenceEqual([0u]),
            $"guest: unmasking FECTL sent {faultMsis.Count} fault MSI ({(faultMsis.Count > 0 ? faultMsis[0] : null)})");
        check(fi == iova + 0x1000 && source == rid && reason == 0x05 && !wasRead && (hi & VtdRegister.FrcdF) != 0 && (fstsAfter & VtdRegister.FstsPpf) == 0,
            $"guest: fault record FI 0x{fi:x}, SID {source:x4}, FR 0x{reason:x2}, {(wasRead ? "read" : "write")}; FSTS 0x{fstsAfter:x8} after clearing F");

        // snippet-begin: guest-invalidate
        var completions = new List<VtdInterruptEventArgs>();
        unit.InvalidationCompletionEvent += (_, msi) => completions.Add(msi);
        unit.Write32(VtdRegister.Ieaddr, 0xFEE0_0000);
        unit.Write32(VtdRegister.Iedata, 0x42);
        unit.Write32(VtdRegister.Iectl, 0);                            // unmask invalidation-completion events

        ram.WriteUInt64(pt + (((iova >> 12) & 0x1FF) * 8), 0);         // unmap the first page
        DmaResult cached = unit.Read(rid, null, iova, back);           // Ok: the IOTLB still holds it
        Submit(VtdFormat.DescIotlb | (3 << VtdFormat.DescGranularityShift) | ((ulong)did << VtdFormat.DescDidShift),
            iova);                                                     // page-selective: DID 7, ADDR, AM = 0
        Wait(interrupt: true);                                         // status written, then completions[0]
        ulong iqh = unit.Read64(VtdRegister.Iqh), iqt = unit.Read64(VtdRegister.Iqt);   // equal: queue drained
        uint ics = unit.Read32(VtdRegister.Ics);                       // IWC
        unit.Write32(VtdRegister.Ics, VtdRegister.IcsIwc);             // RW1C: clear it for the next IF
        DmaResult gone = unit.Read(rid, null, iova, back);             // fault 0x06: read without R
        // snippet-end: guest-invalidate
        uint goneFri = (unit.Read32(VtdRegister.Fsts) & VtdRegister.FstsFriMask) >> VtdRegister.FstsFriShift;   // the next record: 1
        check(cached.Status == DmaStatus.Ok && gone.Status == DmaStatus.Fault && gone.FaultReason.Code == 0x6 && faultMsis.Count == 2
            && goneFri == 1 && unit.Read64(frcd + VtdRegister.FaultRecordSize) == iova,
            $"guest: before the invalidation {cached.Status}, after it {gone.FaultReason} in record {goneFri} (fault MSI {faultMsis.Count})");
        check(ram.ReadUInt32(status) == waits && iqh == iqt && iqh == 0x50 && (ics & VtdRegister.IcsIwc) != 0 && unit.Read32(VtdRegister.Ics) == 0
            && completions.Count == 1 && completions[0].Address == 0xFEE0_0000 && completions[0].Data == 0x42,
            $"guest: wait status {ram.ReadUInt32(status)}, IQH = IQT = 0x{iqh:x}, ICS 0x{ics:x}, {completions.Count} completion MSI");

        // Prose claims outside the blocks: every fault is recorded, also one of a requester with a pending record;
        // until TE the unit does not translate.
        unit.Write32(frcd + (((unit.Read32(VtdRegister.Fsts) & VtdRegister.FstsFriMask) >> VtdRegister.FstsFriShift) * VtdRegister.FaultRecordSize) + 12, 1u << 31);
        DmaResult other = unit.Read(0x0020, null, iova + 0x10, back);
        DmaResult again = unit.Read(0x0020, null, iova + 0x2000, back);
        int pending = 0;
        for (uint i = 0; i < records; i++)
        {
            pending += unit.Read64(frcd + (i * VtdRegister.FaultRecordSize) + 8) == (VtdRegister.FrcdF | VtdRegister.FrcdT | (0x2UL << VtdRegister.FrcdFrShift) | 0x0020) ? 1 : 0;
        }

        check(other.Status == DmaStatus.Fault && other.FaultReason.Code == 0x2 && again.FaultReason.Code == 0x2 && pending == 2,
            $"guest: 00:04.0 has no context entry: {other.FaultReason}, {pending} records of its two faults");
        VtdTranslation probe = unit.Translate(rid, null, iova, 4, DmaAccess.Read);
        check(probe.IsFault && probe.Reason == VtdFaultReason.Read && probe.FaultRecorded,
            $"guest: Translate handles a request as a DMA does ({probe.Reason}, recorded)");
        for (ushort bus = 1; bus <= records; bus++)
        {
            unit.Read((ushort)(bus << 8), null, iova, back);           // root entry not present: 0x1
        }

        uint full = unit.Read32(VtdRegister.Fsts);
        check((full & VtdRegister.FstsPfo) != 0 && Enumerable.Range(0, records).All(i => (unit.Read64(frcd + ((uint)i * VtdRegister.FaultRecordSize) + 8) & VtdRegister.FrcdF) != 0),
            $"guest: {records} more faults fill every record and set PFO (FSTS 0x{full:x8})");
        var off = new VtdUnit(ram, VtdConfig.Legacy48Bit);
        DmaResult untranslated = off.Write(rid, null, 0x30_0000, "raw"u8);
        check(untranslated.Status == DmaStatus.Ok && untranslated.PhysicalAddress == 0x30_0000, $"guest: before TE a DMA goes to 0x{untranslated.PhysicalAddress:x} untranslated");
    }
}
