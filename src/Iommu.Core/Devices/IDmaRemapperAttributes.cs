namespace Iommu.Devices;

/// <summary>
/// Optional for an <see cref="IDmaRemapper"/>: DMA with privileged and execute attributes
/// (<see cref="DmaRequestAttributes"/>). <see cref="PciDevice"/> tests for it with <c>is</c>; a
/// remapper without it gets the request without its attributes.
/// </summary>
/// <remarks>Implementations must be safe to call from several threads, as <see cref="IDmaRemapper"/>'s.</remarks>
public interface IDmaRemapperAttributes
{
    /// <summary>A device reads memory with <paramref name="attributes"/> (see <see cref="IDmaRemapper.DmaRead"/>).</summary>
    /// <param name="device">The requester.</param>
    /// <param name="pasid">PASID prefix of the request, or null (then the attributes are dropped).</param>
    /// <param name="iova">Device address of the first byte.</param>
    /// <param name="destination">Where the bytes go.</param>
    /// <param name="attributes">Privileged and execute bits of the PASID prefix.</param>
    /// <returns>The outcome; on a fault, the bytes before the faulting page have moved.</returns>
    DmaResult DmaRead(PciDevice device, uint? pasid, ulong iova, Span<byte> destination, DmaRequestAttributes attributes);

    /// <summary>A device writes memory with <paramref name="attributes"/> (see <see cref="IDmaRemapper.DmaWrite"/>).</summary>
    /// <param name="device">The requester.</param>
    /// <param name="pasid">PASID prefix of the request, or null (then the attributes are dropped).</param>
    /// <param name="iova">Device address of the first byte.</param>
    /// <param name="source">The bytes.</param>
    /// <param name="attributes">Privileged bit of the PASID prefix (execute is dropped on a write).</param>
    /// <returns>The outcome; on a fault, the bytes before the faulting page have moved.</returns>
    DmaResult DmaWrite(PciDevice device, uint? pasid, ulong iova, ReadOnlySpan<byte> source, DmaRequestAttributes attributes);
}
