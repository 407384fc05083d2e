using Iommu.Memory;

namespace Iommu.Mm;

/// <summary>
/// A process's IA-32e 4-level page table (PML4 → PDPT → PD → PT, 512 eight-byte entries per 4 KiB
/// table) in <see cref="PhysicalMemory"/>, with table pages from the process's
/// <see cref="HostPageAllocator"/>: the one place the mm side writes the CPU's page-table format.
/// </summary>
/// <remarks>
/// Non-leaf entries are Linux's <c>_PAGE_TABLE</c> (P, R/W, U/S, A, D = 0x67), so a user leaf's
/// permissions are decided by the leaf alone, as on x86-64 Linux. Only 4 KiB leaves are written.
/// XD is set on leaves of non-executable areas, as the x86 MM does with NX enabled; whether a VT-d
/// unit whose PASID entry has NXE = 0 treats bit 63 as reserved is left open by the spec (UNVERIFIED),
/// and the tables stay as the CPU needs them: the IOMMU side decides what it does with XD. G is
/// never set (Linux sets it only on kernel mappings). Callers hold the owning process's lock.
/// </remarks>
internal sealed class X86PageTable
{
    /// <summary>P.</summary>
    public const ulong Present = 1UL << 0;

    /// <summary>R/W.</summary>
    public const ulong Writable = 1UL << 1;

    /// <summary>U/S.</summary>
    public const ulong User = 1UL << 2;

    /// <summary>A.</summary>
    public const ulong Accessed = 1UL << 5;

    /// <summary>D.</summary>
    public const ulong Dirty = 1UL << 6;

    /// <summary>Linux <c>_PAGE_PROTNONE</c> (bit 8, G's position, meaningful only with P = 0).</summary>
    public const ulong ProtNone = 1UL << 8;

    /// <summary>Linux <c>_PAGE_SPECIAL</c> (software bit 9): no <c>struct page</c> refcount (zero page, PFNMAP).</summary>
    public const ulong Special = 1UL << 9;

    /// <summary>XD (<c>_PAGE_NX</c>).</summary>
    public const ulong ExecuteDisable = 1UL << 63;

    /// <summary>Address bits 51:12.</summary>
    public const ulong AddressMask = 0x000F_FFFF_FFFF_F000UL;

    // _PAGE_TABLE: what pgd/p4d/pud/pmd_populate write for user tables.
    private const ulong TableEntry = Present | Writable | User | Accessed | Dirty;

    private const int Levels = 4;

    // 2^47: the end of the canonical lower half.
    private const ulong UserHalfEnd = 1UL << 47;

    private readonly HostPageAllocator _pages;
    private readonly PhysicalMemory _memory;

    private X86PageTable(HostPageAllocator pages, ulong root)
    {
        _pages = pages;
        _memory = pages.Memory;
        Root = root;
    }

    /// <summary>Physical address of the PML4 (<c>mm-&gt;pgd</c>); 0 after <see cref="FreeAll"/>.</summary>
    public ulong Root { get; private set; }

    /// <summary>Visits one present-or-protnone leaf; may rewrite it (0 clears it).</summary>
    public delegate void LeafVisitor(ulong va, ref ulong pte);

    /// <summary><c>pgd_alloc</c>: an empty PML4.</summary>
    public static Errno Create(HostPageAllocator pages, out X86PageTable? table)
    {
        table = null;
        Errno e = pages.AllocateTable(out ulong root);
        if (e != Errno.None)
        {
            return e;
        }

        table = new X86PageTable(pages, root);
        return Errno.None;
    }

    /// <summary>The leaf for <paramref name="va"/> (below 2^47), or 0 when a table on the way is missing.</summary>
    public ulong GetLeaf(ulong va)
    {
        ulong table = va < UserHalfEnd ? Root : 0;
        for (int level = Levels; level > 1 && table != 0; level--)
        {
            ulong e = _memory.Table(table)[Index(va, level)];
            if ((e & Present) == 0)
            {
                return 0;
            }

            table = e & AddressMask;
        }

        return table == 0 ? 0 : _memory.Table(table)[Index(va, 1)];
    }

    /// <summary>The four entries a CPU walk of <paramref name="va"/> reads (0 from the first missing level on).</summary>
    public X86PageWalk Walk(ulong va)
    {
        Span<ulong> e = stackalloc ulong[Levels];

        // Only the lower (user) half is this table's to answer; above it nothing is user-mapped.
        ulong table = va < UserHalfEnd ? Root : 0;
        for (int level = Levels; level >= 1 && table != 0; level--)
        {
            ulong entry = _memory.Table(table)[Index(va, level)];
            e[Levels - level] = entry;
            table = level > 1 && (entry & Present) != 0 ? entry & AddressMask : 0;
        }

        return new X86PageWalk(va, e[0], e[1], e[2], e[3]);
    }

    /// <summary>Writes the leaf for <paramref name="va"/>, allocating missing tables (<c>__pte_alloc</c>); -ENOMEM leaves the tables as they were, less nothing already there.</summary>
    public Errno SetLeaf(ulong va, ulong pte)
    {
        ulong table = Root;
        for (int level = Levels; level > 1; level--)
        {
            Span<ulong> t = _memory.Table(table);
            int i = Index(va, level);
            if ((t[i] & Present) == 0)
            {
                Errno e = _pages.AllocateTable(out ulong next);
                if (e != Errno.None)
                {
                    return e;
                }

                t[i] = next | TableEntry;
            }

            table = t[i] & AddressMask;
        }

        _memory.Table(table)[Index(va, 1)] = pte;
        return Errno.None;
    }

    /// <summary>
    /// Visits every non-zero leaf in <c>[start, end)</c> in address order; with
    /// <paramref name="freeEmpty"/>, tables left empty afterwards are freed (<c>free_pgtables</c>).
    /// </summary>
    public void ForEachLeaf(ulong start, ulong end, LeafVisitor? visit, bool freeEmpty)
    {
        if (start < end && Root != 0)
        {
            _ = Visit(Root, Levels, 0, start, end - 1, visit, freeEmpty);
        }
    }

    /// <summary>Frees every table, the PML4 last (<c>free_pgtables</c> + <c>pgd_free</c>); leaves must have been cleared.</summary>
    public void FreeAll()
    {
        if (Root == 0)
        {
            return;
        }

        FreeTables(Root, Levels);
        Root = 0;
    }

    // Returns true when the table at pa is empty after the visit.
    private bool Visit(ulong pa, int level, ulong baseVa, ulong first, ulong last, LeafVisitor? visit, bool freeEmpty)
    {
        int shift = 12 + (9 * (level - 1));
        int lo = baseVa >= first ? 0 : (int)((first - baseVa) >> shift);
        ulong span = 1UL << shift;
        int hi = (int)Math.Min(511UL, (last - baseVa) >> shift);
        Span<ulong> t = _memory.Table(pa);
        for (int i = lo; i <= hi; i++)
        {
            ulong entry = t[i];
            if (entry == 0)
            {
                continue;
            }

            ulong va = baseVa + ((ulong)i * span);
            if (level == 1)
            {
                visit?.Invoke(va, ref t[i]);
                continue;
            }

            if ((entry & Present) != 0 && Visit(entry & AddressMask, level - 1, va, first, last, visit, freeEmpty) && freeEmpty)
            {
                t[i] = 0;
                _pages.FreeTable(entry & AddressMask);
            }
        }

        return t.IndexOfAnyExcept(0UL) < 0;
    }

    private void FreeTables(ulong pa, int level)
    {
        if (level > 1)
        {
            Span<ulong> t = _memory.Table(pa);
            for (int i = 0; i < t.Length; i++)
            {
                if ((t[i] & Present) != 0)
                {
                    FreeTables(t[i] & AddressMask, level - 1);
                }
            }
        }

        _pages.FreeTable(pa);
    }

    private static int Index(ulong va, int level) => (int)((va >> (12 + (9 * (level - 1)))) & 511);
}
