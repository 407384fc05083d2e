using System.Globalization;
using BenchmarkDotNet.Configs;
using BenchmarkDotNet.Jobs;
using BenchmarkDotNet.Reports;
using BenchmarkDotNet.Running;
using Iommu.Benchmarks;

// Runs the C floor of single pages (shared/bench/ref_pagetable.c) before and after the
// BenchmarkDotNet benchmarks, in one run, and prints each page-table figure with its ratio to the
// floor. The 256×4K floor (ref_batch.c beside this file) runs inside BenchmarkDotNet as
// CFloorBatches: filter with '*Batches*' to get both sides.
//   dotnet run -c Release --project tests/Iommu.Benchmarks            all benchmarks + floor
//   dotnet run -c Release --project tests/Iommu.Benchmarks -- --filter '*PageTable64K*'
//   add --short for a quick, less precise job.
// Benchmarks with [IterationSetup] run one invocation per iteration and finish long before tiered
// compilation would promote the hot methods, so every job runs fully optimized code from the first
// call (DOTNET_TieredCompilation=0): the steady state a long-running user sees.
bool shortJob = args.Contains("--short");
string[] bdnArgs = args.Where(a => a != "--short").ToArray();
Job job = (shortJob ? Job.ShortRun : Job.Default)
    .WithEnvironmentVariables(new BenchmarkDotNet.Jobs.EnvironmentVariable("DOTNET_TieredCompilation", "0"));
IConfig config = DefaultConfig.Instance.WithOptions(ConfigOptions.DisableOptimizationsValidator).AddJob(job.AsDefault());

CFloor.Result?[] floors = [CFloor.Run(1 << 16), CFloor.Run(1 << 20)];
Summary[] summaries = bdnArgs.Length == 0
    ? BenchmarkRunner.Run(typeof(Program).Assembly, config)
    : BenchmarkSwitcher.FromAssembly(typeof(Program).Assembly).Run(bdnArgs, config).ToArray();

// The floors again after the benchmarks, keeping the faster figure of the two: on a shared machine
// the C figures move as much as ours, and the lower floor is the stricter ratio.
floors = [CFloor.Min(floors[0], CFloor.Run(1 << 16)), CFloor.Min(floors[1], CFloor.Run(1 << 20))];

// The 256×4K floors are BenchmarkDotNet rows of their own (CFloorBatches), timed like ours.
Dictionary<string, double> batchFloor = summaries.SelectMany(s => s.Reports)
    .Where(r => r.ResultStatistics is not null && r.BenchmarkCase.Descriptor.Type.Name == nameof(CFloorBatches))
    .ToDictionary(r => r.BenchmarkCase.Descriptor.WorkloadMethod.Name, r => r.ResultStatistics!.Median);

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

        string name = $"{r.BenchmarkCase.Descriptor.Type.Name}.{r.BenchmarkCase.Descriptor.WorkloadMethod.Name}";
        double ns = r.ResultStatistics.Median;
        CFloor.Result? floor = r.BenchmarkCase.Descriptor.Type.Name switch
        {
            "PageTable64K" or "DriverPath64K" => floors[0],
            "PageTable1M" => floors[1],
            _ => null,
        };
        string method = r.BenchmarkCase.Descriptor.WorkloadMethod.Name;
        double? c = floor is null ? null : method switch
        {
            "Map4K" or "IommuMap4K" => floor.MapNs,
            "IovaToPhys" or "IommuIovaToPhys" => floor.LookupNs,
            "Unmap4K" or "IommuUnmap4K" => floor.UnmapNs,
            _ => null,
        };
        if (r.BenchmarkCase.Descriptor.Type.Name == nameof(PageTableBatches) && batchFloor.TryGetValue(method, out double batch))
        {
            c = batch;
        }

        long? bytes = r.GcStats.GetBytesAllocatedPerOperation(r.BenchmarkCase);
        Console.WriteLine(string.Create(CultureInfo.InvariantCulture,
            $"| {name} | {ns:F1} | {(c is null ? "-" : c.Value.ToString("F1", CultureInfo.InvariantCulture))} | {(c is null ? "-" : (ns / c.Value).ToString("F2", CultureInfo.InvariantCulture))} | {bytes?.ToString(CultureInfo.InvariantCulture) ?? "-"} |"));
    }
}
