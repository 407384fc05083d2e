using System.Diagnostics;
using System.Runtime.InteropServices;

namespace Iommu.Benchmarks;

/// <summary>
/// Builds the C floors with gcc as shared libraries, so BenchmarkDotNet times them as rows of the same
/// classes, with the same iteration setup, as the C# code they bound: ref_pagetable.c of
/// shared/bench (through ref_pagetable_shim.c) and ref_batch.c beside this file.
/// </summary>
internal static class CFloor
{
    /// <summary>Builds and loads one floor; throws when gcc or the source is missing.</summary>
    /// <param name="source">ref_pagetable_shim.c or ref_batch.c.</param>
    /// <returns>The library handle and the temporary file to delete after <see cref="NativeLibrary.Free"/>.</returns>
    public static (nint Handle, string Path) Load(string source)
    {
        string file = Find(source) ?? throw new InvalidOperationException($"C floor: {source} not found beside the benchmarks or in the source tree.");
        string include = "";
        if (source == "ref_pagetable_shim.c")
        {
            string dir = FindSharedBench() ?? throw new InvalidOperationException("C floor: shared/bench/ref_pagetable.c not found beside the repository.");
            include = $"-I \"{dir}\"";
        }

        string library = System.IO.Path.Combine(System.IO.Path.GetTempPath(), $"iommu-{System.IO.Path.GetFileNameWithoutExtension(source)}-{Environment.ProcessId}.so");
        var psi = new ProcessStartInfo("gcc", $"-O2 -march=native -shared -fPIC {include} -o \"{library}\" \"{file}\"") { RedirectStandardOutput = true, RedirectStandardError = true };
        using Process gcc = Process.Start(psi) ?? throw new InvalidOperationException("C floor: gcc did not start.");
        string output = gcc.StandardOutput.ReadToEnd() + gcc.StandardError.ReadToEnd();
        gcc.WaitForExit();
        if (gcc.ExitCode != 0)
        {
            throw new InvalidOperationException($"C floor: gcc failed: {output}");
        }

        return (NativeLibrary.Load(library), library);
    }

    /// <summary>Frees a loaded floor and deletes its file.</summary>
    public static void Unload(ref nint handle, string? path)
    {
        if (handle != 0)
        {
            NativeLibrary.Free(handle);
            handle = 0;
        }

        if (path is not null)
        {
            File.Delete(path);
        }
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
