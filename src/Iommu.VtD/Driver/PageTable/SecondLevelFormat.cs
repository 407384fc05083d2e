using System.Runtime.CompilerServices;

namespace Iommu.VtD.Driver;

/// <summary>VT-d second-level entries (<c>struct dma_pte</c>, <see cref="DmaPte"/>) as a <see cref="PageTable{TFormat}"/> format.</summary>
internal readonly struct SecondLevelFormat : IPtFormat
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
        get => DmaPte.Read | DmaPte.Write;
    }

    public static ulong TableBits
    {
        [MethodImpl(MethodImplOptions.AggressiveInlining)]
        get => DmaPte.Read | DmaPte.Write;
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static bool IsMappable(ulong attr) => (attr & (DmaPte.Read | DmaPte.Write)) != 0;

    // dma_pte_superpage: bit 7 at levels 2 (2 MiB) and 3 (1 GiB); the driver maps no larger page, and
    // at levels 4 and 5 the bit is reserved, so walks there never test it.
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static bool IsLeaf(ulong pte, int level) => level == 1 || (level <= 3 && DmaPte.IsSuperpage(pte));

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static ulong Address(ulong pte) => DmaPte.Address(pte);

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static ulong LeafBits(ulong attr, int level) =>
        (attr & (DmaPte.Read | DmaPte.Write | DmaPte.Snoop)) | (level > 1 ? DmaPte.LargePage : 0);

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static unsafe ulong Load(ulong* entry) => Volatile.Read(ref *entry);

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static unsafe ulong Load(ulong* table, ulong index) => Volatile.Read(ref table[index]);

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static unsafe void Store(ulong* entry, ulong value) => Volatile.Write(ref *entry, value);
}
