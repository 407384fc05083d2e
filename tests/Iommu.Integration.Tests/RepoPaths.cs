namespace Iommu.Integration.Tests;

internal static class RepoPaths
{
    /// <summary>The repository root: the nearest directory above the test binaries that holds Iommu.sln.</summary>
    public static string Root { get; } = FindRoot();

    private static string FindRoot()
    {
        for (DirectoryInfo? d = new(AppContext.BaseDirectory); d is not null; d = d.Parent)
        {
            if (File.Exists(Path.Combine(d.FullName, "Iommu.sln")))
            {
                return d.FullName;
            }
        }

        throw new InvalidOperationException($"No Iommu.sln above {AppContext.BaseDirectory}.");
    }
}
