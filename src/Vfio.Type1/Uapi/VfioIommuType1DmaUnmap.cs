using System.Buffers.Binary;
using Iommu;

namespace Vfio.Type1.Uapi;

/// <summary>
/// <c>struct vfio_iommu_type1_dma_unmap { u32 argsz; u32 flags; u64 iova; u64 size; u8 data[]; }</c> (24-byte
/// header; with GET_DIRTY_BITMAP a <see cref="VfioBitmap"/> follows at offset 24).
/// </summary>
/// <param name="Argsz">Caller's structure size.</param>
/// <param name="Flags">GET_DIRTY_BITMAP / ALL / VADDR.</param>
/// <param name="Iova">First IOVA.</param>
/// <param name="Size">Bytes (on success: bytes removed).</param>
/// <param name="Bitmap">Dirty bitmap (used with GET_DIRTY_BITMAP).</param>
[KernelSymbol("struct vfio_iommu_type1_dma_unmap")]
public readonly record struct VfioIommuType1DmaUnmap(uint Argsz, uint Flags, ulong Iova, ulong Size, VfioBitmap Bitmap = default)
{
    /// <summary>Size of the header.</summary>
    public const int StructSize = 24;

    /// <summary>Writes the C layout (header, and the bitmap when <paramref name="destination"/> is at least 48 bytes).</summary>
    /// <param name="destination">At least 24 bytes.</param>
    public void Write(Span<byte> destination)
    {
        BinaryPrimitives.WriteUInt32LittleEndian(destination, Argsz);
        BinaryPrimitives.WriteUInt32LittleEndian(destination[4..], Flags);
        BinaryPrimitives.WriteUInt64LittleEndian(destination[8..], Iova);
        BinaryPrimitives.WriteUInt64LittleEndian(destination[16..], Size);
        if (destination.Length >= 48)
        {
            BinaryPrimitives.WriteUInt64LittleEndian(destination[24..], Bitmap.Pgsize);
            BinaryPrimitives.WriteUInt64LittleEndian(destination[32..], Bitmap.Size);
            BinaryPrimitives.WriteUInt64LittleEndian(destination[40..], Bitmap.Data);
        }
    }
}
