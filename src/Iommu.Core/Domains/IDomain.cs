using Iommu.Faults;

namespace Iommu.Domains;

/// <summary>
/// An IOMMU domain (<c>struct iommu_domain</c>): a set of translations that devices can be attached to.
/// </summary>
/// <remarks>
/// Drivers implement this (usually by deriving from <see cref="IommuDomain"/>) and add their page
/// tables. The core writes <see cref="Type"/>, <see cref="Ops"/> and <see cref="PgsizeBitmap"/>
/// right after <see cref="IIommuOps.DomainAlloc"/>, as <c>__iommu_domain_alloc</c> does; drivers may
/// update the page sizes and geometry on attach (Intel 5.15 does). <see cref="Type"/> and
/// <see cref="Ops"/> are read-only here: only the core sets them (on <see cref="IommuDomain"/>,
/// through its internal setters). A driver domain that does not derive from <see cref="IommuDomain"/>
/// reports the ops and type it was allocated for itself; the core checks them.
/// </remarks>
[KernelSymbol("struct iommu_domain")]
public interface IDomain
{
    /// <summary>The domain type (<c>domain->type</c>), set by the core at allocation.</summary>
    DomainType Type { get; }

    /// <summary>The driver that owns the domain (<c>domain->ops</c>), set by the core at allocation.</summary>
    IIommuOps? Ops { get; }

    /// <summary>Page sizes this domain can map (bit n set = 2^n bytes).</summary>
    ulong PgsizeBitmap { get; set; }

    /// <summary>The IOVA aperture.</summary>
    IommuDomainGeometry Geometry { get; set; }

    /// <summary>Legacy fault handler set by <c>iommu_set_fault_handler</c>.</summary>
    IommuFaultHandler? Handler { get; set; }

    /// <summary>The token passed back to <see cref="Handler"/>.</summary>
    object? HandlerToken { get; set; }
}
