using Iommu.Faults;

namespace Iommu.Domains;

/// <summary>A plain <see cref="IDomain"/> to derive driver domains from (what <c>struct iommu_domain</c> is to <c>struct dmar_domain</c>).</summary>
/// <remarks>Thread safety: the fields are plain; the kernel writes them under the driver's or group's locks.</remarks>
public class IommuDomain : IDomain
{
    /// <inheritdoc/>
    /// <remarks>Set by the core only (<c>__iommu_domain_alloc</c>; the DMA-FQ fallback to strict).</remarks>
    public DomainType Type { get; internal set; }

    /// <inheritdoc/>
    /// <remarks>Set by the core only (<c>__iommu_domain_alloc</c>).</remarks>
    public IIommuOps? Ops
    {
        get => _ops;
        internal set
        {
            _ops = value;
            MapPagesOps = value as IIommuMapPagesOps;
            IotlbOps = value as IIommuIotlbOps;
        }
    }

    /// <inheritdoc/>
    public ulong PgsizeBitmap { get; set; }

    /// <inheritdoc/>
    public IommuDomainGeometry Geometry { get; set; }

    /// <inheritdoc/>
    public IommuFaultHandler? Handler { get; set; }

    /// <inheritdoc/>
    public object? HandlerToken { get; set; }

    private IIommuOps? _ops;

    // Ops seen through the optional interfaces the map path calls, resolved once when Ops is set: an
    // interface type test is a helper call that scans the driver's interface map, on every iommu_map.
    internal IIommuMapPagesOps? MapPagesOps;
    internal IIommuIotlbOps? IotlbOps;

    // Set by iommu_domain_free, cleared when a driver hands the object out again: later calls with
    // this domain throw instead of reaching freed page tables.
    internal bool Freed;

    // Calls that use the domain's tables right now (map, unmap, iotlb sync, iova_to_phys, the DMA API, attach) mark
    // it in their thread's access-scope slot with the domain's serial (no shared write); one nested inside a call on
    // another domain counts itself in InFlight instead. Dying: iommu_domain_free has begun. A call that enters after
    // that throws, and the free waits for the calls that entered before it before the driver frees the tables.
    internal long Serial;
    internal int InFlight;
    internal int Dying;

    // Map/unmap counters the core keeps for its metrics (Interlocked: map and unmap run concurrently).
    // Per domain rather than per core so concurrent users of different domains share no cache line.
    internal long MapOps;
    internal long MappedBytes;
    internal long UnmapOps;
    internal long UnmappedBytes;

    // The DMA-API cookie (domain->iova_cookie): the IOVA allocator and flush queue of a DMA/DMA_FQ
    // domain, set up by the core at the first dma_map through the domain.
    internal Dma.IovaDomain? IovaCookie;

    // Maps and unmaps counted by one thread, the domain's counting owner (its access slot, claimed once
    // by the first thread that counts here), with plain stores: only that thread writes them. Other
    // threads add to the counters above. The metrics add both.
    internal object? CountOwner;
    internal long OwnerMapOps;
    internal long OwnerMappedBytes;
    internal long OwnerUnmapOps;
    internal long OwnerUnmappedBytes;
}
