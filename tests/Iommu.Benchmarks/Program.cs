using System.Globalization;
using BenchmarkDotNet.Configs;
using BenchmarkDotNet.Jobs;
using BenchmarkDotNet.Reports;
using BenchmarkDotNet.Running;

// Runs the BenchmarkDotNet benchmarks and prints each page-table figure with its ratio to the C floor.
// The floors are rows of the same classes (CMap4K, CUnmap256x4K, ...): shared/bench/ref_pagetable.c
// with the entry points of ref_pagetable_shim.c, built with gcc as a shared library and timed by the
// same harness with the same iteration setup, next to the C# rows they bound; the shim forces the
// inlining the standalone program gets, and the program itself runs after the benchmarks as a check.
//   dotnet run -c Release --project tests/Iommu.Benchmarks            all benchmarks
//   dotnet run -c Release --project tests/Iommu.Benchmarks -- --filter '*PageTable64K*'
//   add --short for a quick, less precise job.
// Benchmarks with [IterationSetup] run one invocation per iteration and finish long before tiered
// compilation would promote the hot methods, so every job runs fully optimized code from the first
// call (DOTNET_TieredCompilation=0): the steady state a long-running user sees.
//   --paired N instead times each C# row against its C row in one process, N alternating pairs by
//   thread CPU time (Paired.cs), with tiered compilation off as in the jobs.
int pairedAt = Array.IndexOf(args, "--paired");
if (pairedAt >= 0)
{
    if (Environment.GetEnvironmentVariable("DOTNET_TieredCompilation") != "0")
    {
        // Run as an apphost the process is the program itself; run by the dotnet host it needs the dll.
        string host = Environment.ProcessPath!;
        string[] childArgs = System.IO.Path.GetFileNameWithoutExtension(host) == "dotnet" ? [typeof(Program).Assembly.Location, .. args] : args;
        var psi = new System.Diagnostics.ProcessStartInfo(host, childArgs) { Environment = { ["DOTNET_TieredCompilation"] = "0" } };
        using System.Diagnostics.Process child = System.Diagnostics.Process.Start(psi)!;
        child.WaitForExit();
        return child.ExitCode;
    }

    int rounds = int.Parse(args[pairedAt + 1], CultureInfo.InvariantCulture);
    string[] filters = args.Where((a, i) => i > 0 && args[i - 1] != "--paired" && a.Contains('*', StringComparison.Ordinal)).Select(a => a.Trim('*')).ToArray();
    Iommu.Benchmarks.Paired.Run(rounds, filters, FloorOf);
    return 0;
}

bool shortJob = args.Contains("--short");
string[] bdnArgs = args.Where(a => a != "--short").ToArray();
Job job = (shortJob ? Job.ShortRun : Job.Default)
    .WithEnvironmentVariables(new BenchmarkDotNet.Jobs.EnvironmentVariable("DOTNET_TieredCompilation", "0"));
// A shared machine may be busy building other trees: give BenchmarkDotNet's own build time to finish.
IConfig config = DefaultConfig.Instance.WithOptions(ConfigOptions.DisableOptimizationsValidator).WithBuildTimeout(TimeSpan.FromMinutes(10)).AddJob(job.AsDefault());

Summary[] summaries = bdnArgs.Length == 0
    ? BenchmarkRunner.Run(typeof(Program).Assembly, config)
    : BenchmarkSwitcher.FromAssembly(typeof(Program).Assembly).Run(bdnArgs, config).ToArray();

Dictionary<string, double> medians = summaries.SelectMany(s => s.Reports)
    .Where(r => r.ResultStatistics is not null)
    .ToDictionary(r => $"{r.BenchmarkCase.Descriptor.Type.Name}.{r.BenchmarkCase.Descriptor.WorkloadMethod.Name}", r => r.ResultStatistics!.Median);

Console.WriteLine();
Console.WriteLine("| Benchmark | ns/op | C floor ns/op | ratio | allocated B/op |");
Console.WriteLine("|---|---|---|---|---|");
foreach (Summary s in summaries)
{
    foreach (BenchmarkReport r in s.Reports)
    {
        if (r.ResultStatistics is null)
        {
            continue;
        }

        string type = r.BenchmarkCase.Descriptor.Type.Name;
        string method = r.BenchmarkCase.Descriptor.WorkloadMethod.Name;
        double ns = r.ResultStatistics.Median;
        double? c = FloorOf(type, method) is string key && medians.TryGetValue(key, out double floor) ? floor : null;
        long? bytes = r.GcStats.GetBytesAllocatedPerOperation(r.BenchmarkCase);
        Console.WriteLine(string.Create(CultureInfo.InvariantCulture,
            $"| {type}.{method} | {ns:F1} | {(c is null ? "-" : c.Value.ToString("F1", CultureInfo.InvariantCulture))} | {(c is null ? "-" : (ns / c.Value).ToString("F2", CultureInfo.InvariantCulture))} | {bytes?.ToString(CultureInfo.InvariantCulture) ?? "-"} |"));
    }
}

// Check rows: the shim's C rows against shared/bench/ref_pagetable.c run as its own program, at the
// same page counts, in this run. The floor is honest only when they agree within 5%.
var checks = new (string Class, int Pages)[] { ("PageTable64K", 1 << 16), ("PageTable1M", 1 << 20) };
bool header = false;
foreach ((string cls, int pages) in checks)
{
    if (!medians.ContainsKey($"{cls}.CMap4K"))
    {
        continue;
    }

    if (!header)
    {
        Console.WriteLine();
        Console.WriteLine("| C floor check | shim row ns/op | program ns/op | shim/program | within 5% |");
        Console.WriteLine("|---|---|---|---|---|");
        header = true;
    }

    (double map, double lookup, double unmap) = Iommu.Benchmarks.CFloor.RunProgram(pages);
    foreach ((string row, double program) in new[] { ("CMap4K", map), ("CIovaToPhys", lookup), ("CUnmap4K", unmap) })
    {
        if (medians.TryGetValue($"{cls}.{row}", out double shim))
        {
            double ratio = shim / program;
            Console.WriteLine(string.Create(CultureInfo.InvariantCulture, $"| {cls}.{row} | {shim:F2} | {program:F2} | {ratio:F2} | {(Math.Abs(ratio - 1) <= 0.05 ? "yes" : "NO")} |"));
        }
    }
}

return 0;

// The C row a C# row is measured against: "C" + the method in the same class; the whole kernel
// path (DriverPath64K) against the bare 2^16 page-table floor.
static string? FloorOf(string type, string method) => (type, method) switch
{
    ("DriverPath64K", "IommuMap4K") => "PageTable64K.CMap4K",
    ("DriverPath64K", "IommuIovaToPhys") => "PageTable64K.CIovaToPhys",
    ("DriverPath64K", "IommuUnmap4K") => "PageTable64K.CUnmap4K",
    ("PageTable64K" or "PageTable1M" or "PageTableBatches", _) when !method.StartsWith('C') => $"{type}.C{method}",
    _ => null,
};
