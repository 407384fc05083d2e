namespace Iommu.VtD;

/// <summary>Anchor type that names the Iommu.VtD assembly (for reflection over the library, e.g. the kernel-map generator).</summary>
public static class VtdAssembly
{
    /// <summary>The assembly's informational version.</summary>
    public static string Version { get; } =
        typeof(VtdAssembly).Assembly.GetName().Version?.ToString() ?? "0.0.0";
}
