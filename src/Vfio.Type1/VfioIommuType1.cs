using Iommu.Memory;
using System.Buffers.Binary;
using System.Numerics;
using Iommu;
using Iommu.Devices;
using Iommu.Domains;
using Iommu.Mm;
using Vfio.Mdev;
using Vfio.Mdev.Pinning;
using Vfio.Type1.Uapi;
using DmaTree = Iommu.Internal.RangeTree<Vfio.Type1.VfioDma>;

namespace Vfio.Type1;

/// <summary>
/// The type1 IOMMU backend of one container (<c>struct vfio_iommu</c>, <c>drivers/vfio/vfio_iommu_type1.c</c>, 5.15):
/// IOMMU-backed domains, the external domain for vendor-isolated mdevs, the mappings, pinning and
/// locked-memory accounting, dirty tracking.
/// </summary>
/// <remarks>
/// <para>Thread safety: one lock serialises every operation (<c>iommu-&gt;lock</c>); it is dropped while
/// DMA-unmap notifiers run so that vendors can call <see cref="VfioCore.UnpinPages"/> from them.</para>
/// <para>Version notes: 5.15 semantics throughout. Not modelled: the fine-grained-superpage probe
/// (<c>vfio_test_domain_fgsp</c>, which changes only unmap speed), software MSI cookies, no-IOMMU mode.</para>
/// </remarks>
[KernelSymbol("struct vfio_iommu")]
public sealed partial class VfioIommuType1
{
    private const int PageShift = 12;
    private const ulong PageSize = 1UL << PageShift;

    private readonly object _lock = new();
    private readonly VfioContainer _container;
    private readonly IommuCore _iommu;
    private readonly VfioType1Options _options;
    private readonly List<DomainEntry> _domains = [];
    private readonly List<VfioIovaRange> _iovaList = [];
    private readonly DmaTree _dmas = new(); // iommu->dma_list, an rbtree by IOVA
    private readonly List<VfioIommuNotifier> _notifiers = [];
    private DomainEntry? _external;
    private uint _dmaAvail;
    private ulong _pgsizeBitmap;
    private int _numNonPinnedGroups;
    private int _vaddrInvalidCount;
    private bool _containerOpen = true;
    private bool _released;

    private VfioIommuType1(VfioContainer container, bool v2, bool nesting)
    {
        _container = container;
        _iommu = container.Core.Platform.Iommu;
        _options = container.Core.Options;
        V2 = v2;
        Nesting = nesting;
        DmaEntryLimit = _options.DmaEntryLimit;
        _dmaAvail = DmaEntryLimit;
        UpdatePgsizeBitmap();
    }

    /// <summary>TYPE1v2 rules (strict unmap).</summary>
    public bool V2 { get; }

    /// <summary>Opened as TYPE1_NESTING.</summary>
    public bool Nesting { get; }

    /// <summary>The <c>dma_entry_limit</c> sampled at SET_IOMMU.</summary>
    public uint DmaEntryLimit { get; }

    /// <summary>Remaining mapping slots (<c>dma_avail</c>).</summary>
    public uint DmaAvail
    {
        get
        {
            lock (_lock)
            {
                return _dmaAvail;
            }
        }
    }

    internal VfioContainer Container => _container;

    /// <summary>Dirty tracking is on.</summary>
    public bool DirtyTracking { get; private set; }

    /// <summary>Container page sizes (<c>pgsize_bitmap</c>).</summary>
    public ulong PgsizeBitmap
    {
        get
        {
            lock (_lock)
            {
                return _pgsizeBitmap;
            }
        }
    }

    /// <summary>IOMMU-backed domains, newest first.</summary>
    public IReadOnlyList<IDomain> Domains
    {
        get
        {
            lock (_lock)
            {
                var l = new List<IDomain>(_domains.Count);
                foreach (DomainEntry d in _domains)
                {
                    l.Add(d.Domain!);
                }

                return l;
            }
        }
    }

    /// <summary>True while an external (no-IOMMU) domain exists.</summary>
    public bool HasExternalDomain
    {
        get
        {
            lock (_lock)
            {
                return _external is not null;
            }
        }
    }

    /// <summary>The valid IOVA ranges (inclusive).</summary>
    public IReadOnlyList<VfioIovaRange> IovaList
    {
        get
        {
            lock (_lock)
            {
                return [.. _iovaList];
            }
        }
    }

    /// <summary>Snapshot of the mappings, in IOVA order.</summary>
    public IReadOnlyList<VfioDma> Mappings
    {
        get
        {
            lock (_lock)
            {
                return [.. _dmas];
            }
        }
    }

    /// <summary>IOMMU-backed groups that have not called vfio_pin_pages (<c>num_non_pinned_groups</c>).</summary>
    public int NumNonPinnedGroups
    {
        get
        {
            lock (_lock)
            {
                return _numNonPinnedGroups;
            }
        }
    }

    /// <summary><c>vfio_iommu_type1_open</c>: TYPE1 → v1, TYPE1v2 → v2, TYPE1_NESTING → v2 + nesting, else -EINVAL.</summary>
    [KernelSymbol("vfio_iommu_type1_open")]
    internal static Errno Open(VfioContainer container, long type, out VfioIommuType1? backend)
    {
        backend = type switch
        {
            VfioUapi.VFIO_TYPE1_IOMMU => new VfioIommuType1(container, false, false),
            VfioUapi.VFIO_TYPE1v2_IOMMU => new VfioIommuType1(container, true, false),
            VfioUapi.VFIO_TYPE1_NESTING_IOMMU => new VfioIommuType1(container, true, true),
            _ => null,
        };
        return backend is null ? ErrorDetail.Fail(Errno.EINVAL, $"type1 open: type {type} rejected") : Errno.None;
    }

    /// <summary>type1's CHECK_EXTENSION answer without a backend instance (5.15).</summary>
    internal static int CheckExtensionNoBackend(long ext) => ext switch
    {
        VfioUapi.VFIO_TYPE1_IOMMU or VfioUapi.VFIO_TYPE1v2_IOMMU or VfioUapi.VFIO_TYPE1_NESTING_IOMMU
            or VfioUapi.VFIO_UNMAP_ALL or VfioUapi.VFIO_UPDATE_VADDR => 1,
        _ => 0,
    };

    /// <summary><c>vfio_iommu_type1_check_extension</c> with this backend.</summary>
    /// <param name="ext">Extension number.</param>
    /// <returns>0 or 1.</returns>
    [KernelSymbol("vfio_iommu_type1_check_extension")]
    public int CheckExtension(long ext)
    {
        using PhysicalMemory.AccessScope guard = _iommu.Platform.Memory.EnterAccess();
        if (ext != VfioUapi.VFIO_DMA_CC_IOMMU)
        {
            return CheckExtensionNoBackend(ext);
        }

        lock (_lock)
        {
            foreach (DomainEntry d in _domains)
            {
                if ((d.Prot & IommuProt.Cache) == 0)
                {
                    return 0;
                }
            }

            return 1;
        }
    }

    internal void NotifyContainerClosed()
    {
        lock (_lock)
        {
            _containerOpen = false;
            Monitor.PulseAll(_lock);
        }
    }

    // vfio_iommu_type1_release: the last group has left (or SET_IOMMU failed).
    [KernelSymbol("vfio_iommu_type1_release")]
    internal void Release()
    {
        lock (_lock)
        {
            RemoveAllDmas();

            foreach (DomainEntry d in _domains)
            {
                _iommu.DomainFree(d.Domain!);
            }

            _domains.Clear();
            _external = null;
            _released = true;
            Monitor.PulseAll(_lock);
        }
    }

    private ulong MinPageSize => _pgsizeBitmap & (~_pgsizeBitmap + 1);

    [KernelSymbol("vfio_update_pgsize_bitmap")]
    private void UpdatePgsizeBitmap()
    {
        ulong bm = ulong.MaxValue;
        foreach (DomainEntry d in _domains)
        {
            bm &= d.Domain!.PgsizeBitmap;
        }

        if ((bm & (PageSize - 1)) != 0)
        {
            bm &= ~(PageSize - 1);
            bm |= PageSize;
        }

        _pgsizeBitmap = bm;
    }

    // ---- mapping lookup -------------------------------------------------------------------------

    // vfio_find_dma: a mapping overlapping [start, start + size) (size 0 = containing start), as 5.15's
    // walk finds it. Its tests, start + size <= dma->iova and start >= dma->iova + dma->size, wrap: a request
    // ending at 2^64 goes left at every node, and a mapping ending at 2^64 sends the walk right, past itself,
    // so neither is ever found. (Beside other mappings, whether the walk passes a mapping ending at 2^64
    // before the overlap depends on the rb-tree's shape; here only that mapping itself is missed.)
    [KernelSymbol("vfio_find_dma")]
    private VfioDma? FindDma(ulong start, ulong size)
    {
        VfioDma? dma = FindOverlap(start, size);
        return dma is null || (size != 0 && start + size == 0) || dma.Iova + dma.Size == 0 ? null : dma;
    }

    // The mapping overlapping [start, start + size) (size 0 = containing start), by plain arithmetic: the
    // first mapping that ends at or after start, if it begins by the range's end. O(log n).
    private VfioDma? FindOverlap(ulong start, ulong size)
    {
        int node = _dmas.FirstEndingAtOrAfter(start);
        ulong last = size == 0 ? start : start + size - 1;
        return node != DmaTree.Nil && _dmas[node].Lo <= last ? _dmas[node].Value : null;
    }

    // vfio_link_dma: the caller checked that nothing overlaps it.
    [KernelSymbol("vfio_link_dma")]
    private void InsertDma(VfioDma dma) => dma.Node = _dmas.Insert(dma.Iova, dma.Iova + dma.Size - 1, dma);

    // Every mapping goes (vfio_iommu_unmap_unpin_all), the highest first as the list used to empty.
    private void RemoveAllDmas()
    {
        for (int node = _dmas.Last(); node != DmaTree.Nil; node = _dmas.Last())
        {
            RemoveDma(_dmas[node].Value);
        }
    }

    private bool IovaDmaValid(ulong start, ulong end)
    {
        if (_iovaList.Count == 0)
        {
            return true;
        }

        foreach (VfioIovaRange r in _iovaList)
        {
            if (start >= r.Start && end <= r.End)
            {
                return true;
            }
        }

        return false;
    }

    internal sealed class DomainEntry
    {
        public IDomain? Domain { get; set; }

        public List<GroupEntry> Groups { get; } = [];

        public IommuProt Prot { get; set; }
    }

    internal sealed class GroupEntry(VfioGroup group, bool mdevGroup)
    {
        public VfioGroup Group { get; } = group;

        public bool MdevGroup { get; } = mdevGroup;

        public bool PinnedPageDirtyScope { get; set; }

        public Device? IommuDevice { get; set; }
    }
}
