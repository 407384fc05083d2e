using System.Globalization;
using System.Text;
using Iommu.VtD.Hardware;

namespace Iommu.VtD.Diagnostics;

/// <summary>
/// Draws the translation structures one device (or one of its PASIDs) reaches in a
/// <see cref="VtdImage"/> as a Graphviz DOT graph: root entry → context entry → PASID directory →
/// PASID table → second-level page-table levels, or the first-level tables from FLPTR (PGTT = 001;
/// nested: both, first-level tables titled with their guest-physical and host addresses) (legacy
/// mode: root → context → page tables). Each
/// table is a record node holding only the entries the walk can use; pointers are edges; runs of
/// leaves that are contiguous in IOVA and physical address with the same permissions are one line,
/// e.g. "0x1000_0000–0x101F_FFFF → 0x2_0000_0000 RW (512 × 4K)".
/// </summary>
/// <remarks>
/// The graph is built from the image's bytes with the same reading rules as <see cref="VtdImage.Path"/>
/// (present bits, PGTT, AW, PS); the driver is never consulted. A table is one node per level it is
/// reached at, whatever points to it: the IOVAs on its lines are those of its first reach, and tables a
/// guest aliases (several entries to one table, or a table to itself) give edges to that node, so the
/// graph grows with the image, never with the number of paths through it. Render it with
/// <c>dot -Tsvg file.dot -o file.svg</c>. Stateless and thread-safe.
/// </remarks>
public static class VtdImageDot
{
    /// <summary>
    /// The DOT text of the structures a request from <paramref name="requesterId"/> can reach:
    /// with <paramref name="pasid"/> only that PASID's directory entry, PASID entry and page tables;
    /// without, every present PASID entry of the device (scalable mode).
    /// </summary>
    /// <param name="image">The image (for example <c>driver.ExportImage()</c>).</param>
    /// <param name="requesterId">bus &lt;&lt; 8 | devfn of the device.</param>
    /// <param name="pasid">One PASID, or null for all of the device's PASIDs. Ignored in legacy mode, which has no PASID structures.</param>
    /// <returns>A complete <c>digraph</c>.</returns>
    /// <exception cref="ArgumentNullException"><paramref name="image"/> is null.</exception>
    public static string ToDot(this VtdImage image, ushort requesterId, uint? pasid = null)
    {
        ArgumentNullException.ThrowIfNull(image);
        var g = new Graph(image);
        bool scalable = image.Mode == VtdTranslationMode.Scalable;
        string who = Inv($"requester 0x{requesterId:x4} ({requesterId >> 8:x2}:{(requesterId >> 3) & 0x1F:x2}.{requesterId & 7:x})");
        string which = !scalable ? "legacy mode" : pasid is uint p ? Inv($"PASID {p}, scalable mode") : "every PASID, scalable mode";
        g.Line("digraph vtd {");
        g.Line($"  graph [rankdir=LR, labelloc=t, fontname=\"monospace\", label=\"VT-d translation structures of {who}, {which}\"];");
        g.Line("  node [shape=record, fontname=\"monospace\", fontsize=10];");
        g.Line("  edge [arrowsize=0.7];");

        // Root and context entries: the ones this requester's walk reads (any IOVA leads through them).
        IReadOnlyList<VtdImageEntry> path = image.Path(requesterId, scalable ? pasid : null, 0);
        if (path.Count == 0)
        {
            g.Node("root", Inv($"root table @0x{image.RootTable:x}"), [("", "not in the image")]);
        }
        else
        {
            VtdEntryDescription root = VtdDecoder.DescribeEntry(image, path[0], requesterId, pasid);
            g.Node("root", Inv($"root table @0x{image.RootTable:x}"), [("e", $"{root.Index}: {root.Meaning}")]);
            if (path.Count > 1)
            {
                g.Edge("root:e", "ctx");
                Context(g, path[1], requesterId, pasid);
            }
        }

        g.Line("}");
        return g.Text;
    }

    private static void Context(Graph g, VtdImageEntry ctx, ushort requesterId, uint? pasid)
    {
        VtdImage image = g.Image;
        VtdEntryDescription d = VtdDecoder.DescribeEntry(image, ctx, requesterId, pasid);
        string kind = ctx.Kind == VtdImageChunkKind.ScalableContextTable ? "scalable context table" : "context table";
        g.Node("ctx", Inv($"{kind} @0x{ctx.Address & ~0xFFFUL:x}"), [("e", $"{d.Index}: {d.Meaning}")]);
        ulong c0 = ctx.Value;
        if ((c0 & VtdFormat.Present) == 0)
        {
            return;
        }

        ulong q1 = image.ReadUInt64(ctx.Address + 8);
        if (ctx.Kind == VtdImageChunkKind.LegacyContextTable)
        {
            if (((c0 >> VtdFormat.ContextTtShift) & 3) != VtdFormat.TtPassThrough)
            {
                g.Edge("ctx:e", PageTable(g, c0 & VtdFormat.PointerMask, (int)(q1 & VtdFormat.ContextAwMask) + 2, 0));
            }

            return;
        }

        uint ridPasid = (uint)(q1 & VtdFormat.ScalableContextRidPasidMask);
        ulong dir = c0 & VtdFormat.PointerMask;
        int entries = 1 << ((int)((c0 >> VtdFormat.ScalableContextPdtsShift) & 7) + 7);
        var fields = new List<(string, string)>();
        var tables = new List<(string Port, ulong Table, uint First)>();
        for (int i = 0; i < entries; i++)
        {
            if ((pasid is uint p && p >> VtdFormat.PasidDirectoryShift != i) || !image.TryReadUInt64(dir + ((ulong)i * 8), out ulong de)
                || (de & VtdFormat.Present) == 0)
            {
                continue;
            }

            uint first = (uint)i << VtdFormat.PasidDirectoryShift;
            string port = Inv($"d{i}");
            fields.Add((port, Inv($"[{i}] PASIDs {first}–{first + 63}: PASID table @0x{de & VtdFormat.PointerMask:x}")));
            tables.Add((port, de & VtdFormat.PointerMask, first));
        }

        string dirId = Inv($"dir_{dir:x}");
        if (fields.Count == 0)
        {
            fields.Add(("", pasid is null ? "no present entry" : "the PASID's entry is not present"));
        }

        g.Node(dirId, Inv($"PASID directory @0x{dir:x} ({entries} entries)"), fields);
        g.Edge("ctx:e", dirId);
        foreach ((string port, ulong table, uint first) in tables)
        {
            g.Edge($"{dirId}:{port}", PasidTable(g, table, first, pasid, ridPasid));
        }
    }

    private static string PasidTable(Graph g, ulong table, uint first, uint? pasid, uint ridPasid)
    {
        string id = Inv($"pasid_{table:x}");
        var fields = new List<(string, string)>();
        var roots = new List<(string Port, ulong Root, int Levels)>();
        var flRoots = new List<(string Port, ulong Root, int Levels, ulong? SlRoot, int Aw)>();
        for (uint i = 0; i < 64; i++)
        {
            uint n = first + i;
            ulong pa = table + (i * VtdFormat.PasidEntrySize);
            // An entry the image holds only in part (a cut-short chunk) is skipped, as one not in the image.
            if ((pasid is uint p && p != n) || !g.Image.TryReadUInt64(pa, out ulong q0) || (q0 & VtdFormat.Present) == 0
                || !g.Image.TryReadUInt64(pa + 8, out ulong q1) || !g.Image.TryReadUInt64(pa + 16, out ulong q2))
            {
                continue;
            }

            string port = Inv($"p{i}");
            string rid = n == ridPasid ? " (RID_PASID)" : "";
            fields.Add((port, Inv($"PASID {n}{rid}: {VtdDecoder.DescribePasidEntry(q0, q1, q2)}")));
            int pgtt = (int)((q0 >> VtdFormat.PasidPgttShift) & 7);
            int aw = (int)((q0 >> VtdFormat.PasidAwShift) & 7);
            if (pgtt is VtdFormat.PgttSecondLevel or VtdFormat.PgttNested && aw is >= 1 and <= 3)
            {
                roots.Add((port, q0 & VtdFormat.PointerMask, aw + 2));
            }

            if (pgtt is VtdFormat.PgttFirstLevel or VtdFormat.PgttNested)
            {
                flRoots.Add((port, FirstLevelView.Flptr(q2), FirstLevelView.Levels(q2), pgtt == VtdFormat.PgttNested ? q0 & VtdFormat.PointerMask : null, aw));
            }
        }

        if (fields.Count == 0)
        {
            fields.Add(("", pasid is null ? "no present entry" : "the PASID's entry is not present"));
        }

        g.Node(id, Inv($"PASID table @0x{table:x}"), fields);
        foreach ((string port, ulong root, int levels) in roots)
        {
            g.Edge($"{id}:{port}", PageTable(g, root, levels, 0));
        }

        foreach ((string port, ulong root, int levels, ulong? slRoot, int aw) in flRoots)
        {
            g.Edge($"{id}:{port}", FirstLevelTable(g, root, levels, 0, slRoot, aw));
        }

        return id;
    }

    // A first-level table: entries by their P/RW/US/… bits; nested tables are titled with the
    // guest-physical address the walk uses and the host address the second level gives it.
    private static string FirstLevelTable(Graph g, ulong table, int level, ulong iovaBase, ulong? slRoot, int aw)
    {
        string id = slRoot is ulong s ? Inv($"fl{level}_{table:x}_{s:x}") : Inv($"fl{level}_{table:x}");
        if (!g.Seen.Add(id))
        {
            return id;
        }

        string name = "first-level " + TableName(level);
        ulong host = table;
        if (slRoot is ulong sl)
        {
            if (!FirstLevelView.TryTranslate(new VtdImage.EntrySource(g.Image), sl, aw, table, out host))
            {
                g.Node(id, Inv($"{name} @GPA 0x{table:x}"), [("", "not mapped readable by the second level")]);
                return id;
            }

            name = Inv($"{name} @GPA 0x{table:x} → host 0x{host:x}");
        }
        else
        {
            name = Inv($"{name} @0x{table:x}");
        }

        return Entries(g, id, name, host, level, iovaBase, slRoot is null ? "" : "GPA ",
            (child, childBase) => FirstLevelTable(g, child, level - 1, childBase, slRoot, aw));
    }

    // The node of one paging structure at host address `host`: its present entries, runs of leaves
    // as one line, a port and an edge per next table. `firstLevel` is null for second-level tables
    // (R/W), else the prefix of first-level pointers ("GPA " when nested), and IA-32e bits are named.
    private static string Entries(Graph g, string id, string title, ulong host, int level, ulong iovaBase, string? firstLevel, Func<ulong, ulong, string> child)
    {
        if (!g.Image.TryReadUInt64(host, out _))
        {
            g.Node(id, title, [("", "not in the image")]);
            return id;
        }

        bool fl = firstLevel is not null;
        ulong addressMask = fl ? VtdFormat.FlAddressMask : VtdFormat.SlAddressMask;
        int shift = 12 + (VtdFormat.LevelStride * (level - 1));
        ulong size = 1UL << shift;
        var fields = new List<(string, string)>();
        var children = new List<(string Port, ulong Table, ulong Base)>();
        LeafRun run = default;
        for (int i = 0; i < VtdFormat.EntriesPerTable; i++)
        {
            if (!g.Image.TryReadUInt64(host + ((ulong)i * 8), out ulong pte))
            {
                // A table the image holds only in part (a cut-short chunk).
                run.Flush(fields, size, level);
                fields.Add(("", Inv($"[{i}–{VtdFormat.EntriesPerTable - 1}] not in the image")));
                break;
            }

            ulong iova = iovaBase + ((ulong)i << shift);
            bool present = fl ? (pte & VtdFormat.FlPresent) != 0 : (pte & (VtdFormat.SlRead | VtdFormat.SlWrite)) != 0;
            if (!present)
            {
                run.Flush(fields, size, level);
                continue;
            }

            ulong addr = pte & addressMask;
            string bits = fl ? VtdDecoder.FirstLevelBits(pte, level) : VtdDecoder.Permissions(pte);
            if (fl ? FirstLevelView.IsLeaf(pte, level) : VtdDecoder.IsLeaf(pte, level))
            {
                addr = fl ? FirstLevelView.LeafAddress(pte, level) : addr;

                // Runs join leaves with equal bits (first level: A and D too, as they differ per page).
                ulong perm = fl ? pte & ~addressMask : pte & (VtdFormat.SlRead | VtdFormat.SlWrite);
                if (!run.Extends(i, addr, perm, size))
                {
                    run.Flush(fields, size, level);
                    run = new LeafRun(i, iova, addr, perm) { FirstLevel = fl };
                }

                run.Count++;
                continue;
            }

            run.Flush(fields, size, level);
            if ((pte & (fl ? VtdFormat.FlPageSize : VtdFormat.SlPageSize)) != 0)
            {
                // PS at levels 4 and 5 is a reserved bit: the unit faults instead of walking on.
                fields.Add(("", Inv($"[{i}] {bits} PS set: reserved at this level")));
                continue;
            }

            string port = Inv($"e{i}");
            fields.Add((port, Inv($"[{i}] {bits} IOVA {Hex(iova)}+: next table @{firstLevel}0x{addr:x}")));
            children.Add((port, addr, iova));
        }

        run.Flush(fields, size, level);
        if (fields.Count == 0)
        {
            fields.Add(("", "no present entry"));
        }

        g.Node(id, title, fields);
        foreach ((string port, ulong next, ulong childBase) in children)
        {
            g.Edge($"{id}:{port}", child(next, childBase));
        }

        return id;
    }

    // One node per table and level, labelled with the IOVAs of its first reach: a table that several
    // entries point to (guest tables may alias) is drawn once, so the graph stays as large as the image.
    private static string PageTable(Graph g, ulong table, int level, ulong iovaBase)
    {
        string id = Inv($"pt{level}_{table:x}");
        if (!g.Seen.Add(id))
        {
            return id;
        }

        string title = Inv($"{TableName(level)} @0x{table:x}");
        return Entries(g, id, title, table, level, iovaBase, null,
            (child, childBase) => PageTable(g, child, level - 1, childBase));
    }

    private static string TableName(int level) => level switch
    {
        5 => "PML5 table",
        4 => "PML4 table",
        3 => "PDP table",
        2 => "page directory",
        1 => "page table",
        _ => Inv($"level-{level} table"),
    };

    /// <summary>0x1_0000_1000: hex digits in groups of four, so that long addresses can be read at a glance.</summary>
    private static string Hex(ulong v)
    {
        string h = v.ToString("X", CultureInfo.InvariantCulture);
        var sb = new StringBuilder("0x", 2 + h.Length + (h.Length / 4));
        for (int i = 0; i < h.Length; i++)
        {
            if (i > 0 && (h.Length - i) % 4 == 0)
            {
                sb.Append('_');
            }

            sb.Append(h[i]);
        }

        return sb.ToString();
    }

    private static string Inv(FormattableString s) => s.ToString(CultureInfo.InvariantCulture);

    // Record labels treat { } | < > as structure and " \ as escapes.
    private static string Escape(string s)
    {
        var sb = new StringBuilder(s.Length + 8);
        foreach (char c in s)
        {
            if (c is '{' or '}' or '|' or '<' or '>' or '"' or '\\')
            {
                sb.Append('\\');
            }

            sb.Append(c);
        }

        return sb.ToString();
    }

    private struct LeafRun(int first, ulong iova, ulong pa, ulong perm)
    {
        public int First = first;
        public ulong Iova = iova;
        public ulong Pa = pa;
        public ulong Perm = perm;
        public int Count;
        public bool FirstLevel;

        public readonly bool Extends(int index, ulong pa, ulong perm, ulong size) =>
            Count > 0 && index == First + Count && perm == Perm && pa == Pa + ((ulong)Count * size);

        public void Flush(List<(string, string)> fields, ulong size, int level)
        {
            if (Count == 0)
            {
                return;
            }

            string idx = Count == 1 ? Inv($"[{First}]") : Inv($"[{First}–{First + Count - 1}]");
            ulong last = Iova + ((ulong)Count * size) - 1;
            string perm = FirstLevel ? VtdDecoder.FirstLevelBits(Perm, level)
                : ((Perm & VtdFormat.SlRead) != 0 ? "R" : "") + ((Perm & VtdFormat.SlWrite) != 0 ? "W" : "");
            fields.Add(("", Inv($"{idx} {Hex(Iova)}–{Hex(last)} → {Hex(Pa)} {perm} ({Count} × {VtdDecoder.PageSizeName(level)})")));
            Count = 0;
        }
    }

    private sealed class Graph(VtdImage image)
    {
        private readonly StringBuilder _sb = new();

        public VtdImage Image { get; } = image;

        public HashSet<string> Seen { get; } = new(StringComparer.Ordinal);

        public string Text => _sb.ToString();

        public void Line(string s) => _sb.Append(s).Append('\n');

        public void Node(string id, string title, IEnumerable<(string Port, string Text)> fields)
        {
            // rankdir=LR stacks a record's top-level fields vertically: title above its entries.
            _sb.Append("  ").Append(id).Append(" [label=\"").Append(Escape(title));
            foreach ((string port, string text) in fields)
            {
                _sb.Append('|');
                if (port.Length > 0)
                {
                    _sb.Append('<').Append(port).Append("> ");
                }

                _sb.Append(Escape(text));
            }

            _sb.Append("\"];\n");
        }

        public void Edge(string from, string to) => _sb.Append("  ").Append(from).Append(" -> ").Append(to).Append(";\n");
    }
}
