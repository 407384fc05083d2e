using System.Buffers.Binary;
using Iommu;

namespace Vfio.Type1.Uapi;

/// <summary><c>struct vfio_iommu_type1_dirty_bitmap { u32 argsz; u32 flags; u8 data[]; }</c> (8-byte header).</summary>
/// <param name="Argsz">Caller's structure size.</param>
/// <param name="Flags">START / STOP / GET_BITMAP.</param>
[KernelSymbol("struct vfio_iommu_type1_dirty_bitmap")]
internal readonly record struct VfioIommuType1DirtyBitmap(uint Argsz, uint Flags)
{
    public const int StructSize = 8;

    public static VfioIommuType1DirtyBitmap Read(ReadOnlySpan<byte> source) => new(
        BinaryPrimitives.ReadUInt32LittleEndian(source),
        BinaryPrimitives.ReadUInt32LittleEndian(source[4..]));

    public void Write(Span<byte> destination)
    {
        BinaryPrimitives.WriteUInt32LittleEndian(destination, Argsz);
        BinaryPrimitives.WriteUInt32LittleEndian(destination[4..], Flags);
    }
}
