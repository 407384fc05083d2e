using System.Buffers.Binary;
using Iommu;

namespace Vfio.Type1.Uapi;

/// <summary><c>struct vfio_info_cap_header { u16 id; u16 version; u32 next; }</c> (8 bytes), first in every capability.</summary>
/// <param name="Id">Capability id.</param>
/// <param name="Version">Capability version.</param>
/// <param name="Next">Offset of the next capability from the start of the info structure, 0 for the last.</param>
[KernelSymbol("struct vfio_info_cap_header")]
internal readonly record struct VfioInfoCapHeader(ushort Id, ushort Version, uint Next)
{
    public const int StructSize = 8;

    public void Write(Span<byte> destination)
    {
        BinaryPrimitives.WriteUInt16LittleEndian(destination, Id);
        BinaryPrimitives.WriteUInt16LittleEndian(destination[2..], Version);
        BinaryPrimitives.WriteUInt32LittleEndian(destination[4..], Next);
    }
}
