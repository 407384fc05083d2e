namespace Iommu.Integration.Tests;

public sealed class KernelMapTests
{
    private static string MapPath => Path.Combine(RepoPaths.Root, "docs", "kernel-map.md");

    [Fact]
    public void Kernel_map_lists_every_KernelSymbol_member_exactly()
    {
        string expected = KernelMap.Render(KernelMap.Collect());
        if (Environment.GetEnvironmentVariable("IOMMU_UPDATE_DOCS") == "1")
        {
            File.WriteAllText(MapPath, expected);
        }

        string actual = File.Exists(MapPath) ? File.ReadAllText(MapPath).ReplaceLineEndings("\n") : string.Empty;
        var want = expected.Split('\n').ToHashSet(StringComparer.Ordinal);
        var have = actual.Split('\n').ToHashSet(StringComparer.Ordinal);
        string[] missing = want.Except(have).Where(l => l.StartsWith('|')).ToArray();
        string[] stale = have.Except(want).Where(l => l.StartsWith('|')).ToArray();

        Assert.True(
            missing.Length == 0 && stale.Length == 0 && expected == actual,
            $"docs/kernel-map.md is out of date (regenerate with IOMMU_UPDATE_DOCS=1).\nMissing:\n{string.Join('\n', missing)}\nStale:\n{string.Join('\n', stale)}");
    }

    [Fact]
    public void Every_row_has_a_behaviour_and_crefs_read_as_member_names()
    {
        IReadOnlyList<KernelMap.Row> rows = KernelMap.Collect();

        string[] empty = rows.Where(r => string.IsNullOrWhiteSpace(r.Summary)).Select(r => $"{r.Symbol} ({r.Member})").ToArray();
        Assert.True(empty.Length == 0, $"rows without a behaviour: {string.Join(", ", empty)}");

        // A cref flattened from its doc id must not leak parameter lists, by-ref markers or namespaces.
        string[] mangled = rows.Where(r => r.Summary.Contains("@)", StringComparison.Ordinal)
                || r.Summary.Contains("System.", StringComparison.Ordinal) || r.Summary.Contains("Iommu.Domains.", StringComparison.Ordinal)
                || System.Text.RegularExpressions.Regex.IsMatch(r.Summary, @"\b[TMPFE]:"))
            .Select(r => $"{r.Symbol}: {r.Summary}").ToArray();
        Assert.True(mangled.Length == 0, string.Join("\n", mangled));
        Assert.Contains(rows, r => r.Symbol == "iommu_unmap_fast" && r.Summary.StartsWith("IommuCore.Unmap without the final flush", StringComparison.Ordinal));
        Assert.Contains(rows, r => r.Symbol == "intel_iommu_attach_device" && r.Summary.Contains("(attach_dev)", StringComparison.Ordinal));
    }

    [Fact]
    public void Core_api_members_mirror_kernel_functions()
    {
        // The kernel functions the issue names must each be present and attributed.
        string[] required =
        [
            "iommu_domain_alloc", "iommu_domain_free", "iommu_attach_device", "iommu_detach_device", "iommu_attach_group",
            "iommu_detach_group", "iommu_get_domain_for_dev", "iommu_map", "iommu_unmap", "iommu_iova_to_phys",
            "iommu_get_dev_attr", "iommu_set_dev_attr", "iommu_domain_get_attr", "iommu_attach_device_aux",
            "iommu_detach_device_aux", "iommu_dev_has_feature", "iommu_dev_enable_feature", "iommu_dev_disable_feature",
            "iommu_dev_feature_enabled", "iommu_aux_attach_device", "iommu_aux_detach_device", "iommu_aux_get_pasid",
            "iommu_set_fault_handler", "report_iommu_fault", "iommu_register_device_fault_handler",
            "iommu_unregister_device_fault_handler", "iommu_report_device_fault", "bus_set_iommu", "pci_device_group",
            "iommu_ops.aux_attach_dev", "iommu_ops.map_pages", "iommu_ops.get_dev_attr",
        ];
        var symbols = KernelMap.Collect().Select(r => r.Symbol).ToHashSet(StringComparer.Ordinal);

        string[] absent = required.Where(s => !symbols.Contains(s)).ToArray();
        Assert.True(absent.Length == 0, $"No [KernelSymbol] for: {string.Join(", ", absent)}");
    }

    [Fact]
    public void Every_public_IommuCore_method_names_its_kernel_symbol()
    {
        var unattributed = typeof(IommuCore)
            .GetMethods(System.Reflection.BindingFlags.Public | System.Reflection.BindingFlags.Instance | System.Reflection.BindingFlags.Static | System.Reflection.BindingFlags.DeclaredOnly)
            .Where(m => !m.IsSpecialName && m.GetCustomAttributes(typeof(KernelSymbolAttribute), false).Length == 0)
            .Select(m => m.Name)
            .ToArray();

        Assert.Empty(unattributed);
    }
}
