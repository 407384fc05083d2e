using System.Globalization;
using BenchmarkDotNet.Configs;
using BenchmarkDotNet.Jobs;
using BenchmarkDotNet.Reports;
using BenchmarkDotNet.Running;

// Runs the BenchmarkDotNet benchmarks and prints each figure with its ratio to the C floor.
// The floors are rows of the same classes (CMap4K, CUnmap256x4K, CRead64B, ...): shared/bench/ref_pagetable.c
// and ref_dma.c with the entry points of ref_pagetable_shim.c and ref_dma_shim.c, built with gcc as
// shared libraries and timed by the same harness with the same setup, next to the C# rows they bound;
// the shims force the inlining the standalone programs get, and the programs themselves run after the
// benchmarks as a check.
//   dotnet run -c Release --project tests/Iommu.Benchmarks            all benchmarks
//   dotnet run -c Release --project tests/Iommu.Benchmarks -- --filter '*PageTable64K*'
//   dotnet run -c Release --project tests/Iommu.Benchmarks -- --filter '*Dma*'      the DMA path
//   add --short for a quick, less precise job.
// Benchmarks with [IterationSetup] run one invocation per iteration and finish long before tiered
// compilation would promote the hot methods, so every job runs fully optimized code from the first
// call (DOTNET_TieredCompilation=0): the steady state a long-running user sees.
//   --paired N instead times each C# row against its C row in one process per class (as BenchmarkDotNet
//   runs each benchmark in its own process), N alternating pairs by thread CPU time (Paired.cs), with
//   tiered compilation off as in the jobs unless --tiered. One process per class: with tiered
//   compilation a class's rows are compiled from the dynamic profile every class before it left in the
//   process, so one process for all made a row's figure depend on which classes ran first
//   (DriverPathAfterRanges64K measures that case on purpose).
int pairedAt = Array.IndexOf(args, "--paired");
if (pairedAt >= 0)
{
    int rounds = int.Parse(args[pairedAt + 1], CultureInfo.InvariantCulture);
    string[] filters = args.Where((a, i) => i > 0 && args[i - 1] != "--paired" && a.Contains('*', StringComparison.Ordinal)).Select(a => a.Trim('*')).ToArray();
    bool tiered = args.Contains("--tiered");
    int classAt = Array.IndexOf(args, "--paired-class");
    if (classAt >= 0)
    {
        Iommu.Benchmarks.Paired.Run(rounds, filters, FloorOf, tiered, args[classAt + 1]);
        return 0;
    }

    Iommu.Benchmarks.Paired.PrintHeader(rounds);
    foreach (string type in Iommu.Benchmarks.Paired.Classes(filters, FloorOf))
    {
        // Run as an apphost the process is the program itself; run by the dotnet host it needs the dll.
        string host = Environment.ProcessPath!;
        string[] childArgs = [.. args, "--paired-class", type];
        if (System.IO.Path.GetFileNameWithoutExtension(host) == "dotnet")
        {
            childArgs = [typeof(Program).Assembly.Location, .. childArgs];
        }

        var psi = new System.Diagnostics.ProcessStartInfo(host, childArgs);
        if (!tiered)
        {
            psi.Environment["DOTNET_TieredCompilation"] = "0";
        }
        else
        {
            // As the BenchmarkDotNet tiered job: promotion after 30 calls, not after 100 ms without new
            // tier-0 code, which the C rows' setup kept postponing (some rows were timed as OSR code).
            psi.Environment["DOTNET_TC_CallCountingDelayMs"] = "0";
        }

        using System.Diagnostics.Process child = System.Diagnostics.Process.Start(psi)!;
        child.WaitForExit();
        if (child.ExitCode != 0)
        {
            return child.ExitCode;
        }
    }

    return 0;
}

bool shortJob = args.Contains("--short");
bool tieredJob = args.Contains("--tiered");
string[] bdnArgs = args.Where(a => a is not "--short" and not "--tiered").ToArray();
Job job = shortJob ? Job.ShortRun : Job.Default;
job = tieredJob
    // The runtime's defaults (tiered compilation with dynamic PGO), promoted without the 100 ms
    // call-counting delay and warmed up over 100 invocations, so that the timed invocations run the
    // tier-1 code a long-running emulator runs. A row with an iteration setup calls its benchmark
    // method once per invocation: its loop runs as a first OSR version (no profile) for about 30
    // invocations, then is rejitted with its profile, which inlines IommuCore.Map into the loop.
    // DriverPath64K.IommuMap4K's warm-ups ran at 17-22 ns/op up to the 33rd and 12-13 after (the
    // library's own methods were at tier 1 from the first invocations), so with 40 a busy machine's
    // timed invocations could start in the slow stretch: the 7x tiered iommu_map readings.
    ? job.WithEnvironmentVariables(new BenchmarkDotNet.Jobs.EnvironmentVariable("DOTNET_TC_CallCountingDelayMs", "0")).WithWarmupCount(100)
    : job.WithEnvironmentVariables(new BenchmarkDotNet.Jobs.EnvironmentVariable("DOTNET_TieredCompilation", "0"));
// The boilerplate build gets longer than the default 2 minutes: the machine is shared, and other
// builds run beside this one.
IConfig config = DefaultConfig.Instance.WithOptions(ConfigOptions.DisableOptimizationsValidator)
    .WithBuildTimeout(TimeSpan.FromMinutes(15))
    .AddJob(job.AsDefault());

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

// Deferred unmaps have no C row (the floor has no IOTLB): their rows against each other instead.
if (medians.TryGetValue("DeferredUnmap256.PerPageSync", out double perPage))
{
    Console.WriteLine();
    Console.WriteLine("| Unmap of 256 × 4K | ns per 256 pages | ns per page | vs per-page sync | vs one sync |");
    Console.WriteLine("|---|---|---|---|---|");
    medians.TryGetValue("DeferredUnmap256.OneSync", out double oneSync);
    foreach (string row in new[] { "PerPageSync", "OneSync", "FlushQueue", "DmaStrict" })
    {
        if (medians.TryGetValue($"DeferredUnmap256.{row}", out double ns))
        {
            Console.WriteLine(string.Create(CultureInfo.InvariantCulture,
                $"| {row} | {ns:F0} | {ns / 256:F1} | {ns / perPage:F3} | {(oneSync > 0 ? (ns / oneSync).ToString("F2", CultureInfo.InvariantCulture) : "-")} |"));
        }
    }
}

// Throughput of two devices' reads on two threads against one thread (each op is one read, so the
// ratio of ns/op is the ratio of reads per second), for the model and for the C floor.
if (medians.TryGetValue("DmaThreads.OneThread64B", out double one) && medians.TryGetValue("DmaThreads.TwoThreads64B", out double two))
{
    string c = medians.TryGetValue("DmaThreads.COneThread64B", out double cOne) && medians.TryGetValue("DmaThreads.CTwoThreads64B", out double cTwo)
        ? (cOne / cTwo).ToString("F2", CultureInfo.InvariantCulture)
        : "-";
    Console.WriteLine();
    Console.WriteLine("| Throughput, 2 threads / 1 thread | C# | C floor |");
    Console.WriteLine("|---|---|---|");
    Console.WriteLine(string.Create(CultureInfo.InvariantCulture, $"| DmaThreads 64 B reads | {one / two:F2} | {c} |"));
}

// Check rows: the shims' C rows against the programs of shared/bench run on their own, with the same
// workload, in this run. The floor is honest only when they agree within 5%.
var checks = new List<(string Row, string Program, string Arguments, string Field)>();
foreach ((string cls, int pages) in new[] { ("PageTable64K", 1 << 16), ("PageTable1M", 1 << 20) })
{
    foreach ((string row, string field) in new[] { ("CMap4K", "map_ns"), ("CIovaToPhys", "lookup_ns"), ("CUnmap4K", "unmap_ns") })
    {
        checks.Add(($"{cls}.{row}", "ref_pagetable.c", pages.ToString(CultureInfo.InvariantCulture), field));
    }
}

// ref_dma.c PAGES LEN OPS reads the first OPS IOVAs of the sequence the rows read.
foreach ((string cls, int pages) in new[] { ("DmaRead1K", 1 << 10), ("DmaRead64K", 1 << 16) })
{
    checks.Add(($"{cls}.CRead64B", "ref_dma.c", string.Create(CultureInfo.InvariantCulture, $"{pages} 64 {Iommu.Benchmarks.DmaReadWorkload.Ops64}"), "dma_ns"));
    checks.Add(($"{cls}.CRead4K", "ref_dma.c", string.Create(CultureInfo.InvariantCulture, $"{pages} 4096 {Iommu.Benchmarks.DmaReadWorkload.Ops4K}"), "dma_ns"));
}

// Each program runs three times and each figure is the median of its three: one run of a few
// milliseconds swings by 2x or more on a loaded machine.
var outputs = new Dictionary<(string, string), string[]>();
bool header = false;
foreach ((string row, string program, string arguments, string field) in checks)
{
    if (!medians.TryGetValue(row, out double shim))
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

    if (!outputs.TryGetValue((program, arguments), out string[]? lines))
    {
        lines = [.. Enumerable.Range(0, 3).Select(_ => Iommu.Benchmarks.CFloor.RunProgram(program, arguments))];
        outputs[(program, arguments)] = lines;
    }

    double reference = lines.Select(l => Iommu.Benchmarks.CFloor.Field(l, field)).Order().ElementAt(1);
    double ratio = shim / reference;
    Console.WriteLine(string.Create(CultureInfo.InvariantCulture, $"| {row} | {shim:F2} | {reference:F2} | {ratio:F2} | {(Math.Abs(ratio - 1) <= 0.05 ? "yes" : "NO")} |"));
}

return 0;

// The C row a C# row is measured against: "C" + the method in the same class; the whole kernel
// path (DriverPath64K) against the bare 2^16 page-table floor; each DMA row against ref_dma.c's
// walk-and-copy of the same bytes.
static string? FloorOf(string type, string method) => (type, method) switch
{
    ("DriverPath64K" or "DriverPathAfterRanges64K", "IommuMap4K") => "PageTable64K.CMap4K",
    ("DriverPath64K" or "DriverPathAfterRanges64K", "IommuIovaToPhys") => "PageTable64K.CIovaToPhys",
    ("DriverPath64K" or "DriverPathAfterRanges64K", "IommuUnmap4K") => "PageTable64K.CUnmap4KSync",
    ("DeferredUnmap256", "PerPageSync" or "DmaStrict") => "DeferredUnmap256.CPerPageSync",
    ("DeferredUnmap256", "OneSync" or "FlushQueue") => "DeferredUnmap256.COneSync",
    ("PageTable64K" or "PageTable1M" or "PageTableBatches", _) when !method.StartsWith('C') => $"{type}.C{method}",
    ("DmaRead1K" or "DmaRead64K" or "DmaCallerMemory", _) when !method.StartsWith('C') => $"{type}.C{(method.EndsWith("64B", StringComparison.Ordinal) ? "Read64B" : "Read4K")}",
    ("DmaThreads", "OneThread64B" or "TwoThreads64B") => $"{type}.C{method}",
    ("DmaUnmap", "UnmapRemap4KIotlbEmpty" or "UnmapRemap4KIotlbFull") => "DmaUnmap.CUnmapRemap4K",
    ("DmaGather", "Gather16x4K" or "Read16x4K") => "DmaGather.CGather16x4K",
    ("SvaWalk1K" or "SvaWalk64K" or "SvaAtcHit" or "SvaPageRequest" or "SvaBindUnbind", _) when !method.StartsWith('C') => $"{type}.C{method}",
    _ => null,
};
