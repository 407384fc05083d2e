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
        Assert.Equal(6, root.GetProperty("sections").GetArrayLength());
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
        Assert.Contains(root.GetProperty("sections")[5].GetProperty("tables").GetProperty("metrics").EnumerateArray(),
            r => r.GetProperty("instrument").GetString() == "iommu.map.operations" && r.GetProperty("unit").GetString() == "{operation}");

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
    public void Help_and_bad_options()
    {
        (int exit, string text) = Tour("--help");
        Assert.Equal(0, exit);
        Assert.Contains("--legacy", text, StringComparison.Ordinal);
        Assert.Contains("--json", text, StringComparison.Ordinal);

        (int bad, _) = Tour("--nope");
        Assert.Equal(2, bad);
    }
}
