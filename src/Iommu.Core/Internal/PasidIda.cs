namespace Iommu.Internal;

/// <summary>
/// The PASID namespace of one platform: 5.15's global <c>ioasid</c> set that aux domains draw from,
/// and the ≈6.4 <c>iommu_global_pasid_ida</c> that <see cref="IommuCore.AllocGlobalPasid"/> hands out
/// from — one bitmap, so an aux domain's PASID and a PASID a caller allocated for
/// <see cref="IommuCore.AttachDevicePasid"/> never collide. Lowest free number in an inclusive range.
/// </summary>
/// <remarks>
/// Besides allocations it keeps reservations: a PASID attached with <c>iommu_attach_device_pasid</c>
/// is reserved for as long as it is attached (counted per group), so an allocation skips it even when
/// the caller chose the number without allocating it. Freeing an allocation never drops a reservation.
/// </remarks>
internal sealed class PasidIda
{
    /// <summary>PASIDs are 20 bits wide (PCIe PASID capability, VT-d PASID tables).</summary>
    public const int MaxPasid = 1 << 20;

    private readonly ulong[] _used = new ulong[MaxPasid / 64];
    private readonly Dictionary<uint, int> _reserved = [];
    private int _count;

    /// <summary>Numbers currently allocated (reservations not counted).</summary>
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

    /// <summary><c>ioasid_alloc(min, max)</c> / <c>ida_alloc_range</c>: lowest PASID in [min, max] neither allocated nor reserved, or 0 when none.</summary>
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
                if ((word & bit) == 0 && (_reserved.Count == 0 || !_reserved.ContainsKey(p)))
                {
                    word |= bit;
                    _count++;
                    return p;
                }
            }

            return 0;
        }
    }

    /// <summary><c>ioasid_put</c> / <c>ida_free</c>; a number not allocated (or out of range) is ignored.</summary>
    public void Free(uint pasid)
    {
        if (pasid >= MaxPasid)
        {
            return;
        }

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

    /// <summary>Whether <paramref name="pasid"/> is allocated (reservations aside).</summary>
    public bool IsAllocated(uint pasid)
    {
        if (pasid >= MaxPasid)
        {
            return false;
        }

        lock (_used)
        {
            return (_used[pasid / 64] & (1UL << (int)(pasid % 64))) != 0;
        }
    }

    /// <summary>Adds one reservation of <paramref name="pasid"/> (one per attached group slot).</summary>
    public void Reserve(uint pasid)
    {
        lock (_used)
        {
            _reserved[pasid] = _reserved.GetValueOrDefault(pasid) + 1;
        }
    }

    /// <summary>Drops one reservation of <paramref name="pasid"/>.</summary>
    public void Unreserve(uint pasid)
    {
        lock (_used)
        {
            if (_reserved.TryGetValue(pasid, out int n))
            {
                if (n <= 1)
                {
                    _reserved.Remove(pasid);
                }
                else
                {
                    _reserved[pasid] = n - 1;
                }
            }
        }
    }
}
