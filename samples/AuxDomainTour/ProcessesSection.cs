using System.Globalization;
using Iommu;
using Iommu.Devices;
using Iommu.Memory;
using Iommu.Mm;
using Iommu.VtD.Diagnostics;
using Iommu.VtD.Hardware;
using UacceAccel;

namespace AuxDomainTour;

/// <summary>
/// The answer to the one reply the 2018 patch got ("Is this solution trying to support general
/// user space processes who are directly working on devices?"), run on this stack: two ordinary
/// processes (no VM, no VFIO) open a uacce accelerator. Each open binds the process's mm to a
/// PASID (SVA), so the device walks the CPU's own page tables; a page nobody touched yet is
/// faulted in through a page request; an address outside every mapping gets Invalid Request; a
/// munmap reaches the IOTLB and the device's ATC through the mmu notifier before it returns.
/// </summary>
internal static class ProcessesSection
{
    private const ulong Page = Sizes.Page;

    public static void Run(Report r)
    {
        r.Section("Processes on the device: SVA, page requests and a uacce accelerator");
        using AccelSystem sys = AccelSystem.Create(queues: 2, mode: AccelDmaMode.Ats);
        VtdUnit unit = sys.Unit;
        PciDevice dev = sys.Device;
        r.Note("\"Is this solution trying to support general user space processes who are "
            + "directly working on devices?\" (the one reply to the 2018 patch). Upstream's "
            + "answer, run here: bind a process's address space to a PASID (SVA). No VM, no VFIO.");
        r.Note("A second machine: a VT-d unit with first-level translation, device-TLBs and page "
            + $"requests (ECAP FLTS, DT, PRS); an accelerator {dev.Name} with PASID, ATS and PRI "
            + "(the driver enabled all three at attach); its uacce device "
            + $"/dev/{sys.Accel.Name} ({sys.Accel.Flags}).");
        ulong iqt0 = unit.Read64(VtdRegister.Iqt);

        using ProcessAddressSpace a = sys.NewProcess("editor");
        using ProcessAddressSpace b = sys.NewProcess("backup");
        ulong va = a.Mmap(4 * Page), vb = b.Mmap(4 * Page);
        a.Write(va, "text of editor"u8).ThrowIfError();
        b.Write(vb, "data of backup"u8).ThrowIfError();
        ulong ro = a.Mmap(Page, VmProt.Read);
        a.Read(ro, new byte[1]).ThrowIfError(); // present in the CPU's tables, read-only
        AccelClient ca = sys.Open(a), cb = sys.Open(b);
        uint pa = ca.Queue.Pasid, pb = cb.Queue.Pasid;

        Table procs = r.Table(
            "processes", "process", "PASID", "CPU tables (CR3)", "PASID entry");
        VtdImage image = sys.Intel.ExportImage();
        bool sharesTables = true;
        foreach ((ProcessAddressSpace mm, uint pasid) in new[] { (a, pa), (b, pb) })
        {
            VtdImageEntry pe = image.Path(dev.RequesterId, pasid, va)
                .First(e => e.Kind == VtdImageChunkKind.PasidTable);
            string meaning = VtdDecoder.DescribeEntry(image, pe, dev.RequesterId, pasid).Meaning;
            procs.Row(mm.Name, pasid, $"0x{mm.Pgd:x}", meaning);
            ulong flptr = image.ReadUInt64(pe.Address + 16) & VtdFormat.PointerMask;
            sharesTables &= flptr == mm.Pgd
                && meaning.StartsWith("PGTT=first-level DID 1 ", StringComparison.Ordinal);
        }

        r.Expect(pa != pb && va == vb,
            $"each open bound its process's mm: PASIDs {pa} and {pb}, though both processes use "
            + $"the same virtual address 0x{va:x}");
        r.Expect(sharesTables, "each PASID entry is first level (DID 1) with FLPTR = the process's "
            + "own CR3 root: the device walks the CPU's tables, nothing is copied");

        // Copies into pages neither process ever touched: each DMA misses, the device asks for it.
        int s1 = ca.Submit(Desc(AccelOp.Copy, va, va + Page));
        int s2 = cb.Submit(Desc(AccelOp.Xor, vb, vb + Page) with { Key = 0x20 });
        int s3 = ca.Submit(Desc(AccelOp.Copy, va, va + (64 * Page)));
        int s4 = ca.Submit(Desc(AccelOp.Copy, va, ro));
        Drain(sys);

        Table jobs = r.Table("descriptors", "process", "descriptor", "status", "what happened");
        jobs.Row("editor", $"copy 0x{va:x} -> 0x{va + Page:x}", ca.Read(s1).Status,
            "page request; the iopf worker faults the page in; Success; the engine retries");
        jobs.Row("backup", $"xor  0x{vb:x} -> 0x{vb + Page:x}", cb.Read(s2).Status,
            "the same numbers, backup's own pages");
        jobs.Row("editor", $"copy 0x{va:x} -> 0x{va + (64 * Page):x}", ca.Read(s3).Status,
            "no VMA there: Invalid Request");
        jobs.Row("editor", $"copy 0x{va:x} -> 0x{ro:x}", ca.Read(s4).Status,
            "read-only VMA: Invalid Request");
        byte[] got = new byte[14];
        a.Read(va + Page, got).ThrowIfError();
        bool aOk = got.AsSpan().SequenceEqual("text of editor"u8);
        b.Read(vb + Page, got).ThrowIfError();
        bool bOk = got.AsSpan().SequenceEqual("DATA\u0000OF\u0000BACKUP"u8);
        r.Expect(
            ca.Read(s1).Status == AccelStatus.Success && cb.Read(s2).Status == AccelStatus.Success
                && aOk && bOk,
            "a never-touched destination page is faulted in through a page request and the copy "
            + "lands in the opener's page; the same address in the other process is its own page");
        r.Expect(
            ca.Read(s3).Status == AccelStatus.PageRequestFailed
                && ca.Read(s4).Status == AccelStatus.PageRequestFailed,
            "an address outside every mapping and a write to a read-only mapping are answered "
            + "Invalid Request (the VMA decides, as iopf_handle_single does): descriptor fails");

        // munmap: the notifier flushes the PASID's IOTLB and the device's ATC before it returns.
        int atcBefore = dev.AtcCount;
        a.Munmap(va + Page, Page);
        int s5 = ca.Submit(Desc(AccelOp.Copy, va, va + Page));
        Drain(sys);
        r.Expect(ca.Read(s5).Status == AccelStatus.PageRequestFailed && dev.AtcCount < atcBefore,
            $"after munmap the device's cached translation is gone (ATC {atcBefore} -> "
            + $"{dev.AtcCount} entries) and a copy to the unmapped page is refused");

        // The same page by a plain (untranslated) DMA with the PASID: no page request, a fault.
        Table faults = r.Table("faults", "request", "result", "reason (decoded)");
        DmaResult plain = dev.DmaWrite(pa, va + Page, "x"u8);
        faults.Row($"editor PASID {pa} write 0x{va + Page:x} (no ATS)", plain.Status,
            VtdDecoder.DescribeFaultReason((VtdFaultReason)plain.FaultReason.Code));
        r.Expect(
            plain.Status == DmaStatus.Fault
                && plain.FaultReason.Code == (int)VtdFaultReason.FirstLevelNotPresent,
            "without ATS the same write faults on the not-present PTE the munmap cleared");

        // Exit: exit_mm first (mm_release clears the PASID entry with fault-processing disable, so
        // DMA in flight is aborted silently), then exit_files closes the queue: uacce release
        // unbinds, the entry is torn down and the PASID freed. The old PASID then reaches nothing.
        b.Exit();
        DmaResult late = dev.DmaRead(pb, vb, new byte[8]);
        faults.Row($"backup's old PASID {pb} read 0x{vb:x} after exit", late.Status,
            VtdDecoder.DescribeFaultReason((VtdFaultReason)late.FaultReason.Code));
        r.Expect(
            cb.Queue.Released && late.Status == DmaStatus.Fault
                && late.FaultReason.Code == (int)VtdFaultReason.PasidEntryNotPresent,
            "the backup process exits: its queue is released (unbind) and its old PASID is gone");

        Requests(r, unit, sys.Platform.Memory);
        Responses(r, unit, sys.Platform.Memory, iqt0);

        // Release: PUT_Q, unbind (entry torn down, page requests drained), PASID freed.
        a.Close(ca.Fd).ThrowIfError();
        bool gone = !sys.Intel.ExportImage().Path(dev.RequesterId, pa, va)
            .Any(e => e.Kind == VtdImageChunkKind.PageTable);
        r.Expect(gone && ca.Queue.Released,
            $"closing the editor's queue unbinds: PASID {pa}'s entry is torn down");
        r.Fact("processes.pasids", new[] { pa, pb });
    }

    private static AccelDescriptor Desc(AccelOp op, ulong src, ulong dst) =>
        new(op, AccelStatus.Pending, src, dst, 14);

    // The engine retries a descriptor whose page request is outstanding once the answer arrived;
    // the iopf worker runs on its own thread, so wait for it between passes.
    private static void Drain(AccelSystem sys)
    {
        for (int i = 0; i < 8 && sys.Engine.Queues.Any(q => q.Waiting || Pending(sys, q)); i++)
        {
            sys.Engine.Service();
            sys.Platform.Iommu.IopfQueueFlushDev(sys.Device).ThrowIfError();
        }
    }

    private static bool Pending(AccelSystem sys, AccelQueuePair q) => q.Enabled
        && sys.Engine.Memory.ReadUInt32(q.DoorbellPa) % AccelEngine.RingEntries != (uint)q.Head;

    // The page request queue as the unit wrote it (the driver moves PQH; the bytes stay).
    private static void Requests(Report r, VtdUnit unit, PhysicalMemory mem)
    {
        ulong pqa = unit.Read64(VtdRegister.Pqa) & VtdFormat.PointerMask;
        ulong pqt = unit.Read64(VtdRegister.Pqt);
        Table t = r.Table("page_requests", "PQ slot", "descriptor (decoded)");
        int n = 0;
        for (ulong off = 0; off < pqt; off += 32, n++)
        {
            t.Row(n, VtdDecoder.DescribePageRequest(
                mem.ReadUInt64(pqa + off), mem.ReadUInt64(pqa + off + 8)));
        }

        r.Expect(n == 5, $"{n} page requests reached the queue, one per refused page above");
    }

    // What software sent the unit in this section: page group responses, PASID-IOTLB and PASID
    // device-TLB invalidations, decoded from the invalidation queue's bytes.
    private static void Responses(Report r, VtdUnit unit, PhysicalMemory mem, ulong iqt0)
    {
        ulong iqa = unit.Read64(VtdRegister.Iqa);
        int shift = (iqa & (1UL << 11)) != 0 ? 5 : 4; // DW: 256-bit descriptors
        ulong entries = (4096UL << (int)(iqa & 7)) >> shift;
        ulong baseAddr = iqa & VtdFormat.PointerMask;
        ulong to = unit.Read64(VtdRegister.Iqt) >> shift;
        Table t = r.Table("responses_and_flushes", "descriptor (decoded)");
        int responses = 0, devTlb = 0;
        for (ulong i = iqt0 >> shift; i != to; i = (i + 1) % entries)
        {
            ulong q0 = mem.ReadUInt64(baseAddr + (i << shift));
            ulong q1 = mem.ReadUInt64(baseAddr + (i << shift) + 8);
            int type = (int)(q0 & 0xF);
            if (type is VtdFormat.DescPageGroupResponse or VtdFormat.DescPasidIotlb
                or VtdFormat.DescPasidDeviceTlb)
            {
                t.Row(VtdDecoder.DescribeInvalidation(q0, q1));
                responses += type == VtdFormat.DescPageGroupResponse ? 1 : 0;
                devTlb += type == VtdFormat.DescPasidDeviceTlb ? 1 : 0;
            }
        }

        string what = string.Create(
            CultureInfo.InvariantCulture, $"{responses} page group responses");
        r.Expect(responses == 5 && devTlb >= 1, what + ", one per request; PASID-IOTLB and PASID "
            + "device-TLB invalidations for the munmap and the exit");
    }
}
