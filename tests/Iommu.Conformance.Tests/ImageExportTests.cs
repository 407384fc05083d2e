using Iommu.Conformance.Tests.Scenarios;
using Iommu.VtD.Diagnostics;
using Iommu.VtD.Hardware;

namespace Iommu.Conformance.Tests;

/// <summary>The export, relocation, probes and JSON, checked against the driver's own view (no QEMU needed).</summary>
public sealed class ImageExportTests
{
    public static TheoryData<string> ScenarioNames() => [.. ScenarioCatalog.Names];

    [Theory]
    [MemberData(nameof(ScenarioNames))]
    public void Model_on_the_exported_relocated_image_agrees_with_the_driver(string name)
    {
        using ConformanceScenario s = ScenarioCatalog.Build(name);
        int compared = CompareWithDriver(s.Build());
        Assert.True(compared > 20, $"only {compared} probes compared");
    }

    /// <summary>
    /// The random QEMU scenarios (hot-remove and replug, DMA_FQ unmaps, caching mode, domains of a 3-level unit, block
    /// unmaps that free tables): the model on each exported image agrees with the driver's own view, so a context entry
    /// the driver forgot to clear (QEMU would walk it the same way) is caught here, without QEMU.
    /// </summary>
    [Theory]
    [InlineData("legacy-4level")]
    [InlineData("legacy-3level")]
    [InlineData("scalable-4level")]
    [InlineData("scalable-3level")]
    public void Model_on_random_scenario_images_agrees_with_the_driver(string config)
    {
        int compared = 0;
        for (int seed = 0; seed < 40; seed++)
        {
            (ConformanceScenario s, List<string> log) = RandomConformanceScenario.Build(config, seed, 20);
            using (s)
            {
                try
                {
                    compared += CompareWithDriver(s.Build());
                }
                catch (Exception e) when (e is Xunit.Sdk.XunitException)
                {
                    throw new Xunit.Sdk.XunitException($"{config} seed {seed}: {e.Message}\n  {string.Join("\n  ", log)}");
                }
            }
        }

        Assert.True(compared > 1000, $"only {compared} probes compared");
    }

    /// <summary>Every probe the driver has a view of: translated to the page iova_to_phys names when the mapping allows the access, a fault otherwise.</summary>
    internal static int CompareWithDriver(IReadOnlyList<ScenarioPhase> phases)
    {
        int compared = 0;
        foreach (ScenarioPhase phase in phases)
        {
            for (int i = 0; i < phase.Image.Probes.Count; i++)
            {
                if (phase.Driver[i] is not DriverView v)
                {
                    continue;
                }

                VtdProbeResult r = phase.Image.Probes[i];
                bool allowed = r.Probe.Access == DmaAccess.Write ? v.Writable : v.Readable;
                string what = $"[{phase.Name}] {ConformanceScenario.Bdf(r.Probe.RequesterId)} {r.Probe.Access} 0x{r.Probe.Iova:x}: model {ConformanceRunner.Describe(r)}, driver 0x{v.PhysicalAddress:x}";
                if (v.PhysicalAddress != 0 && allowed && v.PhysicalAddress is < 0xFEE0_0000 or > 0xFEEF_FFFF)
                {
                    Assert.True(r.IsTranslated && r.PhysicalAddress == v.PhysicalAddress, what);
                }
                else
                {
                    Assert.True(r.IsFault, what);
                }

                compared++;
            }
        }

        return compared;
    }

    [Theory]
    [MemberData(nameof(ScenarioNames))]
    public void Relocation_changes_no_outcome_and_moves_every_structure_into_the_window(string name)
    {
        using ConformanceScenario s = ScenarioCatalog.Build(name);
        VtdImage original = s.Driver.ExportImage();
        VtdImage moved = original.Relocate(ConformanceScenario.WindowBase, ConformanceScenario.WindowSize);
        Assert.All(moved.Chunks, c => Assert.InRange(c.Address, ConformanceScenario.WindowBase, ConformanceScenario.WindowBase + ConformanceScenario.WindowSize - (ulong)c.Size));
        Assert.Equal(original.Chunks.Select(c => (c.Kind, c.Level, c.Size)), moved.Chunks.Select(c => (c.Kind, c.Level, c.Size)));
        Assert.True(original.Chunks[0].Address >= 7 * Sizes.GiB, "the driver's tables live at the top of memory before relocation");

        var probes = new List<VtdProbe>();
        foreach (IReadOnlyList<ulong> points in s.Points.Values)
        {
            foreach (ushort rid in s.Requesters.Select(r => r.RequesterId))
            {
                foreach (ulong iova in points)
                {
                    probes.Add(new VtdProbe(rid, null, iova, DmaAccess.Read));
                    probes.Add(new VtdProbe(rid, null, iova, DmaAccess.Write));
                }
            }
        }

        VtdImage a = original.Probe(s.Config, probes, s.Platform.Memory.Size);
        VtdImage b = moved.Probe(s.Config, probes, s.Platform.Memory.Size);
        Assert.Equal(a.Probes, b.Probes);
        Assert.Contains(a.Probes, p => p.IsTranslated);

        // The live unit, which translated through the same tables, agrees too (first request of each probe).
        foreach (VtdProbeResult r in a.Probes.Where(p => p.IsTranslated))
        {
            VtdTranslation live = s.Unit.Translate(r.Probe.RequesterId, r.Probe.Pasid, r.Probe.Iova, 8, r.Probe.Access);
            Assert.Equal(r.PhysicalAddress, live.PhysicalAddress);
        }
    }

    [Theory]
    [MemberData(nameof(ScenarioNames))]
    public void Export_walks_every_kind_of_structure_and_nothing_else(string name)
    {
        using ConformanceScenario s = ScenarioCatalog.Build(name);
        VtdImage img = s.Driver.ExportImage();
        Assert.Equal(s.Scalable ? VtdTranslationMode.Scalable : VtdTranslationMode.Legacy, img.Mode);
        Assert.True(img.TranslationEnabled);
        Assert.Single(img.Chunks, c => c.Kind == VtdImageChunkKind.RootTable);
        var kinds = img.Chunks.Select(c => c.Kind).ToHashSet();
        Assert.Contains(VtdImageChunkKind.PageTable, kinds);
        Assert.Contains(s.Scalable ? VtdImageChunkKind.PasidTable : VtdImageChunkKind.LegacyContextTable, kinds);
        Assert.Contains(img.Chunks, c => c.Kind == VtdImageChunkKind.PageTable && c.Level == 1);

        // Every chunk lies in the driver's table memory, and is a live frame of its allocator.
        Assert.All(img.Chunks, c => Assert.InRange(c.Address, s.Platform.Frames.RegionBase, s.Platform.Frames.RegionBase + s.Platform.Frames.RegionSize - 1));
        Assert.True(img.Chunks.Sum(c => (c.Size + 4095) / 4096) <= s.Platform.Frames.LiveFrames);
    }

    [Fact]
    public void Json_round_trips_an_image_with_probes()
    {
        using ConformanceScenario s = ScenarioCatalog.Build("scalable-4level");
        VtdImage img = s.Build()[0].Image;
        string json = img.ToJson();
        VtdImage back = VtdImageJson.FromJson(json);
        Assert.Equal(json, back.ToJson());
        Assert.Equal(img.RtAddr, back.RtAddr);
        Assert.Equal(img.Probes, back.Probes);
        Assert.Contains("\"format\": \"iommu-vtd-image\"", json, StringComparison.Ordinal);
        Assert.Throws<FormatException>(() => VtdImageJson.FromJson("{\"format\":\"other\",\"version\":1}"));
    }
}
