using System.Globalization;
using System.Text.Json;
using Xunit.Abstractions;
using Vfio.Type1.Tests.Infrastructure;

namespace Vfio.Type1.Tests;

/// <summary>
/// Replays every case of the real-kernel trace (Linux 6.1.192 on QEMU VT-d) through the raw ioctl entries
/// and compares ret, errno and every output field. Steps matched by <see cref="Differences"/> are where
/// the library deliberately differs (5.15 is the modelled version; QEMU artefacts); there the test
/// checks the library's own behaviour instead.
/// </summary>
public sealed class KernelTraceReplayTests(ITestOutputHelper output)
{
    /// <summary>A deliberate difference: which steps, why, and what the library answers there instead.</summary>
    private sealed record Difference(string Reason, Func<string, JsonElement, Replay, bool> Applies, int? Ret, string? Errno, Dictionary<string, object>? Out = null);

    /// <summary>Step state the rules may look at.</summary>
    private sealed record Replay(bool HasBackend, bool InContainer);

    private static readonly Difference[] Differences =
    [
        new("5.15 claims UPDATE_VADDR without a backend; the 6.1.192 backport answers 0 until SET_IOMMU",
            (_, s, st) => Op(s) == "CHECK_EXTENSION" && Arg(s, "ext") == 10 && !st.HasBackend, 1, null),
        new("5.15: type1 claims UPDATE_VADDR, then open() rejects type 10 (-EINVAL); 6.1.192 does not claim it (-ENODEV)",
            (_, s, _) => Op(s) == "SET_IOMMU" && Arg(s, "type") == 10, -1, "EINVAL"),
        new("5.15 vfio_group_set_container rejects fd < 0 with -EINVAL; 6.1 has no such check (-EBADF)",
            (_, s, _) => Op(s) == "GROUP_SET_CONTAINER" && s.GetProperty("args").TryGetProperty("container_fd", out JsonElement fd) && fd.GetInt32() < 0, -1, "EINVAL"),
        new("5.15 GET_DEVICE_FD checks container/backend before the name (-EINVAL); 6.1 resolves the name first (-ENODEV)",
            (_, s, st) => Op(s) == "GROUP_GET_DEVICE_FD" && !st.HasBackend && s.GetProperty("errno").ValueKind == JsonValueKind.String, -1, "EINVAL"),
        new("Recorder artefact: for DIRTY_PAGES with flags other than GET_BITMAP alone the recorder shows its previous bitmap buffer; the kernel never reads the bitmap then, so ours stays at its prefill (ret/errno as recorded)",
            (_, s, _) => Op(s) == "DIRTY_PAGES" && s.GetProperty("args").TryGetProperty("bitmap", out _) && Arg(s, "flags") != 4, null, null,
            new Dictionary<string, object> { ["bitmap_hex"] = "0000000000000000", ["guard_untouched"] = true }),
        new("QEMU 7.2 VT-d artefact: edu read an unmapped / WRITE-only IOVA; the VT-d model faults, so the device buffer keeps the data of its last successful read",
            (c, s, _) => c == "device.dma_read_permissions" && Op(s) == "READ_BUF", 0, null,
            new Dictionary<string, object> { ["page_bytes"] = new List<string> { "20..10", "20..11", "20..12", "13" } }),
    ];

    public static IEnumerable<object[]> Cases() => KernelTrace.CaseNames();

    [Theory]
    [MemberData(nameof(Cases))]
    public void Case_matches_the_real_kernel(string name)
    {
        if (KernelTrace.Document is null)
        {
            // xunit 2 has no dynamic skip: report and return (the only "case" is the not-found marker).
            output.WriteLine($"SKIPPED: {KernelTrace.RelativePath} not found above {AppContext.BaseDirectory}");
            return;
        }

        JsonElement c = KernelTrace.Case(name)!.Value;
        using var replay = new TraceReplayer();
        var buffers = new List<JsonElement>();
        if (c.TryGetProperty("setup", out JsonElement setup) && setup.TryGetProperty("buffers", out JsonElement bufs))
        {
            buffers.AddRange(bufs.EnumerateArray());
        }

        bool hasBackend = false, inContainer = false;
        int idx = 0;
        foreach (JsonElement step in c.GetProperty("steps").EnumerateArray())
        {
            foreach (JsonElement b in buffers)
            {
                int before = b.TryGetProperty("created_before_step", out JsonElement cb) ? cb.GetInt32() : 0;
                if (before == idx)
                {
                    replay.CreateBuffer(b);
                }
            }

            var state = new Replay(hasBackend, inContainer);
            StepResult got = replay.Run(step);
            string where = $"{name} step {idx} {Op(step)} {step.GetProperty("args")}";
            Difference? diff = Array.Find(Differences, d => d.Applies(name, step, state));
            if (diff is not null)
            {
                int expRet = diff.Ret ?? step.GetProperty("ret").GetInt32();
                string? expErrno = diff.Ret is null ? (step.GetProperty("errno").ValueKind == JsonValueKind.String ? step.GetProperty("errno").GetString() : null) : diff.Errno;
                Assert.True(expRet == got.Ret && expErrno == got.Errno, $"{where}: deliberate difference ({diff.Reason}) expected {expRet}/{expErrno}, got {got.Ret}/{got.Errno}");
                foreach (KeyValuePair<string, object> kv in diff.Out ?? [])
                {
                    Assert.Equal(JsonSerializer.Serialize(kv.Value), JsonSerializer.Serialize(got.Out[kv.Key]));
                }
            }
            else
            {
                int ret = step.GetProperty("ret").GetInt32();
                string? errno = step.GetProperty("errno").ValueKind == JsonValueKind.String ? step.GetProperty("errno").GetString() : null;
                Assert.True(ret == got.Ret && errno == got.Errno, $"{where}: kernel {ret}/{errno}, library {got.Ret}/{got.Errno}");
                if (step.TryGetProperty("out", out JsonElement outEl))
                {
                    foreach (JsonProperty p in outEl.EnumerateObject())
                    {
                        if (p.Name is "caps" or "handle")
                        {
                            continue; // caps are compared through "raw"
                        }

                        Assert.True(got.Out.TryGetValue(p.Name, out object? mine), $"{where}: library produced no '{p.Name}'");
                        Assert.True(Same(p.Value, mine), $"{where}: {p.Name} kernel {p.Value} library {JsonSerializer.Serialize(mine)}");
                    }
                }
            }

            // Track the container state the rules depend on.
            string op = Op(step);
            if (got.Ret >= 0)
            {
                if (op == "GROUP_SET_CONTAINER")
                {
                    inContainer = true;
                }
                else if (op == "SET_IOMMU")
                {
                    hasBackend = true;
                }
                else if (op is "GROUP_UNSET_CONTAINER" || (op == "CLOSE" && step.GetProperty("fd").GetString()!.StartsWith('G')))
                {
                    inContainer = false;
                    hasBackend = false;
                }
            }

            idx++;
        }

        Assert.Equal(0, replay.Parent.LockedVm);
    }

    [Fact]
    public void Every_deliberate_difference_has_a_reason()
    {
        foreach (Difference d in Differences)
        {
            Assert.False(string.IsNullOrWhiteSpace(d.Reason));
        }
    }

    private static string Op(JsonElement s) => s.GetProperty("op").GetString()!;

    private static long Arg(JsonElement s, string name) =>
        s.TryGetProperty("args", out JsonElement a) && a.TryGetProperty(name, out JsonElement v)
            ? v.ValueKind == JsonValueKind.Number ? v.GetInt64() : (long)TraceReplayer.Hex(v)
            : long.MinValue;

    private static bool Same(JsonElement kernel, object mine)
    {
        switch (kernel.ValueKind)
        {
            case JsonValueKind.String when kernel.GetString()!.StartsWith("0x", StringComparison.Ordinal):
                ulong k = ulong.Parse(kernel.GetString()!.AsSpan(2), NumberStyles.HexNumber, CultureInfo.InvariantCulture);
                return mine switch
                {
                    ulong u => u == k,
                    long l => (ulong)l == k,
                    _ => false,
                };
            case JsonValueKind.Number:
                return mine switch
                {
                    long l => l == kernel.GetInt64(),
                    ulong u => u == kernel.GetUInt64(),
                    _ => false,
                };
            case JsonValueKind.True or JsonValueKind.False:
                return mine is bool b && b == kernel.GetBoolean();
            default:
                return JsonSerializer.Serialize(mine) == kernel.GetRawText().Replace(" ", "", StringComparison.Ordinal).Replace("\n", "", StringComparison.Ordinal);
        }
    }
}
