using System.Globalization;
using System.Text;

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

    // The record's ToString, with the faults listed by reason instead of the dictionary's type name (a log line).
    private bool PrintMembers(StringBuilder builder)
    {
        builder.Append(CultureInfo.InvariantCulture, $"ContextInvalidations = {ContextInvalidations}, PasidInvalidations = {PasidInvalidations}, IotlbInvalidations = {IotlbInvalidations}, Faults = {Faults}, FaultsByReason = [");
        bool first = true;
        foreach ((VtdFaultReason reason, long count) in FaultsByReason.OrderBy(kv => kv.Key))
        {
            builder.Append(CultureInfo.InvariantCulture, $"{(first ? " " : ", ")}{reason}: {count}");
            first = false;
        }

        builder.Append(first ? "]" : " ]");
        return true;
    }
}
