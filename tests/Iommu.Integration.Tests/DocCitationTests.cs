using System.Text.RegularExpressions;

namespace Iommu.Integration.Tests;

/// <summary>Comments and XML docs cite what a user can look up: kernel functions and uAPIs, not numbered sections of documents they do not have.</summary>
public sealed partial class DocCitationTests
{
    [Fact]
    public void Sources_cite_no_numbered_spec_sections()
    {
        var hits = new List<string>();
        foreach (string file in Directory.EnumerateFiles(Path.Combine(RepoPaths.Root, "src"), "*.*", SearchOption.AllDirectories))
        {
            if (!(file.EndsWith(".cs", StringComparison.Ordinal) || file.EndsWith(".md", StringComparison.Ordinal))
                || file.Contains($"{Path.DirectorySeparatorChar}obj{Path.DirectorySeparatorChar}", StringComparison.Ordinal)
                || file.Contains($"{Path.DirectorySeparatorChar}bin{Path.DirectorySeparatorChar}", StringComparison.Ordinal))
            {
                continue;
            }

            string[] lines = File.ReadAllLines(file);
            for (int i = 0; i < lines.Length; i++)
            {
                if (SectionCitation().IsMatch(lines[i]))
                {
                    hits.Add($"{Path.GetRelativePath(RepoPaths.Root, file)}:{i + 1}: {lines[i].Trim()}");
                }
            }
        }

        Assert.True(hits.Count == 0, "cite the kernel function or uAPI (or a VT-d spec chapter by title) instead:\n" + string.Join('\n', hits));
    }

    // "§4.6", "spec 6.5.3.3", "section 9.1", "Table 13".
    [GeneratedRegex(@"§|\bspec(ification)?\s+\d+\.\d+|\b[Ss]ection\s+\d|\bTable\s+\d+", RegexOptions.CultureInvariant)]
    private static partial Regex SectionCitation();
}
