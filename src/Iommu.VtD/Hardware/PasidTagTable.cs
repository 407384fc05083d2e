namespace Iommu.VtD.Hardware;

/// <summary>
/// Numbers the (group, PASID) pairs the unit has cached, so that a cache can keep one generation
/// counter per pair (a "cell") and retire all of a PASID's entries in one step
/// (<see cref="TranslationCache.InvalidateCell"/>). Lookups and insertions take no lock.
/// </summary>
/// <remarks>
/// Open addressing over a fixed array. When no free slot is found near a pair's hash (after many
/// distinct pairs), the pair shares the <see cref="Overflow"/> cell; invalidating a pair that is not in
/// the table then retires every overflow entry, more than needed (hardware may drop any entry), never less.
/// </remarks>
internal sealed class PasidTagTable
{
    /// <summary>The cell of entries that belong to no pair (legacy-mode entries); never invalidated by pair.</summary>
    public const int None = 0;

    /// <summary>The cell shared by pairs that found no slot.</summary>
    public const int Overflow = 1;

    private const int Probes = 32;
    private readonly ulong[] _keys;   // 0: free; otherwise ((ulong)group << 21 | tag) + 1, tag = a PASID, or a PASID | FirstStage
    private int _overflowed;

    /// <summary>Creates a table for up to <paramref name="capacity"/> pairs (a power of two).</summary>
    public PasidTagTable(int capacity) => _keys = new ulong[capacity];

    /// <summary>Cells a cache must provide generations for.</summary>
    public int CellCount => _keys.Length + 2;

    /// <summary>The cell of (<paramref name="group"/>, <paramref name="pasid"/>), adding the pair when new.</summary>
    public int GetOrAdd(int group, uint pasid)
    {
        ulong key = (((ulong)group << 21) | pasid) + 1;
        int mask = _keys.Length - 1;
        int start = Hash(key) & mask;
        for (int i = 0; i < Probes; i++)
        {
            int slot = (start + i) & mask;
            ulong k = Volatile.Read(ref _keys[slot]);
            if (k == key)
            {
                return slot + 2;
            }

            if (k == 0)
            {
                ulong prior = Interlocked.CompareExchange(ref _keys[slot], key, 0);
                if (prior == 0 || prior == key)
                {
                    return slot + 2;
                }
            }
        }

        Volatile.Write(ref _overflowed, 1);
        return Overflow;
    }

    /// <summary>The cell whose generation covers (<paramref name="group"/>, <paramref name="pasid"/>), or -1 when no entry can hold the pair.</summary>
    public int Find(int group, uint pasid)
    {
        ulong key = (((ulong)group << 21) | pasid) + 1;
        int mask = _keys.Length - 1;
        int start = Hash(key) & mask;
        for (int i = 0; i < Probes; i++)
        {
            ulong k = Volatile.Read(ref _keys[(start + i) & mask]);
            if (k == key)
            {
                return ((start + i) & mask) + 2;
            }

            if (k == 0)
            {
                break;
            }
        }

        return Volatile.Read(ref _overflowed) != 0 ? Overflow : -1;
    }

    private static int Hash(ulong key) => (int)((key * 0x9E37_79B9_7F4A_7C15UL) >> 40);
}
