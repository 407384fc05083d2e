namespace Iommu.VtD.Driver;

/// <summary>
/// A user's description of a stage-1 (first-level) table for a nested domain (<c>struct iommu_hwpt_vtd_s1</c>,
/// iommufd <c>IOMMU_HWPT_DATA_VTD_S1</c>).
/// </summary>
/// <param name="Flags">SRE, EAFE, WPE (<see cref="IommuVtdS1"/>).</param>
/// <param name="PgtblAddr">The stage-1 root as a guest-physical address (an IOVA of the parent domain).</param>
/// <param name="AddrWidth">Stage-1 input width: 48 (4-level) or 57 (5-level).</param>
/// <remarks>6.7+ (iommufd nesting); not in 5.15, whose <c>sva_bind_gpasid</c> took a similar description.</remarks>
[KernelSymbol("struct iommu_hwpt_vtd_s1", Version = "6.7")]
public readonly record struct IommuHwptVtdS1(IommuVtdS1 Flags, ulong PgtblAddr, uint AddrWidth);

/// <summary>Flags of <see cref="IommuHwptVtdS1"/> (<c>enum iommu_hwpt_vtd_s1_flags</c>).</summary>
/// <remarks>6.7+.</remarks>
[Flags]
[KernelSymbol("enum iommu_hwpt_vtd_s1_flags", Version = "6.7")]
public enum IommuVtdS1 : ulong
{
    /// <summary>No flag.</summary>
    None = 0,

    /// <summary>Supervisor requests allowed (<c>IOMMU_VTD_S1_SRE</c>); needs ECAP.SRS.</summary>
    [KernelSymbol("IOMMU_VTD_S1_SRE", Version = "6.7")]
    Sre = 1UL << 0,

    /// <summary>Extended-accessed flag (<c>IOMMU_VTD_S1_EAFE</c>); needs ECAP.EAFS.</summary>
    [KernelSymbol("IOMMU_VTD_S1_EAFE", Version = "6.7")]
    Eafe = 1UL << 1,

    /// <summary>Write-protect supervisor writes (<c>IOMMU_VTD_S1_WPE</c>); honoured only with <see cref="Sre"/>.</summary>
    [KernelSymbol("IOMMU_VTD_S1_WPE", Version = "6.7")]
    Wpe = 1UL << 2,
}

/// <summary>One user cache-invalidation request for a nested domain (<c>struct iommu_hwpt_vtd_s1_invalidate</c>).</summary>
/// <param name="Addr">First address of the range, 4 KiB aligned (0 with <see cref="ulong.MaxValue"/> pages: everything).</param>
/// <param name="Npages">Pages; <see cref="ulong.MaxValue"/> for the whole address space.</param>
/// <param name="Flags"><see cref="IommuVtdInv.Leaf"/> when only leaves changed.</param>
/// <remarks>6.8+ (<c>IOMMU_HWPT_INVALIDATE</c>).</remarks>
[KernelSymbol("struct iommu_hwpt_vtd_s1_invalidate", Version = "6.8")]
public readonly record struct IommuHwptVtdS1Invalidate(ulong Addr, ulong Npages, IommuVtdInv Flags);

/// <summary>Flags of <see cref="IommuHwptVtdS1Invalidate"/>.</summary>
/// <remarks>6.8+.</remarks>
[Flags]
public enum IommuVtdInv : uint
{
    /// <summary>No flag.</summary>
    None = 0,

    /// <summary>Only leaf entries changed: paging-structure caches may stay (<c>IOMMU_VTD_INV_FLAGS_LEAF</c>, the descriptor's IH).</summary>
    [KernelSymbol("IOMMU_VTD_INV_FLAGS_LEAF", Version = "6.8")]
    Leaf = 1u << 0,
}
