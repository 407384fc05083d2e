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

        string exe = Path.Combine(Path.GetTempPath(), "iommu-ref_pagetable");
        if (!Exec("gcc", $"-O2 -march=native -o \"{exe}\" \"{source}\"", out string err))
        {
            Console.Error.WriteLine($"C floor: gcc failed: {err}");
            return null;
        }

        if (!Exec(exe, n.ToString(CultureInfo.InvariantCulture), out string output))
        {
            Console.Error.WriteLine($"C floor: run failed: {output}");
            return null;
        }

        Match m = Line().Match(output);
        return m.Success
            ? new Result(n, double.Parse(m.Groups[1].Value, CultureInfo.InvariantCulture), double.Parse(m.Groups[2].Value, CultureInfo.InvariantCulture), double.Parse(m.Groups[3].Value, CultureInfo.InvariantCulture))
            : null;
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
