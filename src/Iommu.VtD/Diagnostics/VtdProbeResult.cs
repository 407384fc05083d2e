using Iommu.VtD.Hardware;

namespace Iommu.VtD.Diagnostics;

/// <summary>What the hardware model says happens to a <see cref="VtdProbe"/>.</summary>
/// <param name="Probe">The request.</param>
/// <param name="Status">Translated, fault, or interrupt range.</param>
/// <param name="PhysicalAddress">Output address when translated; 0 otherwise.</param>
/// <param name="PageSize">Page size of the mapping when translated; 0 otherwise.</param>
/// <param name="Writable">Whether the mapping allows writes (when translated).</param>
/// <param name="Reason">Fault reason (specification code) when <see cref="Status"/> is a fault.</param>
/// <param name="FaultRecorded">Whether the fault is written to a fault-recording register (false when fault processing is disabled for a qualified fault).</param>
public sealed record VtdProbeResult(
    VtdProbe Probe, VtdTranslationStatus Status, ulong PhysicalAddress, ulong PageSize, bool Writable, VtdFaultReason Reason, bool FaultRecorded)
{
    /// <summary>True when the request is translated.</summary>
    public bool IsTranslated => Status == VtdTranslationStatus.Translated;

    /// <summary>True when the request faults.</summary>
    public bool IsFault => Status == VtdTranslationStatus.Fault;
}
