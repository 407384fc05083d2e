namespace Iommu.VtD.Diagnostics;

/// <summary>Which table format the root-table address register selects (RTADDR.TTM).</summary>
public enum VtdTranslationMode
{
    /// <summary>TTM = 00: legacy root and context entries, second-level tables from the context entry.</summary>
    Legacy = 0,

    /// <summary>TTM = 01: scalable-mode root and context entries, PASID directories and tables.</summary>
    Scalable = 1,
}
