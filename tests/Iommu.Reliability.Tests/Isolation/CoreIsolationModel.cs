using System.Numerics;
using Iommu.Domains;

namespace Iommu.Reliability.Tests.Isolation;

/// <summary>
/// The reference model of one IOMMU domain: its leaves (as runs of equal-sized leaves, so that a
/// 2 MiB range mapped with 4 KiB pages stays one record), whether it has superpages, its aux PASID
/// and the devices it is aux-attached to.
/// </summary>
/// <remarks>
/// The leaf layout matters because <c>iommu_unmap</c> removes every leaf that overlaps the range,
/// whole (a superpage cut by either end goes entirely, nothing past it does), written here
/// independently of the driver.
/// </remarks>
internal sealed class ModelDomain(string name, IDomain real, bool identity, bool superpages)
{
    public const ulong Sz4K = 4096, Sz2M = 2UL << 20, Sz1G = 1UL << 30;

    private readonly List<Run> _runs = [];

    public string Name { get; } = name;

    public IDomain Real { get; } = real;

    public bool Identity { get; } = identity;

    /// <summary>2 MiB / 1 GiB pages in the bitmap and in the page table: set on the first attach to a unit (domain_update_iommu_cap).</summary>
    public bool Superpages { get; set; } = superpages;

    /// <summary>Page-table levels: 5 from iommu_domain_alloc (57-bit default width), down to the narrowest unit it was attached to.</summary>
    public int Levels { get; set; } = 5;

    /// <summary>For the nested domain: the guest's stage-1 state and its parent; null for every other domain.</summary>
    public NestModel? Nest { get; init; }

    /// <summary>The aux PASID (DOMAIN_ATTR_AUXD_ID), 0 when none.</summary>
    public uint Pasid { get; set; }

    /// <summary>Aux attachments by device index.</summary>
    public Dictionary<int, AuxLink> Links { get; } = [];

    public IReadOnlyList<Run> Runs => _runs;

    public ulong Bitmap => Superpages ? Sz4K | Sz2M | Sz1G : Sz4K;

    /// <summary>The leaf mapping <paramref name="iova"/>, if any.</summary>
    public bool TryFind(ulong iova, out ulong leafIova, out ulong leafSize, out ulong pa, out IommuProt prot)
    {
        foreach (Run r in _runs)
        {
            if (iova >= r.Iova && iova - r.Iova < r.Size)
            {
                leafIova = r.Iova + ((iova - r.Iova) & ~(r.Leaf - 1));
                leafSize = r.Leaf;
                pa = r.Pa + (iova - r.Iova);
                prot = r.Prot;
                return true;
            }
        }

        leafIova = leafSize = pa = 0;
        prot = IommuProt.None;
        return false;
    }

    public bool Intersects(ulong iova, ulong size)
    {
        foreach (Run r in _runs)
        {
            if (iova < r.Iova + r.Size && r.Iova < iova + size)
            {
                return true;
            }
        }

        return false;
    }

    /// <summary>A successful <c>iommu_map</c> of a free range: the largest aligned leaf at each step (<c>__domain_mapping</c>).</summary>
    public void Map(ulong iova, ulong pa, ulong size, IommuProt prot)
    {
        while (size != 0)
        {
            ulong leaf = Sz4K;
            foreach (ulong s in (ReadOnlySpan<ulong>)[Sz1G, Sz2M])
            {
                if (Superpages && ((iova | pa) & (s - 1)) == 0 && size >= s)
                {
                    leaf = s;
                    break;
                }
            }

            // Extend a run of the same leaf size when contiguous, else start one.
            ulong take = leaf;
            if (leaf == Sz4K)
            {
                // 4 KiB leaves up to the next point where a superpage could start.
                while (take < size && !(Superpages && (((iova + take) | (pa + take)) & (Sz2M - 1)) == 0 && size - take >= Sz2M))
                {
                    take += Sz4K;
                }
            }

            _runs.Add(new Run(iova, take, pa, leaf, prot));
            iova += take;
            pa += take;
            size -= take;
        }
    }

    /// <summary>
    /// The model of <c>iommu_unmap</c>: every leaf that overlaps <c>[iova, iova + size)</c> goes, whole,
    /// and the result is their total (holes or not); the removed leaves go in <paramref name="removed"/>.
    /// </summary>
    public ulong Unmap(ulong iova, ulong size, List<ulong> removed)
    {
        ulong total = 0;
        for (int i = _runs.Count - 1; i >= 0; i--)
        {
            Run r = _runs[i];
            if (iova + size - 1 < r.Iova || iova > r.Iova + r.Size - 1)
            {
                continue;
            }

            // The leaves of the run that overlap: [kf, kl].
            ulong n = r.Size / r.Leaf;
            ulong kf = iova > r.Iova ? (iova - r.Iova) / r.Leaf : 0;
            ulong kl = Math.Min(n - 1, (iova + size - 1 - r.Iova) / r.Leaf);
            total += (kl - kf + 1) * r.Leaf;
            _runs.RemoveAt(i);
            if (kf > 0)
            {
                _runs.Add(r with { Size = kf * r.Leaf });
            }

            if (kl + 1 < n)
            {
                ulong off = (kl + 1) * r.Leaf;
                _runs.Add(r with { Iova = r.Iova + off, Pa = r.Pa + off, Size = r.Size - off });
            }

            // A few addresses of what went away, for stale-translation probes.
            removed.Add(r.Iova + (kf * r.Leaf));
            if (kl > kf)
            {
                removed.Add(r.Iova + (kl * r.Leaf));
            }
        }

        return total;
    }

    /// <summary>A DMA_FQ default domain (5.15 lazy mode): DMA-API unmaps go through the flush queue modelled below.</summary>
    public bool Lazy { get; set; }

    /// <summary>
    /// Ranges a lazy <c>dma_unmap_page</c> removed whose IOVA is still in the flush queue: handed out to
    /// nobody until the flush that frees them. While <see cref="DeferredRange.MayBeStale"/> a device may still
    /// reach the old page through a stale IOTLB entry.
    /// </summary>
    public List<DeferredRange> Deferred { get; } = [];

    /// <summary>Entries in the flush queue (at most <c>IOVA_FQ_SIZE - 1</c>).</summary>
    public int FqCount { get; private set; }

    /// <summary>When the flush-queue timer fires, or null when it is off.</summary>
    public TimeSpan? FqDeadline { get; private set; }

    /// <summary>The deferred range holding <paramref name="iova"/>, if any.</summary>
    public DeferredRange? FindDeferred(ulong iova) => Deferred.Find(r => iova >= r.Iova && iova - r.Iova < r.Size);

    public bool DeferredIntersects(ulong iova, ulong size) => Deferred.Exists(r => iova < r.Iova + r.Size && r.Iova < iova + size);

    /// <summary>
    /// <c>queue_iova</c>: a queue holding <c>IOVA_FQ_SIZE - 1</c> entries is flushed first (its entries freed
    /// and the whole IOTLB of the domain invalidated, this range's stale entries included, since its page
    /// table entries were already cleared); the timer is armed unless it is on.
    /// </summary>
    public void FqQueue(ulong iova, ulong size, ulong pa, IommuProt prot, TimeSpan now)
    {
        bool flushed = FqCount == IommuCore.IovaFqSize - 1;
        if (flushed)
        {
            FqFlush();
        }

        Deferred.Add(new DeferredRange(iova, size, pa, prot) { MayBeStale = !flushed });
        FqCount++;
        FqDeadline ??= now + IommuCore.IovaFqTimeout;
    }

    /// <summary>The clock reached <paramref name="now"/>: the timer, when due, flushes and frees every entry.</summary>
    public void FqTick(TimeSpan now)
    {
        if (FqDeadline is TimeSpan due && due <= now)
        {
            FqDeadline = null;
            FqFlush();
        }
    }

    /// <summary>The domain's IOTLB entries were invalidated by something else (a detach): nothing deferred is reachable any more.</summary>
    public void DropStale()
    {
        foreach (DeferredRange r in Deferred)
        {
            r.MayBeStale = false;
        }
    }

    private void FqFlush()
    {
        Deferred.Clear();
        FqCount = 0;
    }

    /// <summary>A run of equal leaves: [Iova, Iova + Size) → [Pa, Pa + Size), leaves of <see cref="Leaf"/> bytes.</summary>
    internal readonly record struct Run(ulong Iova, ulong Size, ulong Pa, ulong Leaf, IommuProt Prot);
}

/// <summary>
/// The guest side of a nested domain: the stage-1 leaves the property wrote (one page table of
/// <see cref="CoreIsolationBed.Stage1Pages"/> leaves under fixed upper levels), what the unit may still
/// have cached of earlier leaves, and the parent that translates every guest-physical address.
/// </summary>
/// <remarks>
/// The kernel's contract for a guest's stage-1 change: until the guest invalidates, a device may use the
/// old or the new translation; after the invalidation only the new one. <see cref="Stale"/> holds every
/// leaf value written since the last invalidation that covered the page (any of them may have been
/// walked and cached).
/// </remarks>
internal sealed class NestModel(ModelDomain parent, Iommu.VtD.Driver.IommuVtdS1 flags, bool pathUser, bool pathWrite)
{
    public ModelDomain Parent { get; } = parent;

    public Iommu.VtD.Driver.IommuVtdS1 Flags { get; } = flags;

    /// <summary>U/S on every upper-level entry.</summary>
    public bool PathUser { get; } = pathUser;

    /// <summary>R/W on every upper-level entry.</summary>
    public bool PathWrite { get; } = pathWrite;

    /// <summary>The current leaf of each stage-1 page, as written (A and D clear).</summary>
    public ulong[] Leaves { get; } = new ulong[CoreIsolationBed.Stage1Pages];

    /// <summary>Earlier leaves of each page the unit may still use (no invalidation since).</summary>
    public List<ulong>[] Stale { get; } = Enumerable.Range(0, CoreIsolationBed.Stage1Pages).Select(_ => new List<ulong>()).ToArray();

    /// <summary>A write through the page succeeded since its leaf was last written (only then may D be set).</summary>
    public bool[] Written { get; } = new bool[CoreIsolationBed.Stage1Pages];
}

/// <summary>A range a lazy unmap removed, waiting in the flush queue.</summary>
internal sealed record DeferredRange(ulong Iova, ulong Size, ulong Pa, IommuProt Prot)
{
    /// <summary>Whether the device may still reach it through a stale IOTLB entry (no flush covered it yet).</summary>
    public bool MayBeStale { get; set; }
}

/// <summary>A live DMA-API mapping of a device: what <c>dma_map_page</c> returned, and the IOVA range it maps.</summary>
internal sealed record DmaMapping(ulong Handle, ulong Size, DmaDataDirection Dir, ulong Iova, ulong Len, ulong Pa);

/// <summary>An aux attachment of (domain, device): the user count and whether its PASID entry is live in the device's current PASID table.</summary>
internal sealed class AuxLink
{
    public int Users { get; set; }

    /// <summary>False once the device's RID domain changed (the PASID table, aux entries included, was freed; 5.15 behaves alike).</summary>
    public bool Programmed { get; set; }
}

/// <summary>The reference model of one PCI device.</summary>
internal sealed class ModelDevice(int index, Devices.PciDevice real, ModelDomain defaultDomain)
{
    public int Index { get; } = index;

    public Devices.PciDevice Real { get; } = real;

    public ModelDomain Default { get; } = defaultDomain;

    /// <summary>The RID domain (group->domain and the driver's device info agree in every sequence we generate).</summary>
    public ModelDomain Rid { get; set; } = defaultDomain;

    /// <summary>PASIDs attached with <c>iommu_attach_device_pasid</c> (each device is its own group): kept across RID-domain changes.</summary>
    public SortedDictionary<uint, ModelDomain> PasidSlots { get; } = [];

    /// <summary>The RID was attached to the nested domain (iommufd's path: the core does not know); core attach ops skip the device.</summary>
    public bool Nested { get; set; }

    /// <summary><c>info->auxd_enabled</c>: lost whenever the RID domain changes (a new device info).</summary>
    public bool AuxEnabled { get; set; }

    /// <summary>The device's live DMA-API mappings, in the order they were made.</summary>
    public List<DmaMapping> DmaMaps { get; } = [];
}
