using System.Globalization;
using System.Text;

namespace Iommu.VtD.Hardware;

/// <summary>The outcome of one request handled by a <see cref="VtdUnit"/>: a physical address and page size, or a fault.</summary>
/// <remarks>A plain value: creating one allocates nothing. <see cref="object.ToString"/> prints the addresses and the page size in hex and the reason as <c>0x85 (ScalableWrite)</c>.</remarks>
public readonly record struct VtdTranslation
{
    private VtdTranslation(VtdTranslationStatus status, ulong inputAddress, ulong physicalAddress, ulong pageSize, bool writable, VtdFaultReason reason, bool recorded)
    {
        Status = status;
        InputAddress = inputAddress;
        PhysicalAddress = physicalAddress;
        PageSize = pageSize;
        Writable = writable;
        Reason = reason;
        FaultRecorded = recorded;
    }

    /// <summary>What became of the request.</summary>
    public VtdTranslationStatus Status { get; }

    /// <summary>True when the request was blocked by a remapping fault.</summary>
    public bool IsFault => Status == VtdTranslationStatus.Fault;

    /// <summary>The input (I/O virtual) address of the request; for a failed DMA, the address where it stopped.</summary>
    public ulong InputAddress { get; }

    /// <summary>The output (host physical) address of <see cref="InputAddress"/> when translated.</summary>
    public ulong PhysicalAddress { get; }

    /// <summary>Size of the page that mapped the request (4 KiB, 2 MiB or 1 GiB); 4 KiB for pass-through and untranslated requests.</summary>
    public ulong PageSize { get; }

    /// <summary>Whether the mapping allows writes (the AND of W over the walk; true for pass-through).</summary>
    public bool Writable { get; }

    /// <summary>The fault reason when <see cref="IsFault"/>; <see cref="VtdFaultReason.None"/> otherwise.</summary>
    public VtdFaultReason Reason { get; }

    /// <summary>
    /// Whether the fault was written to a fault-recording register. False when fault processing was
    /// disabled (FPD) for a qualified fault, when FSTS.PFO was already set, or when the records were full.
    /// </summary>
    public bool FaultRecorded { get; }

    // The generated ToString would print addresses and the page size in decimal and the reason by name alone; the docs
    // and the fault records print them in hex (the reason as 0x85 (ScalableWrite), none when there is none).
    private bool PrintMembers(StringBuilder builder)
    {
        builder.Append(CultureInfo.InvariantCulture, $"Status = {Status}, InputAddress = 0x{InputAddress:x}, PhysicalAddress = 0x{PhysicalAddress:x}, PageSize = 0x{PageSize:x}, ");
        builder.Append(CultureInfo.InvariantCulture, $"Writable = {Writable}, Reason = {(Reason == VtdFaultReason.None ? "none" : Reason.Format())}, FaultRecorded = {FaultRecorded}");
        return true;
    }

    internal static VtdTranslation Translated(ulong iova, ulong pa, ulong pageSize, bool writable) =>
        new(VtdTranslationStatus.Translated, iova, pa, pageSize, writable, VtdFaultReason.None, false);

    internal static VtdTranslation Faulted(ulong iova, VtdFaultReason reason, bool recorded) =>
        new(VtdTranslationStatus.Fault, iova, 0, 0, false, reason, recorded);

    internal static VtdTranslation Interrupt(ulong iova) =>
        new(VtdTranslationStatus.InterruptRange, iova, 0, 0, false, VtdFaultReason.None, false);

    internal VtdTranslation AsMemoryError() =>
        new(VtdTranslationStatus.MemoryError, InputAddress, PhysicalAddress, PageSize, Writable, VtdFaultReason.None, false);
}
