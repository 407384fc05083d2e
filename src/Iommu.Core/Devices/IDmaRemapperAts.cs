namespace Iommu.Devices;

/// <summary>
/// Optional for an <see cref="IDmaRemapper"/>: PCIe Address Translation Services and the Page Request
/// Interface as the remapping unit sees them. <see cref="PciDevice"/> tests for it with <c>is</c>; behind a
/// remapper without it a device's ATS DMA (<see cref="PciDevice.AtsDmaRead"/>) is an ordinary untranslated DMA.
/// </summary>
/// <remarks>
/// The unit answers back through the device: device-TLB invalidations reach
/// <see cref="PciDevice.InvalidateAtc"/> and page group responses reach <see cref="PciDevice.ReceivePageGroupResponse"/>.
/// Implementations must be safe to call from several threads and must not call them while a device's call into the unit is in progress on that thread.
/// </remarks>
public interface IDmaRemapperAts
{
    /// <summary>An ATS translation request for the 4 KiB page at <paramref name="address"/>.</summary>
    /// <param name="device">The requester.</param>
    /// <param name="pasid">PASID prefix of the request, or null.</param>
    /// <param name="address">Untranslated address (bits 11:0 are ignored).</param>
    /// <param name="write">False for a request with No Write (NW = 1): the completion then never grants write.</param>
    /// <returns>The translation completion.</returns>
    AtsCompletion TranslationRequest(PciDevice device, uint? pasid, ulong address, bool write);

    /// <summary>The device sends a page request message.</summary>
    /// <param name="device">The requester.</param>
    /// <param name="request">The message.</param>
    /// <returns>True when the unit queued it for software; false when it dropped it (a fault, a full queue, overflow).</returns>
    bool PageRequest(PciDevice device, PageRequestMessage request);
}
