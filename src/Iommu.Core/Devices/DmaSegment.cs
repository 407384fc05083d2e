namespace Iommu.Devices;

/// <summary>One piece of a scatter-gather DMA: <paramref name="Length"/> bytes at device address <paramref name="Iova"/>.</summary>
/// <param name="Iova">Device address of the piece's first byte.</param>
/// <param name="Length">Bytes in the piece (0 is allowed and moves nothing).</param>
public readonly record struct DmaSegment(ulong Iova, int Length);
