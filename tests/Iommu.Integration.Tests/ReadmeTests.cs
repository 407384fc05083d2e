namespace Iommu.Integration.Tests;

public sealed class ReadmeTests
{
    // The quick start's copy is checked with every other snippet (DocSnippetTests).
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
