namespace Iommu;

/// <summary>
/// Names the Linux kernel symbol (function, callback, structure or constant) that a member mirrors.
/// <c>docs/kernel-map.md</c> is generated from these attributes and a test keeps it in step.
/// </summary>
[AttributeUsage(AttributeTargets.Method | AttributeTargets.Property | AttributeTargets.Class | AttributeTargets.Struct
    | AttributeTargets.Interface | AttributeTargets.Enum | AttributeTargets.Field | AttributeTargets.Constructor
    | AttributeTargets.Delegate, AllowMultiple = true, Inherited = false)]
public sealed class KernelSymbolAttribute : Attribute
{
    /// <summary>Creates the attribute.</summary>
    /// <param name="symbol">The kernel symbol, e.g. <c>iommu_attach_device_aux</c> or <c>iommu_ops.aux_attach_dev</c>.</param>
    public KernelSymbolAttribute(string symbol)
    {
        Symbol = symbol;
    }

    /// <summary>The kernel symbol.</summary>
    public string Symbol { get; }

    /// <summary>Kernel version where the symbol comes from when it is not 5.15 (e.g. "seed v4", "5.10").</summary>
    public string? Version { get; init; }
}
