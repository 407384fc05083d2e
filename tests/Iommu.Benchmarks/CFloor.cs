using System.Diagnostics;
using System.Runtime.InteropServices;

namespace Iommu.Benchmarks;

/// <summary>
/// Builds the C floor with gcc as a shared library, so BenchmarkDotNet times it as rows of the same
/// classes, with the same iteration setup, as the C# code it bounds: ref_pagetable.c of shared/bench
/// with the entry points of ref_pagetable_shim.c beside this file.
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

    /// <summary>Builds and loads the floor; throws when gcc or a source is missing.</summary>
    public static Library Load()
    {
        string file = Find("ref_pagetable_shim.c") ?? throw new InvalidOperationException("C floor: ref_pagetable_shim.c not found beside the benchmarks or in the source tree.");
        string dir = FindSharedBench() ?? throw new InvalidOperationException("C floor: shared/bench/ref_pagetable.c not found beside the repository.");
        string library = System.IO.Path.Combine(System.IO.Path.GetTempPath(), $"iommu-ref_pagetable-{Environment.ProcessId}.so");
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
    /// Builds shared/bench/ref_pagetable.c as the standalone program it is (same flags as the floor)
    /// and runs it for <paramref name="pages"/> pages: its own median ns/op for map, lookup and unmap,
    /// the reference the shim rows must match.
    /// </summary>
    public static (double Map, double Lookup, double Unmap) RunProgram(int pages)
    {
        string dir = FindSharedBench() ?? throw new InvalidOperationException("C floor: shared/bench/ref_pagetable.c not found beside the repository.");
        string exe = System.IO.Path.Combine(System.IO.Path.GetTempPath(), $"iommu-ref_pagetable-{Environment.ProcessId}");
        try
        {
            Run("gcc", $"-O2 -march=native -o \"{exe}\" \"{System.IO.Path.Combine(dir, "ref_pagetable.c")}\"");
            string line = Run(exe, pages.ToString(System.Globalization.CultureInfo.InvariantCulture));

            // "ref-c n=65536 map_ns=4.10 lookup_ns=4.15 unmap_ns=3.35"
            double Field(string name) => double.Parse(line.Split(' ').Single(f => f.StartsWith(name + "=", StringComparison.Ordinal))[(name.Length + 1)..], System.Globalization.CultureInfo.InvariantCulture);
            return (Field("map_ns"), Field("lookup_ns"), Field("unmap_ns"));
        }
        finally
        {
            File.Delete(exe);
        }
    }

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
