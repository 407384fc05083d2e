namespace Iommu.Integration.Tests;

/// <summary>docs/concepts.md explains the words the README, the tour and the architecture use, and they link to it.</summary>
public sealed class ConceptsDocTests
{
    private static string Read(params string[] path) => File.ReadAllText(Path.Combine([RepoPaths.Root, .. path]));

    [Fact]
    public void Every_term_a_new_user_meets_has_a_glossary_row()
    {
        string doc = Read("docs", "concepts.md");
        string[] terms =
        [
            "DRHD", "AGAW", "ADI", "DVSEC", "RID_PASID", "PGTT", "SLPTPTR", "DID", "PDTS", "FPD", "SGN.x",
            "External domain", "mtty", "IOTLB", "Context cache", "PASID cache", "Aux domain", "mdev", "Scalable-IOV",
        ];

        string[] missing = [.. terms.Where(t => !doc.Contains($"| **{t}", StringComparison.Ordinal))];
        Assert.True(missing.Length == 0, $"no glossary row for: {string.Join(", ", missing)}");
        Assert.Contains("PASID directory", doc, StringComparison.Ordinal);
        Assert.Contains("IOTLB: (DID, PASID, page)", doc, StringComparison.Ordinal);
    }

    [Fact]
    public void The_readme_the_architecture_and_the_tour_link_to_it()
    {
        Assert.Contains("(docs/concepts.md)", Read("README.md"), StringComparison.Ordinal);
        Assert.Contains("(concepts.md)", Read("docs", "architecture.md"), StringComparison.Ordinal);
    }
}
