using System.Globalization;
using AuxDomainTour;

// The main tour (issue 8): the seed's story end to end on an embedded default machine — a VT-d
// unit in scalable mode, a Scalable-IOV accelerator whose mdevs get auxiliary domains (one PASID
// each), an mtty-like mdev in the external domain, a VFIO type1 container per guest, DMA that
// lands in the right guest's pages, faults that do not, and the translation structures the
// hardware walks.
bool legacy = false, json = false, firstLevel = false, pasidAttach = false;
int? section = null;
string? graph = null;
for (int i = 0; i < args.Length; i++)
{
    switch (args[i])
    {
        case "--help" or "-h":
            Console.Write(Help);
            return 0;
        case "--legacy":
            legacy = true;
            break;
        case "--json":
            json = true;
            break;
        case "--first-level":
            firstLevel = true;
            break;
        case "--pasid-attach":
            pasidAttach = true;
            break;
        case "--section" when i + 1 < args.Length
            && int.TryParse(args[i + 1], NumberStyles.None, CultureInfo.InvariantCulture, out int n)
            && n >= 1:
            section = n;
            i++;
            break;
        case "--graph" when i + 1 < args.Length
            && !args[i + 1].StartsWith("--", StringComparison.Ordinal):
            graph = args[++i];
            break;
        case "--section" or "--graph":
            Console.Error.WriteLine($"AuxDomainTour: {args[i]} needs a value (try --help)");
            return 2;
        default:
            Console.Error.WriteLine($"AuxDomainTour: unknown option '{args[i]}' (try --help)");
            return 2;
    }
}

if (legacy && (firstLevel || pasidAttach))
{
    Console.Error.WriteLine("AuxDomainTour: --first-level and --pasid-attach need scalable mode "
        + "(drop --legacy)");
    return 2;
}

Report report = Tour.Run(new TourOptions(legacy, firstLevel, pasidAttach), graph);
if (section > report.SectionCount)
{
    Console.Error.WriteLine(
        $"AuxDomainTour: there is no section {section} (1-{report.SectionCount})");
    return 2;
}

Console.Out.Write(json ? report.ToJson(section) : report.ToText(section));
return report.Failures == 0 ? 0 : 1;

internal static partial class Program
{
    private const string Help = """
        AuxDomainTour: IOMMU-aware mediated devices end to end
        (VT-d scalable mode, aux domains, VFIO type1). Terms: docs/concepts.md

        Usage: dotnet run --project samples/AuxDomainTour [-- OPTIONS]

          --legacy        run the VT-d unit and driver without scalable mode:
                          AUX is refused with the kernel's errno
          --first-level   a unit with first-level translation (ECAP.FLTS) and
                          5.15's rule: every domain, aux ones included, uses
                          first-level (IA-32e) tables; aux PASID entries get
                          PGTT=first-level with SRE and WPE
          --pasid-attach  the 6.2 way: the accelerator takes each ADI's PASID
                          from iommu_alloc_global_pasid and attaches the mdev's
                          domain with iommu_attach_device_pasid (no aux)
                          (the two combine)
          --json          print the report as JSON instead of narrated tables
          --section N     print only section N (1-7); the whole tour still runs
          --graph FILE    write the parent device's translation structures as
                          Graphviz DOT (render: dot -Tsvg FILE -o tour.svg)
          --help          this text

        Exit code: 0 when every step behaved as the kernel does, 1 otherwise,
        2 on bad arguments.

        """;
}
