namespace Iommu.Integration.Tests;

public sealed class ReadmeTests
{
    [Fact]
    public void Readme_quick_start_is_the_compiled_sample_code()
    {
        string source = File.ReadAllText(Path.Combine(RepoPaths.Root, "samples", "CoreTour", "QuickStart.cs")).ReplaceLineEndings("\n");
        int begin = source.IndexOf("// quick-start-begin\n", StringComparison.Ordinal);
        int end = source.IndexOf("        // quick-start-end", StringComparison.Ordinal);
        Assert.True(begin >= 0 && end > begin, "QuickStart.cs lost its markers");
        string body = string.Join('\n', source[(begin + "// quick-start-begin\n".Length)..end]
            .TrimEnd('\n').Split('\n').Select(l => l.Length >= 8 ? l[8..] : l.TrimStart()));

        string readme = File.ReadAllText(Path.Combine(RepoPaths.Root, "README.md")).ReplaceLineEndings("\n");

        Assert.Contains(body, readme, StringComparison.Ordinal);
    }

    [Fact]
    public void Readme_names_the_commands_ci_runs()
    {
        string readme = File.ReadAllText(Path.Combine(RepoPaths.Root, "README.md"));
        string ci = File.ReadAllText(Path.Combine(RepoPaths.Root, ".ci", "run"));
        string testCommand = readme.Split('\n').Select(l => l.Trim()).First(l => l.StartsWith("dotnet test ", StringComparison.Ordinal));

        Assert.Contains(testCommand, ci, StringComparison.Ordinal);
        Assert.Contains("dotnet run --project samples/", readme, StringComparison.Ordinal);
    }
}
