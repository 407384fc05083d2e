namespace Iommu;

/// <summary>
/// The IOVA range gathered during an unmap for one deferred IOTLB flush (<c>struct iommu_iotlb_gather</c>).
/// </summary>
/// <remarks>Passed by reference; a fresh value is empty (<see cref="IsEmpty"/>).</remarks>
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

    /// <summary>Whether nothing was gathered.</summary>
    public readonly bool IsEmpty => _startPlusOne == 0;

    /// <summary>Resets to empty (<c>iommu_iotlb_gather_init</c>).</summary>
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
