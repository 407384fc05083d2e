using Iommu.Domains;

namespace Iommu;

/// <summary>
/// The optional IOTLB callbacks of <see cref="IIommuOps"/>: <c>flush_iotlb_all</c>, <c>iotlb_sync</c> and
/// <c>iotlb_sync_map</c>. Without them the core flushes nothing; maps and unmaps still succeed.
/// </summary>
public interface IIommuIotlbOps
{
    /// <summary>Flushes everything the domain may have cached (<c>flush_iotlb_all</c>).</summary>
    /// <param name="domain">The domain.</param>
    [KernelSymbol("iommu_ops.flush_iotlb_all")]
    void FlushIotlbAll(IDomain domain);

    /// <summary>Flushes the gathered range after an unmap (<c>iotlb_sync</c>).</summary>
    /// <param name="domain">The domain.</param>
    /// <param name="gather">What was unmapped.</param>
    [KernelSymbol("iommu_ops.iotlb_sync")]
    void IotlbSync(IDomain domain, ref IommuIotlbGather gather);

    /// <summary>Flush after a successful map (<c>iotlb_sync_map</c>, 5.15 form with the range).</summary>
    /// <param name="domain">The domain.</param>
    /// <param name="iova">First IOVA mapped.</param>
    /// <param name="size">Bytes mapped.</param>
    [KernelSymbol("iommu_ops.iotlb_sync_map")]
    void IotlbSyncMap(IDomain domain, ulong iova, ulong size);
}
