namespace Iommu.Devices;

/// <summary>The completion of an ATS translation request (<see cref="IDmaRemapperAts.TranslationRequest"/>).</summary>
/// <param name="Success">
/// True for a successful completion (which may still grant nothing: <see cref="Read"/> and <see cref="Write"/> false
/// means "not present" to the device, which may then send a page request); false for an Unsupported Request
/// completion, for which the unit recorded <see cref="FaultReason"/> (unless fault processing is disabled).
/// </param>
/// <param name="PhysicalAddress">The translated address of the requested 4 KiB page (when <see cref="Read"/> or <see cref="Write"/>).</param>
/// <param name="PageSize">Size of the translation (4 KiB, 2 MiB, 1 GiB) the device may cache.</param>
/// <param name="Read">The device may read the page with translated requests.</param>
/// <param name="Write">The device may write the page with translated requests.</param>
/// <param name="FaultReason">Why the request failed, when not <see cref="Success"/>.</param>
public readonly record struct AtsCompletion(bool Success, ulong PhysicalAddress, ulong PageSize, bool Read, bool Write, DmaFaultReason FaultReason);
