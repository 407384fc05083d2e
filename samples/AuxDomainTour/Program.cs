using AuxDomainTour;

// The main tour (issue 8): the seed's story end to end on an embedded default machine — a VT-d unit
// in scalable mode, a Scalable-IOV accelerator whose mdevs get auxiliary domains (one PASID each),
// an mtty-like mdev in the external domain, a VFIO type1 container per guest, DMA that lands in the
// right guest's pages, faults that do not, and the translation structures the hardware walks.
string[] known = ["--help", "-h", "--legacy", "--json"];
if (args.Contains("--help") || args.Contains("-h"))
{
    Console.WriteLine("AuxDomainTour: IOMMU-aware mediated devices end to end (VT-d scalable mode, aux domains, VFIO type1).");
    Console.WriteLine();
    Console.WriteLine("Usage: dotnet run --project samples/AuxDomainTour [-- [--legacy] [--json] [--help]]");
    Console.WriteLine();
    Console.WriteLine("  --legacy  run the VT-d unit and driver without scalable mode: AUX is refused with the kernel's errno");
    Console.WriteLine("  --json    print the report as JSON instead of narrated tables");
    Console.WriteLine("  --help    this text");
    Console.WriteLine();
    Console.WriteLine("Exit code: 0 when every step behaved as the kernel does, 1 otherwise, 2 on bad arguments.");
    return 0;
}

string? unknown = args.FirstOrDefault(a => !known.Contains(a));
if (unknown is not null)
{
    Console.Error.WriteLine($"AuxDomainTour: unknown option '{unknown}' (try --help)");
    return 2;
}

Report report = Tour.Run(legacy: args.Contains("--legacy"));
Console.Out.Write(args.Contains("--json") ? report.ToJson() : report.ToText());
return report.Failures == 0 ? 0 : 1;
