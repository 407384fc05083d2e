using System.Globalization;
using System.Text.RegularExpressions;
using Iommu.Devices;
using Iommu.Domains;
using Iommu.VtD.Diagnostics;
using Iommu.VtD.Hardware;
using Iommu.VtD.Tests.Driver;
using static Iommu.VtD.Tests.Driver.DriverTestKit;

namespace Iommu.VtD.Tests.Diagnostics;

public sealed partial class VtdImageDotTests
{
    private const ulong Pa = 0x1_0000_0000;

    // (iova, pa, size, prot): a 16-page run, a page that breaks it (other PA), a read-only page,
    // two contiguous 2M leaves, and a 4K page in another PML4 slot.
    private static readonly (ulong Iova, ulong Pa, ulong Size, IommuProt Prot)[] Maps =
    [
        (0x10_0000, Pa, 16 * K4, RW),
        (0x11_0000, Pa + 0x100_0000, K4, RW),
        (0x11_1000, Pa + 0x200_0000, K4, IommuProt.Read),
        (0x4000_0000, Pa + 0x4000_0000, 2 * M2, RW),
        (0x80_0000_0000, Pa + 0x300_0000, K4, RW),
    ];

    [Theory]
    [InlineData("Sm48")]
    [InlineData("Sm57")]
    [InlineData("Legacy48")]
    public void Every_range_the_hardware_translates_is_a_leaf_range_of_the_graph_and_nothing_else_is(string config)
    {
        using DriverBed f = New(config);
        bool scalable = f.Unit.Config.ScalableMode;
        PciDevice dev = scalable ? f.AuxParent("0000:00:02.0") : f.AddDevice("0000:00:02.0");
        IDomain d = f.Unmanaged();
        Assert.Equal(Errno.None, scalable ? f.Iommu.AttachDeviceAux(d, dev) : f.Iommu.AttachDevice(d, dev));
        uint? pasid = scalable ? (uint)f.Iommu.AuxGetPasid(d, dev) : null;
        foreach ((ulong iova, ulong pa, ulong size, IommuProt prot) in Maps)
        {
            Assert.Equal(Errno.None, f.Iommu.Map(d, iova, pa, size, prot));
        }

        VtdImage image = f.Driver.ExportImage();
        string dot = image.ToDot(dev.RequesterId, pasid);
        List<Range> graph = Merge(ParseLeaves(dot));

        // The hardware's answer for every page of every graph range and of every mapping, two pages either side.
        var pages = new SortedSet<ulong>();
        foreach (Range r in graph)
        {
            for (ulong p = r.Iova; p < r.Iova + r.Size; p += K4)
            {
                pages.Add(p);
            }
        }

        foreach ((ulong iova, _, ulong size, _) in Maps)
        {
            for (ulong p = iova - (2 * K4); p < iova + size + (2 * K4); p += K4)
            {
                pages.Add(p);
            }
        }

        VtdImage probed = image.Probe(f.Unit.Config, pages.Select(p => new VtdProbe(dev.RequesterId, pasid, p, DmaAccess.Read)));
        var hardware = new List<Range>();
        foreach (VtdProbeResult r in probed.Probes.Where(r => r.IsTranslated))
        {
            hardware.Add(new Range(r.Probe.Iova, r.PhysicalAddress, K4, r.Writable ? "RW" : "R", r.PageSize));
        }

        Assert.Equal(Merge(hardware), graph);
        Assert.Contains(graph, r => r.Iova == 0x4000_0000 && r.Size == 2 * M2 && r.LeafSize == M2);
        Assert.Equal(5, graph.Count); // the 16-page run, its breaker, the read-only page, the 2M pair, the far page
    }

    [Fact]
    public void The_graph_chains_root_context_directory_pasid_entry_and_page_tables_and_filters_by_pasid()
    {
        using DriverBed f = New("Sm48");
        PciDevice dev = f.AuxParent("0000:00:02.0");
        IDomain a = f.Unmanaged(), b = f.Unmanaged();
        Assert.Equal(Errno.None, f.Iommu.AttachDeviceAux(a, dev));
        Assert.Equal(Errno.None, f.Iommu.AttachDeviceAux(b, dev));
        uint pa = (uint)f.Iommu.AuxGetPasid(a, dev), pb = (uint)f.Iommu.AuxGetPasid(b, dev);
        Assert.Equal(Errno.None, f.Iommu.Map(a, 0x10_0000, Pa, K4, RW));
        Assert.Equal(Errno.None, f.Iommu.Map(b, 0x10_0000, Pa + K4, K4, RW));
        VtdImage image = f.Driver.ExportImage();

        string one = image.ToDot(dev.RequesterId, pa);
        Dictionary<string, string> nodes = Nodes(one);
        List<(string From, string To)> edges = Edges(one);

        // root -> ctx -> dir -> PASID table -> PML4 -> PDP -> PD -> PT, one edge each.
        string at = "root";
        string[] expected = ["ctx", "dir_", "pasid_", "pt4_", "pt3_", "pt2_", "pt1_"];
        foreach (string next in expected)
        {
            (string, string)[] outgoing = [.. edges.Where(e => e.From.Split(':')[0] == at)];
            Assert.Single(outgoing);
            at = outgoing[0].Item2;
            Assert.StartsWith(next, at, StringComparison.Ordinal);
        }

        Assert.Contains($"PASID {pa}: PGTT=second-level", nodes.Values.Single(v => v.StartsWith("PASID table", StringComparison.Ordinal)), StringComparison.Ordinal);
        Assert.DoesNotContain($"PASID {pb}:", one, StringComparison.Ordinal);
        Assert.Equal([0x10_0000UL], ParseLeaves(one).Select(r => r.Iova));

        string all = image.ToDot(dev.RequesterId);
        Assert.Contains($"PASID {pa}:", all, StringComparison.Ordinal);
        Assert.Contains($"PASID {pb}:", all, StringComparison.Ordinal);
        Assert.Contains("PASID 0 (RID_PASID):", all, StringComparison.Ordinal);
        Assert.Equal([Pa, Pa + K4], ParseLeaves(all).Select(r => r.Pa).Order());
        Assert.StartsWith("digraph vtd {", all, StringComparison.Ordinal);
        Assert.EndsWith("}\n", all, StringComparison.Ordinal);
    }

    [Fact]
    public void A_device_without_a_context_entry_draws_the_root_entry_only()
    {
        using DriverBed f = New("Sm48");
        string dot = f.Driver.ExportImage().ToDot(0xFF00);
        Assert.Single(Nodes(dot));
        Assert.Empty(Edges(dot));
        Assert.Contains("not present", dot, StringComparison.Ordinal);
    }

    private sealed record Range(ulong Iova, ulong Pa, ulong Size, string Perm, ulong LeafSize);

    private static List<Range> ParseLeaves(string dot)
    {
        var list = new List<Range>();
        foreach (Match m in LeafRegex().Matches(dot))
        {
            ulong first = Hex(m.Groups["first"].Value), last = Hex(m.Groups["last"].Value);
            ulong leaf = m.Groups["unit"].Value switch { "4K" => K4, "2M" => M2, "1G" => G1, _ => 0 };
            ulong count = ulong.Parse(m.Groups["n"].Value, CultureInfo.InvariantCulture);
            Assert.Equal(last + 1 - first, count * leaf);
            list.Add(new Range(first, Hex(m.Groups["pa"].Value), last + 1 - first, m.Groups["perm"].Value, leaf));
        }

        return list;
    }

    // Adjacent ranges that continue each other (IOVA, PA, permissions, leaf size) become one.
    private static List<Range> Merge(IEnumerable<Range> ranges)
    {
        var merged = new List<Range>();
        foreach (Range r in ranges.OrderBy(r => r.Iova))
        {
            if (merged.Count > 0 && merged[^1] is Range p && p.Iova + p.Size == r.Iova && p.Pa + p.Size == r.Pa && p.Perm == r.Perm && p.LeafSize == r.LeafSize)
            {
                merged[^1] = p with { Size = p.Size + r.Size };
            }
            else
            {
                merged.Add(r);
            }
        }

        return merged;
    }

    private static Dictionary<string, string> Nodes(string dot) =>
        NodeRegex().Matches(dot).ToDictionary(m => m.Groups["id"].Value, m => m.Groups["label"].Value);

    private static List<(string, string)> Edges(string dot) =>
        [.. EdgeRegex().Matches(dot).Select(m => (m.Groups["from"].Value, m.Groups["to"].Value))];

    private static ulong Hex(string s) => ulong.Parse(s.Replace("_", "", StringComparison.Ordinal), NumberStyles.HexNumber, CultureInfo.InvariantCulture);

    [GeneratedRegex(@"0x(?<first>[0-9A-F_]+)–0x(?<last>[0-9A-F_]+) → 0x(?<pa>[0-9A-F_]+) (?<perm>RW|R|W) \((?<n>\d+) × (?<unit>4K|2M|1G)\)")]
    private static partial Regex LeafRegex();

    [GeneratedRegex(@"^  (?<id>\w+) \[label=""(?<label>.*)""\];$", RegexOptions.Multiline)]
    private static partial Regex NodeRegex();

    [GeneratedRegex(@"^  (?<from>[\w:]+) -> (?<to>\w+);$", RegexOptions.Multiline)]
    private static partial Regex EdgeRegex();
}
