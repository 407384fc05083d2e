namespace Vfio.Type1;

/// <summary>Anchor type that names the Vfio.Type1 assembly (for reflection over the library, e.g. the kernel-map generator).</summary>
public static class Type1Assembly
{
    /// <summary>The assembly's informational version.</summary>
    public static string Version { get; } =
        typeof(Type1Assembly).Assembly.GetName().Version?.ToString() ?? "0.0.0";
}
