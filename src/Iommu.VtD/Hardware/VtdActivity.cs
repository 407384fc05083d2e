namespace Iommu.VtD.Hardware;

/// <summary>What a <see cref="VtdUnit"/> has done besides translating: invalidations processed and faults seen.</summary>
/// <param name="ContextInvalidations">Context-cache invalidations (register or descriptor).</param>
/// <param name="PasidInvalidations">PASID-cache invalidations.</param>
/// <param name="IotlbInvalidations">IOTLB invalidations (register, IOTLB or PASID-based IOTLB descriptors).</param>
/// <param name="FaultsByReason">Faults by reason: recorded, suppressed by FPD, or lost to a fault-record overflow.</param>
public sealed record VtdActivity(long ContextInvalidations, long PasidInvalidations, long IotlbInvalidations, IReadOnlyDictionary<VtdFaultReason, long> FaultsByReason)
{
    /// <summary>All faults seen.</summary>
    public long Faults => FaultsByReason.Values.Sum();
}
