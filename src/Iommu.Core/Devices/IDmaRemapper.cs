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

/// <summary>Outcome of a device DMA.</summary>
public enum DmaStatus
{
    /// <summary>Every byte moved.</summary>
    Ok = 0,

    /// <summary>The remapping hardware blocked the request and (unless suppressed) recorded a fault.</summary>
    Fault = 1,

    /// <summary>The request translated to an address outside physical memory (a master abort).</summary>
    MemoryError = 2,
}

/// <summary>What happened to a device DMA.</summary>
/// <param name="Status">Outcome.</param>
/// <param name="Transferred">Bytes moved before the transfer stopped (all of them when <see cref="DmaStatus.Ok"/>).</param>
/// <param name="Address">For a fault or memory error: the device address of the page that stopped the transfer; for success, the physical address of the first byte.</param>
/// <param name="FaultReason">
/// For a fault, why: the hardware's code and name, printed in hex (<c>0x85 (ScalableWrite)</c> on a VT-d
/// unit in scalable mode); <see cref="DmaFaultReason.None"/> otherwise. <see cref="DmaFaultReason.Code"/>
/// gives the number.
/// </param>
public readonly record struct DmaResult(DmaStatus Status, ulong Transferred, ulong Address, DmaFaultReason FaultReason)
{
    /// <summary>Whether every byte moved.</summary>
    public bool IsOk => Status == DmaStatus.Ok;

    /// <summary>When every byte moved: the physical address of the first byte; otherwise null.</summary>
    public ulong? PhysicalAddress => IsOk ? Address : null;

    /// <summary>When the transfer stopped (a fault or a memory error): the device address of the page that stopped it; otherwise null.</summary>
    public ulong? StopAddress => IsOk ? null : Address;
}

/// <summary>One piece of a scatter-gather DMA: <paramref name="Length"/> bytes at device address <paramref name="Iova"/>.</summary>
/// <param name="Iova">Device address of the piece's first byte.</param>
/// <param name="Length">Bytes in the piece (0 is allowed and moves nothing).</param>
public readonly record struct DmaSegment(ulong Iova, int Length);
