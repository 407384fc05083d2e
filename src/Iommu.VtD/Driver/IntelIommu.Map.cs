using System.Numerics;
using Iommu.Domains;

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
    /// </remarks>
    [KernelSymbol("intel_iommu_map_pages")]
    public Errno MapPages(IDomain domain, ulong iova, ulong paddr, ulong pgsize, ulong pgcount, IommuProt prot, out ulong mapped)
    {
        _memory.ThrowIfDisposed();
        mapped = 0;
        var d = (DmarDomain)domain;
        if (pgsize != Sz4K && pgsize != Sz2M && pgsize != Sz1G)
        {
            return ErrorDetail.Fail(Errno.EINVAL, $"page size 0x{pgsize:x} is not 4K, 2M or 1G");
        }

        if (((iova | paddr) & (pgsize - 1)) != 0)
        {
            return ErrorDetail.Fail(Errno.EINVAL, $"iova 0x{iova:x} / pa 0x{paddr:x} are not aligned to 0x{pgsize:x}");
        }

        ulong size = pgsize * pgcount;
        ulong attr = ((prot & IommuProt.Read) != 0 ? DmaPte.Read : 0)
            | ((prot & IommuProt.Write) != 0 ? DmaPte.Write : 0)
            | ((prot & IommuProt.Cache) != 0 && d.IommuSnooping ? DmaPte.Snoop : 0);
        ulong end = iova + size;
        if (d.MaxAddr < end)
        {
            if (d.Gaw < 64 && (end > 1UL << d.Gaw || end < iova))
            {
                return ErrorDetail.Fail(Errno.EFAULT, $"[0x{iova:x}, 0x{end:x}) exceeds the domain's {d.Gaw}-bit address width");
            }

            d.MaxAddr = end;
        }

        return d.PageTable.Map(iova, paddr, size, attr, d.IommuSuperpage, out mapped);
    }

    /// <inheritdoc/>
    /// <remarks>
    /// <c>intel_iommu_unmap_pages</c>: removes at least the page that maps <paramref name="iova"/>
    /// and returns the bytes removed; 0 when <paramref name="iova"/> is not mapped (5.15 returns the
    /// requested size even then; we follow the generic contract so <c>iommu_unmap</c> stops at holes).
    /// </remarks>
    [KernelSymbol("intel_iommu_unmap_pages")]
    public ulong UnmapPages(IDomain domain, ulong iova, ulong pgsize, ulong pgcount, ref IommuIotlbGather gather)
    {
        _memory.ThrowIfDisposed();
        var d = (DmarDomain)domain;
        ulong size = d.PageTable.Unmap(iova, pgsize * pgcount);
        if (size == 0)
        {
            return 0;
        }

        if (d.MaxAddr == iova + size)
        {
            d.MaxAddr = iova;
        }

        _platform.Iommu.IotlbGatherAddPage(domain, ref gather, iova, size);
        return size;
    }

    /// <inheritdoc/>
    [KernelSymbol("intel_iommu_iova_to_phys")]
    public ulong IovaToPhys(IDomain domain, ulong iova) => ((DmarDomain)domain).PageTable.IovaToPhys(iova);

    /// <inheritdoc/>
    /// <remarks>
    /// <c>intel_iommu_tlb_sync</c>: a page-selective IOTLB flush of the gathered range on every unit
    /// the domain is attached to (IH set when no table was freed), then the freed tables go back to
    /// the allocator. The address mask covers the whole range even when it is not naturally aligned
    /// (5.15 aligns only the size; later kernels fixed it).
    /// </remarks>
    [KernelSymbol("intel_iommu_tlb_sync")]
    public void IotlbSync(IDomain domain, ref IommuIotlbGather gather)
    {
        _memory.ThrowIfDisposed();
        ArgumentNullException.ThrowIfNull(domain); // a null domain is a caller bug: ANE, not a NullReferenceException
        var d = (DmarDomain)domain;
        if (!gather.IsEmpty)
        {
            bool leavesOnly = d.PageTable.PendingFrees == 0;
            foreach (IntelIommuUnit unit in _units)
            {
                if (d.IommuRefcnt[unit.SeqId] > 0)
                {
                    FlushIotlbPsi(unit, d, gather.Start, gather.End - gather.Start + 1, leavesOnly);
                }
            }
        }

        d.PageTable.ReleasePendingFrees();
    }

    /// <inheritdoc/>
    /// <remarks><c>intel_iommu_iotlb_sync_map</c>: with caching mode the unit may cache not-present entries, so a map needs a page-selective flush; otherwise only the write buffer.</remarks>
    [KernelSymbol("intel_iommu_iotlb_sync_map")]
    public void IotlbSyncMap(IDomain domain, ulong iova, ulong size)
    {
        _memory.ThrowIfDisposed();
        if (!_mapNeedsFlush)
        {
            return; // no unit caches not-present entries or needs write-buffer flushes
        }

        var d = (DmarDomain)domain;
        foreach (IntelIommuUnit unit in _units)
        {
            if (d.IommuRefcnt[unit.SeqId] == 0)
            {
                continue;
            }

            if (unit.CachingMode)
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
    [KernelSymbol("intel_flush_iotlb_all")]
    public void FlushIotlbAll(IDomain domain)
    {
        _memory.ThrowIfDisposed();
        ArgumentNullException.ThrowIfNull(domain); // a null domain is a caller bug: ANE, not a NullReferenceException
        var d = (DmarDomain)domain;
        foreach (IntelIommuUnit unit in _units)
        {
            if (d.IommuRefcnt[unit.SeqId] > 0)
            {
                unit.FlushIotlb(d.IommuDid[unit.SeqId], 0, 0, Dmar.TlbDomain);
            }
        }
    }

    // iommu_flush_iotlb_psi: PSI with the smallest naturally aligned block covering the range, or DSI.
    private static void FlushIotlbPsi(IntelIommuUnit unit, DmarDomain domain, ulong addr, ulong size, bool leavesOnly)
    {
        ushort did = domain.IommuDid[unit.SeqId];
        ulong first = addr >> 12;
        ulong last = (addr + size - 1) >> 12;
        int mask = first == last ? 0 : 64 - BitOperations.LeadingZeroCount(first ^ last);
        if (!Dmar.CapPgselInv(unit.Cap) || mask > Dmar.CapMaxAmaskVal(unit.Cap))
        {
            unit.FlushIotlb(did, 0, 0, Dmar.TlbDomain);
            return;
        }

        ulong aligned = (first >> mask) << (mask + 12);
        unit.FlushIotlb(did, aligned | (leavesOnly ? 1UL << 6 : 0), mask, Dmar.TlbPage);
    }
}
