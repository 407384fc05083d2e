using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using System.Runtime.Intrinsics;
using Iommu.Internal;

namespace Iommu.Memory;

/// <summary>
/// Host physical memory, read and written by physical address: either owned (sparse, backed lazily in
/// 2 MiB native chunks that the operating system zero-fills on first touch) or the caller's own memory
/// laid out as RAM ranges with holes between them (an emulator's guest RAM; see
/// <see cref="PhysicalMemory(ulong, IEnumerable{HostMemoryRange})"/>).
/// </summary>
/// <remarks>
/// <para>Translation structures and DMA buffers live here, so the hardware model reads exactly the
/// bytes the driver wrote. Reading owned memory never written returns zeros without backing it.</para>
/// <para>Holes (caller-owned memory only): the addresses no <see cref="HostMemoryRange"/> covers, such
/// as an MMIO window or the interrupt range, are not RAM. <see cref="Contains"/> is false for a range
/// that touches one, which is how the hardware model turns a DMA, a table read or a status write there
/// into a memory error or a fault instead of phantom RAM; the accessors throw
/// <see cref="ArgumentOutOfRangeException"/> naming the hole.</para>
/// <para>Every access is bounds-checked against <see cref="Size"/> and throws
/// <see cref="ArgumentOutOfRangeException"/> naming the range; use <see cref="Contains"/> first where
/// an out-of-range address is an expected outcome (a device DMA, for instance).</para>
/// <para>Thread safety: any number of threads may read and write concurrently; backing a chunk is
/// race-free (the loser of a race frees its chunk). Two threads writing the same bytes race as
/// they would on real memory. Every accessor throws <see cref="ObjectDisposedException"/> once
/// <see cref="Dispose"/> has released the native memory (a volatile read of a flag, nothing more). A
/// caller whose accesses may race <see cref="Dispose"/> on another thread holds an access scope
/// (<see cref="EnterAccess"/>) around them: <see cref="Dispose"/> waits for every open scope before it
/// releases the native memory. The public entry points of the libraries built on this type (the IOMMU
/// core, DMA, the VT-d unit, VFIO) each hold one, so they never touch freed memory, except two read
/// paths on owned memory that instead rely on <see cref="Dispose"/> leaving the addresses mapped (see its
/// remarks).</para>
/// </remarks>
public sealed unsafe class PhysicalMemory : IDisposable
{
    /// <summary>Size of one backing chunk (2 MiB).</summary>
    public const int ChunkShift = 21;

    /// <summary>Size of a page frame (4 KiB).</summary>
    public const int PageShift = 12;

    /// <summary>Bytes in a page frame.</summary>
    public const int PageSize = 1 << PageShift;

    /// <summary>Largest supported memory size (2^46 bytes = 64 TiB, the x86 host address width of common servers).</summary>
    public const ulong MaxSize = 1UL << 46;

    private const int ChunkSize = 1 << ChunkShift;
    private const int DirShift = 9; // 512 chunks (1 GiB) per second-level directory
    private const int DirEntries = 1 << DirShift;

    private readonly nint[]?[] _directory;

    // Caller-owned memory: the RAM ranges sorted by physical address, or null for owned memory. A 2 MiB
    // chunk that one range covers whole has its host pointer in _directory (the hot path does not
    // know the difference); a chunk with a hole or a range boundary in it has none and is resolved
    // through this list on the (cold) slow path.
    private readonly HostMemoryRange[]? _ram;
    private readonly ulong _ramBytes;
    private readonly List<(nint Block, ulong First, ulong Count)> _contiguous = [];
    // In-flight access scopes: one counter per thread that ever entered (written only by its thread,
    // so entering is a plain store, no interlocked operation and no shared cache line), found through
    // a ThreadLocal of this memory (no static state) and listed for Dispose.
    private readonly ThreadLocal<Slot> _slot;
    private readonly Lock _slotLock = new();
    private readonly List<Slot> _slots = [];
    private readonly object _slotOwner = new(); // names this memory in its slots

    // The calling thread's slot of the memory it entered last: a one-entry cache in front of _slot
    // (ThreadLocal<T>.Value costs several times more). It holds no state of its own: a slot names its
    // memory by _slotOwner, not by the memory, so the cache keeps no memory alive, and a thread that
    // alternates between platforms just takes the ThreadLocal path more often.
    [ThreadStatic]
    private static Slot? t_lastSlot;
    private readonly Lock _claimLock = new();
    private readonly List<Claimed> _claims = [];
    private long _backedChunks;
    private int _disposed; // Dispose has started: no new scope opens (nested ones still do)
    private long _domainSerials; // the last IommuDomain.Serial handed out (SerialOf)
    private int _released; // Dispose has waited for every scope and frees (or freed) the native memory
    private readonly bool _retires; // RetiresOnDispose: owned memory mapped from the system
    private List<(nint Block, nuint Bytes)>? _retired; // blocks Dispose gave back but left mapped (RetiresOnDispose), unmapped by the finalizer

    // Chunks PinContiguous moved into a pinned block: kept as they were until Dispose (a read that holds no scope,
    // or a translation memo's host pointer read before the move, may still reach them), then freed or retired with
    // the rest. Under _contiguous's lock.
    private readonly List<nint> _relocated = [];

    // The translation memos over this memory (weakly: a unit has no dispose), told when a chunk's host pointer
    // changes (ChunksChanged): they keep host pointers of pages. Copy-on-write under _memoLock.
    private WeakReference<Devices.TranslationShortcut>[] _memos = [];
    private readonly Lock _memoLock = new();

    /// <summary>Creates <paramref name="size"/> bytes of physical memory, none of it backed yet.</summary>
    /// <param name="size">Bytes of physical address space; a positive multiple of 4 KiB, at most <see cref="MaxSize"/>.</param>
    public PhysicalMemory(ulong size)
    {
        if (size == 0 || size > MaxSize || (size & (PageSize - 1)) != 0)
        {
            throw new ArgumentOutOfRangeException(nameof(size), size, $"Physical memory size must be a non-zero multiple of 4 KiB and at most 0x{MaxSize:x} bytes.");
        }

        Size = size;
        _retires = OsPages.Mapped;
        _slot = new ThreadLocal<Slot>(NewSlot);
        ulong chunks = (size + ChunkSize - 1) >> ChunkShift;
        _directory = new nint[]?[(chunks + DirEntries - 1) >> DirShift];
    }

    /// <summary>
    /// Physical memory over RAM the caller owns: each of <paramref name="ram"/> maps physical addresses
    /// to host memory (an emulator's guest RAM, a file or shared mapping, huge pages); the addresses no
    /// range covers are holes. No byte is copied and nothing is allocated per page: the translation
    /// walk, the invalidation queue, status writes and DMA read and write the caller's memory directly.
    /// </summary>
    /// <param name="size">Bytes of physical address space; a positive multiple of 4 KiB, at most <see cref="MaxSize"/>.</param>
    /// <param name="ram">The RAM ranges: 4 KiB-aligned, inside <paramref name="size"/>, not overlapping; in any order.</param>
    /// <exception cref="ArgumentNullException"><paramref name="ram"/> is null.</exception>
    /// <exception cref="ArgumentOutOfRangeException">The size is invalid, or a range is empty, misaligned or outside the memory (the message names it).</exception>
    /// <exception cref="ArgumentException">Two ranges overlap (the message names both).</exception>
    /// <remarks>
    /// <para>The caller keeps the host memory valid until <see cref="Dispose"/> returns (Dispose waits for
    /// calls in flight, so freeing it afterwards is safe) and does not free it earlier; Dispose never
    /// frees it. The memory need not be zeroed: a <see cref="FrameAllocator"/> over it zeroes each frame
    /// it hands out.</para>
    /// <para>The library's accesses and the caller's own race as they would on real memory;
    /// 64-bit table entries are read and written as single aligned 64-bit accesses, as hardware does.</para>
    /// </remarks>
    public PhysicalMemory(ulong size, IEnumerable<HostMemoryRange> ram)
        : this(size)
    {
        ArgumentNullException.ThrowIfNull(ram);
        HostMemoryRange[] ranges = [.. ram];
        Array.Sort(ranges, static (a, b) => a.PhysicalAddress.CompareTo(b.PhysicalAddress));
        for (int i = 0; i < ranges.Length; i++)
        {
            HostMemoryRange r = ranges[i];
            if (r.Length == 0 || ((r.PhysicalAddress | r.Length | (ulong)r.Host) & (PageSize - 1)) != 0 || !InBounds(r.PhysicalAddress, r.Length))
            {
                throw new ArgumentOutOfRangeException(nameof(ram), r, $"RAM range [0x{r.PhysicalAddress:x}, 0x{r.PhysicalAddress + r.Length:x}) at host 0x{(ulong)r.Host:x} must be non-empty, 4 KiB-aligned (physical address, length and host address) and inside the 0x{size:x} bytes of physical memory.");
            }

            if (i > 0 && ranges[i - 1].PhysicalAddress + ranges[i - 1].Length > r.PhysicalAddress)
            {
                HostMemoryRange q = ranges[i - 1];
                ThrowHelper.RamRangesOverlap(q, r, nameof(ram));
            }

            _ramBytes += r.Length;
        }

        _retires = false; // the caller's memory: Dispose leaves it to the caller, so every access holds a scope

        // Only now, with every range valid and _ram set, do the caller's pointers enter the directory:
        // the finalizer of a constructor that threw frees the directory's chunks unless _ram is set.
        _ram = ranges;
        foreach (HostMemoryRange r in ranges)
        {
            for (ulong chunk = (r.PhysicalAddress + ChunkSize - 1) >> ChunkShift; (chunk + 1) << ChunkShift <= r.PhysicalAddress + r.Length; chunk++)
            {
                nint[] dir = _directory[chunk >> DirShift] ??= new nint[DirEntries];
                dir[chunk & (DirEntries - 1)] = (nint)((byte*)r.Host + ((chunk << ChunkShift) - r.PhysicalAddress));
            }
        }
    }

    /// <summary>The RAM ranges of caller-owned memory, by physical address; null for owned memory (all of <c>[0, Size)</c> is RAM).</summary>
    public IReadOnlyList<HostMemoryRange>? HostRanges => _ram;

    /// <summary>Bytes of physical address space (addresses 0 to <c>Size - 1</c>).</summary>
    public ulong Size { get; }

    /// <summary>True once <see cref="Dispose"/> has started: new access scopes throw <see cref="ObjectDisposedException"/>.</summary>
    public bool IsDisposed => Volatile.Read(ref _disposed) != 0;

    /// <summary>Throws <see cref="ObjectDisposedException"/> once <see cref="Dispose"/> has released the native memory.</summary>
    /// <remarks>
    /// A volatile read only: it tells a caller that arrives after the dispose, it does not keep the
    /// memory alive (<see cref="EnterAccess"/> does). While Dispose waits for open scopes the memory is
    /// still valid and this does not throw, so a call in flight finishes normally; the accessors check
    /// the same flag.
    /// </remarks>
    /// <exception cref="ObjectDisposedException">The memory is disposed.</exception>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public void ThrowIfDisposed()
    {
        if (Volatile.Read(ref _released) != 0)
        {
            ThrowHelper.MemoryDisposed();
        }
    }

    /// <summary>
    /// Opens an access scope: until the returned scope is disposed, <see cref="Dispose"/> waits and the
    /// native memory stays allocated, so any number of accesses (pointer walks of a
    /// <see cref="ContiguousRegion"/> included) may run without further checks. Scopes nest and may be
    /// held by any number of threads at once.
    /// </summary>
    /// <returns>The scope; dispose it exactly once, on the thread that opened it (<c>using var scope = memory.EnterAccess();</c>).</returns>
    /// <exception cref="ObjectDisposedException"><see cref="Dispose"/> has started and the calling thread holds no scope of this memory yet (a nested scope of a call in flight still opens: Dispose is waiting for that call anyway).</exception>
    /// <remarks>
    /// Cost: a thread-static read (a one-entry cache of the thread's counter), two plain stores to a counter only the calling thread writes, and,
    /// for the outermost scope only, a volatile read and a read of the thread's
    /// <see cref="ErrorDetail"/> record (the outermost scope starts a new call, so it forgets the
    /// previous call's failure detail; a write only when there was one); no interlocked operation, no shared cache line, no allocation (after a thread's
    /// first scope), no lock. The disposing thread pays instead (see <see cref="Dispose"/>). Calling
    /// <see cref="Dispose"/> (or <see cref="Platform.Dispose"/>) from inside a scope on the same thread
    /// (from a callback of a call in progress) throws <see cref="InvalidOperationException"/>.
    /// </remarks>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public AccessScope EnterAccess()
    {
        Slot? slot = t_lastSlot;
        if (slot is null || slot.Owner != _slotOwner)
        {
            slot = SlotOfThisThread();
        }

        int depth = slot.Count;
        Volatile.Write(ref slot.Count, depth + 1);

        // A nested scope (depth > 0) opens anyway: Dispose waits for the outer one.
        if (depth == 0)
        {
            // Store, then load: Dispose's process-wide barrier orders them against its own store and
            // load (see the remarks of Dispose), so either this read sees the flag or Dispose sees the
            // count.
            if (Volatile.Read(ref _disposed) != 0)
            {
                Volatile.Write(ref slot.Count, depth);
                ThrowHelper.MemoryDisposed();
            }

            // A new call from outside the libraries: the previous call's failure detail is over (a
            // read of this thread's record, a write only after a failure).
            slot.Detail.Clear();
        }

        return new AccessScope(this, slot);
    }

    // EnterAccess for a call that uses an IOMMU domain's tables (iommu_map, iommu_unmap, iommu_iova_to_phys, the
    // IOTLB syncs): the scope also marks the domain in use on this thread's slot, so iommu_domain_free waits for the
    // call (WaitForDomainUsers), and throws when the free has begun. One scope, so one try/finally in the caller. A
    // call nested in a call on another domain counts itself in the domain's InFlight instead (rare: a user callback).
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal AccessScope EnterDomainAccess(Domains.IommuDomain? domain)
    {
        AccessScope scope = EnterAccess();
        if (domain is null)
        {
            return scope;
        }

        Slot slot = scope.Slot!;
        long current = slot.DomainInUse, serial = domain.Serial;
        if (serial == 0)
        {
            serial = SerialOf(domain);
        }

        if (current != 0 && current != serial)
        {
            return EnterCounted(slot, domain);
        }

        // Store, then load: the freer's process-wide barrier orders them against its own store of Dying and read of
        // the slots, so either this read sees Dying or the freer sees this slot.
        Volatile.Write(ref slot.DomainInUse, serial);
        if (Volatile.Read(ref domain.Dying) != 0)
        {
            slot.DomainInUse = current;
            scope.Dispose();
            ThrowHelper.DomainFreed(domain.Type);
        }

        return new AccessScope(this, slot, current, null);
    }

    // A domain's id in the slots of this memory, assigned on first use (unique per memory: slots are per memory).
    [MethodImpl(MethodImplOptions.NoInlining)]
    internal long SerialOf(Domains.IommuDomain domain)
    {
        long serial = Volatile.Read(ref domain.Serial);
        if (serial != 0)
        {
            return serial;
        }

        long next = Interlocked.Increment(ref _domainSerials);
        long won = Interlocked.CompareExchange(ref domain.Serial, next, 0);
        return won == 0 ? next : won;
    }

    [MethodImpl(MethodImplOptions.NoInlining)]
    private AccessScope EnterCounted(Slot slot, Domains.IommuDomain domain)
    {
        Interlocked.Increment(ref domain.InFlight); // a full fence: the read below comes after it
        if (Volatile.Read(ref domain.Dying) != 0)
        {
            Interlocked.Decrement(ref domain.InFlight);
            new AccessScope(this, slot).Dispose();
            ThrowHelper.DomainFreed(domain.Type);
        }

        return new AccessScope(this, slot, -1, domain);
    }

    /// <summary>Whether the calling thread holds an access scope of this memory.</summary>
    internal bool HeldByCurrentThread => Volatile.Read(ref _disposed) == 0 && _slot.IsValueCreated && _slot.Value!.Count != 0;

    /// <summary>The ranges claimed so far (<see cref="Claim"/>), in claim order.</summary>
    public IReadOnlyList<Claimed> Claims
    {
        get
        {
            lock (_claimLock)
            {
                return [.. _claims];
            }
        }
    }

    /// <summary>
    /// Records that <paramref name="owner"/> hands out the pages of <c>[start, start + size)</c>: the
    /// frame allocator's table region, a host page pool. Claims never overlap, so no two owners hand
    /// out the same page; the registry belongs to this memory (no global state).
    /// </summary>
    /// <param name="start">First byte.</param>
    /// <param name="size">Bytes, non-zero; the range must lie inside the memory.</param>
    /// <param name="owner">Who hands the pages out.</param>
    /// <param name="description">What the range is for, used in error messages.</param>
    /// <exception cref="ArgumentException">The range overlaps a claimed range; the message names both.</exception>
    /// <exception cref="ArgumentOutOfRangeException">The range is empty or outside the memory.</exception>
    /// <exception cref="ObjectDisposedException">The memory is disposed.</exception>
    public void Claim(ulong start, ulong size, object owner, string description)
    {
        ArgumentNullException.ThrowIfNull(owner);
        ArgumentNullException.ThrowIfNull(description);
        ThrowIfDisposed();
        if (size == 0 || !Contains(start, size))
        {
            ThrowHelper.PhysicalRange(start, size, Size);
        }

        lock (_claimLock)
        {
            foreach (Claimed c in _claims)
            {
                if (start < c.Start + c.Size && c.Start < start + size)
                {
                    ThrowHelper.ClaimOverlaps(description, start, size, c.Description, c.Start, c.Size);
                }
            }

            _claims.Add(new Claimed(start, size, owner, description));
        }
    }

    /// <summary>
    /// Atomically with respect to other claims: the first non-null <paramref name="find"/> result over
    /// the claims, else what <paramref name="create"/> returns (it typically calls <see cref="Claim"/>).
    /// Lets owners be shared per memory (one host page pool per platform) without global state.
    /// </summary>
    /// <typeparam name="T">The owner type.</typeparam>
    /// <param name="find">Picks an existing owner from a claim, or returns null.</param>
    /// <param name="create">Creates the owner when none was found.</param>
    /// <returns>The existing or new owner.</returns>
    /// <exception cref="ObjectDisposedException">The memory is disposed.</exception>
    public T FindOrClaim<T>(Func<Claimed, T?> find, Func<T> create)
        where T : class
    {
        ArgumentNullException.ThrowIfNull(find);
        ArgumentNullException.ThrowIfNull(create);
        ThrowIfDisposed();
        lock (_claimLock)
        {
            foreach (Claimed c in _claims)
            {
                if (find(c) is T found)
                {
                    return found;
                }
            }

            return create();
        }
    }

    /// <summary>Bytes currently backed by native memory: for owned memory a multiple of 2 MiB; for caller-owned memory the bytes of its RAM ranges.</summary>
    public ulong BackedBytes => _ram is null ? (ulong)Interlocked.Read(ref _backedChunks) << ChunkShift : _ramBytes;

    /// <summary>Whether <c>[pa, pa + length)</c> lies entirely inside physical memory and, for caller-owned memory, entirely in RAM (no hole).</summary>
    /// <param name="pa">First physical address.</param>
    /// <param name="length">Bytes.</param>
    /// <returns>True when the whole range exists.</returns>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public bool Contains(ulong pa, ulong length) => InBounds(pa, length) && (_ram is null || InWholeChunk(pa, length) || RamContains(pa, length));

    /// <summary>
    /// The 4 KiB frame at <paramref name="pa"/> as 512 64-bit entries: the view the IOMMU has of a
    /// page-table, context-table or PASID-table page. Backs the chunk if needed.
    /// </summary>
    /// <param name="pa">4 KiB-aligned physical address of the frame.</param>
    /// <returns>A span over the frame; valid until the memory is disposed.</returns>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public Span<ulong> Table(ulong pa)
    {
        if ((pa & (PageSize - 1)) != 0)
        {
            ThrowHelper.Misaligned("table address", pa, PageSize);
        }

        return new Span<ulong>(Pointer(pa, PageSize), PageSize / sizeof(ulong));
    }

    /// <summary>The 4 KiB frame at <paramref name="pa"/> as bytes. Backs the chunk if needed.</summary>
    /// <param name="pa">4 KiB-aligned physical address.</param>
    /// <returns>A span over the frame.</returns>
    public Span<byte> Frame(ulong pa)
    {
        if ((pa & (PageSize - 1)) != 0)
        {
            ThrowHelper.Misaligned("frame address", pa, PageSize);
        }

        return new Span<byte>(Pointer(pa, PageSize), PageSize);
    }

    /// <summary>
    /// A span over <paramref name="length"/> bytes at <paramref name="pa"/>, which must not cross a
    /// 2 MiB chunk boundary (any range inside one naturally aligned page qualifies). Backs the chunk.
    /// </summary>
    /// <param name="pa">Physical address.</param>
    /// <param name="length">Bytes; the range must stay inside one 2 MiB chunk.</param>
    /// <returns>A span over the bytes.</returns>
    public Span<byte> GetSpan(ulong pa, int length)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(length);
        if (length != 0 && (pa >> ChunkShift) != ((pa + (ulong)length - 1) >> ChunkShift))
        {
            ThrowHelper.CrossesChunk(pa, length);
        }

        return new Span<byte>(Pointer(pa, (ulong)length), length);
    }

    /// <summary>Reads an aligned 64-bit little-endian value (zero where never written).</summary>
    /// <param name="pa">8-byte aligned physical address.</param>
    /// <returns>The value.</returns>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public ulong ReadUInt64(ulong pa)
    {
        CheckAligned(pa, sizeof(ulong));
        byte* p = PointerIfBacked(pa, sizeof(ulong));
        return p == null ? 0 : Volatile.Read(ref *(ulong*)p);
    }

    /// <summary>Writes an aligned 64-bit little-endian value.</summary>
    /// <param name="pa">8-byte aligned physical address.</param>
    /// <param name="value">The value.</param>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public void WriteUInt64(ulong pa, ulong value)
    {
        CheckAligned(pa, sizeof(ulong));
        Volatile.Write(ref *(ulong*)Pointer(pa, sizeof(ulong)), value);
    }

    /// <summary>Reads an aligned 32-bit little-endian value.</summary>
    /// <param name="pa">4-byte aligned physical address.</param>
    /// <returns>The value.</returns>
    public uint ReadUInt32(ulong pa)
    {
        CheckAligned(pa, sizeof(uint));
        byte* p = PointerIfBacked(pa, sizeof(uint));
        return p == null ? 0 : Volatile.Read(ref *(uint*)p);
    }

    /// <summary>Writes an aligned 32-bit little-endian value.</summary>
    /// <param name="pa">4-byte aligned physical address.</param>
    /// <param name="value">The value.</param>
    public void WriteUInt32(ulong pa, uint value)
    {
        CheckAligned(pa, sizeof(uint));
        Volatile.Write(ref *(uint*)Pointer(pa, sizeof(uint)), value);
    }

    /// <summary>Copies <c>destination.Length</c> bytes starting at <paramref name="pa"/> (zeros where never written).</summary>
    /// <param name="pa">First physical address.</param>
    /// <param name="destination">Where the bytes go.</param>
    public void Read(ulong pa, Span<byte> destination)
    {
        CheckRange(pa, (ulong)destination.Length);
        CheckRam(pa, (ulong)destination.Length);
        while (!destination.IsEmpty)
        {
            int n = BytesToChunkEnd(pa, destination.Length);
            byte* p = ChunkIfBacked(pa);
            if (p == null && _ram is not null)
            {
                p = RamChunk(pa, ref n);
            }

            if (p == null)
            {
                destination[..n].Clear();
            }
            else
            {
                new ReadOnlySpan<byte>(p + (pa & (ChunkSize - 1)), n).CopyTo(destination);
            }

            destination = destination[n..];
            pa += (ulong)n;
        }
    }

    /// <summary>
    /// Copies <c>destination.Length</c> bytes at <paramref name="pa"/> when all of them are RAM (see
    /// <see cref="Contains"/>); otherwise moves nothing and returns false. The copy a device's DMA makes:
    /// no exception for an address outside memory or in a hole.
    /// </summary>
    /// <param name="pa">First physical address.</param>
    /// <param name="destination">Where the bytes go.</param>
    /// <returns>Whether the bytes moved.</returns>
    /// <exception cref="ObjectDisposedException">The memory is disposed.</exception>
    /// <remarks>A range inside one backed 2 MiB chunk (every DMA of up to a page that stays in its page) is one bounds check, one lookup and the copy.</remarks>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public bool TryRead(ulong pa, Span<byte> destination)
    {
        byte* p = OneChunk(pa, (ulong)destination.Length);
        if (p == null)
        {
            return TryCopySlow(pa, destination, write: false);
        }

        Move(ref *p, ref MemoryMarshal.GetReference(destination), (nuint)destination.Length);
        return true;
    }

    /// <summary>
    /// Reads <c>destination.Length</c> 64-bit little-endian words at <paramref name="pa"/> when every
    /// byte is RAM (see <see cref="TryRead"/>), each with one 64-bit load (zeros where never written);
    /// otherwise reads nothing and returns false. How hardware fetches a descriptor: by quadwords,
    /// each atomic.
    /// </summary>
    /// <param name="pa">8-byte aligned first physical address.</param>
    /// <param name="destination">Where the words go.</param>
    /// <returns>Whether the words were read.</returns>
    /// <exception cref="ArgumentException"><paramref name="pa"/> is not 8-byte aligned.</exception>
    /// <exception cref="ObjectDisposedException">The memory is disposed.</exception>
    /// <remarks>
    /// Word loads, not a vector copy: a descriptor the driver has just written with 64-bit stores is
    /// still in the store buffer, and a wider load over several narrower stores waits for all of them
    /// to reach the cache instead of taking each from its store.
    /// </remarks>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public bool TryReadUInt64(ulong pa, Span<ulong> destination)
    {
        byte* p = OneChunk(pa, (ulong)destination.Length * sizeof(ulong));
        if (p == null || (pa & 7) != 0)
        {
            return TryReadUInt64Slow(pa, destination);
        }

        for (int i = 0; i < destination.Length; i++)
        {
            destination[i] = Volatile.Read(ref ((ulong*)p)[i]);
        }

        return true;
    }

    // TryReadUInt64 of 2 or 4 quadwords (a 128- or 256-bit descriptor) into locals, c and d 0 for 2: no
    // span, so a caller's loop over descriptors keeps them in registers and allocates no stack buffer.
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal bool TryReadQuadwords(ulong pa, int count, out ulong a, out ulong b, out ulong c, out ulong d)
    {
        ulong* p = (ulong*)OneChunk(pa, (ulong)count * sizeof(ulong));
        if (p == null || (pa & 7) != 0)
        {
            return TryReadQuadwordsSlow(pa, count, out a, out b, out c, out d);
        }

        a = Volatile.Read(ref p[0]);
        b = Volatile.Read(ref p[1]);
        c = count == 4 ? Volatile.Read(ref p[2]) : 0;
        d = count == 4 ? Volatile.Read(ref p[3]) : 0;
        return true;
    }

    [MethodImpl(MethodImplOptions.NoInlining)]
    private bool TryReadQuadwordsSlow(ulong pa, int count, out ulong a, out ulong b, out ulong c, out ulong d)
    {
        Span<ulong> words = stackalloc ulong[4];
        words.Clear();
        bool read = TryReadUInt64Slow(pa, words[..count]);
        (a, b, c, d) = (words[0], words[1], words[2], words[3]);
        return read;
    }

    [MethodImpl(MethodImplOptions.NoInlining)]
    private bool TryReadUInt64Slow(ulong pa, Span<ulong> destination)
    {
        CheckAligned(pa, sizeof(ulong));
        return TryCopySlow(pa, MemoryMarshal.AsBytes(destination), write: false);
    }

    // The copy of a DMA (TryRead, TryWrite). 16–64 B (descriptors, cache lines): two overlapping
    // vector moves inline, which the core overlaps with the caller's next request (a Memmove call
    // costs more than the copy). 65 B – 4 KiB: 64 B vector moves and an overlapping last 64 B, since
    // Memmove hands copies over 2 KiB to the C library through a GC transition (a fifth of a 4 KiB
    // DMA). Anything else, and ranges that overlap where a forward copy would be wrong: Memmove.
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void Move(ref byte s, ref byte d, nuint n)
    {
        if (n - SmallMoveMin <= SmallMoveMax - SmallMoveMin)
        {
            MoveSmall(ref s, ref d, n);
        }
        else if (n - 65 < 4096 - 64 && Vector256.IsHardwareAccelerated
            && (nuint)Unsafe.ByteOffset(ref s, ref d) >= n && (nuint)Unsafe.ByteOffset(ref d, ref s) >= n)
        {
            // (Disjoint ranges only: the overlapping last 64 B reloads source bytes that a forward copy
            // into a destination just below the source would already have overwritten.)
            nuint i = 0;
            for (; i + 64 <= n; i += 64)
            {
                Vector256<byte> a = Vector256.LoadUnsafe(ref s, i);
                Vector256<byte> b = Vector256.LoadUnsafe(ref s, i + 32);
                a.StoreUnsafe(ref d, i);
                b.StoreUnsafe(ref d, i + 32);
            }

            if (i < n)
            {
                Vector256<byte> a = Vector256.LoadUnsafe(ref s, n - 64);
                Vector256<byte> b = Vector256.LoadUnsafe(ref s, n - 32);
                a.StoreUnsafe(ref d, n - 64);
                b.StoreUnsafe(ref d, n - 32);
            }
        }
        else
        {
            MemoryMarshal.CreateReadOnlySpan(ref s, (int)n).CopyTo(MemoryMarshal.CreateSpan(ref d, (int)n));
        }
    }

    // The lengths MoveSmall copies (descriptors, cache lines).
    internal const int SmallMoveMin = 16;
    internal const int SmallMoveMax = 64;

    // Whether MoveSmall takes a copy of length bytes.
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal static bool IsSmallMove(int length) => (uint)(length - SmallMoveMin) <= SmallMoveMax - SmallMoveMin;

    // Move's 16–64 B copies, alone: overlapping vector moves, every load before any store (so overlapping
    // ranges copy right), and no call, so that a fast path that copies only these keeps no register
    // across a call. Without 256-bit vectors, 33–64 B take four 128-bit moves.
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void MoveSmall(ref byte s, ref byte d, nuint n)
    {
        if (n >= 32 && Vector256.IsHardwareAccelerated)
        {
            Vector256<byte> a = Vector256.LoadUnsafe(ref s);
            Vector256<byte> b = Vector256.LoadUnsafe(ref s, n - 32);
            a.StoreUnsafe(ref d);
            b.StoreUnsafe(ref d, n - 32);
        }
        else if (n >= 32)
        {
            Vector128<byte> a = Vector128.LoadUnsafe(ref s);
            Vector128<byte> b = Vector128.LoadUnsafe(ref s, 16);
            Vector128<byte> c = Vector128.LoadUnsafe(ref s, n - 32);
            Vector128<byte> e = Vector128.LoadUnsafe(ref s, n - 16);
            a.StoreUnsafe(ref d);
            b.StoreUnsafe(ref d, 16);
            c.StoreUnsafe(ref d, n - 32);
            e.StoreUnsafe(ref d, n - 16);
        }
        else
        {
            Vector128<byte> a = Vector128.LoadUnsafe(ref s);
            Vector128<byte> b = Vector128.LoadUnsafe(ref s, n - 16);
            a.StoreUnsafe(ref d);
            b.StoreUnsafe(ref d, n - 16);
        }
    }

    /// <summary>Copies <paramref name="source"/> to <paramref name="pa"/> when every byte of the range is RAM; otherwise moves nothing and returns false (see <see cref="TryRead"/>).</summary>
    /// <param name="pa">First physical address.</param>
    /// <param name="source">The bytes.</param>
    /// <returns>Whether the bytes moved.</returns>
    /// <exception cref="ObjectDisposedException">The memory is disposed.</exception>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public bool TryWrite(ulong pa, ReadOnlySpan<byte> source)
    {
        byte* p = OneChunk(pa, (ulong)source.Length);
        if (p == null)
        {
            return TryCopySlow(pa, MoveSource.Of(source), write: true);
        }

        Move(ref MemoryMarshal.GetReference(source), ref *p, (nuint)source.Length);
        return true;
    }

    // TryRead and TryWrite for a device's DMA of one page or less (the translated path of a remapping
    // unit): the caller holds an access scope, so the memory is not released under it, and
    // [pa, pa + length) is non-empty and inside one 4 KiB page. Then a page that starts below Size lies in
    // memory whole (Size is a multiple of 4 KiB) and inside one chunk, so one comparison replaces the
    // range, chunk-crossing and release checks of TryRead; everything else takes TryRead's slow path.
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal bool TryReadInPage(ulong pa, Span<byte> destination) =>
        TryReadBackedPage(pa, destination) || TryCopySlow(pa, destination, write: false);

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal bool TryWriteInPage(ulong pa, Span<byte> source) =>
        TryWriteBackedPage(pa, source) || TryCopySlow(pa, source, write: true);

    // The copies of TryReadInPage and TryWriteInPage when pa's page is backed, else false with nothing moved.
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal bool TryReadBackedPage(ulong pa, Span<byte> destination)
    {
        if (!TryPageHost(pa, out byte* p))
        {
            return false;
        }

        Move(ref *p, ref MemoryMarshal.GetReference(destination), (nuint)destination.Length);
        return true;
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal bool TryWriteBackedPage(ulong pa, Span<byte> source)
    {
        if (!TryPageHost(pa, out byte* p))
        {
            return false;
        }

        Move(ref MemoryMarshal.GetReference(source), ref *p, (nuint)source.Length);
        return true;
    }

    // Move between buffer and host bytes a caller found itself (a memo's host pointer). small: the caller checked
    // that MoveSmall takes the length, and the copy is inline, with no call on any path.
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal static void Move(byte* host, Span<byte> buffer, bool write, bool small)
    {
        ref byte mine = ref MemoryMarshal.GetReference(buffer);
        nuint n = (nuint)buffer.Length;
        if (write)
        {
            if (small)
            {
                MoveSmall(ref mine, ref *host, n);
            }
            else
            {
                Move(ref mine, ref *host, n);
            }
        }
        else if (small)
        {
            MoveSmall(ref *host, ref mine, n);
        }
        else
        {
            Move(ref *host, ref mine, n);
        }
    }

    // The host address of pa when its page is in memory and backed (see TryReadInPage). A bool beside the
    // pointer, not a null pointer, says which: the caller then tests once (a chunk's pointer plus an offset
    // is not known to the JIT to be non-null, so a null test of the sum is a second test).
    // pa < Size keeps both directory indices inside their arrays (the directory covers Size).
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private bool TryPageHost(ulong pa, out byte* host)
    {
        host = null;
        if (pa >= Size)
        {
            return false;
        }

        nint chunk = (nint)(pa >> ChunkShift);
        nint[]? dir = Volatile.Read(ref Unsafe.Add(ref MemoryMarshal.GetArrayDataReference(_directory), chunk >> DirShift));
        if (dir is null)
        {
            return false;
        }

        byte* chunkHost = (byte*)Volatile.Read(ref Unsafe.Add(ref MemoryMarshal.GetArrayDataReference(dir), chunk & (DirEntries - 1)));
        if (chunkHost == null)
        {
            return false;
        }

        host = chunkHost + (pa & (ChunkSize - 1));
        return true;
    }

    // The host address of [pa, pa + length) when it is non-empty, in bounds, inside one chunk that has
    // a pointer (owned and backed, or covered whole by one RAM range) and the memory is not released;
    // otherwise null (the caller takes the general path, which sorts out every other case).
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private byte* OneChunk(ulong pa, ulong length)
    {
        if (!InBounds(pa, length) || length == 0 || (pa >> ChunkShift) != ((pa + length - 1) >> ChunkShift) || Volatile.Read(ref _released) != 0)
        {
            return null;
        }

        byte* chunk = ChunkIfBacked(pa);
        return chunk == null ? null : chunk + (pa & (ChunkSize - 1));
    }

    [MethodImpl(MethodImplOptions.NoInlining)]
    private bool TryCopySlow(ulong pa, Span<byte> buffer, bool write)
    {
        ThrowIfDisposed();
        if (!Contains(pa, (ulong)buffer.Length))
        {
            return false;
        }

        if (write)
        {
            Write(pa, buffer);
        }
        else
        {
            Read(pa, buffer);
        }

        return true;
    }

    /// <summary>Copies <paramref name="source"/> to physical memory starting at <paramref name="pa"/>.</summary>
    /// <param name="pa">First physical address.</param>
    /// <param name="source">The bytes.</param>
    public void Write(ulong pa, ReadOnlySpan<byte> source)
    {
        CheckRange(pa, (ulong)source.Length);
        CheckRam(pa, (ulong)source.Length);
        while (!source.IsEmpty)
        {
            int n = BytesToChunkEnd(pa, source.Length);
            byte* p = ChunkIfBacked(pa);
            if (p == null)
            {
                p = _ram is null ? Back(pa) : RamChunk(pa, ref n);
            }

            source[..n].CopyTo(new Span<byte>(p + (pa & (ChunkSize - 1)), n));
            source = source[n..];
            pa += (ulong)n;
        }
    }

    /// <summary>Sets <paramref name="length"/> bytes at <paramref name="pa"/> to <paramref name="value"/>.</summary>
    /// <param name="pa">First physical address.</param>
    /// <param name="length">Bytes.</param>
    /// <param name="value">The byte to store.</param>
    public void Fill(ulong pa, ulong length, byte value)
    {
        CheckRange(pa, length);
        CheckRam(pa, length);
        while (length != 0)
        {
            int n = BytesToChunkEnd(pa, length > int.MaxValue ? int.MaxValue : (int)length);
            byte* p = ChunkIfBacked(pa);
            if (p == null && _ram is not null)
            {
                p = RamChunk(pa, ref n);
            }

            if (p != null || value != 0)
            {
                new Span<byte>((p != null ? p : Back(pa)) + (pa & (ChunkSize - 1)), n).Fill(value);
            }

            length -= (ulong)n;
            pa += (ulong)n;
        }
    }

    /// <summary>Whether the chunk holding <paramref name="pa"/> has native backing.</summary>
    /// <param name="pa">Physical address.</param>
    /// <returns>True when backed.</returns>
    public bool IsBacked(ulong pa)
    {
        CheckRange(pa, 1);
        return ChunkIfBacked(pa) != null || (_ram is not null && RamContains(pa, 1));
    }

    /// <summary>Frees every chunk. Spans obtained earlier must not be used afterwards.</summary>
    /// <remarks>
    /// <para>Semantics with other threads: calls that hold an access scope (<see cref="EnterAccess"/>;
    /// every public entry point of the IOMMU core, DMA, the VT-d unit and VFIO holds one) when Dispose
    /// starts finish normally, nested entry points included (a thread that already holds a scope may
    /// open more), and Dispose waits for them before it releases anything; a thread that holds no
    /// scope cannot open one once Dispose started, so calls that start afterwards throw
    /// <see cref="ObjectDisposedException"/>. The accessors and <see cref="ThrowIfDisposed"/> throw it
    /// once the memory is released. Accessors called directly, outside a scope, are not kept safe
    /// against a Dispose that releases the memory while they run; hold a scope around them when that
    /// can happen. Idempotent; concurrent Dispose calls: the first releases, the others return at once
    /// (without waiting).</para>
    /// <para>Owned memory on Linux is retired rather than freed: Dispose gives its pages back to the system
    /// (<c>madvise(MADV_DONTNEED)</c>, so the memory is returned at once) but leaves the addresses mapped
    /// until the finalizer unmaps them, once nothing can reach this object. Two hot paths rely on that and
    /// open no scope: <c>iommu_iova_to_phys</c> (<see cref="IommuCore.IovaToPhys"/>) and a device's DMA that
    /// the remapping unit serves from its translation memo. Dispose does not wait for them; one that races it
    /// reads zeros (or writes a fresh page) instead of faulting, then sees the dispose flag and throws
    /// <see cref="ObjectDisposedException"/> as a call after Dispose does, so its answer is never built from
    /// released memory. Caller-owned memory, and owned memory on other systems, is freed as described above
    /// and those paths hold a scope there.</para>
    /// <para>Ordering (Dekker with an asymmetric fence): an entrant stores its thread's count, then
    /// loads the flag, with no fence between (a plain store and a volatile load; the JIT keeps their
    /// order, the processor may not). Dispose stores the flag with an interlocked exchange, then runs
    /// <see cref="Interlocked.MemoryBarrierProcessWide"/>, which executes a full fence on every thread
    /// of the process at some point, and only then reads the counts. If that fence falls on an
    /// entrant's thread before its store, its later load sees the flag and it leaves; otherwise the
    /// store precedes the fence and Dispose sees the count and waits for it to drop to zero. A thread
    /// registers its counter (under a lock) before its first store, so Dispose, which lists the
    /// counters after the barrier, never misses an entrant that did not see the flag. Each counter
    /// is written only by its thread, so it needs no interlocked operation and never goes negative.</para>
    /// </remarks>
    /// <exception cref="InvalidOperationException">Called on a thread that holds an access scope of this memory (it would wait for itself).</exception>
    public void Dispose()
    {
        // A constructor that threw leaves _directory null; the finalizer still runs then.
        if (_directory is null || Volatile.Read(ref _disposed) != 0)
        {
            GC.SuppressFinalize(this);
            return;
        }

        if (_slot.IsValueCreated && _slot.Value!.Count != 0)
        {
            ThrowHelper.DisposeInsideAccessScope();
        }

        if (Interlocked.Exchange(ref _disposed, 1) != 0)
        {
            GC.SuppressFinalize(this);
            return;
        }

        Interlocked.MemoryBarrierProcessWide();
        WaitForScopes();
        Volatile.Write(ref _released, 1);
        Free(retire: RetiresOnDispose);
        _slot.Dispose();
        if (_retired is null)
        {
            GC.SuppressFinalize(this);
        }
    }

    /// <summary>
    /// Whether <see cref="Dispose"/> retires the native memory instead of freeing it: owned memory mapped
    /// from the system (Linux). Dispose gives its pages back (reads then see zeros) but keeps the
    /// addresses mapped until the finalizer, so an access that holds no scope and races Dispose reads
    /// zeros or writes a fresh page instead of faulting. The unscoped fast paths
    /// (<c>iommu_iova_to_phys</c>, a DMA that hits the unit's translation memo) run only on such memory.
    /// </summary>
    internal bool RetiresOnDispose => _retires;

    private void Free(bool retire = false)
    {
        if (_ram is not null)
        {
            return; // the caller's memory: the caller frees it
        }

        if (retire)
        {
            _retired = [];
        }

        for (int d = 0; d < _directory.Length; d++)
        {
            nint[]? dir = _directory[d];
            if (dir is null)
            {
                continue;
            }

            for (int i = 0; i < dir.Length; i++)
            {
                if (dir[i] != 0 && !InContiguousBlock(((ulong)d << DirShift) + (ulong)i))
                {
                    FreeOrRetire((byte*)dir[i], ChunkSize);
                }

                dir[i] = 0;
            }
        }

        foreach ((nint block, _, ulong count) in _contiguous)
        {
            FreeOrRetire((byte*)block, (nuint)(count << ChunkShift));
        }

        foreach (nint chunk in _relocated)
        {
            FreeOrRetire((byte*)chunk, ChunkSize);
        }

        _relocated.Clear();

        _contiguous.Clear();
    }

    private void FreeOrRetire(byte* block, nuint bytes)
    {
        if (_retired is null)
        {
            FreeChunks(block, bytes);
            return;
        }

        OsPages.Discard(block, bytes);
        _retired.Add(((nint)block, bytes));
    }

    /// <summary>
    /// Backs <c>[pa, pa + size)</c> (widened to whole 2 MiB chunks) with one contiguous native block
    /// and returns a fast view of it: the arena that translation structures live in, so that page
    /// walks are pointer arithmetic, as in C. Bytes already written there are kept.
    /// </summary>
    /// <param name="pa">First physical address.</param>
    /// <param name="size">Bytes.</param>
    /// <returns>The view.</returns>
    /// <remarks>
    /// Call before other threads use that range (typically when the frame allocator is built). A chunk that was
    /// backed is copied into the block, and the old chunk stays mapped until <see cref="Dispose"/>: an access
    /// that races the move reads the bytes from before or after it, never unmapped memory, but a write that races
    /// it may land in the old chunk and be lost.
    /// </remarks>
    public ContiguousRegion PinContiguous(ulong pa, ulong size)
    {
        CheckRange(pa, size);
        ArgumentOutOfRangeException.ThrowIfZero(size);
        if (_ram is not null)
        {
            // Caller-owned RAM is contiguous already wherever one range covers it: a view, no copy.
            byte* chunkBase = RamPointerChunk(pa, size);
            return new ContiguousRegion(this, chunkBase + (pa & (ChunkSize - 1)), pa, size);
        }

        ulong first = pa >> ChunkShift;
        ulong last = (pa + size - 1) >> ChunkShift;
        ulong count = last - first + 1;
        lock (_contiguous)
        {
            foreach ((_, ulong f, ulong c) in _contiguous)
            {
                if (first < f + c && f < first + count)
                {
                    throw new InvalidOperationException($"Physical range [0x{pa:x}, 0x{pa + size:x}) overlaps a range already pinned contiguous.");
                }
            }

            byte* block = AllocChunks((nuint)(count << ChunkShift));
            for (ulong c = 0; c < count; c++)
            {
                ulong chunk = first + c;
                ref nint[]? dirSlot = ref _directory[chunk >> DirShift];
                nint[] dir = dirSlot ??= new nint[DirEntries];
                ref nint slot = ref dir[chunk & (DirEntries - 1)];
                byte* target = block + (c << ChunkShift);
                if (slot != 0)
                {
                    // The old chunk stays mapped until Dispose: a reader that took its pointer before the
                    // write below reads what it held, never unmapped memory.
                    Buffer.MemoryCopy((void*)slot, target, ChunkSize, ChunkSize);
                    _relocated.Add(slot);
                }
                else
                {
                    Interlocked.Increment(ref _backedChunks);
                }

                Volatile.Write(ref slot, (nint)target);
            }

            _contiguous.Add(((nint)block, first, count));
            ChunksChanged();
            return new ContiguousRegion(this, block + (pa & (ChunkSize - 1)), pa, size);
        }
    }

    // iommu_domain_free's wait for calls that are using the domain (IommuCore.DomainUse): after a process-wide barrier
    // (which orders each user's store of the serial before its read of the domain's dying flag against the freer's
    // store of the flag before this scan, as for Dispose), every other thread whose slot names the domain is waited for.
    internal void WaitForDomainUsers(long serial, Slot? self)
    {
        Interlocked.MemoryBarrierProcessWide();
        Slot[] slots;
        lock (_slotLock)
        {
            slots = [.. _slots];
        }

        var spin = default(SpinWait);
        foreach (Slot s in slots)
        {
            while (s != self && Volatile.Read(ref s.DomainInUse) == serial)
            {
                spin.SpinOnce();
            }
        }
    }

    private void WaitForScopes()
    {
        Slot[] slots;
        lock (_slotLock)
        {
            slots = [.. _slots];
        }

        var spin = default(SpinWait);
        foreach (Slot s in slots)
        {
            while (Volatile.Read(ref s.Count) != 0)
            {
                spin.SpinOnce(sleep1Threshold: -1);
            }
        }
    }

    [MethodImpl(MethodImplOptions.NoInlining)]
    private Slot SlotOfThisThread()
    {
        Slot slot = _slot.Value!;
        t_lastSlot = slot;
        return slot;
    }

    private Slot NewSlot()
    {
        var slot = new Slot(_slotOwner);
        lock (_slotLock)
        {
            _slots.Add(slot);
        }

        return slot;
    }

    private bool InContiguousBlock(ulong chunk)
    {
        foreach ((_, ulong f, ulong c) in _contiguous)
        {
            if (chunk >= f && chunk < f + c)
            {
                return true;
            }
        }

        return false;
    }

    /// <summary>Frees native memory if the owner forgot to dispose, and unmaps what <see cref="Dispose"/> retired.</summary>
    /// <remarks>No call can be in flight then (a scope, and every unscoped fast path, keeps the memory reachable), and the thread-local counters may be finalized already, so this only frees.</remarks>
    ~PhysicalMemory()
    {
        if (_directory is not null && Interlocked.Exchange(ref _disposed, 1) == 0)
        {
            _released = 1;
            Free();
        }

        if (_retired is not null)
        {
            foreach ((nint block, nuint bytes) in _retired)
            {
                FreeChunks((byte*)block, bytes);
            }

            _retired = null;
        }
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static int BytesToChunkEnd(ulong pa, int want)
    {
        int left = ChunkSize - (int)(pa & (ChunkSize - 1));
        return want < left ? want : left;
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void CheckAligned(ulong pa, int alignment)
    {
        if ((pa & (ulong)(alignment - 1)) != 0)
        {
            ThrowHelper.Misaligned("physical address", pa, (ulong)alignment);
        }
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private bool InBounds(ulong pa, ulong length) => pa <= Size && length <= Size - pa;

    // Caller-owned memory: whether [pa, pa + length) lies in a chunk one RAM range covers whole.
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private bool InWholeChunk(ulong pa, ulong length) =>
        length != 0 && (pa >> ChunkShift) == ((pa + length - 1) >> ChunkShift) && ChunkIfBacked(pa) != null;

    // Caller-owned memory: whether RAM covers [pa, pa + length) (several adjacent ranges may).
    [MethodImpl(MethodImplOptions.NoInlining)]
    private bool RamContains(ulong pa, ulong length)
    {
        ulong end = pa + length;
        int i = RangeIndex(pa);
        if (i < 0)
        {
            return false;
        }

        for (; i < _ram!.Length; i++)
        {
            ulong rangeEnd = _ram[i].PhysicalAddress + _ram[i].Length;
            if (rangeEnd >= end)
            {
                return true;
            }

            if (i + 1 == _ram.Length || _ram[i + 1].PhysicalAddress != rangeEnd)
            {
                return false;
            }
        }

        return false;
    }

    // Caller-owned memory: the index of the RAM range holding pa, or -1 in a hole.
    private int RangeIndex(ulong pa)
    {
        HostMemoryRange[] ram = _ram!;
        int lo = 0, hi = ram.Length - 1;
        while (lo <= hi)
        {
            int mid = (lo + hi) >>> 1;
            if (pa < ram[mid].PhysicalAddress)
            {
                hi = mid - 1;
            }
            else if (pa - ram[mid].PhysicalAddress >= ram[mid].Length)
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

    // Caller-owned memory, a chunk without a whole-chunk pointer: the host address that chunk's start
    // would have in the range holding pa (only bytes of that range are ever reached through it), with n
    // clipped to the range's end. Throws for a hole.
    [MethodImpl(MethodImplOptions.NoInlining)]
    private byte* RamChunk(ulong pa, ref int n)
    {
        int i = RangeIndex(pa);
        if (i < 0)
        {
            ThrowHelper.PhysicalHole(pa, (ulong)n);
        }

        HostMemoryRange r = _ram![i];
        ulong left = r.PhysicalAddress + r.Length - pa;
        if ((ulong)n > left)
        {
            n = (int)left;
        }

        return (byte*)r.Host + ((pa & ~(ulong)(ChunkSize - 1)) - r.PhysicalAddress);
    }

    // Caller-owned memory: throws unless RAM covers [pa, pa + length) with one range.
    private void RangeEnd(ulong pa, ulong length)
    {
        int i = RangeIndex(pa);
        if (i < 0 || _ram![i].PhysicalAddress + _ram[i].Length - pa < length)
        {
            ThrowHelper.PhysicalHole(pa, length);
        }
    }

    // Caller-owned memory: a copy that would reach a hole throws before it moves a byte.
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private void CheckRam(ulong pa, ulong length)
    {
        if (_ram is not null && length != 0 && !InWholeChunk(pa, length) && !RamContains(pa, length))
        {
            ThrowHelper.PhysicalHole(pa, length);
        }
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private void CheckRange(ulong pa, ulong length)
    {
        if (!InBounds(pa, length))
        {
            ThrowHelper.PhysicalRange(pa, length, Size);
        }

        if (Volatile.Read(ref _released) != 0)
        {
            ThrowHelper.MemoryDisposed();
        }
    }

    // Caller guarantees [pa, pa+length) lies in one chunk (true for aligned accesses ≤ 4 KiB).
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private byte* Pointer(ulong pa, ulong length)
    {
        CheckRange(pa, length);
        byte* p = ChunkIfBacked(pa);
        if (p == null)
        {
            p = _ram is null ? Back(pa) : RamPointerChunk(pa, length);
        }

        return p + (pa & (ChunkSize - 1));
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private byte* PointerIfBacked(ulong pa, ulong length)
    {
        CheckRange(pa, length);
        byte* chunk = ChunkIfBacked(pa);
        if (chunk == null)
        {
            if (_ram is null)
            {
                return null;
            }

            chunk = RamPointerChunk(pa, length);
        }

        return chunk + (pa & (ChunkSize - 1));
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private byte* ChunkIfBacked(ulong pa)
    {
        ulong chunk = pa >> ChunkShift;
        nint[]? dir = Volatile.Read(ref _directory[chunk >> DirShift]);
        return dir is null ? null : (byte*)Volatile.Read(ref dir[chunk & (DirEntries - 1)]);
    }

    // Caller-owned memory: RamChunk for an access that must not be split (a table, a frame, a value).
    [MethodImpl(MethodImplOptions.NoInlining)]
    private byte* RamPointerChunk(ulong pa, ulong length)
    {
        RangeEnd(pa, length);
        int n = 1;
        return RamChunk(pa, ref n);
    }

    // Zeroed chunk memory that starts on a 4 KiB boundary, so a frame is a host page: copies of pages
    // and tables do not straddle cache lines, and a pinned block's base is page-aligned. From the OS,
    // not malloc, and committed only where touched: see OsPages.
    private static byte* AllocChunks(nuint bytes) => OsPages.Alloc(bytes);

    private static void FreeChunks(byte* block, nuint bytes) => OsPages.Free(block, bytes);

    [MethodImpl(MethodImplOptions.NoInlining)]
    private byte* Back(ulong pa)
    {
        ulong chunk = pa >> ChunkShift;
        ref nint[]? dirSlot = ref _directory[chunk >> DirShift];
        nint[]? dir = Volatile.Read(ref dirSlot);
        if (dir is null)
        {
            dir = Interlocked.CompareExchange(ref dirSlot, new nint[DirEntries], null) ?? dirSlot!;
        }

        ref nint slot = ref dir[chunk & (DirEntries - 1)];
        nint mine = (nint)AllocChunks(ChunkSize);
        nint existing = Interlocked.CompareExchange(ref slot, mine, 0);
        if (existing != 0)
        {
            FreeChunks((byte*)mine, ChunkSize);
            return (byte*)existing;
        }

        Interlocked.Increment(ref _backedChunks);
        ChunksChanged();
        return (byte*)mine;
    }

    // A translation memo that keeps host pointers of this memory's pages (TranslationShortcut.Fill) registers here.
    internal void AddMemo(Devices.TranslationShortcut memo)
    {
        lock (_memoLock)
        {
            _memos = [.. _memos.Where(w => w.TryGetTarget(out _)), new WeakReference<Devices.TranslationShortcut>(memo)];
        }
    }

    // A chunk's host pointer was set (backed, or moved into a pinned block): every memo retires its entries, after the
    // change is visible (TranslationShortcut's ordering argument), so no entry keeps a pointer to a chunk that has
    // moved, and an entry filled while its page had no backing (no host pointer) is filled again.
    private void ChunksChanged()
    {
        foreach (WeakReference<Devices.TranslationShortcut> w in Volatile.Read(ref _memos))
        {
            if (w.TryGetTarget(out Devices.TranslationShortcut? memo))
            {
                memo.RetireAll();
            }
        }
    }

    // The host address of pa's byte when its page is in memory and backed, else null (a memo's fill).
    internal byte* PageHostOrNull(ulong pa) => TryPageHost(pa, out byte* host) ? host : null;

    /// <summary>An open access scope of a <see cref="PhysicalMemory"/> (see <see cref="EnterAccess"/>): disposing it ends the scope.</summary>
    [System.Diagnostics.CodeAnalysis.SuppressMessage("Performance", "CA1815", Justification = "A scope token: never compared.")]
    public readonly struct AccessScope : IDisposable
    {
        private readonly PhysicalMemory? _memory; // keeps the memory reachable while the scope is open
        private readonly Slot? _slot;
        private readonly long _previousDomain; // the slot's DomainInUse to restore, or -1 when the scope marks none
        private readonly Domains.IommuDomain? _counted; // a domain whose InFlight the scope counts

        internal AccessScope(PhysicalMemory memory, Slot slot)
        {
            _memory = memory;
            _slot = slot;
            _previousDomain = -1;
        }

        internal AccessScope(PhysicalMemory memory, Slot slot, long previousDomain, Domains.IommuDomain? counted)
        {
            _memory = memory;
            _slot = slot;
            _previousDomain = previousDomain;
            _counted = counted;
        }

        /// <summary>The calling thread's slot of the memory (null only for a default scope).</summary>
        internal Slot? Slot => _slot;

        /// <summary>The memory the scope is of (null only for a default scope).</summary>
        internal PhysicalMemory? Memory => _memory;

        /// <summary>Ends the scope (call it on the thread that opened it, as <c>using</c> does).</summary>
        [MethodImpl(MethodImplOptions.AggressiveInlining)]
        public void Dispose()
        {
            if (_slot is not null)
            {
                if (_previousDomain >= 0)
                {
                    Volatile.Write(ref _slot.DomainInUse, _previousDomain);
                }
                else if (_counted is not null)
                {
                    Interlocked.Decrement(ref _counted.InFlight);
                }

                Volatile.Write(ref _slot.Count, _slot.Count - 1);
            }

            GC.KeepAlive(_memory);
        }
    }

    /// <summary>A claimed range of physical memory (see <see cref="Claim"/>).</summary>
    /// <param name="Start">First byte.</param>
    /// <param name="Size">Bytes.</param>
    /// <param name="Owner">Who hands the pages out.</param>
    /// <param name="Description">What the range is for.</param>
    public readonly record struct Claimed(ulong Start, ulong Size, object Owner, string Description);

    // One thread's open scopes (nesting depth), written only by that thread. Padded so that the
    // counter is at least 56 bytes from either end of the object: counters of different threads (and
    // whatever else the heap puts next to them) never share a cache line. A slot is created on its
    // thread (the ThreadLocal's factory runs there), so it also carries that thread's ErrorDetail
    // holder: a hot path holding a scope reaches it without another thread-local lookup. It is also
    // the thread's identity for the core's per-domain counters (IommuCore.CountMap).
    [StructLayout(LayoutKind.Explicit, Size = 112)]
    internal sealed class Slot(object owner)
    {
#pragma warning disable CA1051 // fields accessed by ref (Volatile.Read/Write) on the hot path
        [FieldOffset(0)]
        public readonly object Owner = owner;

        [FieldOffset(8)]
        public readonly ErrorDetail.State Detail = ErrorDetail.OfThisThread;

        [FieldOffset(56)]
        public int Count;

        // The serial of the IOMMU domain whose tables this thread's call is using now, or 0 (EnterDomainAccess, DomainUse):
        // written only by this thread, read by a thread freeing that domain (WaitForDomainUsers).
        [FieldOffset(64)]
        public long DomainInUse;
#pragma warning restore CA1051
    }
}
