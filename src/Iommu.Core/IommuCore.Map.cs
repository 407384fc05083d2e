using System.Numerics;
using System.Runtime.CompilerServices;
using Iommu.Domains;
using Iommu.Internal;

namespace Iommu;

public sealed partial class IommuCore
{
    /// <summary>
    /// Maps <c>[iova, iova + size)</c> to <c>[paddr, paddr + size)</c> (<c>iommu_map</c>), splitting the
    /// range into the largest pages the domain supports as soon as alignment allows.
    /// </summary>
    /// <param name="domain">A paging domain.</param>
    /// <param name="iova">First IOVA, aligned to the domain's smallest page.</param>
    /// <param name="paddr">First physical address, same alignment.</param>
    /// <param name="size">Bytes, same alignment; 0 maps nothing.</param>
    /// <param name="prot">Protection.</param>
    /// <returns>
    /// -ENODEV (driver cannot map, or the domain has no page sizes), -EINVAL (not a paging domain, or
    /// misaligned), or the driver's error, after unmapping exactly what this call had mapped.
    /// </returns>
    /// <remarks>
    /// <para>5.15: <c>iommu_pgsize</c> returns a page size and a count, and a driver with <c>map_pages</c>
    /// gets the whole run in one call (else <c>map</c> once per page); <c>iotlb_sync_map</c> runs only
    /// after a fully successful map (5.10 ran it even on failure). Allocates nothing.</para>
    /// <para>The page sizes are the domain's <see cref="IDomain.PgsizeBitmap"/> at the time of the call,
    /// and a driver may widen it on attach. The VT-d driver does, as 5.15's does: a new domain offers
    /// 4 KiB only (<c>intel_iommu_ops.pgsize_bitmap</c>), and its first attach adds 2 MiB and 1 GiB from
    /// the unit's CAP.SLLPS (<c>domain_update_iommu_cap</c>). So a 2 MiB map made before the first attach
    /// writes 512 4 KiB entries, and they stay 4 KiB after the attach (nothing merges them; the IOTLB
    /// needs 512 entries for the range). Attach first, then map, to get superpages.</para>
    /// </remarks>
    /// <exception cref="ObjectDisposedException">The domain was freed (<see cref="DomainFree"/>).</exception>
    [KernelSymbol("iommu_map")]
    [MethodImpl(MethodImplOptions.NoInlining)] // its own inlining budget: inlined into a caller's loop, the table walk's last level became a call
    public Errno Map(IDomain domain, ulong iova, ulong paddr, ulong size, IommuProt prot)
    {
        using Memory.PhysicalMemory.AccessScope guard = Platform.Memory.EnterDomainAccess(domain as IommuDomain);
        ArgumentNullException.ThrowIfNull(domain);
        IIommuOps? ops;
        if (domain is IommuDomain d)
        {
            ops = d.Ops;

            // The common case, one smallest page of a paging domain whose driver has map_pages: what
            // MapCore and the tail below do for it, with the domain's fields read directly instead
            // of through IDomain, and counted without atomics. Anything else takes the general path.
            ulong pgsizeBitmap = d.PgsizeBitmap;
            IIommuMapPagesOps? pages = d.MapPagesOps;
            if (pages is not null && size != 0 && size == (pgsizeBitmap & (0 - pgsizeBitmap))
                && ((iova | paddr) & (size - 1)) == 0 && d.Type.IsPaging())
            {
                // No ErrorDetail.Clear here: the outermost access scope forgot the previous call's
                // detail, and a failure below records its own.
                Memory.PhysicalMemory.Slot slot = guard.Slot!;
                Errno ret = pages.MapPages(domain, iova, paddr, size, 1, prot, out ulong mapped);
                if (ret != Errno.None || mapped != size)
                {
                    ret = MapRest(domain, pages, pgsizeBitmap, ret, iova, paddr, size, mapped, prot);
                    if (ret != Errno.None)
                    {
                        return ret;
                    }
                }

                CountMap(d, slot, size);
                d.IotlbOps?.IotlbSyncMap(domain, iova, size);

                return Errno.None;
            }
        }
        else
        {
            ops = domain.Ops;
        }

        return MapGeneral(domain, ops, iova, paddr, size, prot);
    }

    // iommu_map for everything but one smallest page of a core domain. Never inlined: under a dynamic
    // profile from a process that first mapped ranges (a guest's boot, the DMA API's scatter-gather
    // lists), the JIT inlined this whole path into callers of Map and left the single-page path's own
    // calls out of line; a later 4 KiB iommu_map then ran at about twice its fresh-process time.
    [MethodImpl(MethodImplOptions.NoInlining)]
    private Errno MapGeneral(IDomain domain, IIommuOps? ops, ulong iova, ulong paddr, ulong size, IommuProt prot)
    {
        Errno err = MapCore(domain, ops, iova, paddr, size, prot);
        if (err == Errno.None)
        {
            CountMap(domain, size);
            if (ops is IIommuIotlbOps iotlb)
            {
                iotlb.IotlbSyncMap(domain, iova, size);
            }
        }

        return err;
    }

    /// <summary>
    /// Unmaps at least <paramref name="size"/> bytes from <paramref name="iova"/> (<c>iommu_unmap</c>) and
    /// flushes the IOTLB for them.
    /// </summary>
    /// <param name="domain">A paging domain.</param>
    /// <param name="iova">First IOVA, aligned to the domain's smallest page.</param>
    /// <param name="size">Bytes, same alignment.</param>
    /// <returns>
    /// The total the driver reports removing: may exceed <paramref name="size"/> when a larger page
    /// overlaps either end of the range, is less when the range has holes, and is 0 on any error (no errno).
    /// </returns>
    /// <remarks>
    /// Every leaf that overlaps <c>[iova, iova + size)</c> goes, whole (the "unmap more than asked"
    /// contract), and nothing else. Unlike iommu.c, which advances by what the driver returned and stops
    /// at the first piece that returns 0, each piece of the range goes to the driver once: with a
    /// superpage that starts before the range, advancing by the driver's total would skip leaves.
    /// </remarks>
    /// <exception cref="ObjectDisposedException">The domain was freed (<see cref="DomainFree"/>).</exception>
    [KernelSymbol("iommu_unmap")]
    public ulong Unmap(IDomain domain, ulong iova, ulong size)
    {
        using Memory.PhysicalMemory.AccessScope guard = Platform.Memory.EnterDomainAccess(domain as IommuDomain);
        ArgumentNullException.ThrowIfNull(domain);
        var core = domain as IommuDomain; // one type test for the whole call
        ulong ret = UnmapAndSync(domain, core, iova, size);
        CountUnmap(domain, core, guard.Slot!, ret);
        return ret;
    }

    /// <summary>
    /// <see cref="Unmap"/> without the final flush (<c>iommu_unmap_fast</c>): the caller flushes
    /// <paramref name="gather"/> with <see cref="IotlbSync"/>.
    /// </summary>
    /// <param name="domain">A paging domain.</param>
    /// <param name="iova">First IOVA.</param>
    /// <param name="size">Bytes.</param>
    /// <param name="gather">Accumulates the range to flush.</param>
    /// <returns>Bytes unmapped, as for <see cref="Unmap"/>.</returns>
    /// <exception cref="ObjectDisposedException">The domain was freed (<see cref="DomainFree"/>).</exception>
    [KernelSymbol("iommu_unmap_fast")]
    public ulong UnmapFast(IDomain domain, ulong iova, ulong size, ref IommuIotlbGather gather)
    {
        using Memory.PhysicalMemory.AccessScope guard = Platform.Memory.EnterDomainAccess(domain as IommuDomain);
        ArgumentNullException.ThrowIfNull(domain);
        var core = domain as IommuDomain;
        ulong ret = UnmapCore(domain, core, iova, size, ref gather);
        CountUnmap(domain, core, guard.Slot!, ret);
        return ret;
    }

    /// <summary>Flushes what <paramref name="gather"/> collected and empties it (<c>iommu_iotlb_sync</c>).</summary>
    /// <param name="domain">The domain.</param>
    /// <param name="gather">The gathered range.</param>
    /// <exception cref="ObjectDisposedException">The domain was freed (<see cref="DomainFree"/>).</exception>
    [KernelSymbol("iommu_iotlb_sync")]
    public void IotlbSync(IDomain domain, ref IommuIotlbGather gather)
    {
        using Memory.PhysicalMemory.AccessScope guard = Platform.Memory.EnterDomainAccess(domain as IommuDomain);
        ArgumentNullException.ThrowIfNull(domain);
        IotlbSyncInScope(domain, domain as IommuDomain, ref gather);
    }

    // iommu_iotlb_sync for callers that hold the scope and checked the domain; core is domain when it
    // is a core domain, else null.
    private static void IotlbSyncInScope(IDomain domain, IommuDomain? core, ref IommuIotlbGather gather)
    {
        // A core domain resolved its ops' IIommuIotlbOps when they were set: no interface call for
        // Ops and no interface cast.
        IIommuIotlbOps? ops = core is not null ? core.IotlbOps : domain.Ops as IIommuIotlbOps;
        ops?.IotlbSync(domain, ref gather);
        gather.Init();
    }

    /// <summary>Flushes every IOTLB entry of the domain (<c>iommu_flush_iotlb_all</c>).</summary>
    /// <param name="domain">The domain.</param>
    /// <exception cref="ObjectDisposedException">The domain was freed (<see cref="DomainFree"/>).</exception>
    [KernelSymbol("iommu_flush_iotlb_all")]
    public void FlushIotlbAll(IDomain domain)
    {
        using Memory.PhysicalMemory.AccessScope guard = Platform.Memory.EnterDomainAccess(domain as IommuDomain);
        ArgumentNullException.ThrowIfNull(domain);
        if (domain.Ops is IIommuIotlbOps ops)
        {
            ops.FlushIotlbAll(domain);
        }
    }

    /// <summary>
    /// Adds an unmapped page to <paramref name="gather"/>, first flushing what it holds when the page
    /// is disjoint from it or of another size (<c>iommu_iotlb_gather_add_page</c>). For drivers.
    /// </summary>
    /// <param name="domain">The domain.</param>
    /// <param name="gather">The gather.</param>
    /// <param name="iova">First IOVA of the page.</param>
    /// <param name="size">Page size.</param>
    [KernelSymbol("iommu_iotlb_gather_add_page")]
    public void IotlbGatherAddPage(IDomain domain, ref IommuIotlbGather gather, ulong iova, ulong size)
    {
        ulong start = iova, end = iova + size - 1;
        if (gather.Pgsize != size || end + 1 < gather.Start || start > gather.End + 1)
        {
            if (gather.Pgsize != 0)
            {
                SyncGatherBeforeAdd(domain, ref gather);
            }

            gather.SetPgsize(size);
        }

        // Adding touches no memory, so it needs no access scope (a driver's unmap, the usual caller,
        // runs inside the core's): only the check every entry point makes after Dispose.
        Platform.Memory.ThrowIfDisposed();
        gather.AddRange(iova, size);
    }

    [MethodImpl(MethodImplOptions.NoInlining)]
    private void SyncGatherBeforeAdd(IDomain domain, ref IommuIotlbGather gather)
    {
        using Memory.PhysicalMemory.AccessScope guard = Platform.Memory.EnterAccess();
        ArgumentNullException.ThrowIfNull(domain);
        IotlbSyncInScope(domain, domain as IommuDomain, ref gather);
    }

    /// <summary>
    /// Translates an IOVA through the domain (<c>iommu_iova_to_phys</c>): IDENTITY returns the IOVA,
    /// BLOCKED returns 0, others ask the driver.
    /// </summary>
    /// <param name="domain">The domain.</param>
    /// <param name="iova">IOVA.</param>
    /// <returns>Physical address (with the offset inside the page), or 0 when not mapped.</returns>
    /// <remarks>
    /// <para>5.15 calls the driver without a NULL check; a driver without <c>iova_to_phys</c> gets the 5.10 answer, 0.</para>
    /// <para>On memory the library owns (Linux) the call opens no access scope and marks no domain: it
    /// checks before and after the walk whether <see cref="DomainFree"/> or <see cref="Platform.Dispose"/>
    /// began, so one that races either answers what the domain mapped before it or throws, and it leaves
    /// <see cref="ErrorDetail"/> as it was (see <see cref="Memory.PhysicalMemory.Dispose"/>).</para>
    /// </remarks>
    /// <exception cref="ObjectDisposedException">The domain was freed (<see cref="DomainFree"/>; a use after free in the kernel), or the platform disposed.</exception>
    [KernelSymbol("iommu_iova_to_phys")]
    public ulong IovaToPhys(IDomain domain, ulong iova)
    {
        Memory.PhysicalMemory memory = Platform.Memory;
        if (memory.RetiresOnDispose && domain is IommuDomain d)
        {
            return IovaToPhysUnscoped(memory, d, iova);
        }

        return IovaToPhysScoped(domain, iova);
    }

    // iommu_iova_to_phys with no access scope and no domain mark, validated afterwards instead: the walk only
    // reads, and memory that RetiresOnDispose stays mapped until it is finalized (this call keeps it reachable),
    // so a walk that races Dispose or iommu_domain_free reads zeros or frames freed under it, never unmapped
    // memory, and the checks after it turn such an answer into the exception a call after the free gets.
    // Ordering: the freer stores Dying before it frees a frame (and Dispose stores its flag before it retires
    // the memory); a walk that read what the free or the retire left is followed, past the read barrier, by a
    // load of the flag that sees it. The driver's lookup answers "not mapped" for a table pointer outside its
    // region (what a frame given back and rewritten may hold) instead of throwing, so no exception handler is
    // needed here: one would keep the call out of its caller's loop. Saves the scope's thread-local lookup and
    // its finally frame (docs/benchmarks.md, session 23).
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static ulong IovaToPhysUnscoped(Memory.PhysicalMemory memory, IommuDomain d, ulong iova)
    {
        if (memory.IsDisposed || Volatile.Read(ref d.Dying) != 0)
        {
            ThrowAfterFree(memory, d);
        }

        ulong pa;
        DomainType type = d.Type;
        if (type == DomainType.Identity)
        {
            pa = iova;
        }
        else if (type == DomainType.Blocked)
        {
            pa = 0;
        }
        else
        {
            IIommuOps? ops = d.Ops;
            pa = ops is not null ? ops.IovaToPhys(d, iova) : 0;
        }

        Volatile.ReadBarrier();
        if (memory.IsDisposed || Volatile.Read(ref d.Dying) != 0)
        {
            ThrowAfterFree(memory, d);
        }

        GC.KeepAlive(memory);
        return pa;
    }

    [MethodImpl(MethodImplOptions.NoInlining)]
    [System.Diagnostics.CodeAnalysis.DoesNotReturn]
    private static void ThrowAfterFree(Memory.PhysicalMemory memory, IommuDomain d)
    {
        if (memory.IsDisposed)
        {
            ThrowHelper.MemoryDisposed();
        }

        ThrowHelper.DomainFreed(d.Type);
    }

    // iommu_iova_to_phys inside an access scope that marks the domain (memory the caller owns, or a domain of
    // another IDomain implementation).
    [MethodImpl(MethodImplOptions.NoInlining)]
    private ulong IovaToPhysScoped(IDomain domain, ulong iova)
    {
        using Memory.PhysicalMemory.AccessScope guard = Platform.Memory.EnterDomainAccess(domain as IommuDomain);
        ArgumentNullException.ThrowIfNull(domain);

        // A core domain's type and ops are fields: read them without going through IDomain.
        if (domain is IommuDomain d)
        {
            DomainType type = d.Type;
            if (type == DomainType.Identity)
            {
                return iova;
            }

            if (type == DomainType.Blocked)
            {
                return 0;
            }

            IIommuOps? domainOps = d.Ops;
            return domainOps is not null ? domainOps.IovaToPhys(domain, iova) : 0;
        }

        if (domain.Type == DomainType.Identity)
        {
            return iova;
        }

        if (domain.Type == DomainType.Blocked)
        {
            return 0;
        }

        IIommuOps? ops = domain.Ops;
        return ops is not null ? ops.IovaToPhys(domain, iova) : 0;
    }

    /// <summary>
    /// The page size to use next and how many such pages (<c>iommu_pgsize</c>, 5.15 form): the largest
    /// supported size that fits <paramref name="size"/> and the alignment of <paramref name="iova"/> |
    /// <paramref name="paddr"/>, and a count that stops at the next larger page boundary when a full
    /// larger page fits after it.
    /// </summary>
    /// <param name="pgsizeBitmap">Supported sizes.</param>
    /// <param name="iova">IOVA.</param>
    /// <param name="paddr">Physical address (the IOVA itself when unmapping).</param>
    /// <param name="size">Bytes left; at least the smallest page.</param>
    /// <param name="count">Number of pages of the returned size.</param>
    /// <returns>The page size.</returns>
    /// <exception cref="InvalidOperationException">No supported size fits (the kernel's BUG_ON; cannot happen after the core's alignment checks).</exception>
    [KernelSymbol("iommu_pgsize")]
    public static ulong PgSize(ulong pgsizeBitmap, ulong iova, ulong paddr, ulong size, out ulong count)
    {
        ulong addrMerge = paddr | iova;
        ulong pgsizes = pgsizeBitmap & GenMask(BitOperations.Log2(size));
        if (addrMerge != 0)
        {
            pgsizes &= GenMask(BitOperations.TrailingZeroCount(addrMerge));
        }

        if (pgsizes == 0)
        {
            ThrowHelper.NoPageSizeFits(pgsizeBitmap, iova, paddr, size);
        }

        int idx = BitOperations.Log2(pgsizes);
        ulong pgsize = 1UL << idx;

        // Ramp up: stop the run at the next larger page boundary if a whole larger page fits after it.
        ulong larger = pgsizeBitmap & ~GenMask(idx);
        if (larger != 0)
        {
            ulong next = 1UL << BitOperations.TrailingZeroCount(larger);
            if (((iova ^ paddr) & (next - 1)) == 0)
            {
                ulong offset = next - (addrMerge & (next - 1));
                if (offset + next <= size && offset + next > offset)
                {
                    size = offset;
                }
            }
        }

        count = size >> idx;
        return pgsize;
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static ulong GenMask(int high) => high >= 63 ? ulong.MaxValue : (2UL << high) - 1;

    // __iommu_map
    private Errno MapCore(IDomain domain, IIommuOps? ops, ulong iova, ulong paddr, ulong size, IommuProt prot)
    {
        ulong pgsizeBitmap = domain.PgsizeBitmap;
        IIommuMapPagesOps? pages = ops as IIommuMapPagesOps;
        IIommuMapOps? single = pages is null ? ops as IIommuMapOps : null;
        if ((pages is null && single is null) || pgsizeBitmap == 0)
        {
            ThrowIfFreed(domain);
            return Fail(Errno.ENODEV, "the domain's IOMMU driver cannot map, or the domain has no page sizes");
        }

        if (!domain.Type.IsPaging())
        {
            return Fail(Errno.EINVAL, $"a {domain.Type} domain has no page tables to map into");
        }

        ulong minPagesz = 1UL << BitOperations.TrailingZeroCount(pgsizeBitmap);
        if (((iova | paddr | size) & (minPagesz - 1)) != 0)
        {
            Log.MapUnaligned(_log, iova, paddr, size, minPagesz);
            return Fail(Errno.EINVAL, $"unaligned: iova 0x{iova:x} pa 0x{paddr:x} size 0x{size:x} must be multiples of the minimum page size 0x{minPagesz:x}");
        }

        ErrorDetail.Clear();
        return MapPieces(domain, pages, single, pgsizeBitmap, minPagesz, iova, size, iova, paddr, size, prot);
    }

    // Map's fast path after its map_pages call of the single page [iova, iova + size) failed, or
    // succeeded with a different size: MapCore's loop from there on.
    [MethodImpl(MethodImplOptions.NoInlining)]
    private Errno MapRest(IDomain domain, IIommuMapPagesOps pages, ulong pgsizeBitmap, Errno ret, ulong iova, ulong paddr, ulong size, ulong mapped, IommuProt prot) =>
        ret != Errno.None
            ? MapFailed(domain, ret, iova, iova, size, size - mapped)
            : MapPieces(domain, pages, single: null, pgsizeBitmap, size, iova, size, iova + mapped, paddr + mapped, size - mapped, prot);

    // __iommu_map's loop over [iova, iova + size), the rest of the request [origIova, origIova + origSize),
    // through map_pages when the driver has it (pages), else through map (single).
    private Errno MapPieces(IDomain domain, IIommuMapPagesOps? pages, IIommuMapOps? single, ulong pgsizeBitmap, ulong minPagesz, ulong origIova, ulong origSize, ulong iova, ulong paddr, ulong size, IommuProt prot)
    {
        Errno ret = Errno.None;
        while (size != 0)
        {
            ulong count;
            ulong pgsize;
            if (size == minPagesz)
            {
                // iommu_pgsize of exactly one smallest page is that page (no larger size fits).
                pgsize = minPagesz;
                count = 1;
            }
            else
            {
                pgsize = PgSize(pgsizeBitmap, iova, paddr, size, out count);
            }

            ulong mapped;
            if (pages is not null)
            {
                ret = pages.MapPages(domain, iova, paddr, pgsize, count, prot, out mapped);
            }
            else
            {
                ret = single!.Map(domain, iova, paddr, pgsize, prot);
                mapped = ret == Errno.None ? pgsize : 0;
            }

            size -= mapped;
            if (ret != Errno.None)
            {
                break;
            }

            iova += mapped;
            paddr += mapped;
        }

        return ret != Errno.None ? MapFailed(domain, ret, iova, origIova, origSize, size) : Errno.None;
    }

    // A driver map call failed at iova with left bytes of [origIova, origIova + origSize) not mapped:
    // unmap what this request mapped and report the driver's errno.
    [MethodImpl(MethodImplOptions.NoInlining)]
    private Errno MapFailed(IDomain domain, Errno ret, ulong iova, ulong origIova, ulong origSize, ulong left)
    {
        // The driver's own reason (no table frame, …), when it recorded one for this errno, is the cause.
        string? cause = ErrorDetail.LastErrno == ret ? ErrorDetail.LastMessage : null;
        string detail = cause is null
            ? $"IOMMU driver failed to map iova 0x{iova:x} (of [0x{origIova:x}, 0x{origIova + origSize:x}))"
            : $"IOMMU driver failed to map iova 0x{iova:x} (of [0x{origIova:x}, 0x{origIova + origSize:x})): {cause}";
        ErrorDetail.Clear();

        // Not counted as an unmap: the failed map was never counted as a map.
        UnmapAndSync(domain, domain as IommuDomain, origIova, origSize - left);
        return ErrorDetail.Fail(ret, detail);
    }

    private ulong UnmapAndSync(IDomain domain, IommuDomain? core, ulong iova, ulong size)
    {
        var gather = default(IommuIotlbGather);
        ulong ret = UnmapCore(domain, core, iova, size, ref gather);
        IotlbSyncInScope(domain, core, ref gather);
        return ret;
    }

    // __iommu_unmap: through unmap_pages when the driver has it, else through unmap. core is domain
    // when it is a core domain, else null (the caller's one type test).
    private ulong UnmapCore(IDomain domain, IommuDomain? core, ulong iova, ulong size, ref IommuIotlbGather gather)
    {
        // A core domain's ops and page sizes are fields: read them without going through IDomain
        // (interface calls, not devirtualised with tiered compilation off).
        IIommuOps? ops = core is not null ? core.Ops : domain.Ops;
        IIommuMapPagesOps? pages = core is not null ? core.MapPagesOps : ops as IIommuMapPagesOps;
        IIommuMapOps? single = pages is null ? ops as IIommuMapOps : null;
        ulong pgsizeBitmap = core is not null ? core.PgsizeBitmap : domain.PgsizeBitmap;
        if ((pages is null && single is null) || pgsizeBitmap == 0)
        {
            ThrowIfFreed(domain);
            return 0;
        }

        if (!(core is not null ? core.Type : domain.Type).IsPaging())
        {
            return 0;
        }

        ulong minPagesz = 1UL << BitOperations.TrailingZeroCount(pgsizeBitmap);
        if (((iova | size) & (minPagesz - 1)) != 0)
        {
            Log.UnmapUnaligned(_log, iova, size, minPagesz);
            return 0;
        }

        // One smallest page (the common unmap): iommu_pgsize would return that page, once.
        if (size == minPagesz && pages is not null)
        {
            return pages.UnmapPages(domain, iova, size, 1, ref gather);
        }

        // Every piece of the range goes to the driver once, in iommu_pgsize order (see Unmap's remarks:
        // advancing by the driver's total skips leaves after a superpage that started before the piece).
        ulong unmapped = 0;
        for (ulong left = size; left != 0;)
        {
            ulong pgsize = PgSize(pgsizeBitmap, iova, iova, left, out ulong count);
            unmapped += pages is not null
                ? pages.UnmapPages(domain, iova, pgsize, count, ref gather)
                : single!.Unmap(domain, iova, pgsize, ref gather);
            ulong piece = pages is not null ? pgsize * count : pgsize;
            iova += piece;
            left -= piece;
        }

        return unmapped;
    }
}
