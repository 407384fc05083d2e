using System.Numerics;
using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using Iommu.Internal;
using Iommu.Memory;

namespace Iommu.Devices;

/// <summary>
/// A software memo of completed translations, per (source id, PASID, 4 KiB page): what the context
/// cache, the PASID cache and the IOTLB together answered for a request the last time all three hit.
/// It is not a hardware structure and changes nothing a device or a test can observe; it only lets a
/// repeated request read one 40-byte entry instead of three set-associative caches.
/// </summary>
/// <remarks>
/// <para>Exactness: an entry carries the change count (<see cref="Generation"/>) read before the
/// lookup it memoises began, and is used only while the count is unchanged. The count moves after
/// every change of what the caches answer, once the change is visible: after each cache retires
/// entries by generation or removes them (every invalidation), after a fill that replaced a current
/// entry (an eviction), and after a write of GCMD that changed TE or latched a root table. So while an
/// entry is current, each cache still holds the entry it was computed from, and a lookup through the
/// caches would return the same translation and count the same hits (a hit here counts the context,
/// PASID and IOTLB hits the caches would have). Only requests the caches served entirely are
/// memoised: a translation from a walk whose fill was dropped would not be the caches' answer.</para>
/// <para>Ordering: a filler reads the count before it looks at any cache, takes the entry's seqlock,
/// and writes only if the count is still the one it read. If a change became visible before the
/// filler's cache lookups, the count moved before its read or the lookups missed; if it became visible
/// after them, its count moves after that, so either the filler sees the new count and drops its fill
/// or the fill is retired when the count moves. Counting at the start of a change would not do: a
/// filler could read the new count and then an entry the change had not removed yet. Readers compare
/// the entry's count with the current one under the entry's seqlock (as
/// the unit's cache slots).</para>
/// <para>First level and nested (PGTT 001/011): the memo summarises the scalable context entry, the
/// PASID entry and the first-stage IOTLB entry (tagged PASID | first-level or nested kind) of a user,
/// non-execute request, the only kind that looks it up. Every invalidation that removes or retires one of
/// those (P_IOTLB G=10/G=11, IOTLB domain- and page-selective (which drops every first-stage entry of the
/// DID), PASID-cache, context-cache, global) moves the count as for second-level entries, so the
/// ordering argument above holds unchanged. A first-stage hit writes no A/D bit: <see cref="Write"/> is
/// set only when the IOTLB entry records D already set in the leaf, so a write through a clean leaf
/// misses the memo and walks (setting D, refilling the entry, which retires the memo);
/// <see cref="Writable"/> keeps what such a translation reports. A walk after a hit it refused (a write
/// through a clean leaf, a user request through a supervisor entry) may fill the page at another level
/// into a free slot, which is no replacement, so that walk moves the count itself.</para>
/// <para>Host pointers: on memory that retires on dispose, an entry also keeps the host address of its
/// output page when the page is backed, so the inline move (<see cref="TryMoveSmall"/>) copies with no lookup
/// in the memory's chunk directory. The memory retires every memo's entries after a chunk's host pointer
/// changes (a chunk backed, or moved into a pinned block), so an entry never keeps the pointer of a chunk
/// that has moved, and an entry filled while its page had no backing (no pointer; the inline move leaves
/// those to the caches' path) is filled again with one. A chunk that moved stays mapped until the memory's
/// dispose, and a retired memory stays mapped until it is finalized, so a pointer read just before either
/// still points to mapped memory.</para>
/// <para>Shape: direct-mapped, as many entries as the IOTLB (a power of two). The index is the page
/// number plus an offset hashed from the source id and PASID, so one device's consecutive pages never
/// conflict with each other, and neighbouring devices' ranges start far apart.</para>
/// <para>Home: the remapping unit (<c>VtdUnit</c>) owns, fills and retires it; it lives here, beside
/// <see cref="PciDevice"/>, so that a device's DMA can look it up and move the bytes inline
/// (<see cref="TryMoveSmall"/>) without a call into the unit. Its hits are counted here, striped by thread,
/// and the unit adds them into the cache hit counts they stand for.</para>
/// </remarks>
internal sealed unsafe class TranslationShortcut
{
    /// <summary>Value bits 63:12: the output page address (4 KiB aligned; for a larger page, the 4 KiB page of the request).</summary>
    public const ulong AddressMask = ~0xFFFUL;

    /// <summary>The <see cref="TryMoveSmall"/> answer when nothing moved (no physical address is this large).</summary>
    public const ulong NotMoved = ulong.MaxValue;

    /// <summary>Value bit: reads allowed.</summary>
    public const ulong Read = 1;

    /// <summary>Value bit: writes allowed.</summary>
    public const ulong Write = 2;

    /// <summary>Value bit: served by a scalable-mode unit (the PASID cache was hit too).</summary>
    public const ulong Scalable = 4;

    /// <summary>Value bits 4:3: the IOTLB entry's level − 1 (its page size).</summary>
    public const int LevelShift = 3;

    /// <summary>
    /// Value bit: the translation reports writable. Set with <see cref="Write"/> for second-level
    /// entries; a first-level leaf whose D is clear reports writable but a write walks (to set D).
    /// </summary>
    public const ulong Writable = 32;

    private readonly Entry[] _entries;
    private long _generation;
    private readonly int _mask;
    private readonly int _shift;
    private readonly PhysicalMemory _memory;
    private readonly long[] _hitCounts; // pinned: [stripe + 0] hits of legacy-mode requests, [stripe + 1] of scalable-mode ones
    private readonly long* _hits;

    /// <summary>Creates an empty memo of at least <paramref name="capacity"/> entries (rounded up to a power of two).</summary>
    /// <param name="capacity">Entries.</param>
    /// <param name="memory">The memory the memoised addresses are in (the unit's).</param>
    public TranslationShortcut(int capacity, PhysicalMemory memory)
    {
        int n = (int)BitOperations.RoundUpToPowerOf2((uint)Math.Max(capacity, 64));
        _entries = new Entry[n];
        _mask = n - 1;
        _shift = 64 - BitOperations.Log2((uint)n);
        _memory = memory;
        _hitCounts = ThreadStripe.Allocate(out _hits);
        memory.AddMemo(this);
    }

    /// <summary>Requests the memo served, counted by <see cref="CountHit"/>: of scalable-mode units (the PASID cache hit too) or of legacy ones.</summary>
    /// <param name="scalable">Which kind.</param>
    /// <returns>The count.</returns>
    public long Hits(bool scalable) => ThreadStripe.Sum(_hits, scalable ? 1 : 0);

    /// <summary>Counts a request the memo served with <paramref name="value"/>, by its <see cref="Scalable"/> bit (no branch).</summary>
    /// <param name="value">The memoised value.</param>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public void CountHit(ulong value) => _hits[ThreadStripe.Offset + (nuint)((value / Scalable) & 1)]++;

    /// <summary>
    /// The memo's answer for a request of <paramref name="length"/> bytes (1 to the end of
    /// <paramref name="iova"/>'s page) that allows the access: the generation read before the entry is
    /// looked at (the ordering argument above). Counts nothing.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public bool TryGetAccess(ushort requesterId, uint? pasid, ulong iova, int length, bool write, out ulong value) =>
        TryGetAccess(requesterId, pasid, iova, length, write, out value, out _);

    // TryGetAccess with the entry's host pointer (Entry.Host; 0 when it keeps none).
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private bool TryGetAccess(ushort requesterId, uint? pasid, ulong iova, int length, bool write, out ulong value, out nint host)
    {
        uint p = pasid.GetValueOrDefault();
        if ((uint)(length - 1) < 4096 - (iova & 0xFFF) && p <= 0xF_FFFF)
        {
            uint gen = Generation;
            ulong requester = Requester(requesterId, pasid.HasValue, p);
            ulong page = iova >> 12;
            return TryGetAt(Index(requester, page), requester, page, gen, out value, out host)
                && (value & (write ? Write : Read)) != 0;
        }

        value = 0;
        host = 0;
        return false;
    }

    /// <summary>
    /// The DMA fast path with no access scope (see <see cref="IUnscopedDma"/>): moves 16 to 64 bytes
    /// (<see cref="PhysicalMemory.IsSmallMove"/>) inside <paramref name="iova"/>'s page when the memo holds
    /// a translation that allows the access, the page is backed and the memory retires on dispose, all
    /// inline with no call. Returns the physical address of the first byte, counting the hit, or
    /// <see cref="NotMoved"/> (nothing moved, or what moved counts for nothing).
    /// </summary>
    /// <param name="requester">The request's key word (<see cref="Requester"/>).</param>
    /// <param name="offset">Its index offset (<see cref="Offset"/>): a device keeps both for its untagged requests.</param>
    /// <param name="iova">The request's address.</param>
    /// <param name="buffer">The bytes to write, or where to read them to.</param>
    /// <param name="write">A write.</param>
    /// <remarks>
    /// Ordering with <see cref="PhysicalMemory.Dispose"/>: it stores its flag before it retires the memory;
    /// a read that saw retired (zeroed) bytes is followed, past the read barrier, by a load of the flag
    /// that sees it, and then counts for nothing. A write that lands in retired memory is lost with the
    /// memory, as if it had come just before the dispose.
    /// </remarks>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public ulong TryMoveSmall(ulong requester, nint offset, ulong iova, Span<byte> buffer, bool write)
    {
        // Only memory that retires on dispose has host pointers in entries (Fill), so host != 0 below also
        // says the memory retires. The small move's lengths cannot wrap the sum: the bytes end in iova's page.
        PhysicalMemory memory = _memory;
        if (PhysicalMemory.IsSmallMove(buffer.Length) && !memory.IsDisposed && (iova & 0xFFF) + (uint)buffer.Length <= 4096)
        {
            uint gen = Generation;
            ulong page = iova >> 12;
            if (TryGetAt((nint)((page + (nuint)offset) & (uint)_mask), requester, page, gen, out ulong value, out nint host)
                && (value & (write ? Write : Read)) != 0 && host != 0)
            {
                PhysicalMemory.Move((byte*)host + (iova & 0xFFF), buffer, write, small: true);
                if (EndUnscoped(memory, value))
                {
                    return OutputAddress(value, iova);
                }
            }
        }

        return NotMoved;
    }

    /// <summary><see cref="TryMoveSmall"/> of a request from <paramref name="requesterId"/>, tagged with <paramref name="pasid"/> or not.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public ulong TryMoveSmallFrom(ushort requesterId, uint? pasid, ulong iova, Span<byte> buffer, bool write)
    {
        uint p = pasid.GetValueOrDefault();
        if (p > 0xF_FFFF)
        {
            return NotMoved;
        }

        ulong key = Requester(requesterId, pasid.HasValue, p);
        return TryMoveSmall(key, Offset(key), iova, buffer, write);
    }

    /// <summary>The physical address of <paramref name="iova"/>'s byte under memoised <paramref name="value"/>.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static ulong OutputAddress(ulong value, ulong iova) => (value & AddressMask) | (iova & 0xFFF);

    /// <summary>
    /// The start of the unit's unscoped move of other lengths than <see cref="TryMoveSmall"/>'s: the memo's
    /// <paramref name="memory"/> (the one it was created with) retires on dispose, its dispose has not
    /// started, the memo allows the access (<see cref="TryGetAccess(ushort, uint?, ulong, int, bool, out ulong)"/>)
    /// and keeps the page's host address, <paramref name="host"/>.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public bool TryBeginUnscoped(PhysicalMemory memory, ushort requesterId, uint? pasid, ulong iova, int length, bool write, out ulong value, out nint host)
    {
        value = 0;
        host = 0;
        // host != 0: the memory retires (Fill).
        return !memory.IsDisposed && TryGetAccess(requesterId, pasid, iova, length, write, out value, out host) && host != 0;
    }

    /// <summary>
    /// The end of an unscoped move, after the copy: whether <paramref name="memory"/>'s dispose had not
    /// started by then (the ordering in <see cref="TryMoveSmall"/>'s remarks); if so, the hit counts.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public bool EndUnscoped(PhysicalMemory memory, ulong value)
    {
        Volatile.ReadBarrier();
        if (memory.IsDisposed)
        {
            return false;
        }

        CountHit(value);
        return true;
    }

    /// <summary>The change count: read it before looking at any cache, and pass it to <see cref="TryGet"/> and <see cref="Fill"/>.</summary>
    public uint Generation
    {
        [MethodImpl(MethodImplOptions.AggressiveInlining)]
        get => (uint)Volatile.Read(ref _generation);
    }

    /// <summary>
    /// Counts a change of what the caches answer, made before this call: every memo filled before the
    /// change became visible is retired (call it after the change, never before; see the remarks).
    /// </summary>
    public void RetireAll() => Interlocked.Increment(ref _generation);

    /// <summary>Key word of a request's source id and PASID (bit 36: the request carries a PASID).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static ulong Requester(ushort sid, bool hasPasid, uint pasid) =>
        sid | ((ulong)pasid << 16) | (hasPasid ? 1UL << 36 : 0);

    /// <summary>Looks the page of <paramref name="iova"/> up: true with the memoised value while <paramref name="gen"/> is the one it was filled under.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public bool TryGet(ulong requester, ulong iova, uint gen, out ulong value)
    {
        ulong page = iova >> 12;
        return TryGetAt(Index(requester, page), requester, page, gen, out value);
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private bool TryGetAt(nint index, ulong requester, ulong page, uint gen, out ulong value) =>
        TryGetAt(index, requester, page, gen, out value, out _);

    // The entry's value and host pointer (Entry.Host), read under its seqlock.
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private bool TryGetAt(nint index, ulong requester, ulong page, uint gen, out ulong value, out nint host)
    {
        ref Entry e = ref Unsafe.Add(ref MemoryMarshal.GetArrayDataReference(_entries), index);
        int seq = Volatile.Read(ref e.Seq);
        uint g = e.Gen;
        ulong p = e.Page, r = e.Requester;
        value = e.Value;
        host = e.Host;
        Volatile.ReadBarrier();
        return g == gen && p == page + 1 && r == requester && (seq & 1) == 0 && Volatile.Read(ref e.Seq) == seq;
    }

    /// <summary>
    /// Memoises <paramref name="value"/> for the page of <paramref name="iova"/> unless the change count
    /// moved since <paramref name="gen"/> was read or another thread holds the entry.
    /// </summary>
    public void Fill(ulong requester, ulong iova, ulong value, uint gen)
    {
        ulong page = iova >> 12;
        ref Entry e = ref _entries[Index(requester, page)];
        int seq = Volatile.Read(ref e.Seq);
        if ((seq & 1) != 0 || Interlocked.CompareExchange(ref e.Seq, seq + 1, seq) != seq)
        {
            return;
        }

        if ((uint)Volatile.Read(ref _generation) == gen)
        {
            e.Gen = gen;
            e.Page = page + 1; // 0: empty
            e.Requester = requester;
            e.Value = value;

            // Read after gen: a chunk backed or moved since then has retired gen (PhysicalMemory.ChunksChanged),
            // and this fill is dropped by the check above or retired with the others.
            e.Host = _memory.RetiresOnDispose ? (nint)_memory.PageHostOrNull(value & AddressMask) : 0;
        }

        Volatile.Write(ref e.Seq, seq + 2);
    }

    /// <summary>
    /// The index offset of <paramref name="requester"/>'s pages: page n of it is entry (n + offset) mod the
    /// memo's size.
    /// </summary>
    /// <param name="requester">A key word (<see cref="Requester"/>).</param>
    /// <returns>The offset.</returns>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public nint Offset(ulong requester)
    {
        // Device number first (the rotation takes the function's three bits to the top), so adjacent
        // devices (devfn + 8) land at offsets about 0.38 of the memo apart (Fibonacci hashing of
        // consecutive keys), and the eight functions of one device in eight different eighths of it.
        ulong k = BitOperations.RotateRight(requester, 3);
        return (nint)((k * 0x9E37_79B9_7F4A_7C15UL) >> _shift);
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private nint Index(ulong requester, ulong page) => (nint)((page + (nuint)Offset(requester)) & (uint)_mask);

    [StructLayout(LayoutKind.Sequential)]
    private struct Entry
    {
        public int Seq;
        public uint Gen;
        public ulong Page;        // page number + 1; 0: empty
        public ulong Requester;
        public ulong Value;       // output page address | Read | Write | Scalable | level − 1 << LevelShift | Writable
        public nint Host;         // the output page's host address on memory that retires on dispose, when backed; else 0
    }
}
