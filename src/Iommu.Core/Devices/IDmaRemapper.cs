namespace Iommu.Devices;

/// <summary>
/// A DMA-remapping unit as devices see it: the hardware between a PCI function's DMA and memory.
/// Implemented by hardware models (for instance <c>Iommu.VtD.Hardware.VtdUnit</c>); registered on a
/// <see cref="PciBus"/> with the devices it covers (the DRHD device scopes of the ACPI DMAR table).
/// </summary>
/// <remarks>Implementations must be safe to call from several threads, as several devices DMA at once.</remarks>
public interface IDmaRemapper
{
    /// <summary>A device reads memory: <paramref name="destination"/> receives the bytes at <paramref name="iova"/>.</summary>
    /// <param name="device">The requester.</param>
    /// <param name="pasid">PASID prefix of the request, or null for a request without PASID.</param>
    /// <param name="iova">Device address of the first byte.</param>
    /// <param name="destination">Where the bytes go.</param>
    /// <returns>The outcome; on a fault, the bytes before the faulting page have moved.</returns>
    DmaResult DmaRead(PciDevice device, uint? pasid, ulong iova, Span<byte> destination);

    /// <summary>A device writes memory: <paramref name="source"/> goes to <paramref name="iova"/>.</summary>
    /// <param name="device">The requester.</param>
    /// <param name="pasid">PASID prefix of the request, or null.</param>
    /// <param name="iova">Device address of the first byte.</param>
    /// <param name="source">The bytes.</param>
    /// <returns>The outcome; on a fault, the bytes before the faulting page have moved.</returns>
    DmaResult DmaWrite(PciDevice device, uint? pasid, ulong iova, ReadOnlySpan<byte> source);
}
