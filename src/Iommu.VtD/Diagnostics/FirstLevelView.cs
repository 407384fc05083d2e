using Iommu.VtD.Hardware;

namespace Iommu.VtD.Diagnostics;

/// <summary>
/// The diagnostics' reading of a PASID entry's first level (PGTT = 001 and 011), shared by the
/// exporter, <see cref="VtdImage.Path"/> and the DOT writer: FLPTR and FLPM from the entry's third
/// word, and (nested) guest-physical table addresses translated through the second level at SLPTPTR.
/// Uses the hardware's walkers and constants only.
/// </summary>
internal static class FirstLevelView
{
    /// <summary>FLPTR (q2 63:12).</summary>
    public static ulong Flptr(ulong q2) => q2 & VtdFormat.PointerMask;

    /// <summary>4 or 5 levels by FLPM (q2 3:2); reserved FLPM values (the unit faults) read as 4 here.</summary>
    public static int Levels(ulong q2) => ((q2 >> VtdFormat.PasidFlpmShift) & 3) == 1 ? 5 : 4;

    /// <summary>Whether a present first-level entry maps a page (level 1, or PS at levels 2 and 3).</summary>
    public static bool IsLeaf(ulong pte, int level) => level == 1 || (level <= 3 && (pte & VtdFormat.FlPageSize) != 0);

    /// <summary>PAT (bit 12) of a 2 MiB or 1 GiB leaf: inside the address field, but not part of the page address.</summary>
    public const ulong LargePagePat = 1UL << 12;

    /// <summary>The page a first-level leaf at <paramref name="level"/> maps: its address field aligned to the page size, as the unit outputs it (PAT of a large leaf dropped).</summary>
    public static ulong LeafAddress(ulong pte, int level) => pte & VtdFormat.FlAddressMask & ~((1UL << (12 + (9 * (level - 1)))) - 1);

    /// <summary>Whether the walk goes on below this entry: present, not a leaf, no PS at levels 4 and 5 (reserved there).</summary>
    public static bool IsTablePointer(ulong pte, int level) =>
        (pte & VtdFormat.FlPresent) != 0 && level > 1 && (pte & VtdFormat.FlPageSize) == 0;

    /// <summary>
    /// Nested: the host address of guest-physical <paramref name="gpa"/> by the second level at
    /// <paramref name="slRoot"/> (AW 1–3), or false when that walk does not end at a readable leaf.
    /// </summary>
    public static bool TryTranslate<TSource>(in TSource source, ulong slRoot, int aw, ulong gpa, out ulong host)
        where TSource : struct, ISecondLevelEntrySource
    {
        host = 0;
        if (aw is < 1 or > 3)
        {
            return false;
        }

        SecondLevelWalker.Walk(source, slRoot, aw + 2, gpa, new ulong[6], SecondLevelNonLeafReserved, out SecondLevelWalkTrace sl);
        if (sl.Status != SecondLevelWalkStatus.Leaf || !sl.Read)
        {
            return false;
        }

        host = sl.Output | (gpa & (sl.PageSize - 1));
        return true;
    }

    /// <summary>Reserved bits of second-level table pointers as the diagnostics check them: PS at levels 4 and 5.</summary>
    public static ulong[] SecondLevelNonLeafReserved => [0, 0, 0, 0, VtdFormat.SlPageSize, VtdFormat.SlPageSize];

    /// <summary>Reserved bits of first-level table pointers as the diagnostics check them: PS at levels 4 and 5.</summary>
    public static ulong[] FirstLevelNonLeafReserved => [0, 0, 0, 0, VtdFormat.FlPageSize, VtdFormat.FlPageSize];
}
