using System.Text.Json;

namespace Iommu.Integration.Tests;

/// <summary>Runs samples/AuxDomainTour in-process (default, --legacy, --json) and checks its report.</summary>
[Collection(ConsoleSamples.Name)]
public sealed class AuxDomainTourTests
{
    private static (int Exit, string Output) Tour(params string[] args) => ConsoleSamples.RunSample("AuxDomainTour", args);

    [Fact]
    public void The_default_tour_walks_the_seed_story_and_every_step_behaves()
    {
        (int exit, string text) = Tour();

        Assert.True(exit == 0, text);
        Assert.DoesNotContain("UNEXPECTED", text, StringComparison.Ordinal);
        Assert.Contains("(scalable mode)", text, StringComparison.Ordinal);
        for (int step = 1; step <= 6; step++)
        {
            Assert.Contains($"== {step}. ", text, StringComparison.Ordinal);
        }

        Assert.Contains("[ok] IOMMU_DEV_ATTR_AUXD_ENABLE -> 0", text, StringComparison.Ordinal);
        Assert.Contains("three containers, three aux domains on one parent, three PASIDs: 1, 2, 3", text, StringComparison.Ordinal);
        Assert.Contains("external domain", text, StringComparison.Ordinal);
        Assert.Contains("guest A: hello via PASID 1", text, StringComparison.Ordinal);
        Assert.Contains("guest B: hello via PASID 2", text, StringComparison.Ordinal);
        Assert.Matches(@"B reads A's IOVA\s+0000:00:04\.0\s+2\s+B\s+read\s+0x40000000\s+0x86", text);
        Assert.Matches(@"C writes unmapped IOVA\s+0000:00:04\.0\s+3\s+C\s+write\s+0x70000000\s+0x85", text);
        Assert.Contains("PASID directory entry", text, StringComparison.Ordinal);
        Assert.Contains("PASID table entry", text, StringComparison.Ordinal);
        Assert.Contains("IOVA_PFN", text, StringComparison.Ordinal);
        Assert.Matches(@"IOTLB hits / misses\s+[1-9]\d* / [1-9]\d*", text);
        Assert.Matches(@"iommu\.vtd\.iotlb\.hits\s+unit=dmar0\s+[1-9]\d*\s+\{lookup\}", text);
        Assert.Matches(@"iommu\.vtd\.faults\s+unit=dmar0 reason=0x86\s+1\s+\{fault\}", text);
        Assert.Matches(@"vfio\.type1\.pinned\.pages\s+container=3 source=vfio_pin_pages\s+2\s+\{page\}", text);
        Assert.Matches(@"vfio\.type1\.dma\.available\s+container=1\s+65533\s+\{mapping\}", text);
        Assert.Contains("[ok] vfio.type1.pinned.pages over the containers (51) = the pins the page pool holds", text, StringComparison.Ordinal);
        Assert.Matches(@"All \d+ checks behaved as the kernel does\.", text);
    }

    [Fact]
    public void The_legacy_tour_shows_aux_refused_with_the_kernels_errno()
    {
        (int exit, string text) = Tour("--legacy");

        Assert.True(exit == 0, text);
        Assert.DoesNotContain("UNEXPECTED", text, StringComparison.Ordinal);
        Assert.Contains("(legacy mode)", text, StringComparison.Ordinal);
        Assert.Contains("IOMMU_DEV_ATTR_AUXD_CAPABILITY of 0000:00:04.0 = False", text, StringComparison.Ordinal);
        Assert.Contains("IOMMU_DEV_ATTR_AUXD_ENABLE -> -EINVAL", text, StringComparison.Ordinal);
        Assert.Contains("iommu_aux_attach_device(UNMANAGED domain, 0000:00:04.0) -> -EPERM", text, StringComparison.Ordinal);
        Assert.Contains("create of ADI 1 -> -EINVAL", text, StringComparison.Ordinal);
        Assert.Contains("0x31", text, StringComparison.Ordinal);
    }

    [Fact]
    public void The_json_report_is_machine_readable_and_agrees_with_the_run()
    {
        (int exit, string json) = Tour("--json");

        Assert.True(exit == 0, json);
        using JsonDocument doc = JsonDocument.Parse(json);
        JsonElement root = doc.RootElement;
        Assert.Equal("scalable", root.GetProperty("mode").GetString());
        Assert.True(root.GetProperty("ok").GetBoolean());
        Assert.Equal(0, root.GetProperty("failures").GetInt32());
        Assert.Equal(7, root.GetProperty("sections").GetArrayLength());
        Assert.All(root.GetProperty("sections").EnumerateArray().SelectMany(s => s.GetProperty("checks").EnumerateArray()),
            c => Assert.True(c.GetProperty("ok").GetBoolean(), c.GetProperty("text").GetString()));
        Assert.Equal(root.GetProperty("checks").GetInt32(),
            root.GetProperty("sections").EnumerateArray().Sum(s => s.GetProperty("checks").GetArrayLength()));

        JsonElement facts = root.GetProperty("facts");
        Assert.Equal([1u, 2u, 3u], facts.GetProperty("pasids").EnumerateArray().Select(p => p.GetUInt32()));
        Assert.Equal(2, facts.GetProperty("faults").GetArrayLength());
        Assert.True(facts.GetProperty("iotlb.hits").GetInt64() > 0);
        Assert.Equal(facts.GetProperty("iotlb.hits").GetInt64(), facts.GetProperty("metrics.iommu.vtd.iotlb.hits").GetInt64());
        Assert.Equal(2, facts.GetProperty("metrics.iommu.vtd.faults").GetInt64());
        Assert.Equal(facts.GetProperty("pages.pinned").GetInt64(), facts.GetProperty("metrics.vfio.type1.pinned.pages").GetInt64());
        Assert.Equal(49, facts.GetProperty("metrics.iommu.mapped.pages").GetInt64()); // 17 + 16 + 16 pages, one IOMMU domain per container
        Assert.Equal([65533L, 65534L, 65534L], facts.GetProperty("metrics.vfio.type1.dma.available").EnumerateArray().Select(e => e.GetInt64()));
        Assert.Contains(root.GetProperty("sections")[6].GetProperty("tables").GetProperty("metrics").EnumerateArray(),
            r => r.GetProperty("instrument").GetString() == "iommu.map.operations" && r.GetProperty("unit").GetString() == "{operation}");

        // Section 6, the processes: decoded page requests and the answers the driver sent.
        JsonElement procs = root.GetProperty("sections")[5].GetProperty("tables");
        Assert.Equal(5, procs.GetProperty("page_requests").GetArrayLength());
        Assert.All(procs.GetProperty("page_requests").EnumerateArray(), e => Assert.StartsWith("page request 00:05.0 PASID ", e.GetProperty("descriptor (decoded)").GetString(), StringComparison.Ordinal));
        string[] answers = [.. procs.GetProperty("responses_and_flushes").EnumerateArray().Select(e => e.GetProperty("descriptor (decoded)").GetString()!)];
        Assert.Equal(2, answers.Count(a => a.StartsWith("page group response", StringComparison.Ordinal) && a.EndsWith(": Success", StringComparison.Ordinal)));
        Assert.Equal(3, answers.Count(a => a.StartsWith("page group response", StringComparison.Ordinal) && a.EndsWith(": Invalid Request", StringComparison.Ordinal)));
        Assert.Contains(answers, a => a.StartsWith("PASID device-TLB invalidate 00:05.0 PASID 1: page 0x7f0000001000", StringComparison.Ordinal));
        Assert.Equal(["Success", "Success", "PageRequestFailed", "PageRequestFailed"], procs.GetProperty("descriptors").EnumerateArray().Select(e => e.GetProperty("status").GetString()));
        Assert.Equal([1u, 2u], facts.GetProperty("processes.pasids").EnumerateArray().Select(p => p.GetUInt32()));

        JsonElement faults = root.GetProperty("sections")[3].GetProperty("tables").GetProperty("faults");
        Assert.Equal(["0x86", "0x85"], faults.EnumerateArray().Select(f => f.GetProperty("reason").GetString()));
        Assert.Equal(["2", "3"], faults.EnumerateArray().Select(f => f.GetProperty("PASID").GetString()));

        JsonElement path = root.GetProperty("sections")[4].GetProperty("tables").GetProperty("path");
        Assert.Equal(["root entry", "context entry (scalable)", "PASID directory entry", "PASID table entry", "PML4E", "PDPE", "PDE", "PTE"],
            path.EnumerateArray().Select(e => e.GetProperty("structure").GetString()));

        (int legacyExit, string legacyJson) = Tour("--legacy", "--json");
        Assert.True(legacyExit == 0, legacyJson);
        using JsonDocument legacy = JsonDocument.Parse(legacyJson);
        Assert.Equal("legacy", legacy.RootElement.GetProperty("mode").GetString());
        Assert.Equal(-1, legacy.RootElement.GetProperty("facts").GetProperty("legacy.aux_attach_errno").GetInt32()); // -EPERM
    }

    [Fact]
    public void The_first_level_tour_puts_aux_domains_on_first_level_tables_and_decodes_them()
    {
        (int exit, string text) = Tour("--first-level");

        Assert.True(exit == 0, text);
        AssertFits(text, "--first-level");
        Assert.DoesNotContain("UNEXPECTED", text, StringComparison.Ordinal);
        Assert.Contains("[ok] ECAP.FLTS on every unit: 5.15's rule makes every new domain first level", text, StringComparison.Ordinal);
        Assert.Contains("[ok] every guest's domain is first level", text, StringComparison.Ordinal);
        Assert.Contains("guest A: hello via PASID 1", text, StringComparison.Ordinal);
        Assert.Matches(@"B reads A's IOVA\s+0000:00:04\.0\s+2\s+B\s+read\s+0x40000000\s+0x71", text);
        Assert.Matches(@"C writes unmapped IOVA\s+0000:00:04\.0\s+3\s+C\s+write\s+0x70000000\s+0x71", text);
        Assert.Matches(@"PGTT=first-level DID \d+ FLPM 4-level, FLPTR 0x[0-9a-f]+ SRE WPE", text);
        Assert.Matches(@"PTE\s+257\s+0x[0-9a-f]+\s+0x8000000[0-9a-f]{9}\s+P RW US A D XD leaf: 4K page @0x[0-9a-f]+", text);
        Assert.Matches(@"\n  0\s+first-level\s+\d+\s+0x[0-9a-f]+\s+4-level\s+-\s+RID_PASID", text);
        Assert.Matches(@"\n  1\s+first-level\s+\d+\s+0x[0-9a-f]+\s+4-level\s+SRE WPE\s+guest A's aux domain", text);
        Assert.Contains("first-level-table", text, StringComparison.Ordinal);
        Assert.DoesNotContain(" page-table", text, StringComparison.Ordinal);

        (int jexit, string json) = Tour("--first-level", "--json");
        Assert.True(jexit == 0, json);
        using JsonDocument doc = JsonDocument.Parse(json);
        JsonElement root = doc.RootElement;
        Assert.True(root.GetProperty("ok").GetBoolean());
        Assert.True(root.GetProperty("facts").GetProperty("unit.first_level").GetBoolean());
        JsonElement path = root.GetProperty("sections")[4].GetProperty("tables").GetProperty("path");
        Assert.Equal(["root entry", "context entry (scalable)", "PASID directory entry", "PASID table entry", "PML4E", "PDPE", "PDE", "PTE"],
            path.EnumerateArray().Select(e => e.GetProperty("structure").GetString()));
        Assert.StartsWith("PGTT=first-level", path[3].GetProperty("meaning").GetString(), StringComparison.Ordinal);
        JsonElement pasids = root.GetProperty("sections")[4].GetProperty("tables").GetProperty("pasid_table");
        Assert.Equal(["-", "SRE WPE", "SRE WPE", "SRE WPE"], pasids.EnumerateArray().Select(e => e.GetProperty("flags").GetString()));
        Assert.Equal(["0x71", "0x71"], root.GetProperty("sections")[3].GetProperty("tables").GetProperty("faults")
            .EnumerateArray().Select(f => f.GetProperty("reason").GetString()));
    }

    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public void The_pasid_attach_tour_attaches_each_adis_domain_to_a_global_pasid(bool firstLevel)
    {
        string[] args = firstLevel ? ["--pasid-attach", "--first-level"] : ["--pasid-attach"];
        (int exit, string text) = Tour(args);

        Assert.True(exit == 0, text);
        AssertFits(text, string.Join(' ', args));
        Assert.DoesNotContain("UNEXPECTED", text, StringComparison.Ordinal);
        Assert.Contains("[ok] PASID attach (6.2): nothing enables IOMMU_DEV_FEAT_AUX", text, StringComparison.Ordinal);
        Assert.Contains("[ok] ADI 1: PASID 1 from iommu_alloc_global_pasid(0000:00:04.0)", text, StringComparison.Ordinal);
        Assert.Contains("[ok] guest A: PASID 1 from iommu_alloc_global_pasid at create; on open", text, StringComparison.Ordinal);
        Assert.Contains("three PASID-attached domains on one parent, three PASIDs: 1, 2, 3", text, StringComparison.Ordinal);
        Assert.Contains("guest B: hello via PASID 2", text, StringComparison.Ordinal);
        Assert.Contains("[ok] PASID attach: close detached every ADI's PASID", text, StringComparison.Ordinal);
        Assert.Matches(firstLevel ? "PGTT=first-level DID \\d+ FLPM" : "PGTT=second-level DID \\d+ AW", text);
        Assert.Matches($@"B reads A's IOVA\s+0000:00:04\.0\s+2\s+B\s+read\s+0x40000000\s+{(firstLevel ? "0x71" : "0x86")}", text);

        (int jexit, string json) = Tour([.. args, "--json"]);
        Assert.True(jexit == 0, json);
        using JsonDocument doc = JsonDocument.Parse(json);
        JsonElement facts = doc.RootElement.GetProperty("facts");
        Assert.True(facts.GetProperty("pasid_attach").GetBoolean());
        Assert.Equal(firstLevel, facts.GetProperty("unit.first_level").GetBoolean());
        Assert.Equal([1u, 2u, 3u], facts.GetProperty("pasids").EnumerateArray().Select(p => p.GetUInt32()));
        Assert.Equal(49, facts.GetProperty("metrics.iommu.mapped.pages").GetInt64()); // mapped by the owner, not type1
        Assert.Equal(2, facts.GetProperty("pages.pinned").GetInt64()); // only the mtty's vendor pins
    }

    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public void Each_section_prints_alone_and_every_output_line_fits_100_columns(bool legacy)
    {
        string[] mode = legacy ? ["--legacy"] : [];
        (int exit, string all) = Tour(mode);
        Assert.True(exit == 0, all);
        AssertFits(all, "the whole tour");
        Assert.Contains("docs/concepts.md", all.Split('\n')[1], StringComparison.Ordinal);

        for (int n = 1; n <= 7; n++)
        {
            (int e, string text) = Tour([.. mode, "--section", $"{n}"]);
            Assert.True(e == 0, text);
            AssertFits(text, $"section {n}");
            string[] headings = [.. text.Split('\n').Where(l => l.StartsWith("== ", StringComparison.Ordinal))];
            Assert.Equal([$"== {n}. "], headings.Select(h => h[..(h.IndexOf('.', StringComparison.Ordinal) + 2)]));
            Assert.Matches($@"All \d+ checks of section {n} behaved as the kernel does\.", text);
            Assert.Contains(headings[0], all, StringComparison.Ordinal);
        }

        (int json, string one) = Tour([.. mode, "--json", "--section", "5"]);
        Assert.Equal(0, json);
        using JsonDocument doc = JsonDocument.Parse(one);
        Assert.Equal([5], doc.RootElement.GetProperty("sections").EnumerateArray().Select(s => s.GetProperty("number").GetInt32()));
    }

    [Fact]
    public void The_tours_source_lines_fit_100_columns()
    {
        string dir = Path.Combine(RepoPaths.Root, "samples", "AuxDomainTour");
        string[] wide = [.. Directory.GetFiles(dir, "*.cs").SelectMany(f => File.ReadAllLines(f)
            .Select((l, i) => (Line: l, At: $"{Path.GetFileName(f)}:{i + 1}")))
            .Where(x => x.Line.Length > 100).Select(x => $"{x.At} ({x.Line.Length})")];
        Assert.True(wide.Length == 0, string.Join(", ", wide));
    }

    [Fact]
    public void The_graph_option_writes_the_parents_structures_as_dot()
    {
        string path = Path.Combine(Path.GetTempPath(), $"tour-{Guid.NewGuid():N}.dot");
        try
        {
            (int exit, string text) = Tour("--graph", path, "--section", "5");
            Assert.True(exit == 0, text);
            Assert.Contains($"written to {path}", text.ReplaceLineEndings(" ").Replace("    ", "", StringComparison.Ordinal), StringComparison.Ordinal);
            string dot = File.ReadAllText(path);
            Assert.StartsWith("digraph vtd {", dot, StringComparison.Ordinal);
            Assert.Contains("requester 0x0020 (00:04.0), every PASID, scalable mode", dot, StringComparison.Ordinal);
            foreach (string pasid in (string[])["PASID 0 (RID_PASID): PGTT=second-level", "PASID 1: PGTT=second-level", "PASID 2: ", "PASID 3: "])
            {
                Assert.Contains(pasid, dot, StringComparison.Ordinal);
            }

            // Guest A's RAM (16 pages at IOVA 1 MiB) and its secret page are leaf ranges of the graph.
            Assert.Matches(@"0x10_0000–0x10_[0-9A-F]{4} → 0x1_[0-9A-F_]+ RW \(\d+ × 4K\)", dot);
            Assert.Contains("0x4000_0000–0x4000_0FFF → ", dot, StringComparison.Ordinal);
        }
        finally
        {
            File.Delete(path);
        }
    }

    private static void AssertFits(string text, string what)
    {
        string[] wide = [.. text.Split('\n').Select(l => l.TrimEnd('\r')).Where(l => l.Length > 100)];
        Assert.True(wide.Length == 0, $"{what}: {wide.Length} lines wider than 100 columns:\n{string.Join('\n', wide)}");
    }

    [Fact]
    public void Help_and_bad_options()
    {
        (int exit, string text) = Tour("--help");
        Assert.Equal(0, exit);
        Assert.Contains("--legacy", text, StringComparison.Ordinal);
        Assert.Contains("--json", text, StringComparison.Ordinal);
        Assert.Contains("--first-level", text, StringComparison.Ordinal);
        Assert.Contains("--pasid-attach", text, StringComparison.Ordinal);
        Assert.Equal(2, Tour("--legacy", "--first-level").Exit);
        Assert.Equal(2, Tour("--legacy", "--pasid-attach").Exit);

        (int bad, _) = Tour("--nope");
        Assert.Equal(2, bad);
        Assert.Contains("--section N", text, StringComparison.Ordinal);
        Assert.Contains("--graph FILE", text, StringComparison.Ordinal);
        Assert.Equal(2, Tour("--section", "8").Exit);
        Assert.Equal(2, Tour("--section", "x").Exit);
        Assert.Equal(2, Tour("--section").Exit);
        Assert.Equal(2, Tour("--graph").Exit);
    }
}
