using Iommu;
using Iommu.Domains;

namespace Vfio.Type1;

public sealed partial class VfioIommuType1
{
    // External pinning for mdev vendor drivers (vfio_iommu_type1_pin_pages / unpin_pages).
    [KernelSymbol("vfio_iommu_type1_pin_pages")]
    internal int PinPages(VfioGroup group, ulong[] userPfns, int npage, IommuProt prot, ulong[] physPfns)
    {
        lock (_lock)
        {
            if (!V2)
            {
                return -(int)ErrorDetail.Fail(Errno.EACCES, "vfio_pin_pages: container is not TYPE1v2");
            }

            // 5.15: look every IOVA up while any vaddr is invalid; after a wait start over from the
            // first one (goto again), since earlier mappings may have been invalidated meanwhile.
        again:
            if (_vaddrInvalidCount > 0)
            {
                for (int i = 0; i < npage; i++)
                {
                    VfioDma? d = FindDma(userPfns[i] << PageShift, 1);
                    if (d is null)
                    {
                        return -(int)ErrorDetail.Fail(Errno.EINVAL, $"vfio_pin_pages: no mapping at pfn 0x{userPfns[i]:x}");
                    }

                    if (d.VaddrInvalid)
                    {
                        if (!_containerOpen || _released)
                        {
                            return -(int)ErrorDetail.Fail(Errno.EFAULT, "vfio_pin_pages: container closed while waiting for a vaddr update");
                        }

                        Monitor.Wait(_lock);
                        if (!_containerOpen || _released)
                        {
                            return -(int)ErrorDetail.Fail(Errno.EFAULT, "vfio_pin_pages: container closed while waiting for a vaddr update");
                        }

                        goto again;
                    }
                }
            }

            if (_notifiers.Count == 0)
            {
                return -(int)ErrorDetail.Fail(Errno.EINVAL, "vfio_pin_pages: no DMA-unmap notifier registered");
            }

            bool doAccounting = _domains.Count == 0;
            int n;
            Errno e = Errno.None;
            for (n = 0; n < npage; n++)
            {
                ulong iova = userPfns[n] << PageShift;
                VfioDma? dma = FindDma(iova, 1);
                if (dma is null)
                {
                    e = ErrorDetail.Fail(Errno.EINVAL, $"vfio_pin_pages: no mapping at 0x{iova:x}");
                    break;
                }

                // 5.15: (dma->prot & prot) != prot, every bit of prot (IOMMU_CACHE too).
                if ((dma.Prot & prot) != prot)
                {
                    e = ErrorDetail.Fail(Errno.EPERM, $"vfio_pin_pages: {prot} exceeds mapping's {dma.Prot}");
                    break;
                }

                if (dma.PfnList.TryGetValue(iova, out VfioPfn? vpfn))
                {
                    vpfn.RefCount++;
                    physPfns[n] = vpfn.Pfn;
                    continue;
                }

                // vfio_pin_page_external -> vaddr_get_pfns(..., dma->prot, ...): FOLL_WRITE follows the
                // mapping's prot, not the request, so a READ pin of a writable mapping breaks COW (never
                // the zero page) and a later WRITE pin, which only takes a reference, gets a private page.
                e = dma.Task.PinUserPage(dma.Vaddr + (iova - dma.Iova), (dma.Prot & IommuProt.Write) != 0, out ulong pfn, out bool rsvd);
                if (e != Errno.None)
                {
                    break;
                }

                vpfn = new VfioPfn(iova, pfn, rsvd);
                if (!rsvd && doAccounting)
                {
                    if (!dma.LockCap && (ulong)(dma.Task.LockedVm + 1) > dma.Task.RlimitMemlock >> PageShift)
                    {
                        dma.Task.UnpinUserPage(pfn, rsvd);
                        e = ErrorDetail.Fail(Errno.ENOMEM, "vfio_pin_pages: RLIMIT_MEMLOCK exceeded");
                        break;
                    }

                    vpfn.Accounted = true;
                    Charge(dma, 1);
                }

                dma.PfnList[iova] = vpfn;
                if (DirtyTracking && dma.Bitmap is not null)
                {
                    SetBits(dma.Bitmap, (iova - dma.Iova) / MinPageSize, 1);
                }

                physPfns[n] = pfn;
            }

            if (e != Errno.None)
            {
                physPfns[n] = 0; // pin_unwind: phys_pfn[i] = 0, then every earlier entry
                for (int j = 0; j < n; j++)
                {
                    UnpinExternal(userPfns[j] << PageShift);
                    physPfns[j] = 0;
                }

                return -(int)e;
            }

            DomainEntry? de = FindGroup(group, out GroupEntry? entry);
            if (de is not null && entry is not null && !entry.PinnedPageDirtyScope)
            {
                entry.PinnedPageDirtyScope = true;
                _numNonPinnedGroups--;
            }

            return n; // ret = i: npage, or 0 for a negative npage
        }
    }

    [KernelSymbol("vfio_iommu_type1_unpin_pages")]
    internal int UnpinPages(ulong[] userPfns, int npage)
    {
        if (npage <= 0)
        {
            return -(int)ErrorDetail.Fail(Errno.EINVAL, $"vfio_unpin_pages: npage {npage}");
        }

        lock (_lock)
        {
            if (!V2)
            {
                return -(int)ErrorDetail.Fail(Errno.EACCES, "vfio_unpin_pages: container is not TYPE1v2");
            }

            int i;
            for (i = 0; i < npage; i++)
            {
                if (!UnpinExternal(userPfns[i] << PageShift))
                {
                    break;
                }
            }

            return i == 0 ? -(int)ErrorDetail.Fail(Errno.EINVAL, $"vfio_unpin_pages: no mapping at pfn 0x{userPfns[0]:x}") : i;
        }
    }

    // vfio_unpin_page_external: false when no mapping contains iova.
    private bool UnpinExternal(ulong iova)
    {
        VfioDma? dma = FindDma(iova, 1);
        if (dma is null)
        {
            return false;
        }

        if (dma.PfnList.TryGetValue(iova, out VfioPfn? vpfn) && --vpfn.RefCount == 0)
        {
            dma.PfnList.Remove(iova);
            dma.Task.UnpinUserPage(vpfn.Pfn, vpfn.Reserved);
            if (vpfn.Accounted)
            {
                if (dma.IommuMapped)
                {
                    // 5.15 accounts only when no IOMMU domain exists (do_accounting at unpin time): the page
                    // was charged while only the external domain existed, the replay pinned it again for the
                    // IOMMU without charging it, and that pin keeps the charge (vfio_unpin_pages_remote
                    // uncharges it when the mapping goes). Hand the page's charge to the run that pins it.
                    MoveChargeToRun(dma, iova);
                }
                else
                {
                    Charge(dma, -1);
                }
            }
        }

        return true;
    }

    // The IOMMU run holding iova takes over one page of charge from a vpfn that goes away.
    private static void MoveChargeToRun(VfioDma dma, ulong iova)
    {
        int lo = 0, hi = dma.Runs.Count - 1;
        while (lo <= hi)
        {
            int mid = lo + ((hi - lo) / 2);
            PinnedRun run = dma.Runs[mid];
            if (iova < run.Iova)
            {
                hi = mid - 1;
            }
            else if (iova >= run.Iova + (run.Pages << PageShift))
            {
                lo = mid + 1;
            }
            else
            {
                dma.Runs[mid] = run with { Accounted = run.Accounted + 1 };
                return;
            }
        }

        // No run pins it (cannot happen while the mapping is IOMMU-mapped): drop the charge as before.
        Charge(dma, -1);
    }
}
