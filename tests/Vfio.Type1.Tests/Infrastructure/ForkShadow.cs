using System.Text.Json;
using Vfio.Type1.Uapi;

namespace Vfio.Type1.Tests.Infrastructure;

/// <summary>
/// For trace cases with a fork()ed child: the container's mappings as the recorded 6.1 kernel has them and as
/// 5.15 has them, each with its owner, vaddr-invalid mark and locked_vm charge. The two kernels part in two places:
/// <list type="bullet">
/// <item>UNMAP_DMA, plain or with VFIO_DMA_UNMAP_FLAG_VADDR: 5.15 <c>vfio_dma_do_unmap</c> stops silently at the
/// first mapping whose <c>dma-&gt;task-&gt;mm != current-&gt;mm</c> (another process, or one that exited, spec §4.7)
/// before it looks at the VADDR flag; 6.1 has no owner check, so it removes or marks (and rolls back at an
/// already-invalid one) every mapping in range, whoever made it.</item>
/// <item>MAP_DMA(VADDR): 6.1 <c>vfio_change_dma_owner</c> moves the mapping and its locked_vm charge to the
/// caller; 5.15 only updates the vaddr, the owner and its charge stay.</item>
/// </list>
/// The replay's deliberate-difference rules use it to tell where the two kernels part and what 5.15 answers there.
/// </summary>
internal sealed class ForkShadow(IEnumerable<JsonElement> buffers)
{
    private const ulong PageMask = 0xfff;
    private readonly Dictionary<string, JsonElement> _buffers = buffers.ToDictionary(b => b.GetProperty("name").GetString()!);
    private readonly List<Dma> _k515 = [];
    private readonly List<Dma> _k61 = [];
    private readonly HashSet<string> _exited = [];
    private int _children;
    private int _nextId;
    private bool _v1;

    /// <summary>True once the case has fork()ed: only then do the two kernels part.</summary>
    public bool Forked { get; private set; }

    /// <summary>A syscall outcome: ret, errno and (UNMAP, on success) the size written back.</summary>
    public readonly record struct Outcome(int Ret, string? Errno, ulong Size = 0);

    /// <summary>One mapping as one kernel holds it: <see cref="Id"/> names the MAP that made it in both kernels.</summary>
    private sealed class Dma(int id, ulong iova, ulong size, string owner, long kb)
    {
        public int Id { get; } = id;
        public ulong Iova { get; } = iova;
        public ulong Size { get; } = size;
        public ulong Last => Iova + Size - 1;
        public string Owner { get; set; } = owner;
        public long Kb { get; } = kb;
        public bool Invalid { get; set; }
        public Dma Clone() => new(Id, Iova, Size, Owner, Kb) { Invalid = Invalid };
    }

    /// <summary>
    /// What 5.15 answers to this UNMAP_DMA (plain or VADDR) when that differs from the recorded answer and the recorded
    /// answer is what 6.1 gives in the 6.1 view (so the difference comes from the owner check); null otherwise.
    /// </summary>
    public Outcome? Unmap515IfDiverging(JsonElement step)
    {
        if (!UnmapArgsValid(step) || (Flags(step) & VfioUapi.VFIO_DMA_UNMAP_FLAG_GET_DIRTY_BITMAP) != 0)
        {
            return null;
        }

        Outcome k61 = Unmap(_k61, step, ownerCheck: false, apply: false);
        Outcome k515 = Unmap(_k515, step, ownerCheck: true, apply: false);
        return k61 == Recorded(step, unmap: true) && k515 != k61 ? k515 : null;
    }

    /// <summary>
    /// What 5.15 answers to this MAP_DMA (plain: -EEXIST over a mapping only 5.15 still holds; VADDR: -ENOENT/-EINVAL/0
    /// from the 5.15 view) when that differs from the recorded answer and the recorded answer is what 6.1 gives in the
    /// 6.1 view; null otherwise.
    /// </summary>
    public Outcome? Map515IfDiverging(JsonElement step)
    {
        if (!MapArgsValid(step))
        {
            return null;
        }

        Outcome recorded = Recorded(step, unmap: false);
        if ((Flags(step) & VfioUapi.VFIO_DMA_MAP_FLAG_VADDR) == 0)
        {
            // Only the overlap check is modelled: 5.15 -EEXIST where 6.1 had the range free.
            (ulong iova, ulong size) = IovaSize(step);
            bool in515 = _k515.Exists(d => Overlaps(d, iova, iova + size - 1));
            bool in61 = _k61.Exists(d => Overlaps(d, iova, iova + size - 1));
            return in515 && !in61 && recorded.Errno != "EEXIST" ? new Outcome(-1, "EEXIST") : null;
        }

        Outcome k61 = MapVaddr(_k61, step);
        Outcome k515 = MapVaddr(_k515, step);

        // 6.1 may also refuse the owner change (-ENOMEM over the new owner's RLIMIT_MEMLOCK): then it left its view alone.
        bool k61Explains = k61 == recorded || (k61.Ret == 0 && recorded.Errno == "ENOMEM");
        return k61Explains && k515 != recorded ? k515 : null;
    }

    /// <summary>5.15 locked_vm of <paramref name="proc"/> minus the recorded 6.1 value, in KiB: the charges of the mappings each kernel holds for it.</summary>
    public long LockedKbDelta(string proc)
    {
        string owner = Owner(proc);
        return _exited.Contains(owner) ? 0 : _k515.Where(d => d.Owner == owner).Sum(d => d.Kb) - _k61.Where(d => d.Owner == owner).Sum(d => d.Kb);
    }

    /// <summary>How many more mappings (DMA slots in use) the container has in 5.15 than in the recorded 6.1 kernel.</summary>
    public int DmaCountDelta => _k515.Count - _k61.Count;

    /// <summary>Updates both views after a step: <paramref name="libraryRet"/> is what the library (5.15) answered, already checked.</summary>
    public void After(JsonElement step, int libraryRet)
    {
        string op = step.GetProperty("op").GetString()!;
        bool recordedOk = step.GetProperty("ret").GetInt32() == 0;
        switch (op)
        {
            case "SET_IOMMU" when libraryRet == 0:
                _v1 = step.GetProperty("args").GetProperty("type").GetInt32() == VfioUapi.VFIO_TYPE1_IOMMU;
                break;
            case "MAP_DMA" when (Flags(step) & VfioUapi.VFIO_DMA_MAP_FLAG_VADDR) == 0:
                {
                    (ulong iova, ulong size) = IovaSize(step);
                    var d = new Dma(_nextId++, iova, size, Owner(Proc(step)), Charged(step.GetProperty("args"), size));
                    if (recordedOk)
                    {
                        _k61.Add(d.Clone());
                    }

                    if (libraryRet == 0)
                    {
                        _k515.Add(d);
                    }

                    break;
                }

            case "MAP_DMA":
                if (recordedOk)
                {
                    ApplyMapVaddr(_k61, step, changeOwner: true);
                }

                if (libraryRet == 0)
                {
                    ApplyMapVaddr(_k515, step, changeOwner: false);
                }

                break;
            case "UNMAP_DMA":
                if (recordedOk)
                {
                    _ = Unmap(_k61, step, ownerCheck: false, apply: true);
                }

                if (libraryRet == 0)
                {
                    _ = Unmap(_k515, step, ownerCheck: true, apply: true);
                }

                break;
            case "FORK":
                Forked = true;
                _children++;
                break;
            case "EXIT":
                _exited.Add(Owner("child")); // EXIT ends the child whether or not the step itself carries "proc"
                break;
        }
    }

    /// <summary>The last group left: both kernels drop every mapping.</summary>
    public void BackendReleased()
    {
        _k515.Clear();
        _k61.Clear();
    }

    /// <summary>
    /// One kernel's <c>vfio_dma_do_unmap</c> walk (after the argument and v2 bisection checks): in IOVA order, v1 stops
    /// at a mapping starting below the request; 5.15 stops at a mapping of another or exited process; VADDR marks, and
    /// fails with -EINVAL (un-marking what this call marked) at an already-invalid mapping; plain UNMAP removes.
    /// </summary>
    private Outcome Unmap(List<Dma> kernel, JsonElement step, bool ownerCheck, bool apply)
    {
        (ulong first, ulong last, bool all) = Range(step);
        if (!all && !_v1 && kernel.Exists(d => (d.Iova < first && d.Last >= first) || (d.Iova <= last && d.Last > last)))
        {
            return new Outcome(-1, "EINVAL"); // v2: the request bisects a mapping
        }

        bool vaddr = (Flags(step) & VfioUapi.VFIO_DMA_UNMAP_FLAG_VADDR) != 0;
        string caller = Owner(Proc(step));
        ulong unmapped = 0;
        var hit = new List<Dma>();
        foreach (Dma d in kernel.Where(d => Overlaps(d, first, last)).OrderBy(d => d.Iova))
        {
            if ((_v1 && d.Iova < first) || (ownerCheck && (d.Owner != caller || _exited.Contains(d.Owner))))
            {
                break;
            }

            if (vaddr && d.Invalid)
            {
                return new Outcome(-1, "EINVAL"); // the marks of this call are rolled back: nothing changes
            }

            hit.Add(d);
            unmapped += d.Size;
        }

        if (apply)
        {
            foreach (Dma d in hit)
            {
                if (vaddr)
                {
                    d.Invalid = true;
                }
                else
                {
                    _ = kernel.Remove(d);
                }
            }
        }

        return new Outcome(0, null, unmapped);
    }

    /// <summary><c>vfio_dma_do_map</c> with VADDR after the argument checks: -ENOENT with no mapping in range, -EINVAL unless it is one invalid mapping of exactly that range.</summary>
    private static Outcome MapVaddr(List<Dma> kernel, JsonElement step)
    {
        (ulong iova, ulong size) = IovaSize(step);
        Dma? d = kernel.Find(d => Overlaps(d, iova, iova + size - 1));
        return d is null ? new Outcome(-1, "ENOENT")
            : !d.Invalid || d.Iova != iova || d.Size != size ? new Outcome(-1, "EINVAL")
            : new Outcome(0, null);
    }

    private void ApplyMapVaddr(List<Dma> kernel, JsonElement step, bool changeOwner)
    {
        (ulong iova, ulong size) = IovaSize(step);
        if (kernel.Find(d => d.Iova == iova && d.Size == size && d.Invalid) is Dma d)
        {
            d.Invalid = false;
            if (changeOwner)
            {
                d.Owner = Owner(Proc(step)); // 6.1 vfio_change_dma_owner: the charge moves to the caller's mm
            }
        }
    }

    private static Outcome Recorded(JsonElement step, bool unmap)
    {
        int ret = step.GetProperty("ret").GetInt32();
        string? errno = step.GetProperty("errno").ValueKind == JsonValueKind.String ? step.GetProperty("errno").GetString() : null;
        ulong size = unmap && ret == 0 && step.TryGetProperty("out", out JsonElement o) && o.TryGetProperty("size", out JsonElement s) ? TraceReplayer.Hex(s) : 0;
        return new Outcome(ret, errno, size);
    }

    /// <summary>The argument checks both kernels make before looking at mappings (flags, argsz, alignment, size, wrap).</summary>
    private static bool UnmapArgsValid(JsonElement step)
    {
        JsonElement a = step.GetProperty("args");
        uint flags = Flags(step);
        const uint known = VfioUapi.VFIO_DMA_UNMAP_FLAG_GET_DIRTY_BITMAP | VfioUapi.VFIO_DMA_UNMAP_FLAG_ALL | VfioUapi.VFIO_DMA_UNMAP_FLAG_VADDR;
        if (a.GetProperty("argsz").GetInt64() < 24 || (flags & ~known) != 0)
        {
            return false;
        }

        (ulong iova, ulong size) = IovaSize(step);
        return (flags & VfioUapi.VFIO_DMA_UNMAP_FLAG_ALL) != 0
            ? iova == 0 && size == 0
            : (iova & PageMask) == 0 && size != 0 && (size & PageMask) == 0 && iova + size - 1 >= iova;
    }

    private static bool MapArgsValid(JsonElement step)
    {
        JsonElement a = step.GetProperty("args");
        uint flags = Flags(step);
        const uint known = VfioUapi.VFIO_DMA_MAP_FLAG_READ | VfioUapi.VFIO_DMA_MAP_FLAG_WRITE | VfioUapi.VFIO_DMA_MAP_FLAG_VADDR;
        bool vaddrFlag = (flags & VfioUapi.VFIO_DMA_MAP_FLAG_VADDR) != 0, prot = (flags & ~VfioUapi.VFIO_DMA_MAP_FLAG_VADDR) != 0;
        if (a.GetProperty("argsz").GetInt64() < 32 || (flags & ~known) != 0 || vaddrFlag == prot)
        {
            return false;
        }

        (ulong iova, ulong size) = IovaSize(step);
        JsonElement v = a.GetProperty("vaddr");
        ulong vaddr = v.TryGetProperty("abs", out JsonElement abs) ? TraceReplayer.Hex(abs)
            : v.TryGetProperty("off", out JsonElement off) ? TraceReplayer.Hex(off) : 0; // buffers are page-aligned: only the offset's alignment counts
        ulong vaddrLast = v.TryGetProperty("abs", out _) ? vaddr + size - 1 : vaddr; // a buffer address does not wrap
        return size != 0 && ((size | iova | vaddr) & PageMask) == 0 && iova + size - 1 >= iova && vaddrLast >= vaddr;
    }

    private long Charged(JsonElement args, ulong size)
    {
        // A READ-only pin of never-written anonymous memory pins the zero page, which is not charged (§4.6).
        bool write = (Flags(args) & VfioUapi.VFIO_DMA_MAP_FLAG_WRITE) != 0;
        bool touched = args.GetProperty("vaddr").TryGetProperty("buf", out JsonElement b)
            && _buffers.TryGetValue(b.GetString()!, out JsonElement buf)
            && buf.TryGetProperty("fill", out JsonElement fill) && fill.GetString() == "touched";
        return write || touched ? (long)(size / 1024) : 0;
    }

    /// <summary>A process's identity: the parent, or the n-th forked child (a second FORK makes another mm).</summary>
    private string Owner(string proc) => proc == "child" ? $"child#{_children}" : proc;

    private static (ulong Iova, ulong Size) IovaSize(JsonElement step)
    {
        JsonElement a = step.GetProperty("args");
        return (TraceReplayer.Hex(a.GetProperty("iova")), TraceReplayer.Hex(a.GetProperty("size")));
    }

    private static (ulong First, ulong Last, bool All) Range(JsonElement step)
    {
        if ((Flags(step) & VfioUapi.VFIO_DMA_UNMAP_FLAG_ALL) != 0)
        {
            return (0, ulong.MaxValue, true);
        }

        (ulong iova, ulong size) = IovaSize(step);
        return (iova, iova + size - 1, false);
    }

    private static bool Overlaps(Dma d, ulong first, ulong last) => d.Iova <= last && d.Last >= first;

    private static string Proc(JsonElement s) => s.TryGetProperty("proc", out JsonElement p) ? p.GetString()! : "parent";

    private static uint Flags(JsonElement stepOrArgs)
    {
        JsonElement a = stepOrArgs.TryGetProperty("args", out JsonElement args) ? args : stepOrArgs;
        return a.TryGetProperty("flags", out JsonElement f) ? (uint)TraceReplayer.Hex(f) : 0;
    }
}
