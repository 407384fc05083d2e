namespace Iommu.Devices;

/// <summary>Outcome of a device DMA.</summary>
public enum DmaStatus
{
    /// <summary>Every byte moved.</summary>
    Ok = 0,

    /// <summary>The remapping hardware blocked the request and (unless suppressed) recorded a fault.</summary>
    Fault = 1,

    /// <summary>The request translated to an address outside physical memory (a master abort).</summary>
    MemoryError = 2,
}
