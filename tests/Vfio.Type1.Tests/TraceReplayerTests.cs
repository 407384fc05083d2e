using System.Text.Json;
using Vfio.Type1.Tests.Infrastructure;
using Xunit.Sdk;

namespace Vfio.Type1.Tests;

/// <summary>
/// Tests of the kernel-trace replay itself, on small trace files of the recorded schema written to a temp
/// directory and replayed through the same entry as <c>KERNEL_TRACE=path</c>.
/// </summary>
public sealed class TraceReplayerTests : IDisposable
{
    // GET_INFO(argsz 512) as the recorded 6.1 kernel answers it on this platform (the used bytes), with DMA_AVAIL = {0}.
    private const string InfoRaw = "0002000003000000001020400000000018000000a5a5a5a502000100380000000000000000000000001000000000000000000010000000000300010044000000{0}010001000000000002000000000000000000000000000000ffffdffe000000000000f0fe00000000ffffffff7f000000";

    private const string Prelude = """
        {"op": "OPEN", "args": {"path": "/dev/vfio/vfio"}, "ret": 0, "errno": null, "out": {"handle": "C"}},
        {"op": "OPEN", "args": {"path": "/dev/vfio/$GROUP"}, "ret": 0, "errno": null, "out": {"handle": "G"}},
        {"op": "GROUP_SET_CONTAINER", "fd": "G", "args": {"container": "C"}, "ret": 0, "errno": null, "out": {}},
        {"op": "SET_IOMMU", "fd": "C", "args": {"type": 3}, "ret": 0, "errno": null, "out": {}},
        {"op": "MAP_DMA", "fd": "C", "args": {"argsz": 32, "flags": "0x3", "vaddr": {"buf": "B0", "off": "0x0"}, "iova": "0x100000", "size": "0x4000"}, "ret": 0, "errno": null, "out": {}},
        """;

    private const string Epilogue = """
        {"op": "GROUP_UNSET_CONTAINER", "fd": "G", "args": {}, "ret": 0, "errno": null, "out": {}},
        {"op": "CLOSE", "fd": "G", "args": {}, "ret": 0, "errno": null, "out": {}},
        {"op": "CLOSE", "fd": "C", "args": {}, "ret": 0, "errno": null, "out": {}},
        {"op": "READ_VMLCK", "args": {}, "ret": 0, "errno": null, "out": {"locked_vm_kb": 0}}
        """;

    private const string B0 = """
        {"buffers": [{"name": "B0", "size": "0x4000", "prot": "rw", "share": "private", "fill": "touched", "seed": 16, "holes": [], "created_before_step": 4}]}
        """;

    private readonly string _dir = Directory.CreateTempSubdirectory("kernel-trace-").FullName;

    public void Dispose() => Directory.Delete(_dir, recursive: true);

    private static string Info(int avail)
    {
        string used = InfoRaw.Replace("{0}", $"{avail & 0xff:x2}{(avail >> 8) & 0xff:x2}0000", StringComparison.Ordinal);
        return used + string.Concat(Enumerable.Repeat("a5", 256 - (used.Length / 2))); // the rest keeps the 0xa5 prefill
    }

    private static string GetInfo(string proc, int avail) =>
        $$$"""{"op": "GET_INFO", "fd": "C", {{{proc}}}"args": {"argsz": 512}, "ret": 0, "errno": null, "out": {"argsz": 512, "flags": "0x3", "iova_pgsizes": "0x40201000", "cap_offset": "0x18", "caps": [], "raw": "{{{Info(avail)}}}"}}""";

    /// <summary>Cases the recorder could have written (the values are what 6.1 answers).</summary>
    private static string[] Cases(int lockedKb = 16) =>
    [
        // A free-text note in an output, and a case that ends with B0 still mapped and charged.
        $$$"""
        {"name": "synthetic.note_and_locked_at_end", "desc": "MAP and READ_VMLCK, no teardown", "complete": true, "setup": {{{B0}}}, "steps": [
        {{{Prelude}}}
        {"op": "READ_VMLCK", "args": {}, "ret": 0, "errno": null, "out": {"locked_vm_kb": {{{lockedKb}}}, "note": "B0 stays pinned: the case ends with memory locked"}}
        ]}
        """,

        // A fork()ed child UNMAPs the parent's mapping (6.1: removed, DMA_AVAIL back to 65535; 5.15: refused).
        $$$"""
        {"name": "synthetic.child_unmap_then_get_info", "desc": "fork, child UNMAP, GET_INFO in child and parent", "complete": true, "setup": {{{B0}}}, "steps": [
        {{{Prelude}}}
        {{{GetInfo("", 65534)}}},
        {"op": "FORK", "args": {}, "ret": 0, "errno": null, "out": {}},
        {"op": "UNMAP_DMA", "fd": "C", "proc": "child", "args": {"argsz": 24, "flags": "0x0", "iova": "0x100000", "size": "0x4000"}, "ret": 0, "errno": null, "out": {"argsz": 24, "flags": "0x0", "iova": "0x100000", "size": "0x4000"}},
        {{{GetInfo("\"proc\": \"child\", ", 65535)}}},
        {"op": "EXIT", "proc": "child", "args": {}, "ret": 0, "errno": null, "out": {}},
        {{{GetInfo("", 65535)}}},
        {{{Epilogue}}}
        ]}
        """,

        // GET_BITMAP with a 256 MiB declared size over an 8-byte buffer: bytes_shown is in the output.
        $$$"""
        {"name": "synthetic.dirty_bytes_shown", "desc": "declared bitmap size larger than the buffer", "complete": true, "setup": {{{B0}}}, "steps": [
        {{{Prelude}}}
        {"op": "DIRTY_PAGES", "fd": "C", "args": {"argsz": 8, "flags": "0x1"}, "ret": 0, "errno": null, "out": {}},
        {"op": "DIRTY_PAGES", "fd": "C", "args": {"argsz": 48, "flags": "0x4", "iova": "0x100000", "size": "0x4000", "bitmap": {"pgsize": "0x1000", "size": "0x10000000", "data": "an 8-byte user buffer (+64 guard bytes)", "prefill": "0x0"}}, "ret": 0, "errno": null, "out": {"bytes_shown": 8, "bitmap_hex": "0f00000000000000", "bitmap_set_bits": [[0, 4]], "guard_untouched": true, "note": "declared size > buffer"}},
        {{{Epilogue}}}
        ]}
        """,
    ];

    private string Write(string[] cases)
    {
        string path = Path.Combine(_dir, "trace.json");
        File.WriteAllText(path, $$$"""{"schema": "vfio-type1-kernel-trace/1", "env": {}, "finished": true, "case_count": {{{cases.Length}}}, "cases": [{{{string.Join(",\n", cases)}}}]}""");
        return path;
    }

    private static KernelTrace ViaKernelTrace(string path) =>
        KernelTrace.FromEnvironment(n => n == KernelTrace.PathVariable ? path : null, AppContext.BaseDirectory);

    [Fact]
    public void A_trace_named_by_KERNEL_TRACE_replays_every_case()
    {
        KernelTrace trace = ViaKernelTrace(Write(Cases()));

        string[] names = [.. trace.CaseNames().Select(c => (string)c[0])];
        Assert.Equal(["synthetic.note_and_locked_at_end", "synthetic.child_unmap_then_get_info", "synthetic.dirty_bytes_shown"], names);
        foreach (string name in names)
        {
            Assert.Null(KernelTraceReplayTests.ReplayFrom(trace, name));
        }
    }

    [Fact]
    public void A_note_is_not_a_result_but_a_wrong_recorded_result_still_fails()
    {
        KernelTrace trace = ViaKernelTrace(Write(Cases(lockedKb: 20)));

        XunitException e = Assert.ThrowsAny<XunitException>(() => KernelTraceReplayTests.ReplayFrom(trace, "synthetic.note_and_locked_at_end"));
        Assert.Contains("locked_vm_kb kernel 20 library 16", e.Message, StringComparison.Ordinal);
    }

    [Fact]
    public void The_end_of_case_locked_vm_check_applies_only_where_the_steps_release_everything()
    {
        using JsonDocument doc = JsonDocument.Parse(File.ReadAllText(Write(Cases())));
        bool[] released = [.. doc.RootElement.GetProperty("cases").EnumerateArray().Select(c => KernelTraceReplayTests.StepsReleaseLockedMemory(c.GetProperty("steps").EnumerateArray()))];
        Assert.Equal([false, true, true], released);
    }

    [Fact]
    public void A_missing_trace_fails_under_CI_or_with_KERNEL_TRACE_and_is_skipped_otherwise()
    {
        Assert.Null(KernelTrace.FindAbove(_dir));
        string missing = Path.Combine(_dir, "no-such-trace.json");

        KernelTrace ci = KernelTrace.FromEnvironment(n => n == "CI" ? "true" : null, _dir);
        Assert.Equal([KernelTrace.NotFoundCase], ci.CaseNames().Select(c => (string)c[0]));
        Assert.ThrowsAny<XunitException>(() => KernelTraceReplayTests.ReplayFrom(ci, KernelTrace.NotFoundCase));

        Assert.ThrowsAny<XunitException>(() => KernelTraceReplayTests.ReplayFrom(ViaKernelTrace(missing), KernelTrace.NotFoundCase));

        KernelTrace local = KernelTrace.FromEnvironment(_ => null, _dir);
        Assert.StartsWith("SKIPPED", KernelTraceReplayTests.ReplayFrom(local, KernelTrace.NotFoundCase), StringComparison.Ordinal);
    }
}
