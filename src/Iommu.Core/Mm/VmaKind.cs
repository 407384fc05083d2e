namespace Iommu.Mm;

/// <summary>What backs a virtual memory area.</summary>
public enum VmaKind
{
    /// <summary>Anonymous memory, populated page by page on first touch (<c>MAP_ANONYMOUS</c>).</summary>
    Anonymous = 0,

    /// <summary>Anonymous memory backed by 2 MiB physically contiguous huge pages, populated at mmap (<c>MAP_HUGETLB</c>).</summary>
    HugePage = 1,

    /// <summary>A <c>VM_PFNMAP</c> window onto physical addresses (e.g. a BAR of another device); its pfns are "reserved".</summary>
    PfnMap = 2,
}
