using System.Runtime.CompilerServices;
using Iommu.VtD.Driver.Format;

namespace Iommu.VtD.Driver;

/// <summary>
/// VT-d first-level (IA-32e) entries as Linux writes them for DMA and UNMANAGED domains
/// (<see cref="FirstLevelPte"/>), as a <see cref="PageTable{TFormat}"/> format: 4 or 5 levels.
/// </summary>
/// <remarks>
/// Present is P alone (bit 0): a not-present entry has it clear whatever else it holds, and the frames of
/// the pending-free list, threaded through their first word as page addresses, read as not present.
/// </remarks>
internal readonly struct FirstLevelFormat : IPtFormat
{
    public static int PageShift
    {
        [MethodImpl(MethodImplOptions.AggressiveInlining)]
        get => DmaPte.PageShift;
    }

    public static int StrideShift
    {
        [MethodImpl(MethodImplOptions.AggressiveInlining)]
        get => DmaPte.StrideShift;
    }

    public static ulong PresentMask
    {
        [MethodImpl(MethodImplOptions.AggressiveInlining)]
        get => FirstLevelPte.Present;
    }

    public static ulong TableBits
    {
        [MethodImpl(MethodImplOptions.AggressiveInlining)]
        get => FirstLevelPte.TableBits;
    }

    // A mapping needs read or write: P doubles as read, so neither would be a present entry that
    // grants what was not asked (the map path refuses it with -EINVAL, as for the second level).
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static bool IsMappable(ulong attr) => (attr & (DmaPte.Read | DmaPte.Write)) != 0;

    // PS at levels 2 (2 MiB) and 3 (1 GiB); bit 7 is reserved in PML4/PML5 entries, never tested there.
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static bool IsLeaf(ulong pte, int level) => level == 1 || (level <= 3 && (pte & FirstLevelPte.PageSize) != 0);

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static ulong Address(ulong pte) => FirstLevelPte.Address(pte);

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static ulong LeafBits(ulong attr, int level) => FirstLevelPte.LeafBits(attr, level);

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static unsafe ulong Load(ulong* entry) => Volatile.Read(ref *entry);

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static unsafe ulong Load(ulong* table, ulong index) => Volatile.Read(ref table[index]);

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static unsafe void Store(ulong* entry, ulong value) => Volatile.Write(ref *entry, value);
}
