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
