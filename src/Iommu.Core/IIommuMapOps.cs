using Iommu.Domains;

namespace Iommu;

/// <summary>
/// The optional one-page <c>map</c>/<c>unmap</c> callbacks of <see cref="IIommuOps"/>, the form before
/// 5.13; the core uses them only when the driver lacks <see cref="IIommuMapPagesOps"/>. Without either,
/// a map is -ENODEV and an unmap removes nothing.
/// </summary>
public interface IIommuMapOps
{
    /// <summary>
    /// Maps exactly one page of <paramref name="size"/> bytes, a size in the domain's bitmap with
    /// <paramref name="iova"/> and <paramref name="paddr"/> aligned to it (<c>map</c>).
    /// </summary>
    /// <param name="domain">The domain.</param>
    /// <param name="iova">IOVA.</param>
    /// <param name="paddr">Physical address.</param>
    /// <param name="size">Page size.</param>
    /// <param name="prot">Protection.</param>
    /// <returns>0 or an errno.</returns>
    [KernelSymbol("iommu_ops.map")]
    Errno Map(IDomain domain, ulong iova, ulong paddr, ulong size, IommuProt prot);

    /// <summary>
    /// Unmaps one page (<c>unmap</c>); returns the bytes unmapped, which may exceed
    /// <paramref name="size"/> when a larger page was there, or 0 when nothing could be unmapped.
    /// </summary>
    /// <param name="domain">The domain.</param>
    /// <param name="iova">IOVA.</param>
    /// <param name="size">Page size.</param>
    /// <param name="gather">Range to flush later.</param>
    /// <returns>Bytes unmapped.</returns>
    [KernelSymbol("iommu_ops.unmap")]
    ulong Unmap(IDomain domain, ulong iova, ulong size, ref IommuIotlbGather gather);
}
