namespace Iommu;

/// <summary>The optional <c>capable</c> callback of <see cref="IIommuOps"/>: without it no capability is reported.</summary>
public interface IIommuCapableOps
{
    /// <summary>Bus-wide capability test (<c>capable</c>).</summary>
    /// <param name="cap">The capability.</param>
    /// <returns>Whether the IOMMU provides it.</returns>
    [KernelSymbol("iommu_ops.capable")]
    bool Capable(IommuCap cap);
}
