using Iommu;

namespace Vfio.Type1.Uapi;

/// <summary>One valid IOVA range, inclusive (<c>struct vfio_iova_range</c>).</summary>
/// <param name="Start">First IOVA.</param>
/// <param name="End">Last IOVA (inclusive).</param>
[KernelSymbol("struct vfio_iova_range")]
public readonly record struct VfioIovaRange(ulong Start, ulong End);
