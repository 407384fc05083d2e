using System.Buffers.Binary;
using Iommu;

namespace Vfio.Type1.Uapi;

/// <summary><c>struct vfio_iommu_type1_dma_map { u32 argsz; u32 flags; u64 vaddr; u64 iova; u64 size; }</c> (32 bytes).</summary>
/// <param name="Argsz">Caller's structure size (at least 32).</param>
/// <param name="Flags">READ / WRITE / VADDR.</param>
/// <param name="Vaddr">Process virtual address of the memory.</param>
/// <param name="Iova">Device address.</param>
/// <param name="Size">Bytes.</param>
[KernelSymbol("struct vfio_iommu_type1_dma_map")]
public readonly record struct VfioIommuType1DmaMap(uint Argsz, uint Flags, ulong Vaddr, ulong Iova, ulong Size)
{
    /// <summary>Size of the C structure.</summary>
    public const int StructSize = 32;

    /// <summary>Writes the C layout into <paramref name="destination"/>.</summary>
    /// <param name="destination">At least 32 bytes.</param>
    public void Write(Span<byte> destination)
    {
        BinaryPrimitives.WriteUInt32LittleEndian(destination, Argsz);
        BinaryPrimitives.WriteUInt32LittleEndian(destination[4..], Flags);
        BinaryPrimitives.WriteUInt64LittleEndian(destination[8..], Vaddr);
        BinaryPrimitives.WriteUInt64LittleEndian(destination[16..], Iova);
        BinaryPrimitives.WriteUInt64LittleEndian(destination[24..], Size);
    }

    // The handler's copy_from_user: source holds at least StructSize bytes.
    internal static VfioIommuType1DmaMap Read(ReadOnlySpan<byte> source) => new(
        BinaryPrimitives.ReadUInt32LittleEndian(source),
        BinaryPrimitives.ReadUInt32LittleEndian(source[4..]),
        BinaryPrimitives.ReadUInt64LittleEndian(source[8..]),
        BinaryPrimitives.ReadUInt64LittleEndian(source[16..]),
        BinaryPrimitives.ReadUInt64LittleEndian(source[24..]));
}
