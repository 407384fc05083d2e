using System.Numerics;
using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using Iommu.Devices;

namespace Iommu.VtD.Hardware;

/// <summary>
/// One set-associative cache of the unit (IOTLB, context cache or PASID cache): lookups take no lock
/// and write nothing shared; fills never wait; invalidation (the unit's writer side) is cheap at every
/// granularity.
/// </summary>
/// <remarks>
/// <para>Shape: <see cref="Sets"/> (a power of two) × <see cref="Ways"/> slots. An entry is a 128-bit key
/// (key0 ≠ 0) and a value of one or two 64-bit words, chosen by its owner. A fill of a full set
/// replaces a way holding nothing valid, otherwise the oldest fill of the set.</para>
/// <para>Each slot is a seqlock: <c>Seq</c> is even while stable and odd while one thread writes it. A
/// reader reads Seq, the fields, then Seq again, and uses the entry only if Seq was even and unchanged;
/// a writer takes the slot by a compare-and-swap of Seq to odd, writes, and releases it with a
/// volatile store of Seq + 2. A filler that finds a slot taken gives up (a dropped fill is only a later
/// miss); an invalidating writer spins until the slot is released (slots are held for a few stores), and
/// skips without taking it a slot it reads stable with no entry it selects (see <see cref="Remove{TMatch}"/>).
/// A slot is 32 bytes, so an IOTLB of a few thousand entries stays in the processor's first-level cache.</para>
/// <para>Invalidation without scanning: every entry carries the sum of three generation counters at
/// the time it was filled: the cache-wide one, its group's (a DID, or a pseudo-group) and its cell's
/// (a (DID, PASID) pair, see <see cref="PasidTagTable"/>). Counters only grow, so the sum changes
/// exactly when one of them does (until 2^32 increments wrap it). Bumping a counter retires every
/// entry filled under its old value at once; a lookup compares the sums. Page- and device-selective
/// invalidation instead visit only the sets the named keys map to (<see cref="Remove{TMatch}"/>).</para>
/// <para>Ordering with fills (the argument the owner's remarks rely on): every invalidation first
/// increments the owner's epoch, then bumps generations or clears slots. A fill records the epoch when
/// its translation started, reads the generations, takes its slot, and only then compares the epoch:
/// if an invalidation started since, the fill is dropped. Otherwise that invalidation's generation
/// bumps come after the generations the fill read (so they retire the entry), and its slot clearing
/// waits for the slot and then sees the entry. So no entry computed before an invalidation started
/// survives it.</para>
/// </remarks>
internal sealed class TranslationCache
{
    private readonly Slot[] _slots;
    private readonly ulong[] _tags;      // a hash of each slot's key, dense, so a lookup scans one cache line
    private readonly ulong[] _meta;      // per slot: group index | cell index << 32
    private readonly ulong[] _value1;    // per slot: the value's second word
    private readonly long[] _filled;     // per slot: fill order, for replacement (read by fills only)
    private readonly uint[] _groups;     // generation per group
    private readonly uint[] _cells;      // generation per (DID, PASID) cell
    private uint _global;                // cache-wide generation
    private long _fills;                 // fill order (racy increments: an approximate FIFO under concurrency)
    private readonly TranslationShortcut _shortcut;

    /// <summary>Creates an empty cache of at most <paramref name="capacity"/> entries.</summary>
    /// <param name="capacity">Entries wanted; rounded down to ways × a power of two (at least one set).</param>
    /// <param name="associativity">Ways per set (clamped to the capacity).</param>
    /// <param name="groups">Number of groups (generation counters indexed by the owner).</param>
    /// <param name="cells">Number of (DID, PASID) cells.</param>
    /// <param name="shortcut">The memo of this cache's answers, told after every change of them.</param>
    public TranslationCache(int capacity, int associativity, int groups, int cells, TranslationShortcut shortcut)
    {
        _shortcut = shortcut;
        int ways = Math.Min(associativity, capacity);
        Ways = ways;
        Sets = (int)BitOperations.RoundUpToPowerOf2((uint)(capacity / ways) + 1) >> 1;
        SetMask = Sets - 1;
        int n = Sets * Ways;
        _slots = new Slot[n];
        _tags = new ulong[n];
        _meta = new ulong[n];
        _value1 = new ulong[n];
        _filled = new long[n];
        _groups = new uint[groups];
        _cells = new uint[cells];
    }

    /// <summary>Number of sets (a power of two).</summary>
    public int Sets { get; }

    /// <summary>Sets − 1, to mask an index with.</summary>
    public int SetMask { get; }

    /// <summary>Ways per set.</summary>
    public int Ways { get; }

    /// <summary>Looks <paramref name="key0"/>/<paramref name="key1"/> up in <paramref name="set"/>: true with the one-word value when a current entry holds it.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public bool TryGet(int set, ulong key0, ulong key1, out ulong value0)
    {
        ref ulong tags = ref MemoryMarshal.GetArrayDataReference(_tags);
        ulong tag = Tag(key0, key1);
        int first = set * Ways;
        for (int i = first; i < first + Ways; i++)
        {
            if (Unsafe.Add(ref tags, i) == tag && TryRead(i, key0, key1, out value0, out _, twoWords: false))
            {
                return true;
            }
        }

        value0 = 0;
        return false;
    }

    /// <summary>Looks up an entry whose value has two words.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public bool TryGet(int set, ulong key0, ulong key1, out ulong value0, out ulong value1)
    {
        ref ulong tags = ref MemoryMarshal.GetArrayDataReference(_tags);
        ulong tag = Tag(key0, key1);
        int first = set * Ways;
        for (int i = first; i < first + Ways; i++)
        {
            if (Unsafe.Add(ref tags, i) == tag && TryRead(i, key0, key1, out value0, out value1, twoWords: true))
            {
                return true;
            }
        }

        value0 = value1 = 0;
        return false;
    }

    /// <summary>
    /// The generations a fill of (<paramref name="group"/>, <paramref name="cell"/>) carries; read them
    /// before <see cref="Fill"/> (see the ordering argument in the remarks).
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public Stamp Snapshot(int group, int cell) =>
        new(Volatile.Read(ref _global) + Volatile.Read(ref _groups[group]) + Volatile.Read(ref _cells[cell]), group, cell);

    /// <summary>
    /// Stores an entry unless an invalidation started after the translation that computed it
    /// (<paramref name="epoch"/> no longer equals <paramref name="startEpoch"/>) or another thread holds
    /// the slot; an entry with the same key in the set is replaced.
    /// </summary>
    public void Fill(int set, ulong key0, ulong key1, ulong value0, ulong value1, in Stamp stamp, ref long epoch, long startEpoch)
    {
        int first = set * Ways;
        int victim = -1;
        long oldest = long.MaxValue;
        for (int i = first; i < first + Ways; i++)
        {
            ref Slot s = ref _slots[i];
            if (s.Key0 == key0 && s.Key1 == key1)
            {
                victim = i;
                break;
            }

            long age = s.Key0 != 0 && IsCurrent(i) ? _filled[i] : long.MinValue;
            if (age < oldest)
            {
                oldest = age;
                victim = i;
            }
        }

        ref Slot slot = ref _slots[victim];
        int seq = Volatile.Read(ref slot.Seq);
        if ((seq & 1) != 0 || Interlocked.CompareExchange(ref slot.Seq, seq + 1, seq) != seq)
        {
            return;
        }

        if (Volatile.Read(ref epoch) != startEpoch)
        {
            Volatile.Write(ref slot.Seq, seq);
            return;
        }

        bool replaced = slot.Key0 != 0 && IsCurrent(victim);
        slot.Key0 = key0;
        slot.Key1 = key1;
        slot.Value0 = value0;
        slot.Gen = stamp.Gen;
        _value1[victim] = value1;
        _meta[victim] = (uint)stamp.GroupIndex | ((ulong)(uint)stamp.CellIndex << 32);
        _filled[victim] = ++_fills;
        Volatile.Write(ref _tags[victim], Tag(key0, key1));
        Volatile.Write(ref slot.Seq, seq + 2);
        if (replaced)
        {
            _shortcut.RetireAll();
        }
    }

    /// <summary>Retires every entry (writer side).</summary>
    public void InvalidateAll()
    {
        Volatile.Write(ref _global, _global + 1);
        _shortcut.RetireAll();
    }

    /// <summary>Retires every entry of <paramref name="group"/> (writer side).</summary>
    public void InvalidateGroup(int group)
    {
        Volatile.Write(ref _groups[group], _groups[group] + 1);
        _shortcut.RetireAll();
    }

    /// <summary>Retires every entry of <paramref name="cell"/> (writer side).</summary>
    public void InvalidateCell(int cell)
    {
        Volatile.Write(ref _cells[cell], _cells[cell] + 1);
        _shortcut.RetireAll();
    }

    /// <summary>Removes the current entries of <paramref name="set"/> that <paramref name="match"/> selects (writer side).</summary>
    public void Remove<TMatch>(int set, ref TMatch match)
        where TMatch : struct, IEntryMatch
    {
        int first = set * Ways;
        for (int i = first; i < first + Ways; i++)
        {
            ref Slot s = ref _slots[i];

            // A slot that is stable and holds nothing the match selects (or nothing) is skipped without
            // taking it (a compare-and-swap per way would make a full set cost eight): a fill that
            // takes it after this read of Seq checks the epoch, which the caller incremented (a full
            // fence) before calling, and drops itself — the fill's CAS and epoch read against this
            // thread's epoch increment and Seq read, so one of the two sees the other's write.
            int stable = Volatile.Read(ref s.Seq);
            if ((stable & 1) == 0)
            {
                ulong k0 = s.Key0, k1 = s.Key1, v0 = s.Value0, v1 = _value1[i];
                Volatile.ReadBarrier();
                if (Volatile.Read(ref s.Seq) == stable && (k0 == 0 || !match.Matches(k0, k1, v0, v1)))
                {
                    continue;
                }
            }

            int seq = TakeSlot(ref s);
            bool removed = s.Key0 != 0 && IsCurrent(i) && match.Matches(s.Key0, s.Key1, s.Value0, _value1[i]);
            if (removed)
            {
                s.Key0 = 0;
                Volatile.Write(ref _tags[i], 0);
            }

            Volatile.Write(ref s.Seq, seq + 2);
            if (removed)
            {
                _shortcut.RetireAll();
            }
        }
    }

    /// <summary>Removes the current entries of every set that <paramref name="match"/> selects (writer side).</summary>
    public void RemoveAll<TMatch>(ref TMatch match)
        where TMatch : struct, IEntryMatch
    {
        for (int set = 0; set < Sets; set++)
        {
            Remove(set, ref match);
        }
    }

    /// <summary>Number of current entries (a diagnostic scan; exact when no thread fills or invalidates meanwhile).</summary>
    public int Count()
    {
        int n = 0;
        for (int i = 0; i < _slots.Length; i++)
        {
            if (_slots[i].Key0 != 0 && IsCurrent(i))
            {
                n++;
            }
        }

        return n;
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static ulong Tag(ulong key0, ulong key1) => key0 ^ (key1 * 0x9E37_79B9_7F4A_7C15UL);

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private bool TryRead(int i, ulong key0, ulong key1, out ulong value0, out ulong value1, bool twoWords)
    {
        // Indices come from this cache's own arithmetic: no bounds checks on the hit path.
        ref Slot s = ref Unsafe.Add(ref MemoryMarshal.GetArrayDataReference(_slots), i);
        int seq = Volatile.Read(ref s.Seq);
        ulong k0 = s.Key0, k1 = s.Key1;
        value0 = s.Value0;
        uint gen = s.Gen;
        ulong meta = Unsafe.Add(ref MemoryMarshal.GetArrayDataReference(_meta), i);
        value1 = twoWords ? Unsafe.Add(ref MemoryMarshal.GetArrayDataReference(_value1), i) : 0;
        Volatile.ReadBarrier();
        return (seq & 1) == 0 && Volatile.Read(ref s.Seq) == seq
            && k0 == key0 && k1 == key1
            && gen == CurrentGen(meta);
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private uint CurrentGen(ulong meta) =>
        Volatile.Read(ref _global)
        + Volatile.Read(ref Unsafe.Add(ref MemoryMarshal.GetArrayDataReference(_groups), (nint)(uint)meta))
        + Volatile.Read(ref Unsafe.Add(ref MemoryMarshal.GetArrayDataReference(_cells), (nint)(meta >> 32)));

    private bool IsCurrent(int i) => _slots[i].Gen == CurrentGen(_meta[i]);

    private static int TakeSlot(ref Slot s)
    {
        var spin = default(SpinWait);
        while (true)
        {
            int seq = Volatile.Read(ref s.Seq);
            if ((seq & 1) == 0 && Interlocked.CompareExchange(ref s.Seq, seq + 1, seq) == seq)
            {
                return seq;
            }

            spin.SpinOnce();
        }
    }

    /// <summary>Selects entries to remove by key and value.</summary>
    internal interface IEntryMatch
    {
        /// <summary>Whether the entry goes.</summary>
        bool Matches(ulong key0, ulong key1, ulong value0, ulong value1);
    }

    /// <summary>The generation sum one fill carries, and its group and cell.</summary>
    internal readonly record struct Stamp(uint Gen, int GroupIndex, int CellIndex);

    // Half a cache line; the rest of a slot's state lives in the parallel arrays.
    [StructLayout(LayoutKind.Sequential)]
    private struct Slot
    {
        public int Seq;
        public uint Gen;
        public ulong Key0;        // 0: empty
        public ulong Key1;
        public ulong Value0;
    }
}
