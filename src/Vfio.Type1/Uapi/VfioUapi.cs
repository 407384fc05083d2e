using System.Diagnostics.CodeAnalysis;
using Iommu;

namespace Vfio.Type1.Uapi;

/// <summary>
/// Constants of <c>include/uapi/linux/vfio.h</c>: ioctl request numbers (<c>_IO(';', 100 + n)</c>),
/// extensions, and the flag bits of the type1 structures.
/// </summary>
[SuppressMessage("Naming", "CA1707", Justification = "C macro names.")]
public static class VfioUapi
{
    /// <summary>The ioctl type character (<c>VFIO_TYPE</c> = ';').</summary>
    [KernelSymbol("VFIO_TYPE")]
    public const uint VfioType = ';';

    /// <summary>Base of the VFIO ioctl numbers (<c>VFIO_BASE</c>).</summary>
    [KernelSymbol("VFIO_BASE")]
    public const uint VfioBase = 100;

    /// <summary><c>_IO(';', 100)</c>.</summary>
    [KernelSymbol("VFIO_GET_API_VERSION")]
    public const uint VFIO_GET_API_VERSION = (VfioType << 8) | (VfioBase + 0);

    /// <summary><c>_IO(';', 101)</c>.</summary>
    [KernelSymbol("VFIO_CHECK_EXTENSION")]
    public const uint VFIO_CHECK_EXTENSION = (VfioType << 8) | (VfioBase + 1);

    /// <summary><c>_IO(';', 102)</c>.</summary>
    [KernelSymbol("VFIO_SET_IOMMU")]
    public const uint VFIO_SET_IOMMU = (VfioType << 8) | (VfioBase + 2);

    /// <summary><c>_IO(';', 103)</c>.</summary>
    [KernelSymbol("VFIO_GROUP_GET_STATUS")]
    public const uint VFIO_GROUP_GET_STATUS = (VfioType << 8) | (VfioBase + 3);

    /// <summary><c>_IO(';', 104)</c>.</summary>
    [KernelSymbol("VFIO_GROUP_SET_CONTAINER")]
    public const uint VFIO_GROUP_SET_CONTAINER = (VfioType << 8) | (VfioBase + 4);

    /// <summary><c>_IO(';', 105)</c>.</summary>
    [KernelSymbol("VFIO_GROUP_UNSET_CONTAINER")]
    public const uint VFIO_GROUP_UNSET_CONTAINER = (VfioType << 8) | (VfioBase + 5);

    /// <summary><c>_IO(';', 106)</c>.</summary>
    [KernelSymbol("VFIO_GROUP_GET_DEVICE_FD")]
    public const uint VFIO_GROUP_GET_DEVICE_FD = (VfioType << 8) | (VfioBase + 6);

    /// <summary><c>_IO(';', 112)</c>.</summary>
    [KernelSymbol("VFIO_IOMMU_GET_INFO")]
    public const uint VFIO_IOMMU_GET_INFO = (VfioType << 8) | (VfioBase + 12);

    /// <summary><c>_IO(';', 113)</c>.</summary>
    [KernelSymbol("VFIO_IOMMU_MAP_DMA")]
    public const uint VFIO_IOMMU_MAP_DMA = (VfioType << 8) | (VfioBase + 13);

    /// <summary><c>_IO(';', 114)</c>.</summary>
    [KernelSymbol("VFIO_IOMMU_UNMAP_DMA")]
    public const uint VFIO_IOMMU_UNMAP_DMA = (VfioType << 8) | (VfioBase + 14);

    /// <summary><c>_IO(';', 115)</c> (SPAPR only; type1 answers -ENOTTY).</summary>
    [KernelSymbol("VFIO_IOMMU_ENABLE")]
    public const uint VFIO_IOMMU_ENABLE = (VfioType << 8) | (VfioBase + 15);

    /// <summary><c>_IO(';', 116)</c> (SPAPR only; type1 answers -ENOTTY).</summary>
    [KernelSymbol("VFIO_IOMMU_DISABLE")]
    public const uint VFIO_IOMMU_DISABLE = (VfioType << 8) | (VfioBase + 16);

    /// <summary><c>_IO(';', 117)</c>.</summary>
    [KernelSymbol("VFIO_IOMMU_DIRTY_PAGES")]
    public const uint VFIO_IOMMU_DIRTY_PAGES = (VfioType << 8) | (VfioBase + 17);

    /// <summary>The API version (<c>VFIO_API_VERSION</c>).</summary>
    [KernelSymbol("VFIO_API_VERSION")]
    public const int VFIO_API_VERSION = 0;

    /// <summary>Extension: type1 IOMMU.</summary>
    [KernelSymbol("VFIO_TYPE1_IOMMU")]
    public const int VFIO_TYPE1_IOMMU = 1;

    /// <summary>Extension: SPAPR TCE.</summary>
    [KernelSymbol("VFIO_SPAPR_TCE_IOMMU")]
    public const int VFIO_SPAPR_TCE_IOMMU = 2;

    /// <summary>Extension: type1 v2 (strict unmap rules).</summary>
    [KernelSymbol("VFIO_TYPE1v2_IOMMU")]
    public const int VFIO_TYPE1v2_IOMMU = 3;

    /// <summary>Extension: all domains enforce DMA cache coherency.</summary>
    [KernelSymbol("VFIO_DMA_CC_IOMMU")]
    public const int VFIO_DMA_CC_IOMMU = 4;

    /// <summary>Extension: EEH.</summary>
    [KernelSymbol("VFIO_EEH")]
    public const int VFIO_EEH = 5;

    /// <summary>Extension: type1 with nesting (implies v2).</summary>
    [KernelSymbol("VFIO_TYPE1_NESTING_IOMMU")]
    public const int VFIO_TYPE1_NESTING_IOMMU = 6;

    /// <summary>Extension: SPAPR TCE v2.</summary>
    [KernelSymbol("VFIO_SPAPR_TCE_v2_IOMMU")]
    public const int VFIO_SPAPR_TCE_v2_IOMMU = 7;

    /// <summary>Extension: no-IOMMU mode.</summary>
    [KernelSymbol("VFIO_NOIOMMU_IOMMU")]
    public const int VFIO_NOIOMMU_IOMMU = 8;

    /// <summary>Extension: UNMAP_DMA with the ALL flag (5.12).</summary>
    [KernelSymbol("VFIO_UNMAP_ALL")]
    public const int VFIO_UNMAP_ALL = 9;

    /// <summary>Extension: VADDR invalidate/update (5.12).</summary>
    [KernelSymbol("VFIO_UPDATE_VADDR")]
    public const int VFIO_UPDATE_VADDR = 10;

    /// <summary>Group status: every device is bound to VFIO or unbound.</summary>
    [KernelSymbol("VFIO_GROUP_FLAGS_VIABLE")]
    public const uint VFIO_GROUP_FLAGS_VIABLE = 1 << 0;

    /// <summary>Group status: the group is in a container.</summary>
    [KernelSymbol("VFIO_GROUP_FLAGS_CONTAINER_SET")]
    public const uint VFIO_GROUP_FLAGS_CONTAINER_SET = 1 << 1;

    /// <summary>MAP_DMA: the device may read.</summary>
    [KernelSymbol("VFIO_DMA_MAP_FLAG_READ")]
    public const uint VFIO_DMA_MAP_FLAG_READ = 1 << 0;

    /// <summary>MAP_DMA: the device may write.</summary>
    [KernelSymbol("VFIO_DMA_MAP_FLAG_WRITE")]
    public const uint VFIO_DMA_MAP_FLAG_WRITE = 1 << 1;

    /// <summary>MAP_DMA: update the vaddr of an invalidated mapping (5.12).</summary>
    [KernelSymbol("VFIO_DMA_MAP_FLAG_VADDR")]
    public const uint VFIO_DMA_MAP_FLAG_VADDR = 1 << 2;

    /// <summary>UNMAP_DMA: report the dirty bitmap of the removed range.</summary>
    [KernelSymbol("VFIO_DMA_UNMAP_FLAG_GET_DIRTY_BITMAP")]
    public const uint VFIO_DMA_UNMAP_FLAG_GET_DIRTY_BITMAP = 1 << 0;

    /// <summary>UNMAP_DMA: remove every mapping (iova and size must be 0).</summary>
    [KernelSymbol("VFIO_DMA_UNMAP_FLAG_ALL")]
    public const uint VFIO_DMA_UNMAP_FLAG_ALL = 1 << 1;

    /// <summary>UNMAP_DMA: invalidate the vaddr instead of removing.</summary>
    [KernelSymbol("VFIO_DMA_UNMAP_FLAG_VADDR")]
    public const uint VFIO_DMA_UNMAP_FLAG_VADDR = 1 << 2;

    /// <summary>GET_INFO: <c>iova_pgsizes</c> is valid.</summary>
    [KernelSymbol("VFIO_IOMMU_INFO_PGSIZES")]
    public const uint VFIO_IOMMU_INFO_PGSIZES = 1 << 0;

    /// <summary>GET_INFO: a capability chain follows.</summary>
    [KernelSymbol("VFIO_IOMMU_INFO_CAPS")]
    public const uint VFIO_IOMMU_INFO_CAPS = 1 << 1;

    /// <summary>Capability id of the IOVA range list.</summary>
    [KernelSymbol("VFIO_IOMMU_TYPE1_INFO_CAP_IOVA_RANGE")]
    public const ushort VFIO_IOMMU_TYPE1_INFO_CAP_IOVA_RANGE = 1;

    /// <summary>Capability id of the migration (dirty-tracking) capability.</summary>
    [KernelSymbol("VFIO_IOMMU_TYPE1_INFO_CAP_MIGRATION")]
    public const ushort VFIO_IOMMU_TYPE1_INFO_CAP_MIGRATION = 2;

    /// <summary>Capability id of the remaining-mappings count.</summary>
    [KernelSymbol("VFIO_IOMMU_TYPE1_INFO_DMA_AVAIL")]
    public const ushort VFIO_IOMMU_TYPE1_INFO_DMA_AVAIL = 3;

    /// <summary>DIRTY_PAGES: start tracking.</summary>
    [KernelSymbol("VFIO_IOMMU_DIRTY_PAGES_FLAG_START")]
    public const uint VFIO_IOMMU_DIRTY_PAGES_FLAG_START = 1 << 0;

    /// <summary>DIRTY_PAGES: stop tracking.</summary>
    [KernelSymbol("VFIO_IOMMU_DIRTY_PAGES_FLAG_STOP")]
    public const uint VFIO_IOMMU_DIRTY_PAGES_FLAG_STOP = 1 << 1;

    /// <summary>DIRTY_PAGES: read the bitmap of a range.</summary>
    [KernelSymbol("VFIO_IOMMU_DIRTY_PAGES_FLAG_GET_BITMAP")]
    public const uint VFIO_IOMMU_DIRTY_PAGES_FLAG_GET_BITMAP = 1 << 2;

    /// <summary>Largest dirty bitmap in bytes (<c>DIRTY_BITMAP_SIZE_MAX</c>: INT_MAX pages rounded to u64, / 8 = 256 MiB).</summary>
    [KernelSymbol("DIRTY_BITMAP_SIZE_MAX")]
    public const ulong DirtyBitmapSizeMax = 256UL * 1024 * 1024;

    /// <summary>Largest number of pages one dirty bitmap may describe (<c>DIRTY_BITMAP_PAGES_MAX</c>).</summary>
    [KernelSymbol("DIRTY_BITMAP_PAGES_MAX")]
    public const ulong DirtyBitmapPagesMax = int.MaxValue;

    /// <summary>x86 page size.</summary>
    public const ulong PageSize = 4096;
}
