using Iommu.Devices;
using Iommu.Domains;
using Iommu.VtD.Driver.Format;

namespace Iommu.VtD.Driver;

// Nested translation the 6.7+ iommufd way (drivers/iommu/intel/nested.c, intel_pasid_setup_nested): a second-level nest parent, nested
// domains built from a user's stage-1 description, their PASID entries (PGTT = 011) and the user-driven
// invalidation of the stage-1 caches. iommufd itself is not modelled: these are the driver callbacks it
// calls (domain_alloc_user, the nested domain's attach_dev and cache_invalidate_user), as methods.
public sealed partial class IntelIommu
{
    private const ulong KnownS1Flags = (ulong)(IommuVtdS1.Sre | IommuVtdS1.Eafe | IommuVtdS1.Wpe);

    /// <summary>
    /// Allocates a second-level UNMANAGED domain that nested domains may be built on
    /// (<c>intel_iommu_domain_alloc_user</c> with <c>IOMMU_HWPT_ALLOC_NEST_PARENT</c>). It is a domain of
    /// the IOMMU core like any other: map into it with <see cref="IommuCore.Map"/>, attach it to devices
    /// directly, or through nested domains (<see cref="DomainAllocNested"/>).
    /// </summary>
    /// <param name="bus">The bus whose IOMMU ops are this driver.</param>
    /// <param name="parent">The new domain, or null on failure.</param>
    /// <returns>-EOPNOTSUPP unless every unit is in scalable mode with ECAP.NEST; -ENOMEM when no table frame is left.</returns>
    /// <remarks>
    /// 6.7+ (iommufd). 6.7 checks the unit of the device the user names; with no device here, every unit
    /// must support nesting. User domains never use first-level tables ("do not use first stage for user
    /// domain translation"): under <see cref="FirstLevelPolicy.AllWhenEveryUnitHasFlts"/> the fresh domain is
    /// moved to the second level, as 5.15's <c>enable_nesting</c> does.
    /// </remarks>
    [KernelSymbol("intel_iommu_domain_alloc_user", Version = "6.7")]
    public Errno DomainAllocNestParent(Bus bus, out DmarDomain? parent)
    {
        _memory.ThrowIfDisposed();
        ArgumentNullException.ThrowIfNull(bus);
        parent = null;
        if (!Array.TrueForAll(_units, u => u.ScalableMode && DmarCap.EcapNest(u.Ecap)))
        {
            return ErrorDetail.Fail(Errno.EOPNOTSUPP, "nested translation needs scalable mode with ECAP.NEST on every DMAR unit");
        }

        if (_platform.Iommu.DomainAllocType(bus, DomainType.Unmanaged) is not DmarDomain d)
        {
            return ErrorDetail.Fail(Errno.ENOMEM, "no frame left for the nest parent's page table");
        }

        if (d.UseFirstLevel)
        {
            if (DmaPageTable.Create(_memory, _frames, d.Agaw + 2, out DmaPageTable? table) != Errno.None)
            {
                _platform.Iommu.DomainFree(d);
                return ErrorDetail.Fail(Errno.ENOMEM, "no frame left for the nest parent's second-level table");
            }

            d.SwitchToSecondLevel(table!);
        }

        d.IsNestParent = true;
        parent = d;
        return Errno.None;
    }

    /// <summary>
    /// Builds a nested domain from a user's stage-1 description over <paramref name="parent"/>
    /// (<c>intel_nested_domain_alloc</c>): the guest owns the stage-1 table at
    /// <see cref="IommuHwptVtdS1.PgtblAddr"/>, a guest-physical address the parent translates.
    /// </summary>
    /// <param name="parent">A domain from <see cref="DomainAllocNestParent"/>.</param>
    /// <param name="stageOne">The user's description.</param>
    /// <param name="nested">The new domain, or null on failure.</param>
    /// <returns>
    /// -EOPNOTSUPP unless every unit supports nesting; -EINVAL when <paramref name="parent"/> is not a nest
    /// parent, a flag is unknown, or the table address lies beyond the parent's aperture. Width, SRE, WPE
    /// and EAFE are checked against the unit at attach (<see cref="AttachNestedDev"/>), as 6.7 does.
    /// </returns>
    /// <remarks>
    /// 6.7+ (iommufd). Decisions on points the kernel sources read for this model leave open: unknown flags and a table
    /// address beyond the parent's aperture are refused here with -EINVAL, as 5.15's
    /// <c>intel_svm_bind_gpasid</c> refused unknown VT-d flags and a guest pgd beyond the domain; 6.7
    /// leaves both to the walk.
    /// </remarks>
    [KernelSymbol("intel_nested_domain_alloc", Version = "6.7")]
    public Errno DomainAllocNested(DmarDomain parent, IommuHwptVtdS1 stageOne, out DmarDomain? nested)
    {
        _memory.ThrowIfDisposed();
        ArgumentNullException.ThrowIfNull(parent);
        nested = null;
        if (!Array.TrueForAll(_units, u => u.ScalableMode && DmarCap.EcapNest(u.Ecap)))
        {
            return ErrorDetail.Fail(Errno.EOPNOTSUPP, "nested translation needs scalable mode with ECAP.NEST on every DMAR unit");
        }

        if (!parent.IsNestParent || !ReferenceEquals(parent.Ops, this))
        {
            return ErrorDetail.Fail(Errno.EINVAL, "the parent is not a nest parent of this driver (allocate it with DomainAllocNestParent)");
        }

        if (((ulong)stageOne.Flags & ~KnownS1Flags) != 0)
        {
            return ErrorDetail.Fail(Errno.EINVAL, $"unknown stage-1 flags 0x{(ulong)stageOne.Flags & ~KnownS1Flags:x}");
        }

        if (stageOne.PgtblAddr > parent.Geometry.ApertureEnd)
        {
            return ErrorDetail.Fail(Errno.EINVAL, $"stage-1 table at GPA 0x{stageOne.PgtblAddr:x} lies beyond the parent's aperture (0x{parent.Geometry.ApertureEnd:x})");
        }

        var d = new DmarDomain(parent, stageOne, _units.Length);
        lock (parent.NestedChildren)
        {
            parent.NestedChildren.Add(d);
        }

        nested = d;
        return Errno.None;
    }

    /// <summary>
    /// Attaches a nested domain to <paramref name="device"/>'s requester ID (<c>intel_nested_attach_dev</c>):
    /// the device leaves its current domain, the parent is prepared for the device's unit, the nested
    /// domain gets a DID there and RID2PASID becomes a nested PASID entry (<c>intel_pasid_setup_nested</c>).
    /// </summary>
    /// <param name="nested">A domain from <see cref="DomainAllocNested"/>.</param>
    /// <param name="device">A PCI device behind one of this driver's units.</param>
    /// <returns>
    /// -EINVAL when <paramref name="nested"/> is not nested; -ENODEV when the device has no unit; the
    /// parent's preparation errors (-EFAULT, -EINVAL when the parent is in use with more levels than the
    /// unit walks); -ENOSPC without a DID; then <c>intel_pasid_setup_nested</c>'s: -ENODEV without ECAP.NEST,
    /// -EINVAL for an address width other than 48 or 57 or 57 without CAP.FL5LP, SRE without ECAP.SRS, EAFE
    /// without ECAP.EAFS; -ENODEV without a PASID entry; -EBUSY when it is in use.
    /// </returns>
    /// <remarks>
    /// 6.7+. The IOMMU core's group bookkeeping is not involved (iommufd attaches through its own paths):
    /// the core still believes the device is in its previous domain. The capability checks run before the
    /// device leaves that domain, so a refused attach changes nothing; 6.7 blocks translation first.
    /// WPE is written only with SRE (6.7 ignores it otherwise). 6.7 answers -ENODEV whenever the parent is
    /// wider than the unit, before preparing it, which fails a fresh 57-bit parent on a 4-level unit; here an
    /// empty parent is shrunk to the unit's width as a first attach would (only one in use is refused).
    /// </remarks>
    [KernelSymbol("intel_nested_attach_dev", Version = "6.7")]
    public Errno AttachNestedDev(DmarDomain nested, Device device)
    {
        _memory.ThrowIfDisposed();
        ArgumentNullException.ThrowIfNull(nested);
        ArgumentNullException.ThrowIfNull(device);
        if (nested.NestParent is not { } parent)
        {
            return ErrorDetail.Fail(Errno.EINVAL, "not a nested domain (allocate it with DomainAllocNested)");
        }

        lock (_deviceDomainLock)
        {
            IntelIommuUnit? unit = DeviceToIommu(device);
            if (unit is null || device is not PciDevice pci)
            {
                return ErrorDetail.Fail(Errno.ENODEV, $"{device.Name} is not behind a VT-d unit of this driver");
            }

            Errno err = CheckNestedCaps(unit, nested.StageOne);
            if (err == Errno.None)
            {
                err = CheckLevelsInUse(parent, device);
            }

            if (err != Errno.None)
            {
                return err;
            }

            if (device.IommuPriv is DeviceDomainInfo old)
            {
                RemoveDevInfo(old);
            }

            err = PrepareDomainAttachDevice(parent, device);
            return err != Errno.None ? err : InsertDevInfo(unit, pci, nested);
        }
    }

    /// <summary>
    /// Invalidates what the unit caches from the guest's stage-1 tables (<c>intel_nested_cache_invalidate_user</c>):
    /// for each request in order, a PASID-based IOTLB invalidation of the nested domain's DID for every PASID
    /// it is attached through (RID2PASID), page-selective or, with <see cref="ulong.MaxValue"/> pages at
    /// address 0, all.
    /// </summary>
    /// <param name="nested">A nested domain.</param>
    /// <param name="requests">The user's requests.</param>
    /// <param name="processed">How many requests were carried out before a refused one (all on success).</param>
    /// <returns>-EINVAL when <paramref name="nested"/> is not nested, or for a request whose address is not
    /// 4 KiB aligned or that asks for all pages at an address other than 0; -EOPNOTSUPP for unknown request flags.
    /// Each request is followed by a device-TLB invalidation for the ATS devices of the domain.</returns>
    /// <remarks>6.8+ (<c>IOMMU_HWPT_INVALIDATE</c>). Each request flushes the smallest naturally aligned block that
    /// holds its range, as 6.10's <c>calculate_psi_aligned_address</c> (with its later page-count fix) does: 6.8
    /// aligned the address down to the rounded-up count and missed the last pages of a range that straddles it.</remarks>
    [KernelSymbol("intel_nested_cache_invalidate_user", Version = "6.8")]
    public Errno CacheInvalidateUser(DmarDomain nested, ReadOnlySpan<IommuHwptVtdS1Invalidate> requests, out int processed)
    {
        _memory.ThrowIfDisposed();
        ArgumentNullException.ThrowIfNull(nested);
        processed = 0;
        if (nested.NestParent is null)
        {
            return ErrorDetail.Fail(Errno.EINVAL, "not a nested domain");
        }

        foreach (IommuHwptVtdS1Invalidate r in requests)
        {
            if ((r.Flags & ~IommuVtdInv.Leaf) != 0)
            {
                return ErrorDetail.Fail(Errno.EOPNOTSUPP, $"request {processed}: unknown flags 0x{(uint)r.Flags:x}");
            }

            if ((r.Addr & 0xFFF) != 0 || (r.Npages == ulong.MaxValue && r.Addr != 0))
            {
                return ErrorDetail.Fail(Errno.EINVAL, $"request {processed}: address 0x{r.Addr:x} is not 4 KiB aligned, or all pages were asked from a non-zero address");
            }

            (ulong addr, ulong npages, int mask) = AlignedFlushRange(r.Addr, r.Npages);
            foreach (IntelIommuUnit unit in _units)
            {
                if (nested.IommuRefcnt[unit.SeqId] > 0)
                {
                    DomainFlushPiotlb(unit, nested, addr, npages, (r.Flags & IommuVtdInv.Leaf) != 0);
                }
            }

            // 6.8 nested_flush_dev_iotlb: an ATS device caches the guest's stage-1 results in its ATC too.
            IommuFlushDevIotlb(nested, addr, mask);
            processed++;
        }

        return Errno.None;
    }

    // The naturally aligned block of 2^mask pages that covers [addr, addr + npages), as 6.10's
    // calculate_psi_aligned_address computes it, with the later fix that makes the page count follow a
    // widened mask (npages = U64_MAX for all pages when no smaller block does).
    // 6.8 takes the mask from npages alone and aligns addr down to it (a WARN), so a range that straddles
    // that alignment, 2 pages at page 1 say, lost its last pages; the user API allows any 4 KiB address.
    private static (ulong Addr, ulong Npages, int Mask) AlignedFlushRange(ulong addr, ulong npages)
    {
        if (IntelIommuUnit.FlushesAllPages(npages))
        {
            return (0, ulong.MaxValue, MaxAgawPfnWidth);
        }

        if (npages == 0)
        {
            return (addr, 0, 0); // nothing to flush (a WARN in the kernel); the device-TLB flush stays one page, as 6.8
        }

        ulong pfn = addr >> 12;
        int mask = IntelIommuUnit.CoveringMask(pfn, pfn + npages - 1);
        return mask >= MaxAgawPfnWidth ? (0, ulong.MaxValue, MaxAgawPfnWidth) : ((pfn & ~((1UL << mask) - 1)) << 12, 1UL << mask, mask);
    }

    // The capability checks of intel_pasid_setup_nested (6.7 order), which need no entry.
    private static Errno CheckNestedCaps(IntelIommuUnit unit, IommuHwptVtdS1 s1)
    {
        if (!DmarCap.EcapNest(unit.Ecap))
        {
            return ErrorDetail.Fail(Errno.ENODEV, $"DMAR unit {unit.SeqId} has no nested translation (ECAP.NEST)");
        }

        if (s1.AddrWidth == 57 && !DmarCap.Fl5lp(unit.Cap))
        {
            return ErrorDetail.Fail(Errno.EINVAL, $"DMAR unit {unit.SeqId} has no 5-level first-level paging (CAP.FL5LP) for a 57-bit stage 1");
        }

        if (s1.AddrWidth is not 48 and not 57)
        {
            return ErrorDetail.Fail(Errno.EINVAL, $"invalid stage-1 address width {s1.AddrWidth} (48 or 57)");
        }

        if ((s1.Flags & IommuVtdS1.Sre) != 0 && !DmarCap.EcapSrs(unit.Ecap))
        {
            return ErrorDetail.Fail(Errno.EINVAL, $"DMAR unit {unit.SeqId} has no supervisor-request support (ECAP.SRS)");
        }

        if ((s1.Flags & IommuVtdS1.Eafe) != 0 && !DmarCap.EcapEafs(unit.Ecap))
        {
            return ErrorDetail.Fail(Errno.EINVAL, $"DMAR unit {unit.SeqId} has no extended-accessed flag (ECAP.EAFS)");
        }

        return Errno.None;
    }

    // intel_pasid_setup_nested (6.7): capability checks, lookup (-ENODEV), present (-EBUSY); then FLPM,
    // FLPTR = the guest's table (a GPA), SRE [+ WPE], EAFE, SLPTPTR = the parent's root, FPD clear, DID of
    // the nested domain, AW = the parent's agaw, PWSNP, PGTT = 011, P; pasid_flush_caches.
    private Errno SetupNested(IntelIommuUnit unit, DmarDomain nested, DeviceDomainInfo info, uint pasid)
    {
        DmarDomain parent = nested.NestParent!;
        IommuHwptVtdS1 s1 = nested.StageOne;
        Errno err = CheckNestedCaps(unit, s1);
        if (err != Errno.None)
        {
            return err;
        }

        err = FreePasidEntry(info, pasid, Errno.ENODEV, out ulong pte);
        if (err != Errno.None)
        {
            return err;
        }

        var pe = default(PasidEntry);
        if (s1.AddrWidth == 57)
        {
            pe.SetFlpm(1);
        }

        pe.SetFlptr(s1.PgtblAddr);
        if ((s1.Flags & IommuVtdS1.Sre) != 0)
        {
            pe.SetSre();
            if ((s1.Flags & IommuVtdS1.Wpe) != 0)
            {
                pe.SetWpe();
            }
        }

        if ((s1.Flags & IommuVtdS1.Eafe) != 0)
        {
            pe.SetEafe();
        }

        pe.SetSlptr(parent.PageTable.Root);
        pe.SetFaultEnable();
        CommitPasidEntry(unit, ref pe, nested.IommuDid[unit.SeqId], parent.Agaw, PasidPgtt.Nested, pte, pasid);
        return Errno.None;
    }

    // A second-level change under nested domains: their IOTLB entries are tagged with their own DIDs, so
    // each attached child is flushed by DID as well (6.8 parent_domain_flush). 6.8 sends a page-selective
    // IOTLB invalidation with the parent's (guest-physical) range, relying on the spec's rule that it drops
    // every nested entry of the DID whatever its address (a nested entry is tagged by the first-stage input,
    // which a GPA cannot match). We send the domain-selective one: the same effect on the child's DID, which
    // holds only nested entries, and it does not depend on the unit matching nested entries by GPA (this
    // model's IOTLB does match page-selective invalidations by address). The list is locked, not the
    // device-domain lock: an unmap takes no driver lock (s1_lock in 6.8).
    private static void FlushNestedChildren(IntelIommuUnit unit, DmarDomain parent)
    {
        lock (parent.NestedChildren)
        {
            foreach (DmarDomain child in parent.NestedChildren)
            {
                if (child.IommuRefcnt[unit.SeqId] > 0)
                {
                    unit.FlushIotlb(child.IommuDid[unit.SeqId], 0, 0, Dmar.TlbDomain);
                }
            }
        }
    }

    // 6.8 parent_domain_flush, after a change to the parent's tables: each unit's IOTLB entries of the nested
    // children, then their device TLBs (an ATC caches nested results, and which of them a second-level change
    // touches is unknown, so each ATS device of an attached child drops everything). The list is copied first:
    // device_domain_lock is taken inside, and DomainFree takes the two locks the other way round.
    private void ParentDomainFlush(DmarDomain parent)
    {
        foreach (IntelIommuUnit unit in _units)
        {
            FlushNestedChildren(unit, parent);
        }

        DmarDomain[] children;
        lock (parent.NestedChildren)
        {
            children = [.. parent.NestedChildren];
        }

        foreach (DmarDomain child in children)
        {
            IommuFlushDevIotlb(child, 0, MaxAgawPfnWidth);
        }
    }

    // Refuses a map/unmap/lookup on a nested domain, which has no table of its own.
    private static Errno NotPaging() => ErrorDetail.Fail(Errno.EINVAL, "a nested domain has no page table of its own: map into its parent");
}
