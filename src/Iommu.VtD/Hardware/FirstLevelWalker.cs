using System.Runtime.CompilerServices;
using Iommu.Memory;

namespace Iommu.VtD.Hardware;

/// <summary>
/// Where the first-level walker reads entries. For first-level-only translation an entry's address is
/// host-physical; for nested translation it is guest-physical and the source translates it through the
/// second level first, failing with that stage's fault reasons.
/// </summary>
internal interface IFirstLevelEntrySource
{
    /// <summary>
    /// Reads the 8-byte entry at <paramref name="address"/>; <paramref name="top"/> says it is in the
    /// table FLPTR names. Returns <see cref="VtdFaultReason.None"/> or the reason the read failed, the
    /// entry's host address and whether an accessed/dirty update may write it.
    /// </summary>
    VtdFaultReason Read(ulong address, bool top, out ulong hostAddress, out ulong entry, out bool writable);
}

/// <summary>First-level tables in host memory: a read outside memory is 0x73 at the top level, 0x70 below.</summary>
internal readonly struct FirstLevelMemorySource(PhysicalMemory memory) : IFirstLevelEntrySource
{
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public VtdFaultReason Read(ulong address, bool top, out ulong hostAddress, out ulong entry, out bool writable)
    {
        hostAddress = address;
        writable = true;
        if (!memory.Contains(address, 8))
        {
            entry = 0;
            return top ? VtdFaultReason.FirstLevelPointerInvalid : VtdFaultReason.FirstLevelReadError;
        }

        entry = memory.ReadUInt64(address);
        return VtdFaultReason.None;
    }
}

/// <summary>
/// The hardware's reading of first-level (IA-32e) paging structures: one walk from FLPTR to the leaf
/// for an input address, the checks per level in the specification's order (or later QEMU's), and a
/// trace of every entry read, with the permissions accumulated over the path.
/// </summary>
/// <remarks>
/// <para>The hardware model's own decoder, beside <see cref="SecondLevelWalker"/> and in its style: it
/// never calls the driver's page-table code. Reserved masks are the caller's (HAW, PS in PML4E/PML5E,
/// PS in a PDPE without CAP.FL1GP, the low address bits of large leaves). Bits 62:52 and 11:8 are
/// ignored; XD (63) is never reserved: whether hardware faulted XD with NXE = 0 is unverified
/// (Linux 5.15 writes XD with NXE = 0, and SVA shares CPU tables that set it), so the model ignores
/// XD unless the PASID entry's NXE is 1, as later QEMU does.</para>
/// <para>Permissions are evaluated by the caller over the trace (<see cref="FirstLevelWalkTrace.ReadWrite"/>,
/// <see cref="FirstLevelWalkTrace.User"/>, <see cref="FirstLevelWalkTrace.ExecuteDisable"/>) unless
/// the per-level argument asks for later QEMU's per-level checks of U/S and R/W before reserved bits.</para>
/// </remarks>
internal static class FirstLevelWalker
{
    /// <summary>Per-level permission checks of later QEMU's order: U/S for a user request.</summary>
    public const int CheckUser = 1;

    /// <summary>Per-level permission checks of later QEMU's order: R/W for a write that needs it.</summary>
    public const int CheckWrite = 2;

    /// <summary>Walks <paramref name="levels"/> (4 or 5) levels from <paramref name="root"/> for <paramref name="iova"/>.</summary>
    /// <param name="source">Where entries are read.</param>
    /// <param name="root">FLPTR.</param>
    /// <param name="levels">4 (FLPM = 00) or 5 (FLPM = 01).</param>
    /// <param name="iova">Input address (already checked canonical).</param>
    /// <param name="leafReserved">Reserved bits of a leaf, by level (1–5).</param>
    /// <param name="nonLeafReserved">Reserved bits of a table pointer, by level (1–5).</param>
    /// <param name="perLevel">0 (specification order), or <see cref="CheckUser"/> / <see cref="CheckWrite"/> for later QEMU's order.</param>
    /// <param name="trace">The entries read, where and why the walk stopped, and for a leaf its output and accumulated permissions.</param>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static void Walk<TSource>(in TSource source, ulong root, int levels, ulong iova, ulong[] leafReserved, ulong[] nonLeafReserved, int perLevel, out FirstLevelWalkTrace trace)
        where TSource : struct, IFirstLevelEntrySource
    {
        trace = default;
        trace.ReadWrite = true;
        trace.User = true;
        ulong table = root;
        for (int level = levels; ; level--)
        {
            int shift = SecondLevelWalker.Shift(level);
            trace.Level = level;
            VtdFaultReason r = source.Read(table + (((iova >> shift) & 0x1FF) * 8), level == levels, out ulong hpa, out ulong pte, out bool writable);
            if (r != VtdFaultReason.None)
            {
                trace.Status = FirstLevelWalkStatus.SourceFault;
                trace.Reason = r;
                return;
            }

            trace.Add(level, hpa, pte, writable);
            if ((pte & VtdFormat.FlPresent) == 0)
            {
                trace.Status = FirstLevelWalkStatus.NotPresent;
                return;
            }

            trace.ReadWrite &= (pte & VtdFormat.FlReadWrite) != 0;
            trace.User &= (pte & VtdFormat.FlUser) != 0;
            trace.ExecuteDisable |= (pte & VtdFormat.FlExecuteDisable) != 0;
            if ((perLevel & CheckUser) != 0 && (pte & VtdFormat.FlUser) == 0)
            {
                trace.Status = FirstLevelWalkStatus.UserDenied;
                return;
            }

            if ((perLevel & CheckWrite) != 0 && (pte & VtdFormat.FlReadWrite) == 0)
            {
                trace.Status = FirstLevelWalkStatus.WriteDenied;
                return;
            }

            bool leaf = level == 1 || (level <= 3 && (pte & VtdFormat.FlPageSize) != 0);
            if ((pte & (leaf ? leafReserved[level] : nonLeafReserved[level])) != 0)
            {
                trace.Status = FirstLevelWalkStatus.Reserved;
                return;
            }

            if (!leaf)
            {
                table = pte & VtdFormat.FlAddressMask;
                continue;
            }

            trace.Status = FirstLevelWalkStatus.Leaf;
            trace.Output = pte & VtdFormat.FlAddressMask & ~((1UL << shift) - 1);
            return;
        }
    }
}

/// <summary>Where and why a first-level walk stopped.</summary>
internal enum FirstLevelWalkStatus : byte
{
    /// <summary>A leaf: <see cref="FirstLevelWalkTrace.Output"/> and the permissions are set.</summary>
    Leaf,

    /// <summary>An entry with P = 0.</summary>
    NotPresent,

    /// <summary>The source could not read an entry: <see cref="FirstLevelWalkTrace.Reason"/> says why.</summary>
    SourceFault,

    /// <summary>An entry with a reserved bit set.</summary>
    Reserved,

    /// <summary>(Later QEMU's order only) U/S = 0 met by a user request.</summary>
    UserDenied,

    /// <summary>(Later QEMU's order only) R/W = 0 met by a write that needs it.</summary>
    WriteDenied,
}

/// <summary>One first-level entry a walk read.</summary>
internal struct FirstLevelWalkEntry
{
    public int Level;
    public ulong HostAddress;
    public ulong Value;
    public bool Writable;   // whether an A/D update may write it (nested: second-level W)
}

/// <summary>Up to five entries, one per level, inline.</summary>
[InlineArray(5)]
internal struct FirstLevelWalkEntries
{
    private FirstLevelWalkEntry _first;
}

/// <summary>What a first-level walk read and found.</summary>
internal struct FirstLevelWalkTrace
{
    /// <summary>Why the walk stopped.</summary>
    public FirstLevelWalkStatus Status;

    /// <summary>For <see cref="FirstLevelWalkStatus.SourceFault"/>: the reason.</summary>
    public VtdFaultReason Reason;

    /// <summary>The level the walk stopped at.</summary>
    public int Level;

    /// <summary>Entries read, top level first.</summary>
    public int Count;

    /// <summary>The entries (the first <see cref="Count"/>).</summary>
    public FirstLevelWalkEntries Entries;

    /// <summary>For a leaf: the page's base address (guest-physical when nested).</summary>
    public ulong Output;

    /// <summary>R/W ANDed over the entries read.</summary>
    public bool ReadWrite;

    /// <summary>U/S ANDed over the entries read.</summary>
    public bool User;

    /// <summary>XD ORed over the entries read.</summary>
    public bool ExecuteDisable;

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal void Add(int level, ulong hostAddress, ulong value, bool writable)
    {
        ref FirstLevelWalkEntry e = ref Entries[Count++];
        e.Level = level;
        e.HostAddress = hostAddress;
        e.Value = value;
        e.Writable = writable;
    }
}
