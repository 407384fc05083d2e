using System.Buffers.Binary;
using Iommu;

namespace Vfio.Type1.Uapi;

/// <summary>
/// <c>struct vfio_iommu_type1_dirty_bitmap_get { u64 iova; u64 size; struct vfio_bitmap bitmap; }</c> (40 bytes),
/// the data of a GET_BITMAP <see cref="VfioIommuType1DirtyBitmap"/>.
/// </summary>
/// <param name="Iova">First IOVA.</param>
/// <param name="Size">Bytes.</param>
/// <param name="Bitmap">Where the bits go.</param>
[KernelSymbol("struct vfio_iommu_type1_dirty_bitmap_get")]
internal readonly record struct VfioIommuType1DirtyBitmapGet(ulong Iova, ulong Size, VfioBitmap Bitmap)
{
    public const int StructSize = 16 + VfioBitmap.StructSize;

    public static VfioIommuType1DirtyBitmapGet Read(ReadOnlySpan<byte> source) => new(
        BinaryPrimitives.ReadUInt64LittleEndian(source),
        BinaryPrimitives.ReadUInt64LittleEndian(source[8..]),
        VfioBitmap.Read(source[16..]));

    public void Write(Span<byte> destination)
    {
        BinaryPrimitives.WriteUInt64LittleEndian(destination, Iova);
        BinaryPrimitives.WriteUInt64LittleEndian(destination[8..], Size);
        Bitmap.Write(destination[16..]);
    }
}
