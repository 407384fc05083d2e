using System.Buffers.Binary;
using Iommu;

namespace Vfio.Type1.Uapi;

/// <summary>
/// <c>struct vfio_iommu_type1_info_cap_migration { header; u32 flags; u64 pgsize_bitmap; u64 max_dirty_bitmap_size; }</c>
/// (32 bytes).
/// </summary>
/// <param name="Header">Capability header.</param>
/// <param name="Flags">None defined.</param>
/// <param name="PgsizeBitmap">Page sizes a dirty bit can stand for.</param>
/// <param name="MaxDirtyBitmapSize">Largest bitmap, in bytes.</param>
[KernelSymbol("struct vfio_iommu_type1_info_cap_migration")]
internal readonly record struct VfioIommuType1InfoCapMigration(VfioInfoCapHeader Header, uint Flags, ulong PgsizeBitmap, ulong MaxDirtyBitmapSize)
{
    public const int StructSize = 32;

    public void Write(Span<byte> destination)
    {
        Header.Write(destination);
        BinaryPrimitives.WriteUInt32LittleEndian(destination[8..], Flags);
        BinaryPrimitives.WriteUInt64LittleEndian(destination[16..], PgsizeBitmap);
        BinaryPrimitives.WriteUInt64LittleEndian(destination[24..], MaxDirtyBitmapSize);
    }
}
