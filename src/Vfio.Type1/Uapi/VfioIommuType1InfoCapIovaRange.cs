using System.Buffers.Binary;
using Iommu;

namespace Vfio.Type1.Uapi;

/// <summary>
/// <c>struct vfio_iommu_type1_info_cap_iova_range { header; u32 nr_iovas; u32 reserved; struct vfio_iova_range iova_ranges[]; }</c>
/// (16 bytes, then 16 a range).
/// </summary>
/// <param name="Header">Capability header.</param>
[KernelSymbol("struct vfio_iommu_type1_info_cap_iova_range")]
internal readonly record struct VfioIommuType1InfoCapIovaRange(VfioInfoCapHeader Header)
{
    public const int StructSize = 16;

    public const int RangeSize = 16;

    public static int SizeFor(int ranges) => StructSize + (RangeSize * ranges);

    public void Write(Span<byte> destination, IReadOnlyList<VfioIovaRange> ranges)
    {
        Header.Write(destination);
        BinaryPrimitives.WriteUInt32LittleEndian(destination[8..], (uint)ranges.Count);
        for (int k = 0; k < ranges.Count; k++)
        {
            Span<byte> r = destination[(StructSize + (RangeSize * k))..];
            BinaryPrimitives.WriteUInt64LittleEndian(r, ranges[k].Start);
            BinaryPrimitives.WriteUInt64LittleEndian(r[8..], ranges[k].End);
        }
    }
}
