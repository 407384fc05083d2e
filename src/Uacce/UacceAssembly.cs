namespace Uacce;

/// <summary>Anchor type that names the Uacce assembly (for reflection over the library, e.g. the kernel-map generator).</summary>
public static class UacceAssembly
{
    /// <summary>The assembly's informational version.</summary>
    public static string Version { get; } =
        typeof(UacceAssembly).Assembly.GetName().Version?.ToString() ?? "0.0.0";
}
