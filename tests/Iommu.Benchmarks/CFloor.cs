using System.Diagnostics;
using System.Runtime.InteropServices;

namespace Iommu.Benchmarks;

/// <summary>
/// Builds a C floor with gcc as a shared library, so BenchmarkDotNet times it as rows of the same
/// classes, with the same setup, as the C# code it bounds: a program of shared/bench compiled with the
/// entry points of a shim beside this file (ref_pagetable_shim.c includes ref_pagetable.c,
/// ref_dma_shim.c includes ref_dma.c).
/// </summary>
internal static class CFloor
{
    /// <summary>The loaded floor: its exports, and the temporary file deleted on dispose.</summary>
    public sealed class Library(nint handle, string path) : IDisposable
    {
        /// <summary>An exported function's address, to cast to its function-pointer type.</summary>
        public nint Export(string name) => NativeLibrary.GetExport(handle, name);

        public void Dispose()
        {
            NativeLibrary.Free(handle);
            File.Delete(path);
        }
    }

    /// <summary>The page-table floor: ref_pagetable.c with its shim.</summary>
    public const string PageTableShim = "ref_pagetable_shim.c";

    /// <summary>The translated-DMA floor: ref_dma.c with its shim.</summary>
    public const string DmaShim = "ref_dma_shim.c";

    /// <summary>The SVA floors (issue 21): ref_sva_shim.c on its own, no program of shared/bench.</summary>
    public const string SvaShim = "ref_sva_shim.c";

    /// <summary>Builds and loads the floor of <paramref name="shim"/>; throws when gcc or a source is missing.</summary>
    public static Library Load(string shim)
    {
        string file = Find(shim) ?? throw new InvalidOperationException($"C floor: {shim} not found beside the benchmarks or in the source tree.");
        string dir = FindSharedBench() ?? throw new InvalidOperationException("C floor: shared/bench/ref_pagetable.c not found beside the repository.");
        string library = System.IO.Path.Combine(System.IO.Path.GetTempPath(), $"iommu-{System.IO.Path.GetFileNameWithoutExtension(shim)}-{Environment.ProcessId}.so");
        var psi = new ProcessStartInfo("gcc", $"-O2 -march=native -shared -fPIC -I \"{dir}\" -o \"{library}\" \"{file}\"") { RedirectStandardOutput = true, RedirectStandardError = true };
        using Process gcc = Process.Start(psi) ?? throw new InvalidOperationException("C floor: gcc did not start.");
        string output = gcc.StandardOutput.ReadToEnd() + gcc.StandardError.ReadToEnd();
        gcc.WaitForExit();
        if (gcc.ExitCode != 0)
        {
            throw new InvalidOperationException($"C floor: gcc failed: {output}");
        }

        return new Library(NativeLibrary.Load(library), library);
    }

    /// <summary>
    /// Builds <paramref name="program"/> of shared/bench as the standalone program it is (same flags as
    /// the floor) and runs it with <paramref name="arguments"/>: its output line, the reference the shim
    /// rows must match.
    /// </summary>
    public static string RunProgram(string program, string arguments)
    {
        string dir = FindSharedBench() ?? throw new InvalidOperationException("C floor: shared/bench/ref_pagetable.c not found beside the repository.");
        string exe = System.IO.Path.Combine(System.IO.Path.GetTempPath(), $"iommu-{System.IO.Path.GetFileNameWithoutExtension(program)}-{Environment.ProcessId}");
        try
        {
            Run("gcc", $"-O2 -march=native -o \"{exe}\" \"{System.IO.Path.Combine(dir, program)}\"");
            return Run(exe, arguments);
        }
        finally
        {
            File.Delete(exe);
        }
    }

    /// <summary>The number after <c>name=</c> in a program's output line ("ref-c n=65536 map_ns=4.10 ...").</summary>
    public static double Field(string line, string name) =>
        double.Parse(line.Split(' ').Single(f => f.StartsWith(name + "=", StringComparison.Ordinal))[(name.Length + 1)..], System.Globalization.CultureInfo.InvariantCulture);

    private static string Run(string file, string arguments)
    {
        var psi = new ProcessStartInfo(file, arguments) { RedirectStandardOutput = true, RedirectStandardError = true };
        using Process p = Process.Start(psi) ?? throw new InvalidOperationException($"C floor: {file} did not start.");
        string output = p.StandardOutput.ReadToEnd() + p.StandardError.ReadToEnd();
        p.WaitForExit();
        return p.ExitCode == 0 ? output.Trim() : throw new InvalidOperationException($"C floor: {file} {arguments} failed ({p.ExitCode}): {output}");
    }

    private static string? Find(string name)
    {
        for (DirectoryInfo? d = new(AppContext.BaseDirectory); d is not null; d = d.Parent)
        {
            foreach (string candidate in new[] { System.IO.Path.Combine(d.FullName, name), System.IO.Path.Combine(d.FullName, "tests", "Iommu.Benchmarks", name) })
            {
                if (File.Exists(candidate))
                {
                    return candidate;
                }
            }
        }

        return null;
    }

    private static string? FindSharedBench()
    {
        for (DirectoryInfo? d = new(AppContext.BaseDirectory); d is not null; d = d.Parent)
        {
            foreach (string candidate in new[] { System.IO.Path.Combine(d.FullName, "shared", "bench"), System.IO.Path.Combine(d.FullName, "..", "shared", "bench") })
            {
                if (File.Exists(System.IO.Path.Combine(candidate, "ref_pagetable.c")))
                {
                    return System.IO.Path.GetFullPath(candidate);
                }
            }
        }

        return null;
    }
}
