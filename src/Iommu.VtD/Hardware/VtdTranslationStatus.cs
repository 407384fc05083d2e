namespace Iommu.VtD.Hardware;

/// <summary>What became of a request the remapping unit was asked to handle.</summary>
public enum VtdTranslationStatus
{
    /// <summary>The request was translated (or passed through); the physical address is valid.</summary>
    Translated = 0,

    /// <summary>The request was blocked; <see cref="VtdTranslation.Reason"/> says why.</summary>
    Fault = 1,

    /// <summary>
    /// A request without PASID to 0xFEE0_0000–0xFEEF_FFFF: an interrupt message, which DMA remapping
    /// never translates. Interrupt remapping is not modelled, so nothing else happens.
    /// </summary>
    InterruptRange = 2,

    /// <summary>The translation succeeded but the output address is outside physical memory (a master abort, not a VT-d fault).</summary>
    MemoryError = 3,
}
