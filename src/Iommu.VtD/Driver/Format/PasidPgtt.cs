namespace Iommu.VtD.Driver.Format;

/// <summary>PGTT, the PASID-granular translation type of a PASID entry (q0 8:6; <c>PASID_ENTRY_PGTT_*</c>).</summary>
internal enum PasidPgtt
{
    /// <summary>Not a valid type (a cleared entry reads 0).</summary>
    None = 0,

    /// <summary>First-level only (<c>PASID_ENTRY_PGTT_FL_ONLY</c>).</summary>
    [KernelSymbol("PASID_ENTRY_PGTT_FL_ONLY")]
    FirstLevel = 1,

    /// <summary>Second-level only (<c>PASID_ENTRY_PGTT_SL_ONLY</c>).</summary>
    [KernelSymbol("PASID_ENTRY_PGTT_SL_ONLY")]
    SecondLevel = 2,

    /// <summary>Nested (<c>PASID_ENTRY_PGTT_NESTED</c>).</summary>
    [KernelSymbol("PASID_ENTRY_PGTT_NESTED")]
    Nested = 3,

    /// <summary>Pass-through (<c>PASID_ENTRY_PGTT_PT</c>).</summary>
    [KernelSymbol("PASID_ENTRY_PGTT_PT")]
    PassThrough = 4,
}
