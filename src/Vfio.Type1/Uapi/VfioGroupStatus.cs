using System.Buffers.Binary;
using Iommu;

namespace Vfio.Type1.Uapi;

/// <summary><c>struct vfio_group_status { u32 argsz; u32 flags; }</c> (8 bytes).</summary>
/// <param name="Argsz">Size of the structure the caller passes.</param>
/// <param name="Flags">VIABLE / CONTAINER_SET.</param>
[KernelSymbol("struct vfio_group_status")]
public readonly record struct VfioGroupStatus(uint Argsz, uint Flags)
{
    /// <summary>Size of the C structure.</summary>
    public const int Size = 8;

    internal static VfioGroupStatus Read(ReadOnlySpan<byte> source) => new(
        BinaryPrimitives.ReadUInt32LittleEndian(source),
        BinaryPrimitives.ReadUInt32LittleEndian(source[4..]));

    internal void Write(Span<byte> destination)
    {
        BinaryPrimitives.WriteUInt32LittleEndian(destination, Argsz);
        BinaryPrimitives.WriteUInt32LittleEndian(destination[4..], Flags);
    }
}
