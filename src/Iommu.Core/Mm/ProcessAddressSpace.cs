using Iommu.Internal;
using Iommu.Memory;

namespace Iommu.Mm;

/// <summary>
/// A process: its memory (<c>mm_struct</c>: VMAs, page table, <c>locked_vm</c>), its
/// credentials (<c>RLIMIT_MEMLOCK</c>, <c>CAP_IPC_LOCK</c>) and its file-descriptor table. VFIO's MAP_DMA pins
/// from it, SVA binds its page tables; the pages come from a <see cref="HostPageAllocator"/> shared by all processes of a platform.
/// </summary>
/// <remarks>
/// <para>Model rules (an <c>mm</c> as <c>vaddr_get_pfns</c> → <c>pin_user_pages_remote</c> sees it): a
/// read-only pin of a never-written private anonymous page returns
/// the shared zero page (reserved, never accounted); a write or a write pin allocates a page (copy on
/// write from the zero page); <c>munmap</c> drops the mapping's references but pinned pages stay
/// alive until unpinned; <c>locked_vm</c> counts pages pinned by VFIO and pages locked by
/// <see cref="Mlock"/>; the budget is <see cref="RlimitMemlock"/> unless <see cref="CapIpcLock"/>.</para>
/// <para>Page tables: every mapping lives in real IA-32e 4-level tables in <see cref="PhysicalMemory"/>
/// (root <see cref="Pgd"/>, leaves as x86-64 Linux writes them for user pages; see <see cref="X86PageWalk"/>),
/// the tables a first-level IOMMU walk reads for SVA. Private writable leaves are read-only until a
/// write fault (Linux's <c>PAGE_COPY</c>); <see cref="Fork"/> shares private pages copy-on-write, write
/// protecting both sides, except pages that hold pins (copied at once, as 5.15's
/// <c>copy_present_page</c> does); a write fault reuses a page no other mapping shares (pins not
/// counted, so a pinned page stays with the process that pinned it, as 5.19+ guarantees) and copies
/// it otherwise. Table pages come from <see cref="Pages"/> (<see cref="HostPageAllocator.PageTablePages"/>)
/// and are freed with the last leaf of their range, and all at <see cref="Exit"/>. Huge-page areas are
/// mapped with 4 KiB leaves (the model writes no PS leaves). Registered <see cref="MmuNotifier"/>s hear of
/// every leaf change before a page it named is freed or reused.</para>
/// <para>Thread safety: all members are safe to call concurrently (one internal lock per process).</para>
/// </remarks>
public sealed class ProcessAddressSpace : IDisposable
{
    private const int PageShift = PhysicalMemory.PageShift;
    private const ulong PageSize = PhysicalMemory.PageSize;
    private const ulong HugeSize = 2 * Sizes.MiB;

    // x86-64 TASK_SIZE_MAX: no user range reaches past it.
    private const ulong TaskSize = 0x7FFF_FFFF_F000UL;

    private readonly Lock _lock = new();
    private readonly List<ProcessMemoryArea> _vmas = [];
    private readonly X86PageTable _pt;
    private readonly List<MmuNotifier> _notifiers = [];
    private readonly HashSet<ulong> _mlocked = [];
    private readonly Dictionary<int, object> _files = [];
    private ulong _nextVaddr = 0x7f00_0000_0000;
    private long _lockedVm;
    private int _nextFd = 3;
    private bool _exiting; // Exit has taken its fd snapshot: no descriptor may be installed any more

    /// <summary>Creates an empty process.</summary>
    /// <param name="pages">Where its pages come from.</param>
    /// <param name="name">A name for messages.</param>
    /// <exception cref="InsufficientMemoryException">The pool has no page left for the PML4.</exception>
    public ProcessAddressSpace(HostPageAllocator pages, string? name = null)
    {
        ArgumentNullException.ThrowIfNull(pages);
        using PhysicalMemory.AccessScope guard = pages.Memory.EnterAccess();
        if (X86PageTable.Create(pages, out X86PageTable? pt) != Errno.None)
        {
            ThrowHelper.HugePagesExhausted(PageSize);
        }

        _pt = pt!;
        Pages = pages;
        Name = name ?? "process";
    }

    /// <summary>Physical address of the PML4 (<c>mm-&gt;pgd</c>): what a first-level PASID entry's FLPTR holds to share these tables; 0 after <see cref="Exit"/>.</summary>
    [KernelSymbol("mm_struct.pgd")]
    public ulong Pgd
    {
        get
        {
            lock (_lock)
            {
                return _pt.Root;
            }
        }
    }

    /// <summary>Walks the tables for <paramref name="vaddr"/> as the CPU would, changing nothing (no A/D update, no fault).</summary>
    /// <param name="vaddr">Any address; above the user half nothing is mapped.</param>
    /// <returns>The entries read and what they grant.</returns>
    public X86PageWalk Walk(ulong vaddr)
    {
        using PhysicalMemory.AccessScope guard = Pages.Memory.EnterAccess();
        lock (_lock)
        {
            return _pt.Walk(vaddr);
        }
    }

    /// <summary>Subscribes <paramref name="notifier"/> to this process's page-table changes until <see cref="Exit"/> or <see cref="MmuNotifierUnregister"/>.</summary>
    /// <param name="notifier">The subscriber.</param>
    /// <exception cref="ArgumentNullException"><paramref name="notifier"/> is null.</exception>
    /// <exception cref="ArgumentException"><paramref name="notifier"/> is already registered here.</exception>
    /// <exception cref="InvalidOperationException">The process has exited (no mm to subscribe to).</exception>
    [KernelSymbol("mmu_notifier_register")]
    public void MmuNotifierRegister(MmuNotifier notifier)
    {
        using PhysicalMemory.AccessScope guard = Pages.Memory.EnterAccess();
        ArgumentNullException.ThrowIfNull(notifier);
        lock (_lock)
        {
            ThrowIfExited();
            if (_notifiers.Contains(notifier))
            {
                ThrowHelper.NotifierRegistered(Name, nameof(notifier));
            }

            _notifiers.Add(notifier);
        }
    }

    /// <summary>Ends a subscription; nothing when <paramref name="notifier"/> is not registered (for example after exit released it).</summary>
    /// <param name="notifier">The subscriber.</param>
    /// <exception cref="ArgumentNullException"><paramref name="notifier"/> is null.</exception>
    [KernelSymbol("mmu_notifier_unregister")]
    public void MmuNotifierUnregister(MmuNotifier notifier)
    {
        using PhysicalMemory.AccessScope guard = Pages.Memory.EnterAccess();
        ArgumentNullException.ThrowIfNull(notifier);
        lock (_lock)
        {
            _ = _notifiers.Remove(notifier);
        }
    }

    /// <summary>The host page pool.</summary>
    public HostPageAllocator Pages { get; }

    /// <summary>Name for messages.</summary>
    public string Name { get; }

    /// <summary>RLIMIT_MEMLOCK soft limit in bytes (default 8 MiB).</summary>
    public ulong RlimitMemlock { get; set; } = 8 * Sizes.MiB;

    /// <summary>Whether CAP_IPC_LOCK is in the effective set (default true, as for root).</summary>
    public bool CapIpcLock { get; set; } = true;

    /// <summary>True after <see cref="Exit"/>: the mm is gone.</summary>
    public bool Exited { get; private set; }

    /// <summary><c>mm-&gt;locked_vm</c> in pages.</summary>
    public long LockedVm => Interlocked.Read(ref _lockedVm);

    /// <summary><c>VmLck</c> of <c>/proc/self/status</c> in KiB.</summary>
    public long LockedVmKb => LockedVm * (long)(PageSize / 1024);

    /// <summary>The areas, in address order.</summary>
    public IReadOnlyList<ProcessMemoryArea> Areas
    {
        get
        {
            lock (_lock)
            {
                return [.. _vmas];
            }
        }
    }

    /// <summary>Maps a new area (<c>mmap</c>).</summary>
    /// <param name="length">Bytes (rounded up to pages; huge pages: to 2 MiB).</param>
    /// <param name="prot">Protection.</param>
    /// <param name="kind">Backing.</param>
    /// <param name="shared"><c>MAP_SHARED</c>.</param>
    /// <param name="physicalBase">For PFNMAP: the physical address to map.</param>
    /// <param name="dontCopy"><c>VM_DONTCOPY</c>: a forked child does not get the area (<see cref="ProcessMemoryArea.DontCopy"/>).</param>
    /// <returns>The address.</returns>
    /// <exception cref="ArgumentOutOfRangeException"><paramref name="length"/> is 0 or larger than the user address space.</exception>
    /// <exception cref="InsufficientMemoryException">The host pool cannot back huge pages.</exception>
    public ulong Mmap(ulong length, VmProt prot = VmProt.ReadWrite, VmaKind kind = VmaKind.Anonymous, bool shared = false, ulong physicalBase = 0, bool dontCopy = false)
    {
        using PhysicalMemory.AccessScope guard = Pages.Memory.EnterAccess();
        ArgumentOutOfRangeException.ThrowIfZero(length);

        // mmap's -ENOMEM for a length beyond TASK_SIZE; without it the page rounding overflowed to a
        // zero-length area (bad-input matrix).
        ArgumentOutOfRangeException.ThrowIfGreaterThan(length, TaskSize);
        ulong align = kind == VmaKind.HugePage ? HugeSize : PageSize;
        length = (length + align - 1) & ~(align - 1);
        lock (_lock)
        {
            ThrowIfExited();
            ulong start = (_nextVaddr + HugeSize - 1) & ~(HugeSize - 1);
            _nextVaddr = start + length + HugeSize; // a guard gap between areas
            if (kind == VmaKind.HugePage)
            {
                if (Pages.Allocate(length >> PageShift, HugeSize >> PageShift, out ulong pfn) != Errno.None)
                {
                    ThrowHelper.HugePagesExhausted(length);
                }

                // hugetlb pages are the process's own from mmap on: present, writable if the area is.
                var vma = new ProcessMemoryArea(start, length, prot, kind, shared, physicalBase) { DontCopy = dontCopy };
                ulong bits = LeafBits(vma) | ((prot & VmProt.Write) != 0 ? X86PageTable.Writable : 0);
                for (ulong i = 0; i < length >> PageShift; i++)
                {
                    if (_pt.SetLeaf(start + (i << PageShift), ((pfn + i) << PageShift) | bits) != Errno.None)
                    {
                        _pt.ForEachLeaf(start, start + length, static (ulong _, ref ulong pte) => pte = 0, freeEmpty: true);
                        for (ulong k = 0; k < length >> PageShift; k++)
                        {
                            Pages.Put(pfn + k);
                        }

                        ThrowHelper.HugePagesExhausted(length);
                    }
                }

                InsertVma(vma);
                return start;
            }

            InsertVma(new ProcessMemoryArea(start, length, prot, kind, shared, physicalBase) { DontCopy = dontCopy });
            return start;
        }
    }

    /// <summary>Unmaps <c>[vaddr, vaddr + length)</c> (<c>munmap</c>); pinned pages stay pinned and charged.</summary>
    /// <param name="vaddr">Page-aligned start.</param>
    /// <param name="length">Bytes.</param>
    /// <exception cref="ArgumentException"><paramref name="vaddr"/> is not page aligned (munmap's -EINVAL).</exception>
    /// <exception cref="ArgumentOutOfRangeException"><paramref name="length"/> is 0 or the range wraps or leaves the user address space (-EINVAL).</exception>
    /// <exception cref="ArgumentException">The range would split a huge-page area off its 2 MiB boundary (<c>hugetlb_vm_op_split</c>'s -EINVAL); nothing is unmapped.</exception>
    public void Munmap(ulong vaddr, ulong length)
    {
        using PhysicalMemory.AccessScope guard = Pages.Memory.EnterAccess();
        CheckRange(vaddr, length);
        length = (length + PageSize - 1) & ~(PageSize - 1);
        lock (_lock)
        {
            ulong end = vaddr + length;
            int at = FindVma(vaddr), tail = FindVma(end);
            if (at >= 0 && SplitsHugePage(_vmas[at], vaddr))
            {
                ThrowHelper.HugePageAreaSplit(vaddr);
            }

            if (tail >= 0 && SplitsHugePage(_vmas[tail], end))
            {
                ThrowHelper.HugePageAreaSplit(end);
            }

            for (int i = _vmas.Count - 1; i >= 0; i--)
            {
                ProcessMemoryArea v = _vmas[i];
                if (v.End <= vaddr || v.Start >= end)
                {
                    continue;
                }

                _vmas.RemoveAt(i);
                if (v.Start < vaddr)
                {
                    _vmas.Add(v with { Length = vaddr - v.Start });
                }

                if (v.End > end)
                {
                    _vmas.Add(v with { Start = end, Length = v.End - end, PhysicalBase = v.PhysicalBase + (end - v.Start) });
                }
            }

            _vmas.Sort(static (a, b) => a.Start.CompareTo(b.Start));

            ZapRange(vaddr, end);
            ulong first = vaddr >> PageShift, last = (end - 1) >> PageShift;
            int unlocked = _mlocked.RemoveWhere(k => k >= first && k <= last);
            Interlocked.Add(ref _lockedVm, -unlocked);
        }
    }

    /// <summary>Changes the protection of <c>[vaddr, vaddr + length)</c> (<c>mprotect</c>).</summary>
    /// <param name="vaddr">Page-aligned start.</param>
    /// <param name="length">Bytes (rounded up to pages; 0 does nothing).</param>
    /// <param name="prot">New protection (<c>PROT_SEM</c>, 8, is accepted and ignored).</param>
    /// <returns>0; -EINVAL for an unaligned <paramref name="vaddr"/>, a <paramref name="prot"/> bit other than
    /// PROT_READ, PROT_WRITE, PROT_EXEC and PROT_SEM, or a start or end that would split a huge-page area off its
    /// 2 MiB boundary; -ENOMEM when the range wraps or reaches an unmapped address (also above TASK_SIZE).</returns>
    /// <remarks>
    /// As <c>do_mprotect_pkey</c> (5.15), in its order: alignment (-EINVAL), length 0 (0), wrap (-ENOMEM),
    /// <c>arch_validate_prot</c> (-EINVAL), no area at the start (-ENOMEM); then <c>mprotect_fixup</c> area by area
    /// from the start, so a range with an unmapped gap, or one that would split a huge-page area off its 2 MiB
    /// boundary (<c>hugetlb_vm_op_split</c>), fails <em>after</em> changing the areas before that point, which keep
    /// their new protection. A locked private area made writable is populated for writing at once
    /// (<c>mprotect_fixup</c>'s <c>populate_vma_page_range</c>), breaking copy-on-write.
    /// </remarks>
    public Errno Mprotect(ulong vaddr, ulong length, VmProt prot)
    {
        using PhysicalMemory.AccessScope guard = Pages.Memory.EnterAccess();
        if ((vaddr & (PageSize - 1)) != 0)
        {
            return ErrorDetail.Fail(Errno.EINVAL, $"mprotect: 0x{vaddr:x} is not page aligned");
        }

        if (length == 0)
        {
            return Errno.None;
        }

        ulong end = unchecked(vaddr + ((length + PageSize - 1) & ~(PageSize - 1)));
        if (end <= vaddr)
        {
            return ErrorDetail.Fail(Errno.ENOMEM, $"mprotect: range 0x{vaddr:x}+0x{length:x} wraps");
        }

        const VmProt ProtSem = (VmProt)8;
        if ((prot & ~(VmProt.ReadWrite | VmProt.Exec | ProtSem)) != 0)
        {
            return ErrorDetail.Fail(Errno.EINVAL, $"mprotect: unknown PROT bits 0x{(int)prot:x}");
        }

        prot &= ~ProtSem;
        lock (_lock)
        {
            int first = FindVma(vaddr);
            if (first < 0)
            {
                return ErrorDetail.Fail(Errno.ENOMEM, $"mprotect: 0x{vaddr:x} is not mapped in {Name}");
            }

            // The areas mprotect_fixup reaches: contiguous from vaddr, up to the first gap or refused split.
            Errno result = Errno.None;
            ulong stop = WalkContiguous(first, vaddr, end, (v, s, e) =>
            {
                if (SplitsHugePage(v, s) || SplitsHugePage(v, e))
                {
                    result = ErrorDetail.Fail(Errno.EINVAL, $"mprotect: [0x{s:x}, 0x{e:x}) would split a huge-page area off its 2 MiB boundary");
                    return false;
                }

                return true;
            });

            if (result == Errno.None && stop < end)
            {
                result = ErrorDetail.Fail(Errno.ENOMEM, $"mprotect: 0x{stop:x} is not mapped in {Name} (the areas before it changed)");
            }

            end = stop;
            if (end == vaddr)
            {
                return result;
            }

            var changed = new List<ProcessMemoryArea>();
            var populate = new List<ProcessMemoryArea>();
            for (int i = _vmas.Count - 1; i >= 0; i--)
            {
                ProcessMemoryArea v = _vmas[i];
                if (v.End <= vaddr || v.Start >= end)
                {
                    continue;
                }

                _vmas.RemoveAt(i);
                ulong s = Math.Max(v.Start, vaddr), e = Math.Min(v.End, end);
                if (v.Start < s)
                {
                    changed.Add(v with { Length = s - v.Start });
                }

                changed.Add(v with { Start = s, Length = e - s, Prot = prot, PhysicalBase = v.PhysicalBase + (s - v.Start) });
                if ((v.Prot & VmProt.Write) == 0 && (prot & VmProt.Write) != 0 && !v.Shared)
                {
                    populate.Add(changed[^1]);
                }

                if (v.End > e)
                {
                    changed.Add(v with { Start = e, Length = v.End - e, PhysicalBase = v.PhysicalBase + (e - v.Start) });
                }
            }

            _vmas.AddRange(changed);
            _vmas.Sort(static (a, b) => a.Start.CompareTo(b.Start));

            // change_protection: each leaf keeps its frame, A, D and software bits and takes the new
            // area's bits (pte_modify), so a private writable area's leaves turn read-only.
            var hull = new Hull();
            foreach (ProcessMemoryArea v in changed)
            {
                ulong s = Math.Max(v.Start, vaddr), e = Math.Min(v.End, end);
                if (s >= e)
                {
                    continue;
                }

                ulong bits = LeafBits(v);
                _pt.ForEachLeaf(s, e, (ulong va, ref ulong pte) =>
                {
                    ulong next = (pte & (X86PageTable.AddressMask | X86PageTable.Accessed | X86PageTable.Dirty | X86PageTable.Special)) | bits;
                    if (next != pte)
                    {
                        pte = next;
                        hull.Add(va);
                    }
                }, freeEmpty: false);
            }

            Notify(hull);

            // mprotect_fixup: a VM_LOCKED private area that becomes writable is populated with FOLL_WRITE (errors ignored).
            foreach (ProcessMemoryArea v in populate)
            {
                for (ulong va = v.Start; va < v.End; va += PageSize)
                {
                    if (_mlocked.Contains(va >> PageShift))
                    {
                        _ = Fault(va, write: true, out _);
                    }
                }
            }

            return result;
        }
    }

    /// <summary>Locks pages in memory (<c>mlock</c>): charges <c>locked_vm</c> and populates them.</summary>
    /// <param name="vaddr">Start.</param>
    /// <param name="length">Bytes.</param>
    /// <returns>0; -EPERM when <see cref="RlimitMemlock"/> is 0 without <see cref="CapIpcLock"/>; -ENOMEM over
    /// RLIMIT_MEMLOCK without CAP_IPC_LOCK, for unmapped addresses (also above TASK_SIZE) or when a PROT_NONE area
    /// cannot be populated; -EINVAL when the range wraps; -EAGAIN when the pool has no page to populate with.</returns>
    /// <remarks>
    /// As <c>do_mlock</c> (5.15 and 6.1 alike), in its order: <c>can_do_mlock</c> (-EPERM); the length is
    /// <c>PAGE_ALIGN(len + offset_in_page(start))</c>, wrapping as the kernel's does (a length near 2^64 becomes 0:
    /// nothing to lock, 0); the budget counts every page of the range, unmapped ones included, less those of locked
    /// areas; then <c>apply_vma_lock_flags</c> (-EINVAL for a wrapping end) locks area by area from the start, so a
    /// range with an unmapped gap fails -ENOMEM <em>after</em> locking (and charging) the areas before the gap, which
    /// stay locked but are not populated (the call returns before <c>__mm_populate</c>). A range starting in a gap
    /// locks nothing. Huge-page and PFNMAP areas are never locked nor charged (<c>mlock_fixup</c> skips hugetlb and
    /// <c>VM_SPECIAL</c> areas), and <c>__mm_populate</c> skips PFNMAP areas. Population stops at the first PROT_NONE
    /// area (<c>check_vma_flags</c> without <c>FOLL_FORCE</c>: -EFAULT, returned as -ENOMEM); the range stays locked.
    /// </remarks>
    public Errno Mlock(ulong vaddr, ulong length)
    {
        using PhysicalMemory.AccessScope guard = Pages.Memory.EnterAccess();
        if (RlimitMemlock == 0 && !CapIpcLock)
        {
            return ErrorDetail.Fail(Errno.EPERM, "mlock: RLIMIT_MEMLOCK is 0 and CAP_IPC_LOCK is not held (can_do_mlock)");
        }

        ulong offset = vaddr & (PageSize - 1);
        ulong len = unchecked(length + offset + PageSize - 1) & ~(PageSize - 1);
        ulong start = vaddr - offset;
        ulong end = unchecked(start + len);
        lock (_lock)
        {
            // do_mlock: len >> PAGE_SHIFT + locked_vm, less count_mm_mlocked_page_nr over the range when over the limit.
            if (!CapIpcLock)
            {
                ulong limit = RlimitMemlock >> PageShift;
                ulong locked = (len >> PageShift) + (ulong)Math.Max(0, LockedVm);
                if (locked > limit)
                {
                    locked -= CountMlocked(start, end);
                }

                if (locked > limit)
                {
                    return ErrorDetail.Fail(Errno.ENOMEM, "mlock: RLIMIT_MEMLOCK exceeded");
                }
            }

            // apply_vma_lock_flags.
            if (end < start)
            {
                return ErrorDetail.Fail(Errno.EINVAL, $"mlock: range 0x{vaddr:x}+0x{length:x} wraps");
            }

            if (end == start)
            {
                return Errno.None;
            }

            int first = FindVma(start);
            if (first < 0)
            {
                return ErrorDetail.Fail(Errno.ENOMEM, $"mlock: 0x{start:x} is not mapped");
            }

            // mlock_fixup (VM_LOCKED, locked_vm) per area up to the first gap, then -ENOMEM.
            ulong next = WalkContiguous(first, start, end, (v, s, e) =>
            {
                if (v.Kind == VmaKind.Anonymous)
                {
                    for (ulong va = s; va < e; va += PageSize)
                    {
                        if (_mlocked.Add(va >> PageShift))
                        {
                            Interlocked.Increment(ref _lockedVm);
                        }
                    }
                }

                return true;
            });

            if (next < end)
            {
                return ErrorDetail.Fail(Errno.ENOMEM, $"mlock: 0x{next:x} is not mapped (the areas before it stay locked)");
            }

            // __mm_populate (populate_vma_page_range), also over pages locked before: FOLL_WRITE on private
            // writable areas, so no copy-on-write fault is left for later; PFNMAP areas skipped.
            for (int i = first; i < _vmas.Count && _vmas[i].Start < end; i++)
            {
                ProcessMemoryArea v = _vmas[i];
                if (v.Kind == VmaKind.PfnMap)
                {
                    continue;
                }

                if (v.Prot == VmProt.None)
                {
                    return ErrorDetail.Fail(Errno.ENOMEM, $"mlock: 0x{v.Start:x} is PROT_NONE and cannot be populated (locked all the same)");
                }

                bool write = (v.Prot & VmProt.Write) != 0 && !v.Shared;
                for (ulong va = Math.Max(v.Start, start); va < Math.Min(v.End, end); va += PageSize)
                {
                    Errno e = Fault(va, write, out _);
                    if (e != Errno.None)
                    {
                        // __mlock_posix_error_return: -ENOMEM from the fault becomes -EAGAIN.
                        return e == Errno.ENOMEM ? Errno.EAGAIN : e == Errno.EFAULT ? Errno.ENOMEM : e;
                    }
                }
            }

            return Errno.None;
        }
    }

    // The areas that cover [start, end) contiguously from _vmas[first] (which holds start), in order, as
    // mprotect_fixup and mlock_fixup reach them: visit(area, from, to) with the part of the range in the area,
    // until the range ends, a gap, or visit returns false. Returns where the walk stopped: end when every
    // area was visited, else the start of the gap or of the refused area's part.
    private ulong WalkContiguous(int first, ulong start, ulong end, Func<ProcessMemoryArea, ulong, ulong, bool> visit)
    {
        ulong next = start;
        for (int i = first; i < _vmas.Count && next < end; i++)
        {
            ProcessMemoryArea v = _vmas[i];
            if (v.Start > next)
            {
                break;
            }

            ulong e = Math.Min(v.End, end);
            if (!visit(v, next, e))
            {
                break;
            }

            next = e;
        }

        return next;
    }

    // hugetlb_vm_op_split: a huge-page area splits only on its page size.
    private static bool SplitsHugePage(ProcessMemoryArea v, ulong at) =>
        v.Kind == VmaKind.HugePage && at > v.Start && at < v.End && (at & (HugeSize - 1)) != 0;

    // count_mm_mlocked_page_nr: the locked pages of [start, end); none when the range wraps.
    private ulong CountMlocked(ulong start, ulong end)
    {
        if (end <= start)
        {
            return 0;
        }

        ulong first = start >> PageShift, last = (end - 1) >> PageShift, n = 0;
        foreach (ulong k in _mlocked)
        {
            if (k >= first && k <= last)
            {
                n++;
            }
        }

        return n;
    }

    /// <summary>CPU write into the process (<c>copy_to_user</c> semantics).</summary>
    /// <param name="vaddr">Address.</param>
    /// <param name="data">Bytes.</param>
    /// <returns>0 or -EFAULT (unmapped or not writable).</returns>
    public Errno Write(ulong vaddr, ReadOnlySpan<byte> data)
    {
        using PhysicalMemory.AccessScope guard = Pages.Memory.EnterAccess();
        lock (_lock)
        {
            while (!data.IsEmpty)
            {
                int off = (int)(vaddr & (PageSize - 1));
                int n = Math.Min(data.Length, (int)PageSize - off);
                Errno e = Fault(vaddr, write: true, out ulong pfn);
                if (e != Errno.None)
                {
                    return e;
                }

                Touch(vaddr, X86PageTable.Accessed | X86PageTable.Dirty);
                Pages.Memory.Write((pfn << PageShift) + (ulong)off, data[..n]);
                data = data[n..];
                vaddr += (ulong)n;
            }

            return Errno.None;
        }
    }

    /// <summary>CPU read from the process (<c>copy_from_user</c> semantics).</summary>
    /// <param name="vaddr">Address.</param>
    /// <param name="destination">Receives the bytes.</param>
    /// <returns>0 or -EFAULT (unmapped or PROT_NONE).</returns>
    public Errno Read(ulong vaddr, Span<byte> destination)
    {
        using PhysicalMemory.AccessScope guard = Pages.Memory.EnterAccess();
        lock (_lock)
        {
            while (!destination.IsEmpty)
            {
                int off = (int)(vaddr & (PageSize - 1));
                int n = Math.Min(destination.Length, (int)PageSize - off);
                Errno e = Fault(vaddr, write: false, out ulong pfn);
                if (e != Errno.None)
                {
                    return e;
                }

                Touch(vaddr, X86PageTable.Accessed);
                Pages.Memory.Read((pfn << PageShift) + (ulong)off, destination[..n]);
                destination = destination[n..];
                vaddr += (ulong)n;
            }

            return Errno.None;
        }
    }

    // iopf_handle_single's section under mmap_read_lock: find the VMA, refuse an access its flags lack
    // (vm_flags mirror PROT_* exactly, so a read needs PROT_READ even where x86 would let a CPU read),
    // then handle_mm_fault as a CPU touch of the page does: zero page for a read, a fresh page for a
    // write, the COW break (which tells the notifiers) for a write to a shared page; A, and D for a write.
    // -EFAULT for no VMA or a refused access; the allocator's errno when the fault fails (VM_FAULT_OOM).
    internal Errno HandleMmFault(ulong vaddr, bool read, bool write, bool exec)
    {
        using PhysicalMemory.AccessScope guard = Pages.Memory.EnterAccess();
        lock (_lock)
        {
            if (Exited)
            {
                return ErrorDetail.Fail(Errno.EFAULT, $"{Name} has exited");
            }

            int i = FindVma(vaddr);
            if (i < 0)
            {
                return ErrorDetail.Fail(Errno.EFAULT, $"vaddr 0x{vaddr:x} is not mapped in {Name}");
            }

            VmProt need = (read ? VmProt.Read : 0) | (write ? VmProt.Write : 0) | (exec ? VmProt.Exec : 0);
            if ((need & ~_vmas[i].Prot) != 0)
            {
                return ErrorDetail.Fail(Errno.EFAULT, $"vaddr 0x{vaddr:x} in {Name} is {_vmas[i].Prot}, the request needs {need}");
            }

            Errno e = Fault(vaddr, write, out _);
            if (e == Errno.None)
            {
                Touch(vaddr, X86PageTable.Accessed | (write ? X86PageTable.Dirty : 0));
            }

            return e;
        }
    }

    /// <summary>The page frame currently mapped at <paramref name="vaddr"/>, without faulting.</summary>
    /// <param name="vaddr">Address.</param>
    /// <param name="pfn">The frame.</param>
    /// <returns>True if a page is present.</returns>
    public bool TryTranslate(ulong vaddr, out ulong pfn)
    {
        using PhysicalMemory.AccessScope guard = Pages.Memory.EnterAccess();
        lock (_lock)
        {
            int i = FindVma(vaddr);
            if (i >= 0 && _vmas[i].Kind == VmaKind.PfnMap)
            {
                pfn = (_vmas[i].PhysicalBase + (vaddr - _vmas[i].Start)) >> PageShift;
                return true;
            }

            // A PROT_NONE leaf still holds its page (not present to the CPU, but mapped).
            ulong pte = vaddr < TaskSize ? _pt.GetLeaf(vaddr & ~(PageSize - 1)) : 0;
            pfn = (pte & X86PageTable.AddressMask) >> PageShift;
            return (pte & (X86PageTable.Present | X86PageTable.ProtNone)) != 0;
        }
    }

    /// <summary>
    /// Creates a child (<c>fork</c>): same areas but the <see cref="ProcessMemoryArea.DontCopy"/> ones, private pages shared copy-on-write (both sides'
    /// leaves write-protected; pinned pages copied at once), shared pages shared, the file table
    /// duplicated (the same open files), credentials inherited, <c>locked_vm</c> 0 (mlock is not inherited).
    /// </summary>
    /// <param name="name">Child name.</param>
    /// <returns>The child.</returns>
    /// <exception cref="InsufficientMemoryException">The pool ran out of pages for the child's tables or copies (the child is torn down; fork's -ENOMEM).</exception>
    public ProcessAddressSpace Fork(string? name = null)
    {
        using PhysicalMemory.AccessScope guard = Pages.Memory.EnterAccess();
        lock (_lock)
        {
            ThrowIfExited();
            var child = new ProcessAddressSpace(Pages, name) { RlimitMemlock = RlimitMemlock, CapIpcLock = CapIpcLock, _nextVaddr = _nextVaddr, _nextFd = _nextFd };
            var hull = new Hull();
            Errno failed = Errno.None;
            foreach (ProcessMemoryArea v in _vmas)
            {
                // dup_mmap skips VM_DONTCOPY areas: the child has neither the area nor its leaves.
                if (v.DontCopy)
                {
                    continue;
                }

                child._vmas.Add(v);
                _pt.ForEachLeaf(v.Start, v.End, (ulong va, ref ulong pte) =>
                {
                    if (failed == Errno.None)
                    {
                        failed = CopyLeaf(child, v, va, ref pte, hull);
                    }
                }, freeEmpty: false);
            }

            Notify(hull);
            if (failed != Errno.None)
            {
                child.Exit();
                ThrowHelper.HugePagesExhausted(PageSize);
            }

            foreach (KeyValuePair<int, object> f in _files)
            {
                if (f.Value is IFileReference vf)
                {
                    vf.GetFile();
                }

                child._files[f.Key] = f.Value;
            }

            return child;
        }
    }

    /// <summary>Ends the process (<c>exit</c>): closes every fd and tears the mm down. Pinned pages stay pinned.</summary>
    /// <remarks>Idempotent. <see cref="Dispose"/> is the same call in the .NET shape. Order (<c>exit_mmap</c>):
    /// every <see cref="MmuNotifier.Release"/>, then the leaves are cleared and their pages put, then
    /// the tables (root last) go back to the pool.</remarks>
    public void Exit()
    {
        using PhysicalMemory.AccessScope guard = Pages.Memory.EnterAccess();
        int[] fds;
        lock (_lock)
        {
            if (Exited || _exiting)
            {
                return;
            }

            // From here on InstallFile refuses: a descriptor installed after the snapshot would never be closed.
            _exiting = true;
            fds = [.. _files.Keys];
        }

        foreach (int fd in fds)
        {
            _ = Close(fd);
        }

        List<Exception>? failed = null;
        lock (_lock)
        {
            // As Notify: every notifier is released even when one before it throws, and the exit completes.
            foreach (MmuNotifier n in _notifiers)
            {
#pragma warning disable CA1031 // collected and rethrown after the exit
                try
                {
                    n.Release(this);
                }
                catch (Exception ex)
                {
                    (failed ??= []).Add(ex);
                }
#pragma warning restore CA1031
            }

            _notifiers.Clear();
            _pt.ForEachLeaf(0, TaskSize + PageSize, (ulong _, ref ulong pte) =>
            {
                if ((pte & X86PageTable.Special) == 0)
                {
                    Pages.Put((pte & X86PageTable.AddressMask) >> PageShift);
                }

                pte = 0;
            }, freeEmpty: false);
            _pt.FreeAll();
            _vmas.Clear();
            _mlocked.Clear();
            Interlocked.Exchange(ref _lockedVm, 0);
            Exited = true;
        }

        RethrowFirst(failed);
    }

    /// <summary>Installs an open file in the fd table.</summary>
    /// <param name="file">The file (a VFIO container, group or device file, or any object standing for another file such as /dev/null).</param>
    /// <returns>The fd.</returns>
    /// <exception cref="InvalidOperationException">The process has exited, or <see cref="Exit"/> has begun closing its descriptors (a descriptor installed then would never be closed).</exception>
    public int InstallFile(object file)
    {
        using PhysicalMemory.AccessScope guard = Pages.Memory.EnterAccess();
        ArgumentNullException.ThrowIfNull(file);
        lock (_lock)
        {
            ThrowIfExited();
            if (_exiting)
            {
                ThrowHelper.ProcessExited(Name);
            }

            int fd = _nextFd++;
            _files[fd] = file;
            return fd;
        }
    }

    /// <summary>The file behind an fd (<c>fdget</c>).</summary>
    /// <param name="fd">The descriptor.</param>
    /// <returns>The file, or null if not open.</returns>
    public object? GetFile(int fd)
    {
        using PhysicalMemory.AccessScope guard = Pages.Memory.EnterAccess();
        lock (_lock)
        {
            return _files.TryGetValue(fd, out object? f) ? f : null;
        }
    }

    /// <summary>Closes an fd; the file is released when its last descriptor (across forks) closes.</summary>
    /// <param name="fd">The descriptor.</param>
    /// <returns>0 or -EBADF.</returns>
    public Errno Close(int fd)
    {
        using PhysicalMemory.AccessScope guard = Pages.Memory.EnterAccess();
        object? f;
        lock (_lock)
        {
            if (!_files.Remove(fd, out f))
            {
                return ErrorDetail.Fail(Errno.EBADF, $"fd {fd} is not open in {Name}");
            }
        }

        if (f is IFileReference vf)
        {
            vf.PutFile();
        }

        return Errno.None;
    }

    /// <summary>Adds to (or, negative, subtracts from) <c>mm-&gt;locked_vm</c> without a limit check: the caller (type1's <c>vfio_lock_acct</c>) checked <see cref="RlimitMemlock"/> itself.</summary>
    /// <param name="pages">Pages.</param>
    [KernelSymbol("vfio_lock_acct")]
    public void AddLockedVm(long pages)
    {
        using PhysicalMemory.AccessScope guard = Pages.Memory.EnterAccess();
        Interlocked.Add(ref _lockedVm, pages);
    }

    /// <summary>
    /// <c>pin_user_pages_remote</c>/<c>follow_fault_pfn</c> for one page: resolves (faulting in if needed,
    /// a write pin breaking copy-on-write first) and, unless the pfn is reserved (zero page, PFNMAP), pins it.
    /// </summary>
    /// <param name="vaddr">Address in this process.</param>
    /// <param name="write">Pin for writing (FOLL_WRITE).</param>
    /// <param name="pfn">The frame pinned.</param>
    /// <param name="reserved">True when the frame is not refcounted (zero page, PFNMAP); unpin it with the same flag.</param>
    /// <returns>0, -EFAULT (unmapped, or not permitted: a write pin needs PROT_WRITE, a read pin PROT_READ), -ENODEV (the process has exited) or -ENOMEM.</returns>
    [KernelSymbol("pin_user_pages_remote")]
    public Errno PinUserPage(ulong vaddr, bool write, out ulong pfn, out bool reserved)
    {
        using PhysicalMemory.AccessScope guard = Pages.Memory.EnterAccess();
        reserved = false;
        lock (_lock)
        {
            pfn = 0;
            if (Exited)
            {
                return ErrorDetail.Fail(Errno.ENODEV, $"{Name} has exited (no mm)");
            }

            int i = FindVma(vaddr);
            if (i < 0)
            {
                return ErrorDetail.Fail(Errno.EFAULT, $"vaddr 0x{vaddr:x} is not mapped in {Name}");
            }

            // check_vma_flags (follow_fault_pfn's vma_permits_fault for PFNMAP): a write pin needs VM_WRITE, a read pin
            // VM_READ, which PROT_WRITE or PROT_EXEC alone do not give (no FOLL_FORCE here).
            ProcessMemoryArea v = _vmas[i];
            if ((v.Prot & (write ? VmProt.Write : VmProt.Read)) == 0)
            {
                return ErrorDetail.Fail(Errno.EFAULT, $"vaddr 0x{vaddr:x} in {Name} is {v.Prot}, {(write ? "write" : "read")} pin refused");
            }

            if (v.Kind == VmaKind.PfnMap)
            {
                pfn = (v.PhysicalBase + (vaddr - v.Start)) >> PageShift;
                reserved = true;
                return Errno.None;
            }

            Errno e = Fault(vaddr, write, out pfn);
            if (e != Errno.None)
            {
                return e;
            }

            if (pfn == Pages.ZeroPagePfn)
            {
                reserved = true;
                return Errno.None;
            }

            Pages.Pin(pfn);
            return Errno.None;
        }
    }

    /// <summary>Drops a pin taken by <see cref="PinUserPage"/> (<c>unpin_user_page</c>; nothing for a reserved frame).</summary>
    /// <param name="pfn">The frame.</param>
    /// <param name="reserved">The flag <see cref="PinUserPage"/> returned.</param>
    /// <exception cref="InvalidOperationException">A non-reserved frame that holds no pin.</exception>
    [KernelSymbol("unpin_user_page")]
    public void UnpinUserPage(ulong pfn, bool reserved)
    {
        if (!reserved)
        {
            Pages.Unpin(pfn);
        }
    }

    // handle_mm_fault for one page, under _lock: the leaf is present (and writable for a write)
    // afterwards. A read of a never-touched private page maps the shared zero page; a write to a
    // read-only leaf of a writable area is do_wp_page (reuse or copy).
    private Errno Fault(ulong vaddr, bool write, out ulong pfn)
    {
        pfn = 0;
        int i = FindVma(vaddr);
        if (i < 0)
        {
            return ErrorDetail.Fail(Errno.EFAULT, $"vaddr 0x{vaddr:x} is not mapped in {Name}");
        }

        ProcessMemoryArea v = _vmas[i];
        if (v.Prot == VmProt.None || (write && (v.Prot & VmProt.Write) == 0))
        {
            return ErrorDetail.Fail(Errno.EFAULT, $"vaddr 0x{vaddr:x} in {Name} is {v.Prot}");
        }

        ulong va = vaddr & ~(PageSize - 1);
        ulong pte = _pt.GetLeaf(va);
        if (v.Kind == VmaKind.PfnMap)
        {
            // vfio-pci's mmap fault handler inserts the pfn (remap_pfn_range) on first touch.
            pfn = (v.PhysicalBase + (va - v.Start)) >> PageShift;
            return (pte & X86PageTable.Present) != 0 ? Errno.None : _pt.SetLeaf(va, (pfn << PageShift) | LeafBits(v) | X86PageTable.Special);
        }

        if ((pte & X86PageTable.Present) != 0)
        {
            pfn = (pte & X86PageTable.AddressMask) >> PageShift;
            return !write || (pte & X86PageTable.Writable) != 0 ? Errno.None : WriteProtectFault(v, va, pte, out pfn);
        }

        if (!write && !v.Shared)
        {
            pfn = Pages.ZeroPagePfn;
            return _pt.SetLeaf(va, (pfn << PageShift) | LeafBits(v) | X86PageTable.Special);
        }

        Errno e = Pages.Allocate(1, 1, out ulong fresh);
        if (e != Errno.None)
        {
            return e;
        }

        // do_anonymous_page / shmem: a write fault maps the page dirty and writable.
        ulong bits = LeafBits(v) | (write ? X86PageTable.Writable | X86PageTable.Dirty : 0);
        e = _pt.SetLeaf(va, (fresh << PageShift) | bits);
        if (e != Errno.None)
        {
            Pages.Put(fresh);
            return e;
        }

        pfn = fresh;
        return Errno.None;
    }

    // do_wp_page, under _lock: a shared area's leaf or a page no other mapping holds is made writable
    // in place; otherwise the page is copied, the leaf switched, the notifiers told, and only then
    // the old page put (the copy-on-write break).
    private Errno WriteProtectFault(ProcessMemoryArea v, ulong va, ulong pte, out ulong pfn)
    {
        pfn = (pte & X86PageTable.AddressMask) >> PageShift;
        bool special = (pte & X86PageTable.Special) != 0;
        if (v.Shared || (!special && Pages.RefCount(pfn) - Pages.PinCount(pfn) == 1))
        {
            _ = _pt.SetLeaf(va, pte | X86PageTable.Writable | X86PageTable.Dirty | X86PageTable.Accessed);
            return Errno.None;
        }

        Errno e = Pages.Allocate(1, 1, out ulong fresh);
        if (e != Errno.None)
        {
            return e;
        }

        if (pfn != Pages.ZeroPagePfn)
        {
            Pages.Memory.Read(pfn << PageShift, Pages.Memory.Frame(fresh << PageShift));
        }

        _ = _pt.SetLeaf(va, (fresh << PageShift) | LeafBits(v) | X86PageTable.Writable | X86PageTable.Dirty);
        Notify(va, va + PageSize);
        if (!special)
        {
            Pages.Put(pfn);
        }

        pfn = fresh;
        return Errno.None;
    }

    // copy_present_pte for one leaf of the parent, under _lock.
    private Errno CopyLeaf(ProcessAddressSpace child, ProcessMemoryArea v, ulong va, ref ulong pte, Hull hull)
    {
        ulong pfn = (pte & X86PageTable.AddressMask) >> PageShift;
        ulong childPte;
        if ((pte & X86PageTable.Special) != 0)
        {
            childPte = pte & ~X86PageTable.Accessed;
        }
        else if (v.Shared)
        {
            Pages.Get(pfn);
            childPte = pte & ~(X86PageTable.Accessed | X86PageTable.Dirty);
        }
        else if (Pages.PinCount(pfn) > 0)
        {
            // copy_present_page: a page that may be pinned for DMA is copied for the child now.
            Errno e = Pages.Allocate(1, 1, out ulong copy);
            if (e != Errno.None)
            {
                return e;
            }

            Pages.Memory.Read(pfn << PageShift, Pages.Memory.Frame(copy << PageShift));
            childPte = (copy << PageShift) | (LeafBits(v) & ~X86PageTable.ProtNone) | X86PageTable.Dirty | ((v.Prot & VmProt.Write) != 0 ? X86PageTable.Writable : 0);
            childPte = v.Prot == VmProt.None ? (copy << PageShift) | LeafBits(v) : childPte;
        }
        else
        {
            Pages.Get(pfn);
            if ((pte & X86PageTable.Writable) != 0)
            {
                pte &= ~X86PageTable.Writable;
                hull.Add(va);
            }

            childPte = pte & ~X86PageTable.Accessed;
        }

        Errno r = child._pt.SetLeaf(va, childPte);
        if (r != Errno.None && (childPte & X86PageTable.Special) == 0)
        {
            Pages.Put((childPte & X86PageTable.AddressMask) >> PageShift);
        }

        return r;
    }

    // Under _lock: munmap's zap_page_range + free_pgtables: leaves cleared, the notifiers told,
    // then the pages put, then the emptied tables freed.
    private void ZapRange(ulong start, ulong end)
    {
        var hull = new Hull();
        var freed = new List<ulong>();
        _pt.ForEachLeaf(start, end, (ulong va, ref ulong pte) =>
        {
            if ((pte & X86PageTable.Special) == 0)
            {
                freed.Add((pte & X86PageTable.AddressMask) >> PageShift);
            }

            pte = 0;
            hull.Add(va);
        }, freeEmpty: false);
        Notify(hull);
        foreach (ulong pfn in freed)
        {
            Pages.Put(pfn);
        }

        _pt.ForEachLeaf(start, end, null, freeEmpty: true);
    }

    // The CPU's A/D update on a touch of a present leaf.
    private void Touch(ulong vaddr, ulong bits)
    {
        ulong va = vaddr & ~(PageSize - 1);
        ulong pte = _pt.GetLeaf(va);
        if ((pte & X86PageTable.Present) != 0 && (pte & bits) != bits)
        {
            _ = _pt.SetLeaf(va, pte | bits);
        }
    }

    // vm_page_prot of an area as x86-64 Linux computes it: PAGE_NONE (protnone) for PROT_NONE, else
    // present + user + accessed, XD unless executable, R/W only for shared (and PFNMAP) writable areas
    // (private ones get R/W from a write fault).
    private static ulong LeafBits(ProcessMemoryArea v)
    {
        if (v.Prot == VmProt.None)
        {
            return X86PageTable.ProtNone | X86PageTable.Accessed;
        }

        ulong bits = X86PageTable.Present | X86PageTable.User | X86PageTable.Accessed;
        if ((v.Prot & VmProt.Exec) == 0)
        {
            bits |= X86PageTable.ExecuteDisable;
        }

        if ((v.Prot & VmProt.Write) != 0 && (v.Shared || v.Kind == VmaKind.PfnMap))
        {
            bits |= X86PageTable.Writable;
        }

        return bits;
    }

    private void Notify(Hull hull)
    {
        if (hull.Any)
        {
            Notify(hull.Start, hull.End);
        }
    }

    // Every notifier hears of the range even when one before it throws (a user's notifier with a bug): the others keep
    // IOMMUs in step with the tables (the SVA binds' IOTLB and device-TLB invalidations), and one skipped would leave a
    // device reaching a page the process no longer maps. The first exception is rethrown afterwards.
    private void Notify(ulong start, ulong end)
    {
        List<Exception>? failed = null;
        foreach (MmuNotifier n in _notifiers)
        {
#pragma warning disable CA1031 // collected and rethrown below
            try
            {
                n.InvalidateRange(this, start, end);
            }
            catch (Exception ex)
            {
                (failed ??= []).Add(ex);
            }
#pragma warning restore CA1031
        }

        RethrowFirst(failed);
    }

    private static void RethrowFirst(List<Exception>? failed)
    {
        if (failed is not null)
        {
            System.Runtime.ExceptionServices.ExceptionDispatchInfo.Capture(failed[0]).Throw();
        }
    }

    // The smallest range covering the pages whose leaves an operation changed.
    private sealed class Hull
    {
        public ulong Start = ulong.MaxValue;
        public ulong End;

        public bool Any => End != 0;

        public void Add(ulong va)
        {
            Start = Math.Min(Start, va);
            End = Math.Max(End, va + PageSize);
        }
    }

    private int FindVma(ulong vaddr)
    {
        int lo = 0, hi = _vmas.Count - 1;
        while (lo <= hi)
        {
            int mid = (lo + hi) >> 1;
            ProcessMemoryArea v = _vmas[mid];
            if (vaddr < v.Start)
            {
                hi = mid - 1;
            }
            else if (vaddr >= v.End)
            {
                lo = mid + 1;
            }
            else
            {
                return mid;
            }
        }

        return -1;
    }

    private void InsertVma(ProcessMemoryArea vma)
    {
        int i = 0;
        while (i < _vmas.Count && _vmas[i].Start < vma.Start)
        {
            i++;
        }

        _vmas.Insert(i, vma);
    }

    // munmap/mprotect's -EINVAL cases as .NET argument exceptions: unaligned start, empty or wrapping range.
    private static void CheckRange(ulong vaddr, ulong length)
    {
        if ((vaddr & (PageSize - 1)) != 0)
        {
            ThrowHelper.AddressNotPageAligned(vaddr);
        }

        ArgumentOutOfRangeException.ThrowIfZero(length);
        if (length > TaskSize || vaddr > TaskSize - length)
        {
            ThrowHelper.RangeOutsideUserSpace(vaddr, length);
        }
    }

    private void ThrowIfExited()
    {
        if (Exited)
        {
            ThrowHelper.ProcessExited(Name);
        }
    }

    /// <summary>
    /// <see cref="Exit"/> for <c>using</c>: closes every descriptor and tears the memory down.
    /// Idempotent; never throws (after the platform was disposed there is nothing left to release).
    /// </summary>
    public void Dispose()
    {
        try
        {
            Exit();
        }
        catch (ObjectDisposedException)
        {
            // The platform's memory is gone, and with it everything this process held.
        }
    }

    /// <inheritdoc/>
    public override string ToString() => Name;
}
