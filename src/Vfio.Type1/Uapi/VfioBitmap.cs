using System.Buffers.Binary;
using Iommu;

namespace Vfio.Type1.Uapi;

/// <summary><c>struct vfio_bitmap { u64 pgsize; u64 size; u64 __user *data; }</c> (24 bytes).</summary>
/// <param name="Pgsize">Page size one bit stands for.</param>
/// <param name="Size">Bitmap size in bytes.</param>
/// <param name="Data">User address of the bitmap in the calling process (0 = NULL).</param>
[KernelSymbol("struct vfio_bitmap")]
public readonly record struct VfioBitmap(ulong Pgsize, ulong Size, ulong Data)
{
    /// <summary>Size of the C structure.</summary>
    public const int StructSize = 24;

    internal static VfioBitmap Read(ReadOnlySpan<byte> source) => new(
        BinaryPrimitives.ReadUInt64LittleEndian(source),
        BinaryPrimitives.ReadUInt64LittleEndian(source[8..]),
        BinaryPrimitives.ReadUInt64LittleEndian(source[16..]));

    internal void Write(Span<byte> destination)
    {
        BinaryPrimitives.WriteUInt64LittleEndian(destination, Pgsize);
        BinaryPrimitives.WriteUInt64LittleEndian(destination[8..], Size);
        BinaryPrimitives.WriteUInt64LittleEndian(destination[16..], Data);
    }
}
