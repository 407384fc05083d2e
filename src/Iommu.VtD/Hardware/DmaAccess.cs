namespace Iommu.VtD.Hardware;

/// <summary>The direction of a DMA request as the remapping unit sees it.</summary>
public enum DmaAccess
{
    /// <summary>The device reads memory (needs R in every second-level entry on the path).</summary>
    Read = 0,

    /// <summary>The device writes memory (needs W in every second-level entry on the path).</summary>
    Write = 1,
}
