using System.Text.RegularExpressions;
using System.Xml.Linq;

namespace Iommu.Integration.Tests;

/// <summary>
/// Every C# (and XML) code block of the README, each PACKAGE.md, the vendor-driver guide, the embedding, image-format,
/// metrics and SVA pages is a copy of
/// compiled code: the line above it, <c>&lt;!-- snippet: path[#name] --&gt;</c>, names a file (whole) or the
/// regions between <c>// snippet-begin: name</c> and <c>// snippet-end: name</c> in it (each dedented, joined
/// by a blank line), and the block must equal that text. The files are built with the solution and run:
/// samples/Snippets here (PACKAGE.md and the four pages), the guide's files by tests/VendorDriverGuide.Tests and eng/check-packages.sh.
/// </summary>
[Collection(ConsoleSamples.Name)]
public sealed partial class DocSnippetTests
{
    public static TheoryData<string> Documents()
    {
        var data = new TheoryData<string>
        {
            "README.md", "docs/vendor-mdev-driver.md", "docs/embedding-vtd.md", "docs/vtd-image-format.md", "docs/metrics.md", "docs/sva-and-pasid.md",
        };
        foreach (string lib in new[] { "Iommu.Core", "Iommu.VtD", "Vfio.Mdev", "Vfio.Type1", "Uacce" })
        {
            data.Add($"src/{lib}/PACKAGE.md");
        }

        return data;
    }

    [Theory]
    [MemberData(nameof(Documents))]
    public void Every_code_block_is_the_compiled_file_it_names(string document)
    {
        string[] lines = Read(document).Split('\n');
        int blocks = 0;
        var problems = new List<string>();
        for (int i = 0; i < lines.Length; i++)
        {
            Match fence = Fence().Match(lines[i]);
            if (!fence.Success)
            {
                continue;
            }

            int end = Array.FindIndex(lines, i + 1, l => l.TrimEnd() == "```");
            Assert.True(end > i, $"{document}:{i + 1}: unterminated code block");
            string language = fence.Groups[1].Value;
            string body = string.Join('\n', lines[(i + 1)..end]);
            Match marker = i > 0 ? Marker().Match(lines[i - 1]) : Match.Empty;
            if (language is "csharp" or "cs" or "xml")
            {
                blocks++;
                if (!marker.Success)
                {
                    problems.Add($"{document}:{i + 1}: a {language} block without a <!-- snippet: file --> line above it");
                }
                else if (Snippet(marker.Groups[1].Value) is not string expected)
                {
                    problems.Add($"{document}:{i + 1}: {marker.Groups[1].Value} names no file or region");
                }
                else if (expected != body)
                {
                    problems.Add($"{document}:{i + 1}: differs from {marker.Groups[1].Value}; it should read:\n{expected}");
                }
            }

            i = end;
        }

        Assert.True(blocks > 0, $"{document} has no code block");
        Assert.True(problems.Count == 0, string.Join("\n\n", problems));
    }

    [Fact]
    public void The_package_snippets_run_and_do_what_their_text_says()
    {
        (int exit, string output) = ConsoleSamples.RunSample("Snippets");
        Assert.True(exit == 0, output);
        Assert.Contains("every snippet behaved", output, StringComparison.Ordinal);
    }

    [Fact]
    public void The_guide_project_references_only_packages_the_test_projects_already_use()
    {
        var central = XDocument.Load(Path.Combine(RepoPaths.Root, "Directory.Packages.props")).Descendants("PackageVersion")
            .ToDictionary(e => (string)e.Attribute("Include")!, e => (string)e.Attribute("Version")!, StringComparer.Ordinal);
        string[] ours = ["Iommu.Core", "Iommu.VtD", "Vfio.Mdev", "Vfio.Type1"];
        foreach (XElement r in XDocument.Load(Path.Combine(RepoPaths.Root, "eng", "vendor-driver", "AcmeWq.Tests.csproj")).Descendants("PackageReference"))
        {
            string id = (string)r.Attribute("Include")!, version = (string)r.Attribute("Version")!;
            if (!ours.Contains(id))
            {
                Assert.True(central.TryGetValue(id, out string? v) && v == version, $"{id} {version} is not the version the repository's tests restore ({v ?? "none"})");
            }
        }
    }

    /// <summary>The text a snippet marker names, or null.</summary>
    internal static string? Snippet(string spec)
    {
        string[] parts = spec.Split('#', 2);
        string path = Path.Combine(RepoPaths.Root, parts[0]);
        if (!File.Exists(path))
        {
            return null;
        }

        string[] lines = Read(parts[0]).TrimEnd('\n').Split('\n');
        if (parts.Length == 1)
        {
            return string.Join('\n', lines);
        }

        var regions = new List<string>();
        List<string>? current = null;
        foreach (string line in lines)
        {
            string t = line.Trim();
            if (t == $"// snippet-begin: {parts[1]}")
            {
                current = [];
            }
            else if (t == $"// snippet-end: {parts[1]}" && current is not null)
            {
                regions.Add(Dedent(current));
                current = null;
            }
            else
            {
                current?.Add(line);
            }
        }

        return regions.Count == 0 ? null : string.Join("\n\n", regions);
    }

    private static string Dedent(List<string> lines)
    {
        string[] l = [.. lines.SkipWhile(string.IsNullOrWhiteSpace).Reverse().SkipWhile(string.IsNullOrWhiteSpace).Reverse()];
        int indent = l.Where(s => s.Trim().Length > 0).Min(s => s.Length - s.TrimStart().Length);
        return string.Join('\n', l.Select(s => s.Trim().Length > 0 ? s[indent..] : ""));
    }

    private static string Read(string relative) => File.ReadAllText(Path.Combine(RepoPaths.Root, relative)).ReplaceLineEndings("\n");

    [GeneratedRegex(@"^```(\w*)\s*$")]
    private static partial Regex Fence();

    [GeneratedRegex(@"^<!-- snippet: (\S+) -->\s*$")]
    private static partial Regex Marker();
}
