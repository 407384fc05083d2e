using System.Diagnostics;
using System.Runtime.CompilerServices;

namespace Iommu.VtD.Driver;

/// <summary>
/// A page-table level as a type (<c>generic_pt</c>'s <c>PT_MAKE_LEVELS</c>): the walker is compiled
/// once per level with the level a constant, each level's copy inlining the one below, so a walk of a
/// known depth is straight-line code — the unrolled walk, produced by the JIT.
/// </summary>
internal interface IPtLevel
{
    /// <summary>The level: 1 holds 4 KiB entries.</summary>
    static abstract int Level { get; }

    /// <summary>Goes on with the walk in <paramref name="table"/>, one level below this one.</summary>
    static abstract PageTable<TFormat>.PtWalk Below<TFormat>(ref PageTable<TFormat> pt, PageTable<TFormat>.Tables tables, ulong table, ulong iova, int targetLevel, PageTable<TFormat>.PtWalkMode mode)
        where TFormat : struct, IPtFormat;
}

/// <summary>Level 1: the walk always ends here.</summary>
internal readonly struct PtLevel1 : IPtLevel
{
    public static int Level => 1;

    public static PageTable<TFormat>.PtWalk Below<TFormat>(ref PageTable<TFormat> pt, PageTable<TFormat>.Tables tables, ulong table, ulong iova, int targetLevel, PageTable<TFormat>.PtWalkMode mode)
        where TFormat : struct, IPtFormat =>
        throw new UnreachableException();
}

/// <summary>The level above <typeparamref name="TBelow"/>.</summary>
/// <typeparam name="TBelow">The next level down.</typeparam>
internal readonly struct PtLevelAbove<TBelow> : IPtLevel
    where TBelow : struct, IPtLevel
{
    public static int Level => TBelow.Level + 1;

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static PageTable<TFormat>.PtWalk Below<TFormat>(ref PageTable<TFormat> pt, PageTable<TFormat>.Tables tables, ulong table, ulong iova, int targetLevel, PageTable<TFormat>.PtWalkMode mode)
        where TFormat : struct, IPtFormat =>
        pt.Walk<TBelow>(tables, table, iova, targetLevel, mode);
}
