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

    /// <summary>An ATS device (<see cref="PciDevice.AtsDmaRead"/>) sent a page request for the page that stopped the transfer and waits for its response; retry after it.</summary>
    PageRequestPending = 3,

    /// <summary>An ATS device's page request was answered Invalid Request or Response Failure (the latter also disables the device's PRI).</summary>
    PageRequestFailed = 4,
}
