namespace Iommu;

/// <summary>
/// The IOVA range gathered during an unmap for one deferred IOTLB flush (<c>struct iommu_iotlb_gather</c>).
/// </summary>
/// <remarks>
/// Passed by reference; a fresh value is empty (<see cref="IsEmpty"/>). 5.15 adds <see cref="Queued"/>
/// (the flush will come from a DMA flush queue, not from <c>iotlb_sync</c>) and <see cref="Freelist"/>
/// (the page-table pages the unmap freed, released only after the flush that covers it).
/// </remarks>
[KernelSymbol("struct iommu_iotlb_gather")]
public struct IommuIotlbGather
{
    private ulong _startPlusOne; // 0 = empty, so that default(IommuIotlbGather) is the initialised state

    /// <summary>First IOVA gathered (<c>ulong.MaxValue</c> when empty).</summary>
    public readonly ulong Start => _startPlusOne == 0 ? ulong.MaxValue : _startPlusOne - 1;

    /// <summary>Last IOVA gathered, inclusive (0 when empty).</summary>
    public ulong End { get; private set; }

    /// <summary>Granule of the gathered pages (0 when empty).</summary>
    public ulong Pgsize { get; private set; }

    /// <summary>
    /// The unmap's IOTLB flush is deferred to a DMA flush queue (<c>gather->queued</c>, 5.15): the driver
    /// hands the page-table pages it frees to <see cref="Freelist"/> instead of its own pending list, and
    /// the caller does not call <c>IommuCore.IotlbSync</c>. <c>Init</c> clears it, so a
    /// gather the driver had to sync part-way through (a disjoint page) is strict from then on.
    /// </summary>
    [KernelSymbol("iommu_iotlb_gather.queued")]
    public bool Queued { get; set; }

    /// <summary>
    /// Page-table frames freed by the unmap and not yet released (<c>gather->freelist</c>, 5.15): frames of
    /// <see cref="Platform.Frames"/> chained through their first 64-bit entry, the last one holding 0
    /// (<c>FrameAllocator.FreeList</c> releases such a chain); 0 when empty. Whoever completes
    /// the flush that covers the unmap releases it: <c>iotlb_sync</c>, or the flush queue's entry destructor.
    /// </summary>
    [KernelSymbol("iommu_iotlb_gather.freelist")]
    public ulong Freelist { get; set; }

    /// <summary>Whether nothing was gathered.</summary>
    public readonly bool IsEmpty => _startPlusOne == 0;

    /// <summary>Resets to empty, not queued, no freelist (<c>iommu_iotlb_gather_init</c>).</summary>
    [KernelSymbol("iommu_iotlb_gather_init")]
    public void Init() => this = default;

    /// <summary>Adds a page without the flush-on-disjoint rule (<c>iommu_iotlb_gather_add_range</c> style).</summary>
    /// <param name="iova">First IOVA.</param>
    /// <param name="size">Bytes.</param>
    public void AddRange(ulong iova, ulong size)
    {
        ulong end = iova + size - 1;
        if (IsEmpty || iova < Start)
        {
            _startPlusOne = iova + 1;
        }

        if (end > End)
        {
            End = end;
        }

        if (Pgsize == 0)
        {
            Pgsize = size;
        }
    }

    internal void SetPgsize(ulong size) => Pgsize = size;
}
