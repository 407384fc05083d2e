using System.Buffers.Binary;
using Iommu;

namespace Vfio.Type1.Uapi;

/// <summary><c>struct vfio_iommu_type1_info_dma_avail { header; u32 avail; }</c> (12 bytes).</summary>
/// <param name="Header">Capability header.</param>
/// <param name="Avail">How many more DMA mappings the container allows.</param>
[KernelSymbol("struct vfio_iommu_type1_info_dma_avail")]
internal readonly record struct VfioIommuType1InfoDmaAvail(VfioInfoCapHeader Header, uint Avail)
{
    public const int StructSize = 12;

    public void Write(Span<byte> destination)
    {
        Header.Write(destination);
        BinaryPrimitives.WriteUInt32LittleEndian(destination[8..], Avail);
    }
}
