using System.Diagnostics;
using System.Globalization;
using System.Text.RegularExpressions;

namespace Iommu.Benchmarks;

/// <summary>Builds and runs shared/bench/ref_pagetable.c (the C floor) in the same run as the benchmarks.</summary>
internal static partial class CFloor
{
    public sealed record Result(int N, double MapNs, double LookupNs, double UnmapNs);

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

    /// <summary>
    /// Builds ref_batch.c (copied beside the benchmark assembly, or found in the source tree) as a
    /// shared library for <see cref="CFloorBatches"/>; returns its path, or null without gcc.
    /// </summary>
    public static string? BuildBatchLibrary()
    {
        string? source = null;
        for (DirectoryInfo? d = new(AppContext.BaseDirectory); d is not null && source is null; d = d.Parent)
        {
            foreach (string candidate in new[] { Path.Combine(d.FullName, "ref_batch.c"), Path.Combine(d.FullName, "tests", "Iommu.Benchmarks", "ref_batch.c") })
            {
                if (File.Exists(candidate))
                {
                    source = candidate;
                    break;
                }
            }
        }

        if (source is null)
        {
            Console.Error.WriteLine("C floor: ref_batch.c not found.");
            return null;
        }

        string library = Path.Combine(Path.GetTempPath(), $"iommu-ref_batch-{Environment.ProcessId}.so");
        if (!Exec("gcc", $"-O2 -march=native -shared -fPIC -o \"{library}\" \"{source}\"", out string err))
        {
            Console.Error.WriteLine($"C floor: gcc failed: {err}");
            return null;
        }

        return library;
    }

    /// <summary>The faster of two floor runs, figure by figure.</summary>
    public static Result? Min(Result? a, Result? b) =>
        a is null ? b : b is null ? a : new Result(a.N, Math.Min(a.MapNs, b.MapNs), Math.Min(a.LookupNs, b.LookupNs), Math.Min(a.UnmapNs, b.UnmapNs));

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
}
