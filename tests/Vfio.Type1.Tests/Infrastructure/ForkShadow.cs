using System.Text.Json;
using Vfio.Type1.Uapi;

namespace Vfio.Type1.Tests.Infrastructure;

/// <summary>
/// For trace cases with a fork()ed child: the container's mappings as the recorded 6.1 kernel has them
/// (UNMAP removes every mapping in range, whoever made it) and as 5.15 has them (UNMAP stops silently at
/// the first mapping of another mm or of an exited process, spec §4.7), with the owner and the
/// locked_vm charge of each. The replay's deliberate-difference rules use it to tell where the two
/// kernels part and what 5.15 answers there.
/// </summary>
internal sealed class ForkShadow(IEnumerable<JsonElement> buffers)
{
    private readonly Dictionary<string, JsonElement> _buffers = buffers.ToDictionary(b => b.GetProperty("name").GetString()!);
    private readonly List<Dma> _k515 = [];
    private readonly List<Dma> _k61 = [];
    private readonly HashSet<string> _exited = [];

    /// <summary>True once the case has fork()ed: only then do the two kernels part.</summary>
    public bool Forked { get; private set; }

    /// <summary>One mapping: range, owning process ("parent"/"child"), KiB charged to the owner's locked_vm.</summary>
    private sealed record Dma(ulong Iova, ulong Size, string Proc, long Kb)
    {
        public ulong Last => Iova + Size - 1;
    }

    /// <summary>True if the UNMAP's range holds a mapping of another (or exited) process, or a mapping only one of the kernels still has.</summary>
    public bool UnmapDiverges(JsonElement step)
    {
        (ulong first, ulong last) = Range(step);
        string caller = Proc(step);
        return _k515.Exists(d => Overlaps(d, first, last) && (d.Proc != caller || _exited.Contains(d.Proc) || !_k61.Contains(d)))
            || _k61.Exists(d => Overlaps(d, first, last) && !_k515.Contains(d));
    }

    /// <summary>The bytes 5.15 removes for this UNMAP (v2 walk in IOVA order, stopping at a foreign or orphaned mapping).</summary>
    public ulong Unmap515(JsonElement step, bool apply)
    {
        (ulong first, ulong last) = Range(step);
        string caller = Proc(step);
        ulong unmapped = 0;
        foreach (Dma d in _k515.Where(d => Overlaps(d, first, last)).OrderBy(d => d.Iova).ToList())
        {
            if (d.Proc != caller || _exited.Contains(d.Proc))
            {
                break;
            }

            unmapped += d.Size;
            if (apply)
            {
                _k515.Remove(d);
            }
        }

        return unmapped;
    }

    /// <summary>5.15 locked_vm of <paramref name="proc"/> minus the recorded 6.1 value, in KiB.</summary>
    public long LockedKbDelta(string proc) =>
        _exited.Contains(proc) ? 0 : _k515.Where(d => d.Proc == proc && !_k61.Contains(d)).Sum(d => d.Kb) - _k61.Where(d => d.Proc == proc && !_k515.Contains(d)).Sum(d => d.Kb);

    /// <summary>How many more mappings (DMA slots in use) the container has in 5.15 than in the recorded 6.1 kernel.</summary>
    public int DmaCountDelta => _k515.Count(d => !_k61.Contains(d)) - _k61.Count(d => !_k515.Contains(d));

    /// <summary>True if [iova, iova+size) overlaps a mapping 5.15 still holds but the 6.1 kernel no longer has.</summary>
    public bool OverlapsOnlyIn515(ulong iova, ulong size) =>
        size != 0 && _k515.Exists(d => Overlaps(d, iova, iova + size - 1) && !_k61.Contains(d));

    /// <summary>Updates both views after a step: <paramref name="libraryRet"/> is what the library answered (already checked).</summary>
    public void After(JsonElement step, int libraryRet)
    {
        string op = step.GetProperty("op").GetString()!;
        bool recordedOk = step.GetProperty("ret").GetInt32() == 0;
        switch (op)
        {
            case "MAP_DMA" when (Flags(step) & VfioUapi.VFIO_DMA_MAP_FLAG_VADDR) == 0:
                {
                    JsonElement a = step.GetProperty("args");
                    ulong iova = TraceReplayer.Hex(a.GetProperty("iova")), size = TraceReplayer.Hex(a.GetProperty("size"));
                    var d = new Dma(iova, size, Proc(step), Charged(a, size));
                    if (recordedOk)
                    {
                        _k61.Add(d);
                    }

                    if (libraryRet == 0)
                    {
                        _k515.Add(d);
                    }

                    break;
                }

            case "UNMAP_DMA" when (Flags(step) & VfioUapi.VFIO_DMA_UNMAP_FLAG_VADDR) == 0:
                if (recordedOk)
                {
                    (ulong first, ulong last) = Range(step);
                    _k61.RemoveAll(d => Overlaps(d, first, last));
                }

                if (libraryRet == 0)
                {
                    _ = Unmap515(step, apply: true);
                }

                break;
            case "FORK":
                Forked = true;
                break;
            case "EXIT":
                _exited.Add("child"); // EXIT ends the child whether or not the step itself carries "proc"
                break;
        }
    }

    /// <summary>The last group left: both kernels drop every mapping.</summary>
    public void BackendReleased()
    {
        _k515.Clear();
        _k61.Clear();
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

    private static (ulong First, ulong Last) Range(JsonElement step)
    {
        JsonElement a = step.GetProperty("args");
        if ((Flags(step) & VfioUapi.VFIO_DMA_UNMAP_FLAG_ALL) != 0)
        {
            return (0, ulong.MaxValue);
        }

        ulong iova = TraceReplayer.Hex(a.GetProperty("iova")), size = TraceReplayer.Hex(a.GetProperty("size"));
        return (iova, iova + size - 1);
    }

    private static bool Overlaps(Dma d, ulong first, ulong last) => d.Iova <= last && d.Last >= first;

    private static string Proc(JsonElement s) => s.TryGetProperty("proc", out JsonElement p) ? p.GetString()! : "parent";

    private static uint Flags(JsonElement stepOrArgs)
    {
        JsonElement a = stepOrArgs.TryGetProperty("args", out JsonElement args) ? args : stepOrArgs;
        return a.TryGetProperty("flags", out JsonElement f) ? (uint)TraceReplayer.Hex(f) : 0;
    }
}
