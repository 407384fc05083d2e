using Iommu.Domains;

namespace Iommu;

/// <summary>
/// The optional batched <c>map_pages</c>/<c>unmap_pages</c> callbacks of <see cref="IIommuOps"/> (5.15),
/// which the core prefers to <see cref="IIommuMapOps"/>.
/// </summary>
public interface IIommuMapPagesOps
{
    /// <summary>
    /// Maps <paramref name="pgcount"/> pages of <paramref name="pgsize"/> (<c>map_pages</c>, 5.15),
    /// reporting in <paramref name="mapped"/> the bytes actually mapped, also when it fails.
    /// </summary>
    /// <param name="domain">The domain.</param>
    /// <param name="iova">First IOVA, aligned to <paramref name="pgsize"/>.</param>
    /// <param name="paddr">First physical address, aligned to <paramref name="pgsize"/>.</param>
    /// <param name="pgsize">Page size, one of the domain's.</param>
    /// <param name="pgcount">Number of pages.</param>
    /// <param name="prot">Protection.</param>
    /// <param name="mapped">Bytes mapped.</param>
    /// <returns>0 or an errno.</returns>
    [KernelSymbol("iommu_ops.map_pages")]
    Errno MapPages(IDomain domain, ulong iova, ulong paddr, ulong pgsize, ulong pgcount, IommuProt prot, out ulong mapped);

    /// <summary>Unmaps <paramref name="pgcount"/> pages of <paramref name="pgsize"/> (<c>unmap_pages</c>, 5.15).</summary>
    /// <param name="domain">The domain.</param>
    /// <param name="iova">First IOVA.</param>
    /// <param name="pgsize">Page size.</param>
    /// <param name="pgcount">Number of pages.</param>
    /// <param name="gather">Range to flush later.</param>
    /// <returns>Bytes unmapped.</returns>
    [KernelSymbol("iommu_ops.unmap_pages")]
    ulong UnmapPages(IDomain domain, ulong iova, ulong pgsize, ulong pgcount, ref IommuIotlbGather gather);
}
