using System.Globalization;
using Iommu.Devices;
using Iommu.Mm;
using Iommu.Reliability.Tests.Infrastructure;

namespace Iommu.Reliability.Tests.Isolation;

/// <summary>What an SVA isolation op does.</summary>
internal enum SvaOpKind
{
    /// <summary>A CPU write of a fresh 8-byte value by the process (faults the page in, breaks COW).</summary>
    CpuWrite,

    /// <summary>munmap of one page.</summary>
    Munmap,

    /// <summary>mprotect of one page: Arg 0 none, 1 read, 2 read-write.</summary>
    Mprotect,

    /// <summary>mlock of one page (populates it).</summary>
    Mlock,

    /// <summary>fork into the first free slot (Arg 1: the child writes the page, breaking its COW).</summary>
    Fork,

    /// <summary>The process exits (its binds stay until unbound).</summary>
    Exit,

    /// <summary>A new process in the slot once its old one exited and has no binds, or the slot is empty.</summary>
    Spawn,

    /// <summary>iommu_sva_bind_device(dev, mm).</summary>
    Bind,

    /// <summary>iommu_sva_unbind_device of one of the pair's binds.</summary>
    Unbind,

    /// <summary>Device DMA with the process's (last known) PASID: Arg bit 0 write, bit 1 through ATS.</summary>
    Dma,

    /// <summary>Device DMA without PASID at the process's address (never an SVA translation).</summary>
    DmaNoPasid,
}

/// <summary>One op: the slots it names are resolved against the state when it runs (it skips itself when its precondition does not hold).</summary>
internal readonly record struct SvaOp(SvaOpKind Kind, int Dev, int Proc, int Page, int Arg)
{
    public override string ToString() => Kind switch
    {
        SvaOpKind.Dma => string.Create(CultureInfo.InvariantCulture, $"Dma dev{Dev} p{Proc} page{Page} {((Arg & 1) != 0 ? "write" : "read")}{((Arg & 2) != 0 ? " ats" : string.Empty)}"),
        SvaOpKind.Bind or SvaOpKind.Unbind => string.Create(CultureInfo.InvariantCulture, $"{Kind} dev{Dev} p{Proc}"),
        SvaOpKind.DmaNoPasid => string.Create(CultureInfo.InvariantCulture, $"DmaNoPasid dev{Dev} p{Proc} page{Page}"),
        SvaOpKind.Fork or SvaOpKind.Exit or SvaOpKind.Spawn => string.Create(CultureInfo.InvariantCulture, $"{Kind} p{Proc} arg{Arg} page{Page}"),
        _ => string.Create(CultureInfo.InvariantCulture, $"{Kind} p{Proc} page{Page} arg{Arg}"),
    };
}

/// <summary>
/// A first-level-capable VT-d unit with device-TLBs and a page request queue, two ATS+PRI devices with SVA
/// enabled and one plain PASID device, up to three processes. Every DMA is checked against the CPU tables of the
/// process that holds the PASID on that device at that moment (§4 inv 1, 3, 4); every page request the device sends
/// is handled at once (the PRQ thread runs on the event, the iopf worker is flushed) and must get exactly one page
/// group response, SUCCESS iff the VMA allows the access (inv 2, 9); the retry then reaches the CPU's page.
/// </summary>
internal sealed class SvaIsolationBed : IDisposable
{
    public const int Procs = 3, Devices = 3, Pages = 8;
    private const ulong Page = 4096;

    private readonly SvaTestBed _bed = new();
    private readonly PciDevice[] _devs;
    private readonly ProcessAddressSpace?[] _mm = new ProcessAddressSpace?[Procs];
    private readonly List<ProcessAddressSpace> _retired = [];
    private readonly ulong[] _base = new ulong[Procs];
    private readonly uint?[] _pasid = new uint?[Procs];
    private readonly List<IommuSva>[,] _binds = new List<IommuSva>[Devices, Procs];
    private ulong _value = 0x5A5A_0000_0000_0000;

    public SvaIsolationBed()
    {
        _devs = new PciDevice[Devices];
        for (int d = 0; d < Devices; d++)
        {
            _devs[d] = _bed.AddDevice($"0000:00:0{d + 2}.0", sva: d < 2);
            for (int p = 0; p < Procs; p++)
            {
                _binds[d, p] = [];
            }
        }

        Spawn(0);
        Spawn(1);
    }

    /// <summary>Ops that ran (not skipped).</summary>
    public long Executed { get; private set; }

    /// <summary>Page requests the devices sent (each answered and retried).</summary>
    public long PageRequests { get; private set; }

    /// <summary>ATS DMAs that succeeded (ATC hits or fresh translations).</summary>
    public long AtsOk { get; private set; }

    private IommuCore Iommu => _bed.Iommu;

    public void Run(IEnumerable<SvaOp> ops)
    {
        int i = 0;
        foreach (SvaOp op in ops)
        {
            try
            {
                if (Step(op))
                {
                    Executed++;
                }
            }
            catch (IsolationViolationException e)
            {
                throw new IsolationViolationException($"op {i} ({op}): {e.Message}");
            }

            i++;
        }
    }

    private bool Step(SvaOp op)
    {
        ProcessAddressSpace? mm = _mm[op.Proc];
        bool live = mm is { Exited: false };
        ulong va = _base[op.Proc] + ((ulong)op.Page * Page);
        switch (op.Kind)
        {
            case SvaOpKind.CpuWrite when live:
                _ = mm!.Write(va, BitConverter.GetBytes(++_value));
                return true;
            case SvaOpKind.Munmap when live:
                mm!.Munmap(va, Page);
                return true;
            case SvaOpKind.Mprotect when live && Mapped(mm!, va):
                mm!.Mprotect(va, Page, op.Arg switch { 0 => VmProt.None, 1 => VmProt.Read, _ => VmProt.ReadWrite });
                return true;
            case SvaOpKind.Mlock when live:
                _ = mm!.Mlock(va, Page);
                return true;
            case SvaOpKind.Fork when live:
                int slot = Array.FindIndex(_mm, m => m is null);
                if (slot < 0)
                {
                    return false;
                }

                ProcessAddressSpace child = mm!.Fork($"child{slot}");
                _mm[slot] = child;
                _base[slot] = _base[op.Proc];
                _pasid[slot] = null;
                if (op.Arg == 1)
                {
                    _ = child.Write(va, BitConverter.GetBytes(++_value));
                }

                return true;
            case SvaOpKind.Exit when live:
                mm!.Exit();
                return true;
            case SvaOpKind.Spawn when (mm is null || mm.Exited) && !AnyBind(op.Proc):
                if (mm is not null)
                {
                    _retired.Add(mm);
                }

                Spawn(op.Proc);
                return true;
            case SvaOpKind.Bind when mm is not null && op.Dev < 2:
                Errno e = Iommu.SvaBindDevice(_devs[op.Dev], mm, null, out IommuSva? h);
                if (mm.Exited)
                {
                    Check(e == Errno.EINVAL && h is null, $"bind of an exited process: {e}, expected EINVAL");
                    return true;
                }

                Check(e == Errno.None && h is not null, $"bind: {e}");
                uint pasid = Iommu.SvaGetPasid(h!);
                if (AnyBind(op.Proc))
                {
                    Check(pasid == _pasid[op.Proc], $"one PASID per mm: {pasid} after {_pasid[op.Proc]}");
                }
                else
                {
                    for (int q = 0; q < Procs; q++)
                    {
                        Check(q == op.Proc || !AnyBind(q) || _pasid[q] != pasid, $"PASID {pasid} handed to p{op.Proc} while p{q} holds it");
                    }
                }

                _pasid[op.Proc] = pasid;
                _binds[op.Dev, op.Proc].Add(h!);
                return true;
            case SvaOpKind.Unbind when _binds[op.Dev % 2, op.Proc].Count > 0:
                List<IommuSva> list = _binds[op.Dev % 2, op.Proc];
                Iommu.SvaUnbindDevice(list[^1]);
                list.RemoveAt(list.Count - 1);
                return true;
            case SvaOpKind.Dma when _pasid[op.Proc] is uint p:
                Dma(op.Dev, p, va, write: (op.Arg & 1) != 0, ats: (op.Arg & 2) != 0);
                return true;
            case SvaOpKind.DmaNoPasid when mm is not null:
                byte[] b = new byte[8];
                DmaResult r = op.Arg == 0 ? _devs[op.Dev].DmaRead(null, va, b) : _devs[op.Dev].AtsDmaRead(null, va, b);
                Check(!r.IsOk, $"dev{op.Dev} reached 0x{r.Address:x} without PASID at a process address");

                // A page request without PASID: the driver's PRQ thread answers it Invalid, on its own time.
                Check(r.Status != DmaStatus.PageRequestPending || _devs[op.Dev].WaitForPageGroupResponses(TimeSpan.FromSeconds(30)), "no answer to a page request without PASID");
                return true;
            default:
                return false;
        }
    }

    private void Spawn(int slot)
    {
        var mm = new ProcessAddressSpace(_bed.Pages, $"p{slot}");
        _mm[slot] = mm;
        _base[slot] = mm.Mmap(Pages * Page);
        _pasid[slot] = null;
    }

    private bool AnyBind(int proc) => _binds[0, proc].Count > 0 || _binds[1, proc].Count > 0;

    private static bool Mapped(ProcessAddressSpace mm, ulong va) => mm.Areas.Any(a => a.Start <= va && va < a.End);

    // The live process that holds `pasid` and is bound to device d now; null when the PASID reaches no process there.
    private ProcessAddressSpace? Owner(int d, uint pasid)
    {
        if (d >= 2)
        {
            return null; // the plain device cannot enable SVA (no PRI/ATS): no bind ever
        }

        for (int q = 0; q < Procs; q++)
        {
            if (_binds[d, q].Count > 0 && _pasid[q] == pasid)
            {
                return _mm[q]!.Exited ? null : _mm[q];
            }
        }

        return null;
    }

    private void Dma(int d, uint pasid, ulong va, bool write, bool ats)
    {
        PciDevice dev = _devs[d];
        ProcessAddressSpace? owner = Owner(d, pasid);
        bool allowed = owner is not null && CpuAllows(owner, va, write);
        ulong value = ++_value;
        byte[] buf = write ? BitConverter.GetBytes(value) : new byte[8];
        ulong mark = _bed.Mark();
        DmaResult r = Transfer(dev, pasid, va, buf, write, ats);
        if (allowed)
        {
            Check(r.IsOk, $"dev{d} PASID {pasid} {(write ? "write" : "read")} at 0x{va:x}: {r.Status} (reason 0x{r.FaultReason:x}) although {owner} maps it");
            CheckReached(owner!, r, va, buf, write, $"dev{d} PASID {pasid}");
            return;
        }

        Check(!r.IsOk, $"dev{d} PASID {pasid} {(write ? "write" : "read")} at 0x{va:x} reached 0x{r.Address:x} although {(owner is null ? "no live process is bound with that PASID" : $"{owner}'s tables do not allow it")}");
        if (r.Status != DmaStatus.PageRequestPending)
        {
            Check(_bed.Responses(mark).Count == 0, "a page group response without a page request");
            return;
        }

        // The device sent one page request (last in its group): the flush waits for the PRQ thread, then the iopf worker that answers.
        PageRequests++;
        Check(Iommu.IopfQueueFlushDev(dev) == Errno.None, "iopf flush");
        Check(_bed.Unit.Read32(0xDC) == 0 && _bed.Unit.Read64(0xC0) == _bed.Unit.Read64(0xC8), "PRQ not drained after the iopf flush");
        List<(ulong Q0, ulong Q1)> resp = _bed.Responses(mark);
        Check(resp.Count == 1, $"{resp.Count} page group responses to one page request (inv 9)");
        int rc = (int)((resp[0].Q0 >> 12) & 0xF);
        Check(((resp[0].Q0 >> 16) & 0xFFFF) == dev.RequesterId && (resp[0].Q0 >> 32 & 0xF_FFFF) == pasid, $"response to RID 0x{(resp[0].Q0 >> 16) & 0xFFFF:x} PASID {resp[0].Q0 >> 32 & 0xF_FFFF}");
        bool vma = owner is not null && VmaAllows(owner, va, write);
        Check(rc == (vma ? 0 : 1), $"page request {(write ? "write" : "read")} at 0x{va:x} answered {rc} although the VMA {(vma ? "allows" : "does not allow")} it (inv 2)");

        buf = write ? BitConverter.GetBytes(value) : new byte[8];
        DmaResult retry = Transfer(dev, pasid, va, buf, write, ats);
        if (!vma)
        {
            Check(retry.Status == DmaStatus.PageRequestFailed, $"retry after INVALID: {retry.Status}");
            return;
        }

        Check(retry.IsOk, $"retry after SUCCESS at 0x{va:x}: {retry.Status}");
        Check(CpuAllows(owner!, va, write), "the retry succeeded on a page the CPU tables do not allow");
        CheckReached(owner!, retry, va, buf, write, $"dev{d} PASID {pasid} retry");
    }

    private DmaResult Transfer(PciDevice dev, uint pasid, ulong va, byte[] buf, bool write, bool ats)
    {
        DmaResult r = (ats, write) switch
        {
            (true, true) => dev.AtsDmaWrite(pasid, va, buf),
            (true, false) => dev.AtsDmaRead(pasid, va, buf),
            (false, true) => dev.DmaWrite(pasid, va, buf),
            _ => dev.DmaRead(pasid, va, buf),
        };
        if (ats && r.IsOk)
        {
            AtsOk++;
        }

        return r;
    }

    private static bool CpuAllows(ProcessAddressSpace mm, ulong va, bool write)
    {
        X86PageWalk w = mm.Walk(va);
        return w.Present && w.User && (!write || w.Writable);
    }

    private static bool VmaAllows(ProcessAddressSpace mm, ulong va, bool write)
    {
        foreach (ProcessMemoryArea a in mm.Areas)
        {
            if (a.Start <= va && va < a.End)
            {
                return (a.Prot & (write ? VmProt.Write : VmProt.Read)) != 0;
            }
        }

        return false;
    }

    // The DMA reached the page the CPU maps now, and the bytes are the CPU's (read) or became the CPU's (write).
    private static void CheckReached(ProcessAddressSpace mm, DmaResult r, ulong va, byte[] buf, bool write, string who)
    {
        ulong pa = mm.Walk(va).PhysicalAddress;
        Check(r.Address == pa, $"{who} at 0x{va:x} reached 0x{r.Address:x}, the CPU maps 0x{pa:x}");
        byte[] cpu = new byte[8];
        Check(mm.Read(va, cpu) == Errno.None, "CPU read");
        Check(cpu.AsSpan().SequenceEqual(buf), $"{who} at 0x{va:x}: device {(write ? "wrote" : "read")} 0x{BitConverter.ToUInt64(buf):x}, the CPU reads 0x{BitConverter.ToUInt64(cpu):x}");
    }

    private static void Check(bool ok, string message)
    {
        if (!ok)
        {
            throw new IsolationViolationException(message);
        }
    }

    public void Dispose()
    {
        for (int d = 0; d < 2; d++)
        {
            for (int p = 0; p < Procs; p++)
            {
                foreach (IommuSva h in _binds[d, p])
                {
                    Iommu.SvaUnbindDevice(h);
                }
            }
        }

        foreach (ProcessAddressSpace? mm in _mm)
        {
            mm?.Dispose();
        }

        foreach (ProcessAddressSpace mm in _retired)
        {
            mm.Dispose();
        }

        _bed.Dispose();
    }
}
