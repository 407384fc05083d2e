using System.Runtime.CompilerServices;
using Iommu.Domains;
using Iommu.VtD.Driver.Format;

namespace Iommu.VtD.Driver;

public sealed partial class IntelIommu
{
    /// <inheritdoc/>
    /// <remarks>
    /// 5.15 <c>intel_iommu_map_pages</c>: only 4K/2M/1G, aligned (-EINVAL); the end must fit the
    /// domain's width (-EFAULT); then <c>__domain_mapping</c> picks superpages itself. Unlike 5.15,
    /// which reports 0 bytes when <c>__domain_mapping</c> fails part-way, <paramref name="mapped"/>
    /// holds what was really written, so that the core's unwind leaves nothing behind.
    /// Allocates nothing.
    /// <para>
    /// A leaf is never write-only: with <see cref="IommuProt.Write"/> the read bit is set too. Since
    /// "iommu/vt-d: Remove WO permissions on second-level paging entries" (eea53c581688, 5.12, in 5.10
    /// stable and so in 5.15) <c>__domain_mapping</c> ORs <c>DMA_FL_PTE_PRESENT</c> (bit 0, the same bit as
    /// <c>DMA_PTE_READ</c>) into every entry, because first-level entries cannot express write-only and the
    /// driver keeps both stages alike; a device can therefore read through a WRITE-only mapping. The
    /// -EINVAL for a request with neither read nor write still comes first (the table's check). The
    /// hardware model honours a W-only leaf someone else writes. (A 2025 commit, "Restore WO permissions on
    /// second-level paging entries", undoes this for later kernels; 5.15 does not have it.)
    /// </para>
    /// </remarks>
    [KernelSymbol("intel_iommu_map_pages")]
    public Errno MapPages(IDomain domain, ulong iova, ulong paddr, ulong pgsize, ulong pgcount, IommuProt prot, out ulong mapped)
    {
        _memory.ThrowIfDisposed();
        mapped = 0;
        var d = (DmarDomain)domain;
        if (pgsize != Sz4K && pgsize != Sz2M && pgsize != Sz1G)
        {
            return BadPageSize(pgsize);
        }

        if (((iova | paddr) & (pgsize - 1)) != 0)
        {
            return Misaligned(iova, paddr, pgsize);
        }

        ulong size = pgsize * pgcount;
        ulong attr = ((prot & (IommuProt.Read | IommuProt.Write)) != 0 ? DmaPte.Read : 0)
            | ((prot & IommuProt.Write) != 0 ? DmaPte.Write : 0)
            | ((prot & IommuProt.Cache) != 0 && d.IommuSnooping ? DmaPte.Snoop : 0);
        ulong end = iova + size;

        // A range that runs past 2^64 passes this test (its end is small): the table refuses it (-EFAULT
        // too, PageTable.MapRange), which keeps a compare off the 4 KiB path.
        if (d.MaxAddr < end)
        {
            if (d.Gaw < 64 && (end > 1UL << d.Gaw || end < iova))
            {
                return BeyondWidth(iova, end, d.Gaw);
            }

            d.MaxAddr = end;
        }

        if (size >= Sz2M && d.IommuSuperpage != 0)
        {
            return MapSuperpages(d, iova, paddr, size, attr, out mapped); // may replace a table: out of line
        }

        // Counted as a walk while an attach may still drop the table's top levels (see DmarDomain).
        using DmarDomain.TableWalk walk = d.EnterTableWalk();
        if (d.UseFirstLevel)
        {
            return d.NestParent is null ? d.FirstLevelTable.Map(iova, paddr, size, attr, d.IommuSuperpage, out mapped) : NotPaging();
        }

        // The table's memory is _memory, checked above.
        return d.SecondLevelTable.Engine.Map(iova, paddr, size, attr, d.IommuSuperpage, out mapped);
    }

    // A map that may write superpages: a superpage that replaces a table (a map over live 4 KiB mappings, a caller bug)
    // leaves their translations in the IOTLBs, so the range is flushed on every unit of the domain, as
    // switch_to_super_page does with iommu_flush_iotlb_psi (through IotlbSync, which also frees the replaced tables).
    [MethodImpl(MethodImplOptions.NoInlining)]
    private Errno MapSuperpages(DmarDomain d, ulong iova, ulong paddr, ulong size, ulong attr, out ulong mapped)
    {
        Errno err;
        bool replaced;
        using (d.EnterTableWalk())
        {
            if (d.UseFirstLevel)
            {
                if (d.NestParent is not null)
                {
                    mapped = 0;
                    return NotPaging();
                }

                long before = d.FirstLevelTable.ReplacedTables;
                err = d.FirstLevelTable.Map(iova, paddr, size, attr, d.IommuSuperpage, out mapped);
                replaced = d.FirstLevelTable.ReplacedTables != before;
            }
            else
            {
                long before = d.SecondLevelTable.ReplacedTables;
                err = d.SecondLevelTable.Engine.Map(iova, paddr, size, attr, d.IommuSuperpage, out mapped);
                replaced = d.SecondLevelTable.ReplacedTables != before;
            }
        }

        if (replaced && mapped != 0)
        {
            FlushReplacedTables(d, iova, mapped);
        }

        return err;
    }

    // A superpage replaced a table under [iova, iova + size): flush the range on every unit of the domain and free the
    // table (switch_to_super_page's iommu_flush_iotlb_psi; IotlbSync releases the pending frees).
    private void FlushReplacedTables(DmarDomain d, ulong iova, ulong size)
    {
        var gather = default(IommuIotlbGather);
        gather.AddRange(iova, size);
        IotlbSync(d, ref gather);
    }

    // The failures of MapPages, out of line: their interpolated strings would otherwise give every
    // call a larger stack frame to zero.
    [MethodImpl(MethodImplOptions.NoInlining)]
    private static Errno BadPageSize(ulong pgsize) =>
        ErrorDetail.Fail(Errno.EINVAL, $"page size 0x{pgsize:x} is not 4K, 2M or 1G");

    [MethodImpl(MethodImplOptions.NoInlining)]
    private static Errno Misaligned(ulong iova, ulong paddr, ulong pgsize) =>
        ErrorDetail.Fail(Errno.EINVAL, $"iova 0x{iova:x} / pa 0x{paddr:x} are not aligned to 0x{pgsize:x}");

    [MethodImpl(MethodImplOptions.NoInlining)]
    private static Errno BeyondWidth(ulong iova, ulong end, int gaw) =>
        ErrorDetail.Fail(Errno.EFAULT, $"[0x{iova:x}, 0x{end:x}) exceeds the domain's {gaw}-bit address width");

    /// <inheritdoc/>
    /// <remarks>
    /// <c>intel_iommu_unmap_pages</c>: removes every leaf that overlaps the range, whole, and returns
    /// their total; 0 when nothing in the range is mapped. 5.15 grows the range by the size of the leaf
    /// at <paramref name="iova"/> counted from <paramref name="iova"/> (reaching into the next
    /// superpage when <paramref name="iova"/> is not leaf-aligned) and returns the grown size, mapped
    /// or not; we do neither (see <see cref="DmaPageTable.Unmap(ulong, ulong)"/>). The gather gets the
    /// span the removed leaves lie in, so the flush covers a superpage that starts before
    /// <paramref name="iova"/>. With a queued gather (a DMA flush queue will flush), the tables the unmap
    /// freed go to <see cref="IommuIotlbGather.Freelist"/> (5.15 <c>gather->freelist = domain_unmap(...)</c>),
    /// which the queue releases after its flush; otherwise they wait on the page table's pending list for
    /// <see cref="IotlbSync"/>.
    /// </remarks>
    [KernelSymbol("intel_iommu_unmap_pages")]
    public ulong UnmapPages(IDomain domain, ulong iova, ulong pgsize, ulong pgcount, ref IommuIotlbGather gather)
    {
        _memory.ThrowIfDisposed();
        var d = (DmarDomain)domain;
        ulong size, spanStart, spanEnd;
        if (d.NestParent is not null && d.UseFirstLevel)
        {
            return 0; // a nested domain has no table of its own
        }

        using (d.EnterTableWalk())
        {
            size = !d.UseFirstLevel
                ? d.SecondLevelTable.Unmap(iova, pgsize * pgcount, out spanStart, out spanEnd)
                : d.FirstLevelTable.Unmap(iova, pgsize * pgcount, out spanStart, out spanEnd);
        }

        if (size == 0)
        {
            return 0;
        }

        if (d.MaxAddr == spanEnd)
        {
            d.MaxAddr = spanStart;
        }

        _platform.Iommu.IotlbGatherAddPage(domain, ref gather, spanStart, spanEnd - spanStart);
        if (gather.Queued && PendingFrees(d) != 0)
        {
            ulong freelist = gather.Freelist;
            if (d.UseFirstLevel)
            {
                d.FirstLevelTable.TakePendingFrees(ref freelist);
            }
            else
            {
                d.SecondLevelTable.TakePendingFrees(ref freelist);
            }

            gather.Freelist = freelist;
        }

        return size;
    }

    /// <inheritdoc/>
    [KernelSymbol("intel_iommu_iova_to_phys")]
    public ulong IovaToPhys(IDomain domain, ulong iova)
    {
        var d = (DmarDomain)domain;
        return d.LevelsFinal ? Lookup(d, iova) : CountedLookup(d, iova);
    }

    // iova_to_phys's walk; no frame for a finally once the domain's levels are final (the common case).
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static ulong Lookup(DmarDomain d, ulong iova) =>
        !d.UseFirstLevel ? d.SecondLevelTable.IovaToPhys(iova) : d.NestParent is null ? d.FirstLevelTable.IovaToPhys(iova) : 0;

    // The walk counted, while a narrower unit may still drop the domain's top levels.
    [MethodImpl(MethodImplOptions.NoInlining)]
    private static ulong CountedLookup(DmarDomain d, ulong iova)
    {
        using DmarDomain.TableWalk walk = d.EnterTableWalk();
        return Lookup(d, iova);
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static int PendingFrees(DmarDomain d) => d.UseFirstLevel ? d.FirstLevelTable.PendingFrees : d.SecondLevelTable.PendingFrees;

    /// <inheritdoc/>
    /// <remarks>
    /// <c>intel_iommu_tlb_sync</c>: a page-selective IOTLB flush of the gathered range on every unit
    /// the domain is attached to (IH set when no table was freed), then the freed tables go back to
    /// the allocator (the page table's pending list and the gather's <see cref="IommuIotlbGather.Freelist"/>).
    /// The address mask covers the whole range even when it is not naturally aligned (5.15 aligns only the
    /// size; later kernels fixed it). A first-level domain is flushed with PASID-based IOTLB invalidations
    /// instead (<c>domain_flush_piotlb</c>): page-selective for its aux default PASID and, with RID
    /// attachments, for RID2PASID.
    /// </remarks>
    [KernelSymbol("intel_iommu_tlb_sync")]
    public void IotlbSync(IDomain domain, ref IommuIotlbGather gather)
    {
        _memory.ThrowIfDisposed();
        ArgumentNullException.ThrowIfNull(domain); // a null domain is a caller bug: ANE, not a NullReferenceException
        var d = (DmarDomain)domain;
        if (!gather.IsEmpty)
        {
            bool leavesOnly = PendingFrees(d) == 0 && gather.Freelist == 0;
            foreach (IntelIommuUnit unit in _units)
            {
                if (d.IommuRefcnt[unit.SeqId] == 0)
                {
                    continue;
                }

                if (d.UseFirstLevel)
                {
                    FlushFirstLevelRange(unit, d, gather.Start, gather.End - gather.Start + 1, leavesOnly);
                }
                else
                {
                    FlushIotlbPsi(unit, d, gather.Start, gather.End - gather.Start + 1, leavesOnly);
                }

                FlushDevIotlbAfterIotlb(unit, d, gather.Start, gather.End - gather.Start + 1, map: false);
            }

            // Nested domains over this one cache combined translations under their own DIDs.
            if (d.NestedChildren.Count != 0)
            {
                ParentDomainFlush(d);
            }
        }

        // A volatile read first: releasing takes two atomic operations, and most syncs follow unmaps
        // that freed no table. A table another thread queued after this read waits for that thread's
        // own sync, which follows its unmap.
        if (PendingFrees(d) != 0)
        {
            if (d.UseFirstLevel)
            {
                d.FirstLevelTable.ReleasePendingFrees();
            }
            else
            {
                d.PageTable.ReleasePendingFrees();
            }
        }

        if (gather.Freelist != 0)
        {
            _frames.FreeList(gather.Freelist);
            gather.Freelist = 0;
        }
    }

    /// <inheritdoc/>
    /// <remarks><c>intel_iommu_iotlb_sync_map</c>: with caching mode the unit may cache not-present entries, so a map needs a page-selective flush; otherwise only the write buffer. First-level domains get only the write-buffer flush, with caching mode too (5.15 <c>__mapping_notify_one</c> applies the caching-mode rule to second-level domains only).</remarks>
    [KernelSymbol("intel_iommu_iotlb_sync_map")]
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public void IotlbSyncMap(IDomain domain, ulong iova, ulong size)
    {
        _memory.ThrowIfDisposed();
        if (_mapNeedsFlush)
        {
            // Out of line: on the common unit (no caching mode, no RWBF) every iommu_map calls this, and
            // the loop's registers would make each call save and restore them for nothing.
            SyncMapUnits(domain, iova, size);
        }
    }

    [MethodImpl(MethodImplOptions.NoInlining)]
    private void SyncMapUnits(IDomain domain, ulong iova, ulong size)
    {
        var d = (DmarDomain)domain;
        foreach (IntelIommuUnit unit in _units)
        {
            if (d.IommuRefcnt[unit.SeqId] == 0)
            {
                continue;
            }

            if (unit.CachingMode && !d.UseFirstLevel)
            {
                FlushIotlbPsi(unit, d, iova, size, leavesOnly: false);
            }
            else
            {
                unit.FlushWriteBuffer();
            }
        }
    }

    /// <inheritdoc/>
    /// <remarks>First-level domains: P_IOTLB of every entry of each PASID the domain is reached through (<c>domain_flush_piotlb</c> with npages −1); others: IOTLB domain-selective.</remarks>
    [KernelSymbol("intel_flush_iotlb_all")]
    public void FlushIotlbAll(IDomain domain)
    {
        _memory.ThrowIfDisposed();
        ArgumentNullException.ThrowIfNull(domain); // a null domain is a caller bug: ANE, not a NullReferenceException
        var d = (DmarDomain)domain;
        foreach (IntelIommuUnit unit in _units)
        {
            if (d.IommuRefcnt[unit.SeqId] == 0)
            {
                continue;
            }

            if (d.UseFirstLevel)
            {
                DomainFlushPiotlb(unit, d, 0, ulong.MaxValue, ih: false);
            }
            else
            {
                unit.FlushIotlb(d.IommuDid[unit.SeqId], 0, 0, Dmar.TlbDomain);
            }

            FlushDevIotlbAll(unit, d);
        }

        if (d.NestedChildren.Count != 0)
        {
            ParentDomainFlush(d);
        }
    }

    // iommu_flush_iotlb_psi: PSI with the smallest naturally aligned block covering the range, or DSI.
    private static void FlushIotlbPsi(IntelIommuUnit unit, DmarDomain domain, ulong addr, ulong size, bool leavesOnly)
    {
        ushort did = domain.IommuDid[unit.SeqId];
        ulong first = addr >> 12;
        ulong last = (addr + size - 1) >> 12;
        int mask = IntelIommuUnit.CoveringMask(first, last);
        if (!DmarCap.PgselInv(unit.Cap) || mask > DmarCap.MaxAmaskVal(unit.Cap))
        {
            unit.FlushIotlb(did, 0, 0, Dmar.TlbDomain);
            return;
        }

        ulong aligned = (first >> mask) << (mask + 12);
        unit.FlushIotlb(did, aligned | (leavesOnly ? 1UL << 6 : 0), mask, Dmar.TlbPage);
    }
}
