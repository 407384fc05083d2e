using System.Buffers.Binary;
using Iommu;

namespace Vfio.Type1.Uapi;

/// <summary><c>struct vfio_iommu_type1_info { u32 argsz; u32 flags; u64 iova_pgsizes; u32 cap_offset; }</c> (24 bytes with padding).</summary>
/// <param name="Argsz">Size (on return: size needed for every capability).</param>
/// <param name="Flags">PGSIZES / CAPS.</param>
/// <param name="IovaPgsizes">Supported page sizes.</param>
/// <param name="CapOffset">Offset of the first capability, 0 if none were copied.</param>
[KernelSymbol("struct vfio_iommu_type1_info")]
public readonly record struct VfioIommuType1Info(uint Argsz, uint Flags, ulong IovaPgsizes, uint CapOffset)
{
    /// <summary>Size of the C structure (with its 4 bytes of tail padding).</summary>
    public const int StructSize = 24;

    /// <summary>Reads the fixed part from <paramref name="source"/>.</summary>
    /// <param name="source">At least 20 bytes.</param>
    /// <returns>The structure.</returns>
    public static VfioIommuType1Info Read(ReadOnlySpan<byte> source) => new(
        BinaryPrimitives.ReadUInt32LittleEndian(source),
        BinaryPrimitives.ReadUInt32LittleEndian(source[4..]),
        BinaryPrimitives.ReadUInt64LittleEndian(source[8..]),
        BinaryPrimitives.ReadUInt32LittleEndian(source[16..]));

    // The handler's copy_from_user(&info, arg, minsz = 16): everything before cap_offset.
    internal static VfioIommuType1Info ReadMinimal(ReadOnlySpan<byte> source) => new(
        BinaryPrimitives.ReadUInt32LittleEndian(source),
        BinaryPrimitives.ReadUInt32LittleEndian(source[4..]),
        BinaryPrimitives.ReadUInt64LittleEndian(source[8..]),
        0);

    // copy_to_user(arg, &info, minsz): the first length bytes, 16 (without cap_offset) or 20.
    internal void Write(Span<byte> destination, int length)
    {
        BinaryPrimitives.WriteUInt32LittleEndian(destination, Argsz);
        BinaryPrimitives.WriteUInt32LittleEndian(destination[4..], Flags);
        BinaryPrimitives.WriteUInt64LittleEndian(destination[8..], IovaPgsizes);
        if (length >= 20)
        {
            BinaryPrimitives.WriteUInt32LittleEndian(destination[16..], CapOffset);
        }
    }
}
