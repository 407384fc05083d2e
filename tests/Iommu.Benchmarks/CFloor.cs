using System.Diagnostics;
using System.Globalization;
using System.Text.RegularExpressions;

namespace Iommu.Benchmarks;

/// <summary>Builds and runs shared/bench/ref_pagetable.c (the C floor) in the same run as the benchmarks.</summary>
internal static partial class CFloor
{
    public sealed record Result(int N, double MapNs, double LookupNs, double UnmapNs);

    public sealed record BatchResult(double HotMapNs, double HotUnmapNs, double ColdMapNs, double ColdUnmapNs);

    public static string? FindSource()
    {
        for (DirectoryInfo? d = new(AppContext.BaseDirectory); d is not null; d = d.Parent)
        {
            foreach (string candidate in new[] { Path.Combine(d.FullName, "shared", "bench", "ref_pagetable.c"), Path.Combine(d.FullName, "..", "shared", "bench", "ref_pagetable.c") })
            {
                if (File.Exists(candidate))
                {
                    return Path.GetFullPath(candidate);
                }
            }
        }

        return null;
    }

    public static Result? Run(int n)
    {
        string? source = FindSource();
        if (source is null)
        {
            Console.Error.WriteLine("C floor: shared/bench/ref_pagetable.c not found beside the repository.");
            return null;
        }

        string? output = BuildAndRun(source, "iommu-ref_pagetable", n.ToString(CultureInfo.InvariantCulture));
        Match? m = output is null ? null : Line().Match(output);
        return m is { Success: true }
            ? new Result(n, Number(m, 1), Number(m, 2), Number(m, 3))
            : null;
    }

    /// <summary>Builds and runs ref_batch.c (copied beside the benchmark assembly): the 256×4K floor.</summary>
    public static BatchResult? RunBatch()
    {
        string source = Path.Combine(AppContext.BaseDirectory, "ref_batch.c");
        string? output = BuildAndRun(source, "iommu-ref_batch", "");
        Match? m = output is null ? null : BatchLine().Match(output);
        return m is { Success: true }
            ? new BatchResult(Number(m, 1), Number(m, 2), Number(m, 3), Number(m, 4))
            : null;
    }

    /// <summary>The faster of two floor runs, figure by figure.</summary>
    public static Result? Min(Result? a, Result? b) =>
        a is null ? b : b is null ? a : new Result(a.N, Math.Min(a.MapNs, b.MapNs), Math.Min(a.LookupNs, b.LookupNs), Math.Min(a.UnmapNs, b.UnmapNs));

    /// <summary>The faster of two batch floor runs, figure by figure.</summary>
    public static BatchResult? Min(BatchResult? a, BatchResult? b) =>
        a is null ? b : b is null ? a : new BatchResult(Math.Min(a.HotMapNs, b.HotMapNs), Math.Min(a.HotUnmapNs, b.HotUnmapNs), Math.Min(a.ColdMapNs, b.ColdMapNs), Math.Min(a.ColdUnmapNs, b.ColdUnmapNs));

    private static double Number(Match m, int group) => double.Parse(m.Groups[group].Value, CultureInfo.InvariantCulture);

    private static string? BuildAndRun(string source, string name, string args)
    {
        string exe = Path.Combine(Path.GetTempPath(), name);
        if (!Exec("gcc", $"-O2 -march=native -o \"{exe}\" \"{source}\"", out string err))
        {
            Console.Error.WriteLine($"C floor: gcc failed: {err}");
            return null;
        }

        if (!Exec(exe, args, out string output))
        {
            Console.Error.WriteLine($"C floor: {name} failed: {output}");
            return null;
        }

        return output;
    }

    private static bool Exec(string file, string args, out string output)
    {
        var psi = new ProcessStartInfo(file, args) { RedirectStandardOutput = true, RedirectStandardError = true };
        using Process p = Process.Start(psi)!;
        output = p.StandardOutput.ReadToEnd() + p.StandardError.ReadToEnd();
        p.WaitForExit();
        return p.ExitCode == 0;
    }

    [GeneratedRegex(@"map_ns=([0-9.]+)\s+lookup_ns=([0-9.]+)\s+unmap_ns=([0-9.]+)")]
    private static partial Regex Line();

    [GeneratedRegex(@"hot_map_ns=([0-9.]+)\s+hot_unmap_ns=([0-9.]+)\s+cold_map_ns=([0-9.]+)\s+cold_unmap_ns=([0-9.]+)")]
    private static partial Regex BatchLine();
}
