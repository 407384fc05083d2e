using Iommu;
using Iommu.Memory;
using Vfio.Type1.Internal;

namespace Vfio.Type1.Memory;

/// <summary>
/// A process as VFIO sees it: its memory (<c>mm_struct</c>: VMAs, page table, <c>locked_vm</c>), its
/// credentials (<c>RLIMIT_MEMLOCK</c>, <c>CAP_IPC_LOCK</c>) and its file-descriptor table. MAP_DMA pins
/// from it; the pages come from a <see cref="HostPageAllocator"/> shared by all processes of a platform.
/// </summary>
/// <remarks>
/// <para>Model rules (an <c>mm</c> as <c>vaddr_get_pfns</c> → <c>pin_user_pages_remote</c> sees it): a
/// read-only pin of a never-written private anonymous page returns
/// the shared zero page (reserved, never accounted); a write or a write pin allocates a page (copy on
/// write from the zero page); <c>munmap</c> drops the mapping's references but pinned pages stay
/// alive until unpinned; <c>locked_vm</c> counts pages pinned by VFIO and pages locked by
/// <see cref="Mlock"/>; the budget is <see cref="RlimitMemlock"/> unless <see cref="CapIpcLock"/>.</para>
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
    private readonly Dictionary<ulong, ulong> _ptes = [];
    private readonly HashSet<ulong> _mlocked = [];
    private readonly Dictionary<int, object> _files = [];
    private ulong _nextVaddr = 0x7f00_0000_0000;
    private long _lockedVm;
    private int _nextFd = 3;

    /// <summary>Creates an empty process.</summary>
    /// <param name="pages">Where its pages come from.</param>
    /// <param name="name">A name for messages.</param>
    public ProcessAddressSpace(HostPageAllocator pages, string? name = null)
    {
        ArgumentNullException.ThrowIfNull(pages);
        pages.Memory.ThrowIfDisposed();
        Pages = pages;
        Name = name ?? "process";
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
    /// <returns>The address.</returns>
    /// <exception cref="ArgumentOutOfRangeException"><paramref name="length"/> is 0 or larger than the user address space.</exception>
    /// <exception cref="InsufficientMemoryException">The host pool cannot back huge pages.</exception>
    public ulong Mmap(ulong length, VmProt prot = VmProt.ReadWrite, VmaKind kind = VmaKind.Anonymous, bool shared = false, ulong physicalBase = 0)
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

                for (ulong i = 0; i < length >> PageShift; i++)
                {
                    _ptes[(start >> PageShift) + i] = pfn + i;
                }
            }

            InsertVma(new ProcessMemoryArea(start, length, prot, kind, shared, physicalBase));
            return start;
        }
    }

    /// <summary>Unmaps <c>[vaddr, vaddr + length)</c> (<c>munmap</c>); pinned pages stay pinned and charged.</summary>
    /// <param name="vaddr">Page-aligned start.</param>
    /// <param name="length">Bytes.</param>
    /// <exception cref="ArgumentException"><paramref name="vaddr"/> is not page aligned (munmap's -EINVAL).</exception>
    /// <exception cref="ArgumentOutOfRangeException"><paramref name="length"/> is 0 or the range wraps or leaves the user address space (-EINVAL).</exception>
    public void Munmap(ulong vaddr, ulong length)
    {
        using PhysicalMemory.AccessScope guard = Pages.Memory.EnterAccess();
        CheckRange(vaddr, length);
        length = (length + PageSize - 1) & ~(PageSize - 1);
        lock (_lock)
        {
            ulong end = vaddr + length;
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

            // Walk the range page by page when it is smaller than what is present, else the present
            // pages: a huge length used to walk up to 2^35 page numbers (bad-input matrix), while a
            // scan of every present page would make small munmaps of a large process slow.
            ulong first = vaddr >> PageShift, last = (end - 1) >> PageShift;
            if (last - first < (ulong)(_ptes.Count + _mlocked.Count))
            {
                for (ulong vpn = first; vpn <= last; vpn++)
                {
                    DropPage(vpn);
                }
            }
            else
            {
                foreach (ulong vpn in _ptes.Keys.Concat(_mlocked).Where(k => k >= first && k <= last).Distinct().ToList())
                {
                    DropPage(vpn);
                }
            }
        }
    }

    /// <summary>Changes the protection of <c>[vaddr, vaddr + length)</c> (<c>mprotect</c>); unmapped parts are ignored.</summary>
    /// <param name="vaddr">Page-aligned start.</param>
    /// <param name="length">Bytes.</param>
    /// <param name="prot">New protection.</param>
    /// <exception cref="ArgumentException"><paramref name="vaddr"/> is not page aligned (mprotect's -EINVAL).</exception>
    /// <exception cref="ArgumentOutOfRangeException"><paramref name="length"/> is 0 or the range wraps or leaves the user address space.</exception>
    public void Mprotect(ulong vaddr, ulong length, VmProt prot)
    {
        using PhysicalMemory.AccessScope guard = Pages.Memory.EnterAccess();
        CheckRange(vaddr, length);
        length = (length + PageSize - 1) & ~(PageSize - 1);
        lock (_lock)
        {
            ulong end = vaddr + length;
            var changed = new List<ProcessMemoryArea>();
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
                if (v.End > e)
                {
                    changed.Add(v with { Start = e, Length = v.End - e, PhysicalBase = v.PhysicalBase + (e - v.Start) });
                }
            }

            _vmas.AddRange(changed);
            _vmas.Sort(static (a, b) => a.Start.CompareTo(b.Start));
        }
    }

    /// <summary>Locks pages in memory (<c>mlock</c>): populates them and charges <c>locked_vm</c>.</summary>
    /// <param name="vaddr">Start.</param>
    /// <param name="length">Bytes.</param>
    /// <returns>0, -ENOMEM (over RLIMIT_MEMLOCK without CAP_IPC_LOCK) or -ENOMEM for unmapped addresses (as mlock does); -EINVAL when the range wraps.</returns>
    public Errno Mlock(ulong vaddr, ulong length)
    {
        using PhysicalMemory.AccessScope guard = Pages.Memory.EnterAccess();
        // apply_vma_lock_flags: end < start is -EINVAL (the rounded end used to wrap and lock nothing, returning 0).
        if (length > TaskSize || vaddr > TaskSize - length)
        {
            return ErrorDetail.Fail(Errno.EINVAL, $"mlock: range 0x{vaddr:x}+0x{length:x} wraps or leaves the user address space");
        }

        ulong start = vaddr & ~(PageSize - 1);
        ulong end = (vaddr + length + PageSize - 1) & ~(PageSize - 1);
        lock (_lock)
        {
            long add = 0;
            for (ulong va = start; va < end; va += PageSize)
            {
                if (FindVma(va) < 0)
                {
                    return ErrorDetail.Fail(Errno.ENOMEM, $"mlock: 0x{va:x} is not mapped");
                }

                if (!_mlocked.Contains(va >> PageShift))
                {
                    add++;
                }
            }

            if (!CapIpcLock && (ulong)(LockedVm + add) > RlimitMemlock >> PageShift)
            {
                return ErrorDetail.Fail(Errno.ENOMEM, "mlock: RLIMIT_MEMLOCK exceeded");
            }

            for (ulong va = start; va < end; va += PageSize)
            {
                if (_mlocked.Add(va >> PageShift))
                {
                    _ = Fault(va, write: false, out _);
                    Interlocked.Increment(ref _lockedVm);
                }
            }

            return Errno.None;
        }
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

                Pages.Memory.Read((pfn << PageShift) + (ulong)off, destination[..n]);
                destination = destination[n..];
                vaddr += (ulong)n;
            }

            return Errno.None;
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

            return _ptes.TryGetValue(vaddr >> PageShift, out pfn);
        }
    }

    /// <summary>
    /// Creates a child (<c>fork</c>): same areas, private pages copied, shared pages shared, the file
    /// table duplicated (the same open files), credentials inherited, <c>locked_vm</c> 0 (mlock is not inherited).
    /// </summary>
    /// <param name="name">Child name.</param>
    /// <returns>The child.</returns>
    public ProcessAddressSpace Fork(string? name = null)
    {
        using PhysicalMemory.AccessScope guard = Pages.Memory.EnterAccess();
        lock (_lock)
        {
            ThrowIfExited();
            var child = new ProcessAddressSpace(Pages, name) { RlimitMemlock = RlimitMemlock, CapIpcLock = CapIpcLock, _nextVaddr = _nextVaddr, _nextFd = _nextFd };
            child._vmas.AddRange(_vmas);
            Span<byte> page = stackalloc byte[(int)PageSize];
            foreach (KeyValuePair<ulong, ulong> pte in _ptes)
            {
                ProcessMemoryArea v = _vmas[FindVma(pte.Key << PageShift)];
                if (v.Shared || pte.Value == Pages.ZeroPagePfn)
                {
                    Pages.Get(pte.Value);
                    child._ptes[pte.Key] = pte.Value;
                    continue;
                }

                Pages.Allocate(1, 1, out ulong copy).ThrowIfError();
                Pages.Memory.Read(pte.Value << PageShift, page);
                Pages.Memory.Write(copy << PageShift, page);
                child._ptes[pte.Key] = copy;
            }

            foreach (KeyValuePair<int, object> f in _files)
            {
                if (f.Value is VfioFile vf)
                {
                    vf.AddFileRef();
                }

                child._files[f.Key] = f.Value;
            }

            return child;
        }
    }

    /// <summary>Ends the process (<c>exit</c>): closes every fd and tears the mm down. Pinned pages stay pinned.</summary>
    /// <remarks>Idempotent. <see cref="Dispose"/> is the same call in the .NET shape.</remarks>
    public void Exit()
    {
        using PhysicalMemory.AccessScope guard = Pages.Memory.EnterAccess();
        int[] fds;
        lock (_lock)
        {
            if (Exited)
            {
                return;
            }

            fds = [.. _files.Keys];
        }

        foreach (int fd in fds)
        {
            _ = Close(fd);
        }

        lock (_lock)
        {
            foreach (ulong pfn in _ptes.Values)
            {
                Pages.Put(pfn);
            }

            _ptes.Clear();
            _vmas.Clear();
            _mlocked.Clear();
            Interlocked.Exchange(ref _lockedVm, 0);
            Exited = true;
        }
    }

    /// <summary>Installs an open file in the fd table.</summary>
    /// <param name="file">The file (a VFIO container, group or device file, or any object standing for another file such as /dev/null).</param>
    /// <returns>The fd.</returns>
    public int InstallFile(object file)
    {
        using PhysicalMemory.AccessScope guard = Pages.Memory.EnterAccess();
        ArgumentNullException.ThrowIfNull(file);
        lock (_lock)
        {
            ThrowIfExited();
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

        if (f is VfioFile vf)
        {
            vf.PutFileRef();
        }

        return Errno.None;
    }

    // VfioFile.Dispose: close(fd) only while fd still names file (not after a close and a reuse of
    // the number); nothing after exit or after the platform's memory was disposed.
    internal void CloseIfNames(int fd, object file)
    {
        lock (_lock)
        {
            if (Exited || !_files.TryGetValue(fd, out object? f) || !ReferenceEquals(f, file))
            {
                return;
            }
        }

        try
        {
            _ = Close(fd);
        }
        catch (ObjectDisposedException)
        {
            // The platform is gone, and with it everything the file held.
        }
    }

    internal void AddLockedVm(long pages) => Interlocked.Add(ref _lockedVm, pages);

    /// <summary>
    /// <c>get_user_pages</c>/<c>follow_fault_pfn</c> for one page: resolves (faulting in if needed) and,
    /// unless the pfn is reserved (zero page, PFNMAP), pins it.
    /// </summary>
    internal Errno PinPage(ulong vaddr, bool write, out ulong pfn, out bool reserved)
    {
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

            ProcessMemoryArea v = _vmas[i];
            if (v.Prot == VmProt.None || (write && (v.Prot & VmProt.Write) == 0))
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

    internal void UnpinPage(ulong pfn, bool reserved)
    {
        if (!reserved)
        {
            Pages.Unpin(pfn);
        }
    }

    // handle_mm_fault for one page, under _lock. Write faults replace the zero page (COW).
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

        if (v.Kind == VmaKind.PfnMap)
        {
            pfn = (v.PhysicalBase + (vaddr - v.Start)) >> PageShift;
            return Errno.None;
        }

        ulong vpn = vaddr >> PageShift;
        if (_ptes.TryGetValue(vpn, out pfn) && !(write && pfn == Pages.ZeroPagePfn))
        {
            return Errno.None;
        }

        if (!write && !v.Shared)
        {
            pfn = Pages.ZeroPagePfn;
            _ptes[vpn] = pfn;
            return Errno.None;
        }

        Errno e = Pages.Allocate(1, 1, out ulong fresh);
        if (e != Errno.None)
        {
            return e;
        }

        _ptes[vpn] = fresh; // the zero page (if it was there) holds no reference
        pfn = fresh;
        return Errno.None;
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

    // Under _lock: the page leaves the address space (its frame back to the pool) and the mlock charge.
    private void DropPage(ulong vpn)
    {
        if (_ptes.Remove(vpn, out ulong pfn))
        {
            Pages.Put(pfn);
        }

        if (_mlocked.Remove(vpn))
        {
            Interlocked.Decrement(ref _lockedVm);
        }
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
