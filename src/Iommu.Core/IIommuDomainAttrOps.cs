using Iommu.Domains;

namespace Iommu;

/// <summary>
/// The optional <c>domain_get_attr</c> callback of <see cref="IIommuOps"/> (5.10 and the seed): without it
/// a driver attribute is -EINVAL; the core answers GEOMETRY and PAGING itself either way.
/// </summary>
public interface IIommuDomainAttrOps
{
    /// <summary>Reads a driver-specific domain attribute (<c>domain_get_attr</c>, ≤ 5.10 and the seed).</summary>
    /// <param name="domain">The domain.</param>
    /// <param name="attr">The attribute (the core answers GEOMETRY and PAGING itself).</param>
    /// <param name="value">The value.</param>
    /// <returns>0 or an errno.</returns>
    [KernelSymbol("iommu_ops.domain_get_attr", Version = "5.10")]
    Errno DomainGetAttr(IDomain domain, DomainAttr attr, out ulong value);
}
