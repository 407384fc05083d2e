namespace Iommu.VtD.Driver;

/// <summary>
/// The PASID namespace aux domains draw from (the kernel's <c>ioasid</c> allocator): lowest free
/// in an inclusive range. One per driver, hence per platform (the kernel's is global).
/// </summary>
internal sealed class PasidAllocator
{
    private const int MaxPasid = 1 << 20;
    private readonly ulong[] _used = new ulong[MaxPasid / 64];
    private int _count;

    public int Count
    {
        get
        {
            lock (_used)
            {
                return _count;
            }
        }
    }

    /// <summary><c>ioasid_alloc(min, max)</c>: lowest free PASID in [min, max], or 0 when none.</summary>
    public uint Allocate(uint min, uint max)
    {
        max = Math.Min(max, MaxPasid - 1);
        lock (_used)
        {
            for (uint p = min; p <= max; p++)
            {
                ref ulong word = ref _used[p / 64];
                if (word == ulong.MaxValue)
                {
                    p |= 63;
                    continue;
                }

                ulong bit = 1UL << (int)(p % 64);
                if ((word & bit) == 0)
                {
                    word |= bit;
                    _count++;
                    return p;
                }
            }

            return 0;
        }
    }

    /// <summary><c>ioasid_put</c>.</summary>
    public void Free(uint pasid)
    {
        lock (_used)
        {
            ref ulong word = ref _used[pasid / 64];
            ulong bit = 1UL << (int)(pasid % 64);
            if ((word & bit) != 0)
            {
                word &= ~bit;
                _count--;
            }
        }
    }
}
