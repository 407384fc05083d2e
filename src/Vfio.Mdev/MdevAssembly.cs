namespace Vfio.Mdev;

/// <summary>Anchor type that names the Vfio.Mdev assembly (for reflection over the library, e.g. the kernel-map generator).</summary>
public static class MdevAssembly
{
    /// <summary>The assembly's informational version.</summary>
    public static string Version { get; } =
        typeof(MdevAssembly).Assembly.GetName().Version?.ToString() ?? "0.0.0";
}
