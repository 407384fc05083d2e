using System.Runtime.CompilerServices;
using Iommu.Memory;

namespace Iommu.VtD.Hardware;

/// <summary>Where the second-level walker reads entries: live physical memory, or an exported image.</summary>
internal interface ISecondLevelEntrySource
{
    /// <summary>Reads the 8-byte entry at <paramref name="pa"/>; false is a memory error (nothing read).</summary>
    bool TryRead(ulong pa, out ulong entry);
}

/// <summary>Entries read from the unit's physical memory (a read outside it is a memory error).</summary>
internal readonly struct MemoryEntrySource(PhysicalMemory memory) : ISecondLevelEntrySource
{
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public bool TryRead(ulong pa, out ulong entry)
    {
        if (!memory.Contains(pa, 8))
        {
            entry = 0;
            return false;
        }

        entry = memory.ReadUInt64(pa);
        return true;
    }
}

/// <summary>
/// The hardware's reading of second-level paging structures (the VT-d spec's second-level
/// translation and its paging-entry formats): one walk from SLPTPTR to the leaf for an input
/// address, with the checks in spec order per level, and the enumeration of every table a unit could reach (for the image exporter). Translation, the exporter
/// and <c>VtdImage.Path</c> all walk with it; none walks second-level tables on its own.
/// </summary>
/// <remarks>
/// This is the hardware model's own decoder: it never calls the driver's page-table code, so the two
/// sides stay two independent readings of the spec. What counts as reserved is the caller's: the unit
/// passes the masks its capabilities give (HAW, SNP, superpage support, PS in PML4E/PML5E), the image
/// path passes only PS at levels 4 and 5, so it stops where the unit would without judging the rest.
/// Walks are static over a struct entry source, so the unit's miss path is specialised for
/// <see cref="MemoryEntrySource"/> and allocates nothing.
/// </remarks>
internal static class SecondLevelWalker
{
    /// <summary>Entries per table.</summary>
    public const int EntriesPerTable = VtdFormat.EntriesPerTable;

    /// <summary>Input-address shift of an entry at <paramref name="level"/> (1 = 4 KiB).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static int Shift(int level) => 12 + (9 * (level - 1));

    /// <summary>Walk order per level: memory error, R = W = 0 (not present), reserved bits, then leaf or next table.</summary>
    /// <param name="source">Where entries are read.</param>
    /// <param name="root">SLPTPTR: the top table.</param>
    /// <param name="levels">3, 4 or 5 (AW + 2).</param>
    /// <param name="iova">Input address.</param>
    /// <param name="leafReserved">Reserved bits of a leaf, by level (1–5).</param>
    /// <param name="nonLeafReserved">Reserved bits of a table pointer, by level (1–5).</param>
    /// <param name="trace">Every entry read, the level where the walk stopped and why, and for a leaf its output and the permissions ANDed over the path.</param>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static void Walk<TSource>(in TSource source, ulong root, int levels, ulong iova, ulong[] leafReserved, ulong[] nonLeafReserved, out SecondLevelWalkTrace trace)
        where TSource : struct, ISecondLevelEntrySource
    {
        trace = default;
        ulong table = root;
        bool r = true, w = true;
        for (int level = levels; ; level--)
        {
            int shift = Shift(level);
            ulong pa = table + (((iova >> shift) & 0x1FF) * 8);
            trace.Level = level;
            if (!source.TryRead(pa, out ulong pte))
            {
                trace.Status = SecondLevelWalkStatus.ReadError;
                return;
            }

            trace.Add(level, pa, pte);
            SecondLevelWalkStatus s = Classify(pte, level, leafReserved, nonLeafReserved);
            if (s is SecondLevelWalkStatus.NotPresent or SecondLevelWalkStatus.Reserved)
            {
                trace.Status = s;
                return;
            }

            r &= (pte & VtdFormat.SlRead) != 0;
            w &= (pte & VtdFormat.SlWrite) != 0;
            if (s == SecondLevelWalkStatus.Table)
            {
                table = pte & VtdFormat.SlAddressMask;
                continue;
            }

            trace.Status = SecondLevelWalkStatus.Leaf;
            trace.Output = pte & VtdFormat.SlAddressMask & ~((1UL << shift) - 1);
            trace.Read = r;
            trace.Write = w;
            return;
        }
    }

    /// <summary>
    /// Calls <paramref name="visitor"/> for the top table and then for every table below it the unit would
    /// walk into (present, not a leaf, no reserved bit set), depth first; a table the visitor declines
    /// is not entered.
    /// </summary>
    public static void VisitTables<TSource, TVisitor>(in TSource source, ulong root, int levels, ulong[] leafReserved, ulong[] nonLeafReserved, ref TVisitor visitor)
        where TSource : struct, ISecondLevelEntrySource
        where TVisitor : struct, ISecondLevelTableVisitor
    {
        if (levels < 1 || !visitor.Enter(root, levels))
        {
            return;
        }

        for (int i = 0; i < EntriesPerTable; i++)
        {
            if (source.TryRead(root + ((ulong)i * 8), out ulong pte)
                && Classify(pte, levels, leafReserved, nonLeafReserved) == SecondLevelWalkStatus.Table)
            {
                VisitTables(source, pte & VtdFormat.SlAddressMask, levels - 1, leafReserved, nonLeafReserved, ref visitor);
            }
        }
    }

    /// <summary>
    /// Whether a second-level entry at <paramref name="level"/> points to a next-level table whatever the
    /// unit's capabilities (R or W set, not a leaf, no PS: PS is a leaf at levels 2 and 3 and a
    /// reserved-bit fault at levels 4 and 5, followed at neither). For image relocation.
    /// </summary>
    public static bool IsTablePointer(ulong pte, int level) =>
        (pte & (VtdFormat.SlRead | VtdFormat.SlWrite)) != 0 && level > 1 && (pte & VtdFormat.SlPageSize) == 0;

    // One entry at one level: R = W = 0 is not present; PS is a leaf at levels 2 and 3 only (at 4 and 5
    // it is a reserved bit of the table pointer); level 1 is always a leaf.
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static SecondLevelWalkStatus Classify(ulong pte, int level, ulong[] leafReserved, ulong[] nonLeafReserved)
    {
        if ((pte & (VtdFormat.SlRead | VtdFormat.SlWrite)) == 0)
        {
            return SecondLevelWalkStatus.NotPresent;
        }

        bool leaf = level == 1 || (level <= 3 && (pte & VtdFormat.SlPageSize) != 0);
        if ((pte & (leaf ? leafReserved[level] : nonLeafReserved[level])) != 0)
        {
            return SecondLevelWalkStatus.Reserved;
        }

        return leaf ? SecondLevelWalkStatus.Leaf : SecondLevelWalkStatus.Table;
    }
}

/// <summary>Told of each table <see cref="SecondLevelWalker.VisitTables"/> reaches.</summary>
internal interface ISecondLevelTableVisitor
{
    /// <summary>A table at <paramref name="level"/>; returns whether to walk its entries.</summary>
    bool Enter(ulong table, int level);
}

/// <summary>Where and why a second-level walk stopped.</summary>
internal enum SecondLevelWalkStatus : byte
{
    /// <summary>A leaf: <see cref="SecondLevelWalkTrace.Output"/> and the permissions are set.</summary>
    Leaf,

    /// <summary>An entry with R = W = 0.</summary>
    NotPresent,

    /// <summary>The entry could not be read (outside memory, or outside the image).</summary>
    ReadError,

    /// <summary>An entry with a reserved bit set.</summary>
    Reserved,

    /// <summary>(Per entry only) a pointer to the next table.</summary>
    Table,
}

/// <summary>One entry a walk read.</summary>
internal struct SecondLevelWalkEntry
{
    public int Level;
    public ulong Address;
    public ulong Value;
}

/// <summary>Up to five entries, one per level, inline: a trace lives on the stack.</summary>
[InlineArray(5)]
internal struct SecondLevelWalkEntries
{
    private SecondLevelWalkEntry _first;
}

/// <summary>What a second-level walk read and found: the entries in walk order and the outcome.</summary>
internal struct SecondLevelWalkTrace
{
    /// <summary>Why the walk stopped.</summary>
    public SecondLevelWalkStatus Status;

    /// <summary>The level of the entry the walk stopped at (for a read error: the level it could not read).</summary>
    public int Level;

    /// <summary>Entries read, top level first.</summary>
    public int Count;

    /// <summary>The entries (the first <see cref="Count"/>).</summary>
    public SecondLevelWalkEntries Entries;

    /// <summary>For a leaf: the page's base address.</summary>
    public ulong Output;

    /// <summary>For a leaf: R ANDed over the path.</summary>
    public bool Read;

    /// <summary>For a leaf: W ANDed over the path.</summary>
    public bool Write;

    /// <summary>Bytes an entry at <see cref="Level"/> covers.</summary>
    public readonly ulong PageSize => 1UL << SecondLevelWalker.Shift(Level);

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal void Add(int level, ulong address, ulong value)
    {
        ref SecondLevelWalkEntry e = ref Entries[Count++];
        e.Level = level;
        e.Address = address;
        e.Value = value;
    }
}
