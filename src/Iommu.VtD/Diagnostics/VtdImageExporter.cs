using Iommu.Memory;
using Iommu.VtD.Driver;
using Iommu.VtD.Hardware;

namespace Iommu.VtD.Diagnostics;

/// <summary>
/// Exports everything a remapping unit can reach as a <see cref="VtdImage"/>, by walking physical
/// memory from the root-table pointer the way the hardware does: root entries → context tables →
/// (legacy) second-level tables, or (scalable) PASID directories → PASID tables → the tables
/// each PASID entry's translation type names: second-level tables from SLPTPTR (PGTT = 010),
/// first-level tables from FLPTR (001), both for nested (011, whose first-level tables sit at
/// guest-physical addresses and are exported where the second level maps them), none for
/// pass-through (100). Only present entries are followed, and only pointers the unit would accept (no address
/// bits at or above the host address width). The driver's own bookkeeping is never consulted.
/// </summary>
/// <remarks>
/// Tables a guest wrote may overlap (a PASID table inside a large PASID directory): the image holds each byte
/// once, in the structure that starts first, whose kind it keeps.
/// </remarks>
public static class VtdImageExporter
{
    /// <summary>Exports the structures <paramref name="unit"/> reaches: the root table latched by its last SRTP (RTADDR before any SRTP) and GSTS.TES, the tables from its memory.</summary>
    /// <param name="unit">The unit.</param>
    /// <returns>The image (no probes; see <see cref="VtdImage.Probe"/> or <see cref="ExportImage(VtdUnit, IEnumerable{VtdProbe})"/>).</returns>
    public static VtdImage ExportImage(this VtdUnit unit)
    {
        ArgumentNullException.ThrowIfNull(unit);
        return ExportFrom(unit);
    }

    /// <summary>Exports the structures <paramref name="unit"/> reaches and evaluates <paramref name="probes"/> on them with the unit's capabilities.</summary>
    /// <param name="unit">The unit.</param>
    /// <param name="probes">Requests to evaluate.</param>
    /// <returns>The image with its probes.</returns>
    /// <exception cref="ArgumentNullException"><paramref name="unit"/> or <paramref name="probes"/> is null.</exception>
    /// <exception cref="ArgumentOutOfRangeException">A probe is not one request (see <see cref="VtdImage.Probe"/>).</exception>
    public static VtdImage ExportImage(this VtdUnit unit, IEnumerable<VtdProbe> probes)
    {
        ArgumentNullException.ThrowIfNull(unit);
        using PhysicalMemory.AccessScope guard = unit.Memory.EnterAccess();
        return unit.ExportImage().Probe(unit.Config, probes, unit.Memory.Size);
    }

    /// <summary>Exports the structures the hardware of the driver's unit <paramref name="unitIndex"/> reaches.</summary>
    /// <param name="driver">The driver.</param>
    /// <param name="unitIndex">Index in <see cref="IntelIommu.Units"/>.</param>
    /// <returns>The image.</returns>
    /// <remarks>The driver hands over the diagnostics of the unit it was given at construction; the export reads the hardware, not the driver's bookkeeping.</remarks>
    public static VtdImage ExportImage(this IntelIommu driver, int unitIndex = 0)
    {
        ArgumentNullException.ThrowIfNull(driver);
        return ExportFrom(driver.HardwareDiagnostics(unitIndex));
    }

    // The root table the unit walks (latched by the last SRTP; the RTADDR register when SRTP was
    // never issued) and GSTS.TES from the unit, the tables from its memory. A RTADDR written
    // since the last SRTP is not yet in use and is not what the unit translates through.
    private static VtdImage ExportFrom(IVtdDiagnostics unit)
    {
        using PhysicalMemory.AccessScope guard = unit.Memory.EnterAccess();
        ulong rtaddr = unit is VtdUnit hw && (unit.Read32(VtdRegister.Gsts) & VtdRegister.GcmdSrtp) != 0
            ? hw.LatchedRootTable
            : unit.Read64(VtdRegister.Rtaddr);
        bool te = (unit.Read32(VtdRegister.Gsts) & VtdRegister.GcmdTe) != 0;
        return Export(unit.Memory, rtaddr, unit.Config.HostAddressWidth, te);
    }

    /// <summary>Walks <paramref name="memory"/> from <paramref name="rtaddr"/> and returns every structure reached.</summary>
    /// <param name="memory">Physical memory holding the structures.</param>
    /// <param name="rtaddr">RTADDR value (root table in 63:12, TTM in 11:10). TTM 10/11: only the root table is exported.</param>
    /// <param name="hostAddressWidth">Host address width: pointers with bits at or above it are not followed (the unit would fault).</param>
    /// <param name="translationEnabled">Recorded in the image.</param>
    /// <returns>The image.</returns>
    /// <exception cref="ArgumentNullException"><paramref name="memory"/> is null.</exception>
    /// <exception cref="ArgumentOutOfRangeException"><paramref name="hostAddressWidth"/> is outside 32–52.</exception>
    public static VtdImage Export(PhysicalMemory memory, ulong rtaddr, int hostAddressWidth, bool translationEnabled)
    {
        ArgumentNullException.ThrowIfNull(memory);
        using PhysicalMemory.AccessScope guard = memory.EnterAccess(); // first: after Dispose, ObjectDisposedException whatever the arguments
        VtdImage.CheckHostAddressWidth(hostAddressWidth);
        var walk = new Walk(memory, (1UL << hostAddressWidth) - 1);
        ulong root = rtaddr & VtdFormat.PointerMask;
        int ttm = (int)((rtaddr >> 10) & 3);
        if (walk.Add(root, VtdImageChunkKind.RootTable, 0, 4096, out byte[]? rt) && ttm is 0 or 1)
        {
            for (int bus = 0; bus < 256; bus++)
            {
                ulong q0 = Word(rt, bus * 16), q1 = Word(rt, (bus * 16) + 8);
                if (ttm == 0)
                {
                    if ((q0 & VtdFormat.Present) != 0 && walk.Pointer(q0, out ulong ctp))
                    {
                        walk.LegacyContext(ctp);
                    }
                }
                else
                {
                    if ((q0 & VtdFormat.Present) != 0 && walk.Pointer(q0, out ulong lctp))
                    {
                        walk.ScalableContext(lctp);
                    }

                    if ((q1 & VtdFormat.RootUpperPresent) != 0 && walk.Pointer(q1, out ulong uctp))
                    {
                        walk.ScalableContext(uctp);
                    }
                }
            }
        }

        return new VtdImage(rtaddr, hostAddressWidth, translationEnabled, WithoutOverlaps(walk.Chunks));
    }

    // Guest-written tables may place one structure inside another (a PASID table inside a large PASID
    // directory, one directory over the next): the unit reads those bytes both ways, and the image holds them
    // once, in the chunk that starts first. Every structure starts 4 KiB aligned and only a directory is
    // larger than 4 KiB, so a later chunk can only be covered from its start: it keeps the rest, or goes.
    private static List<VtdImageChunk> WithoutOverlaps(IEnumerable<VtdImageChunk> chunks)
    {
        var kept = new List<VtdImageChunk>();
        ulong end = 0;
        foreach (VtdImageChunk c in chunks.OrderBy(c => c.Address))
        {
            ulong cEnd = c.Address + (ulong)c.Size;
            if (cEnd <= end)
            {
                continue;
            }

            kept.Add(c.Address >= end ? c : c with { Address = end, Data = c.Data[(int)(end - c.Address)..] });
            end = cEnd;
        }

        return kept;
    }

    private static ulong Word(byte[] data, int offset) => System.Buffers.Binary.BinaryPrimitives.ReadUInt64LittleEndian(data.AsSpan(offset));

    private sealed class Walk(PhysicalMemory memory, ulong hawMask)
    {
        private readonly Dictionary<ulong, VtdImageChunk> _chunks = [];

        public IEnumerable<VtdImageChunk> Chunks => _chunks.Values;

        // A structure the unit reads: added once (the first walk that reaches an address decides its kind).
        public bool Add(ulong pa, VtdImageChunkKind kind, int level, int size, out byte[] data)
        {
            data = [];
            if (_chunks.ContainsKey(pa) || !memory.Contains(pa, (ulong)size))
            {
                return false;
            }

            data = new byte[size];
            memory.Read(pa, data);
            _chunks[pa] = new VtdImageChunk(pa, kind, level, data);
            return true;
        }

        // A paging table: added once, but walked again when a later walk reaches it at a higher level
        // (e.g. one root under a 3-level and a 4-level context entry): the tables below it that only
        // the higher-level reading reaches must be exported too. The chunk keeps the highest level.
        public bool AddTable(ulong pa, VtdImageChunkKind kind, int level, out byte[] data)
        {
            if (_chunks.TryGetValue(pa, out VtdImageChunk? c))
            {
                data = c.Data.ToArray();
                if (c.Kind != kind || level <= c.Level)
                {
                    return false;
                }

                _chunks[pa] = c with { Level = level };
                return true;
            }

            return Add(pa, kind, level, 4096, out data);
        }

        // A PASID directory: added once, but read again at a larger size when a later context entry
        // names it with a larger PDTS (the entries beyond the smaller size are reached through that one
        // only). The chunk keeps the largest size.
        public bool AddDirectory(ulong pa, int size, out byte[] data)
        {
            if (_chunks.TryGetValue(pa, out VtdImageChunk? c))
            {
                data = [];
                if (c.Kind != VtdImageChunkKind.PasidDirectory || size <= c.Size || !memory.Contains(pa, (ulong)size))
                {
                    return false;
                }

                data = new byte[size];
                memory.Read(pa, data);
                _chunks[pa] = c with { Data = data };
                return true;
            }

            return Add(pa, VtdImageChunkKind.PasidDirectory, 0, size, out data);
        }

        public bool Pointer(ulong entry, out ulong pa)
        {
            pa = entry & VtdFormat.PointerMask;
            return (pa & ~hawMask) == 0;
        }

        public void LegacyContext(ulong table)
        {
            if (!Add(table, VtdImageChunkKind.LegacyContextTable, 0, 4096, out byte[] ct))
            {
                return;
            }

            for (int devfn = 0; devfn < 256; devfn++)
            {
                ulong c0 = Word(ct, devfn * 16), c1 = Word(ct, (devfn * 16) + 8);
                int tt = (int)((c0 >> VtdFormat.ContextTtShift) & 3);
                if ((c0 & VtdFormat.Present) != 0 && tt is VtdFormat.TtTranslated or VtdFormat.TtTranslatedWithDeviceTlb
                    && Pointer(c0, out ulong slpt))
                {
                    Root(slpt, (int)(c1 & VtdFormat.ContextAwMask));
                }
            }
        }

        public void ScalableContext(ulong table)
        {
            if (!Add(table, VtdImageChunkKind.ScalableContextTable, 0, 4096, out byte[] ct))
            {
                return;
            }

            for (int i = 0; i < 128; i++)
            {
                ulong c0 = Word(ct, i * 32);
                if ((c0 & VtdFormat.Present) == 0 || !Pointer(c0, out ulong dir))
                {
                    continue;
                }

                int pdts = (int)((c0 >> VtdFormat.ScalableContextPdtsShift) & 7);
                int entries = 1 << (pdts + 7);
                if (!AddDirectory(dir, entries * VtdFormat.PasidDirectoryEntrySize, out byte[] d))
                {
                    continue;
                }

                for (int e = 0; e < entries; e++)
                {
                    ulong de = Word(d, e * 8);
                    if ((de & VtdFormat.Present) != 0 && Pointer(de, out ulong pt))
                    {
                        PasidTable(pt);
                    }
                }
            }
        }

        private void PasidTable(ulong table)
        {
            if (!Add(table, VtdImageChunkKind.PasidTable, 0, 4096, out byte[] t))
            {
                return;
            }

            for (int i = 0; i < 64; i++)
            {
                ulong q0 = Word(t, i * VtdFormat.PasidEntrySize), q2 = Word(t, (i * VtdFormat.PasidEntrySize) + 16);
                int pgtt = (int)((q0 >> VtdFormat.PasidPgttShift) & 7);
                int aw = (int)((q0 >> VtdFormat.PasidAwShift) & 7);
                if ((q0 & VtdFormat.Present) == 0)
                {
                    continue;
                }

                // The walk the translation type names: second level from SLPTPTR (010), first level from
                // FLPTR (001), both for nested (011; first-level tables at guest-physical addresses).
                if (pgtt is VtdFormat.PgttSecondLevel or VtdFormat.PgttNested && Pointer(q0, out ulong slpt))
                {
                    Root(slpt, aw);
                }

                if (pgtt == VtdFormat.PgttFirstLevel && Pointer(q2, out ulong flptr))
                {
                    FirstLevelTables(flptr, FirstLevelView.Levels(q2), null, 0);
                }
                else if (pgtt == VtdFormat.PgttNested && Pointer(q0, out ulong nestRoot))
                {
                    FirstLevelTables(FirstLevelView.Flptr(q2), FirstLevelView.Levels(q2), nestRoot, aw);
                }
            }
        }

        // First-level tables from FLPTR down, every present table pointer followed. Nested
        // (slRoot set): each table address is guest-physical and the chunk is stored where the second
        // level puts it; a table the second level does not map readably is not exported (the unit
        // faults there, 0x75/0x76, as the nested fault assignments, UNVERIFIED, have it). The
        // second level's input width (MGAW) is not checked here: the image does not carry it.
        private void FirstLevelTables(ulong table, int level, ulong? slRoot, int aw)
        {
            ulong host = table;
            if (slRoot is ulong sl)
            {
                if (!FirstLevelView.TryTranslate(new MemoryEntrySource(memory), sl, aw, table, out host))
                {
                    return;
                }
            }
            else if ((table & ~hawMask) != 0)
            {
                return;
            }

            if (!AddTable(host, slRoot is null ? VtdImageChunkKind.FirstLevelTable : VtdImageChunkKind.NestedFirstLevelTable, level, out byte[] data))
            {
                return;
            }

            for (int i = 0; i < VtdFormat.EntriesPerTable; i++)
            {
                ulong pte = Word(data, i * 8);
                if (FirstLevelView.IsTablePointer(pte, level))
                {
                    FirstLevelTables(pte & VtdFormat.FlAddressMask, level - 1, slRoot, aw);
                }
            }
        }

        // AW 1–3: 3-, 4- or 5-level tables; other AW values are invalid programming (nothing walked).
        private void Root(ulong table, int aw)
        {
            if (aw is >= 1 and <= 3)
            {
                PageTables(table, aw + 2);
            }
        }

        // The tables the unit would walk into, by the hardware's own walker: present, not a leaf, no
        // address bit at or above HAW, no PS at levels 4 and 5.
        private void PageTables(ulong table, int levels)
        {
            var nonLeafReserved = new ulong[6];
            for (int level = 1; level <= 5; level++)
            {
                nonLeafReserved[level] = (VtdFormat.SlAddressMask & ~hawMask) | (level >= 4 ? VtdFormat.SlPageSize : 0);
            }

            var visitor = new TableAdder(this);
            SecondLevelWalker.VisitTables(new MemoryEntrySource(memory), table, levels, new ulong[6], nonLeafReserved, ref visitor);
        }

        private readonly struct TableAdder(Walk walk) : ISecondLevelTableVisitor
        {
            public bool Enter(ulong table, int level) => level <= 5 && walk.AddTable(table, VtdImageChunkKind.PageTable, level, out _);
        }
    }
}
