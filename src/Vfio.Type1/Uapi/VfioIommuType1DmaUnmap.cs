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
        if (destination.Length >= StructSize + VfioBitmap.StructSize)
        {
            Bitmap.Write(destination[StructSize..]);
        }
    }

    // The handler's first copy_from_user: the header only (source holds at least StructSize bytes); the
    // bitmap that may follow is read with VfioBitmap.Read once the flags ask for it.
    internal static VfioIommuType1DmaUnmap ReadHeader(ReadOnlySpan<byte> source) => new(
        BinaryPrimitives.ReadUInt32LittleEndian(source),
        BinaryPrimitives.ReadUInt32LittleEndian(source[4..]),
        BinaryPrimitives.ReadUInt64LittleEndian(source[8..]),
        BinaryPrimitives.ReadUInt64LittleEndian(source[16..]));

    // copy_to_user of the size field (the bytes unmapped) into the caller's header.
    internal static void WriteSize(Span<byte> destination, ulong size) => BinaryPrimitives.WriteUInt64LittleEndian(destination[16..], size);
}
