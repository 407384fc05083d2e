using Iommu.Memory;
using Iommu;
using Iommu.Devices;
using Iommu.Domains;
using Vfio.Type1.Uapi;
using Vfio.Type1.Internal;

namespace Vfio.Type1;

public sealed partial class VfioIommuType1
{
    // For the metrics: pages pinned now by MAP_DMA (the pinned runs) and by vfio_pin_pages (pfn_list).
    // Reserved pfns (zero page, PFNMAP) do not count: vfio does not account them and holds no pin on them
    // (5.15.85's vaddr_get_pfns drops the zero page's pin at once).
    internal (long MapDma, long External) PinnedPages()
    {
        long mapDma = 0, external = 0;
        lock (_lock)
        {
            foreach (VfioDma d in _dmas)
            {
                foreach (PinnedRun run in d.Runs)
                {
                    mapDma += run.Reserved ? 0 : (long)run.Pages;
                }

                foreach (VfioPfn p in d.PfnList.Values)
                {
                    external += p.Reserved ? 0 : 1;
                }
            }
        }

        return (mapDma, external);
    }

    /// <summary>
    /// Checks the invariants <c>vfio_iommu_type1.c</c> keeps between ioctls and throws
    /// <see cref="InvalidOperationException"/> naming the
    /// first violation: non-overlapping aligned mappings inside the IOVA list; <c>dma_avail</c> + mappings ==
    /// limit; with IOMMU domains every mapping is mapped identically in every domain and its locked_vm
    /// charge equals its non-reserved pinned pages; without them nothing but external pins is pinned;
    /// each group in exactly one domain; no two domains share (ops, prot); aux PASIDs agree; no external
    /// pins once no group is left.
    /// </summary>
    /// <exception cref="InvalidOperationException">An invariant does not hold.</exception>
    public void Audit()
    {
        using PhysicalMemory.AccessScope guard = _iommu.Platform.Memory.EnterAccess();
        lock (_lock)
        {
            ulong min = MinPageSize;
            VfioDma? prev = null;
            foreach (VfioDma d in _dmas)
            {
                Check(((d.Iova | d.Size) & (min - 1)) == 0 && d.Size != 0, $"mapping 0x{d.Iova:x}+0x{d.Size:x} is not aligned to 0x{min:x}");
                Check(prev is null || prev.Iova + prev.Size <= d.Iova, $"mapping 0x{d.Iova:x} overlaps its predecessor");
                Check(_domains.Count == 0 || IovaDmaValid(d.Iova, d.Iova + d.Size - 1), $"mapping 0x{d.Iova:x}+0x{d.Size:x} is outside the IOVA list");
                Check(_dmas[d.Node].Value == d && _dmas[d.Node].Lo == d.Iova && _dmas[d.Node].Hi == d.Iova + d.Size - 1, $"mapping 0x{d.Iova:x} does not own its tree node");
                prev = d;
            }

            string? broken = _dmas.Validate();
            Check(broken is null, $"the mapping tree is broken: {broken}");
            Check(_dmaAvail + (uint)_dmas.Count == DmaEntryLimit, $"dma_avail {_dmaAvail} + {_dmas.Count} mappings != limit {DmaEntryLimit}");

            foreach (VfioDma d in _dmas)
            {
                long charged = 0;
                ulong pages = 0;
                foreach (PinnedRun r in d.Runs)
                {
                    pages += r.Pages;
                    charged += r.Accounted;
                }

                foreach (VfioPfn p in d.PfnList.Values)
                {
                    if (p.Accounted)
                    {
                        charged++;
                    }
                }

                Check(charged == d.LockedPages, $"mapping 0x{d.Iova:x}: charged {d.LockedPages} pages, pins account for {charged}");
                if (_domains.Count > 0)
                {
                    Check(d.IommuMapped && pages == d.Size / PageSize, $"mapping 0x{d.Iova:x} is not fully pinned and mapped although IOMMU domains exist");
                    foreach (PinnedRun r in d.Runs)
                    {
                        foreach (DomainEntry de in _domains)
                        {
                            for (ulong k = 0; k < r.Pages; k++)
                            {
                                ulong pa = _iommu.IovaToPhys(de.Domain!, r.Iova + (k << PageShift));
                                Check(pa == (r.Pfn + k) << PageShift, $"IOVA 0x{r.Iova + (k << PageShift):x} translates to 0x{pa:x}, expected 0x{(r.Pfn + k) << PageShift:x}");
                            }
                        }
                    }
                }
                else
                {
                    Check(d.Runs.Count == 0 && !d.IommuMapped, $"mapping 0x{d.Iova:x} holds IOMMU pins without an IOMMU domain");
                }
            }

            var seen = new HashSet<VfioGroup>();
            int nonPinned = 0;
            foreach (DomainEntry de in _domains)
            {
                foreach (GroupEntry g in de.Groups)
                {
                    Check(seen.Add(g.Group), $"{g.Group} is in two domains");
                    nonPinned += g.PinnedPageDirtyScope ? 0 : 1;
                }
            }

            if (_external is not null)
            {
                foreach (GroupEntry g in _external.Groups)
                {
                    Check(seen.Add(g.Group), $"{g.Group} is in two domains");
                }
            }

            Check(nonPinned == _numNonPinnedGroups, $"num_non_pinned_groups {_numNonPinnedGroups} != {nonPinned}");
            // Two domains may share (ops, prot): the attach only tries to reuse a compatible domain and keeps
            // its own when the IOMMU driver refuses the group there (say, a unit narrower than the domain).
            for (int i = 0; i < _domains.Count; i++)
            {
                int pasid = -1;
                foreach (GroupEntry g in _domains[i].Groups)
                {
                    if (g.IommuDevice is Device parent && _iommu.DevFeatureEnabled(parent, IommuDevFeature.Aux))
                    {
                        int p = _iommu.AuxGetPasid(_domains[i].Domain!, parent);
                        Check(p > 0 && (pasid < 0 || p == pasid), $"aux PASID {p} of {parent.Name} differs from {pasid}");
                        pasid = p;
                    }
                }
            }

            if (seen.Count == 0)
            {
                foreach (VfioDma d in _dmas)
                {
                    Check(d.PfnList.Count == 0, $"mapping 0x{d.Iova:x} still has external pins with no group left");
                }
            }
        }
    }

    private static void Check(bool ok, string message)
    {
        if (!ok)
        {
            ThrowHelper.InvariantViolated(message);
        }
    }
}
