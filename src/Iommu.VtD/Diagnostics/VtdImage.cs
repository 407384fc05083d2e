using System.Buffers.Binary;
using System.Globalization;
using Iommu.Memory;
using Iommu.VtD.Hardware;

namespace Iommu.VtD.Diagnostics;

/// <summary>
/// Everything a VT-d remapping unit can reach from its root-table pointer — root table, context
/// tables, PASID directories and tables, second-level and first-level page tables — as a list of (physical address,
/// bytes) chunks, plus RTADDR and the translation mode, and optionally the outcome of chosen
/// requests (<see cref="Probes"/>). Made by <see cref="VtdImageExporter"/>; written and read as JSON
/// by <see cref="VtdImageJson"/> (format: <c>docs/vtd-image-format.md</c>).
/// </summary>
/// <remarks>An image is immutable: <see cref="Relocate"/>, <see cref="WithUInt64"/> and
/// <see cref="Probe"/> return new images.</remarks>
public sealed class VtdImage
{
    private const ulong TtmMask = 0xC00;

    /// <summary>Creates an image from its parts (chunks are sorted by address).</summary>
    /// <param name="rtaddr">The RTADDR register value: root-table address in 63:12, TTM in 11:10.</param>
    /// <param name="hostAddressWidth">Host address width of the unit that reads the image (pointer bits at or above it are reserved).</param>
    /// <param name="translationEnabled">GSTS.TES of the unit when exported.</param>
    /// <param name="chunks">The structures.</param>
    /// <param name="probes">Evaluated probes, or null for none.</param>
    /// <exception cref="ArgumentNullException"><paramref name="chunks"/> is null.</exception>
    /// <exception cref="ArgumentOutOfRangeException"><paramref name="hostAddressWidth"/> is outside 32–52.</exception>
    /// <exception cref="ArgumentException">Two chunks overlap (the message names both).</exception>
    public VtdImage(ulong rtaddr, int hostAddressWidth, bool translationEnabled, IEnumerable<VtdImageChunk> chunks, IEnumerable<VtdProbeResult>? probes = null)
    {
        ArgumentNullException.ThrowIfNull(chunks);
        CheckHostAddressWidth(hostAddressWidth);

        RtAddr = rtaddr;
        HostAddressWidth = hostAddressWidth;
        TranslationEnabled = translationEnabled;
        Chunks = [.. chunks.OrderBy(c => c.Address)];
        Probes = probes is null ? [] : [.. probes];
        for (int i = 1; i < Chunks.Count; i++)
        {
            if (Chunks[i - 1].Address + (ulong)Chunks[i - 1].Size > Chunks[i].Address)
            {
                throw new ArgumentException(string.Create(CultureInfo.InvariantCulture, $"Chunks at 0x{Chunks[i - 1].Address:x} and 0x{Chunks[i].Address:x} overlap."), nameof(chunks));
            }
        }
    }

    /// <summary>The RTADDR register value: root-table address (63:12) and TTM (11:10).</summary>
    public ulong RtAddr { get; }

    /// <summary>Physical address of the root table.</summary>
    public ulong RootTable => RtAddr & VtdFormat.PointerMask;

    /// <summary>Legacy or scalable mode, from RTADDR.TTM (TTM values 10 and 11 read as legacy here; the exporter exports only the root table for them).</summary>
    public VtdTranslationMode Mode => ((RtAddr & TtmMask) >> 10) == 1 ? VtdTranslationMode.Scalable : VtdTranslationMode.Legacy;

    /// <summary>Host address width of the unit the image was taken from.</summary>
    public int HostAddressWidth { get; }

    /// <summary>Whether translation was enabled (GSTS.TES) when exported.</summary>
    public bool TranslationEnabled { get; }

    /// <summary>The structures, sorted by address, not overlapping.</summary>
    public IReadOnlyList<VtdImageChunk> Chunks { get; }

    /// <summary>Evaluated probes (empty unless <see cref="Probe"/> was called).</summary>
    public IReadOnlyList<VtdProbeResult> Probes { get; }

    /// <summary>Total bytes in the chunks.</summary>
    public long TotalBytes => Chunks.Sum(c => (long)c.Size);

    /// <summary>One past the highest byte any chunk covers (0 for an empty image).</summary>
    public ulong End => Chunks.Count == 0 ? 0 : Chunks.Max(c => c.Address + (ulong)c.Size);

    /// <summary>Reads the 64-bit word at <paramref name="pa"/> from the chunk that holds it.</summary>
    /// <param name="pa">8-byte aligned physical address inside a chunk.</param>
    /// <returns>The word.</returns>
    /// <exception cref="ArgumentOutOfRangeException">No chunk holds the address.</exception>
    public ulong ReadUInt64(ulong pa)
    {
        (VtdImageChunk c, int off) = Locate(pa);
        return c.Word(off);
    }

    /// <summary>Reads the 64-bit word at <paramref name="pa"/> when a chunk holds it (no exception on a miss).</summary>
    internal bool TryReadUInt64(ulong pa, out ulong value)
    {
        value = 0;
        if ((pa & 7) != 0 || !TryLocate(pa, out VtdImageChunk? c, out int off))
        {
            return false;
        }

        value = c!.Word(off);
        return true;
    }

    /// <summary>Returns a copy of the image with the 64-bit word at <paramref name="pa"/> replaced (probes are dropped: evaluate again).</summary>
    /// <param name="pa">8-byte aligned physical address inside a chunk.</param>
    /// <param name="value">The new word.</param>
    /// <returns>The new image.</returns>
    /// <exception cref="ArgumentOutOfRangeException">No chunk holds the address, or it is not 8-byte aligned.</exception>
    public VtdImage WithUInt64(ulong pa, ulong value)
    {
        (VtdImageChunk c, int off) = Locate(pa);
        byte[] data = c.Data.ToArray();
        BinaryPrimitives.WriteUInt64LittleEndian(data.AsSpan(off), value);
        return new VtdImage(RtAddr, HostAddressWidth, TranslationEnabled, Chunks.Select(x => ReferenceEquals(x, c) ? x with { Data = data } : x));
    }

    /// <summary>
    /// Physical address of the context entry the unit would use for <paramref name="requesterId"/>,
    /// found by walking this image's root table (legacy: 16-byte entries; scalable: 32-byte entries in
    /// the lower or upper table). Null when the root entry is not present or its table is not in the image.
    /// </summary>
    /// <param name="requesterId">bus &lt;&lt; 8 | devfn.</param>
    /// <returns>The address, or null.</returns>
    public ulong? ContextEntryAddress(ushort requesterId)
    {
        int bus = requesterId >> 8, devfn = requesterId & 0xFF;
        ulong rootEntry = RootTable + ((ulong)bus * VtdFormat.RootEntrySize);
        if (!TryLocate(rootEntry, out _, out _))
        {
            return null;
        }

        ulong ptr;
        ulong entry;
        if (Mode == VtdTranslationMode.Legacy)
        {
            ptr = ReadUInt64(rootEntry);
            entry = (ulong)devfn * VtdFormat.LegacyContextEntrySize;
        }
        else if (!TryReadUInt64(rootEntry + (devfn >= 128 ? 8UL : 0), out ptr))
        {
            return null;
        }
        else
        {
            entry = (ulong)(devfn & 0x7F) * VtdFormat.ScalableContextEntrySize;
        }

        if ((ptr & VtdFormat.Present) == 0)
        {
            return null;
        }

        // The whole entry, as for Path.
        ulong pa = (ptr & VtdFormat.PointerMask) + entry;
        ulong size = (ulong)(Mode == VtdTranslationMode.Legacy ? VtdFormat.LegacyContextEntrySize : VtdFormat.ScalableContextEntrySize);
        return TryLocate(pa, out _, out _) && TryLocate(pa + size - 8, out _, out _) ? pa : null;
    }

    /// <summary>
    /// The entries a request from <paramref name="requesterId"/> (with <paramref name="pasid"/>, or
    /// without: then the context entry's RID_PASID is used in scalable mode) at <paramref name="iova"/>
    /// reads in this image: root entry, context entry, PASID-directory and PASID entries (scalable),
    /// then the paging entries the PASID entry's translation type names, from the top level down to
    /// the leaf: second-level entries (legacy, PGTT = 010), first-level entries from FLPTR (PGTT = 001,
    /// 4 or 5 levels by FLPM), or (nested, PGTT = 011) first-level entries, each read at the host
    /// address the second level gives its guest-physical one (<see cref="VtdImageEntry.GuestAddress"/>),
    /// followed by the second-level entries that translate the first-level leaf's guest-physical
    /// page; nothing after a pass-through entry. Stops at the first entry that
    /// is not present, is not in the image (or only in part), or is a leaf. No other checks are made (use <see cref="Probe"/>
    /// for what the unit does).
    /// </summary>
    /// <param name="requesterId">bus &lt;&lt; 8 | devfn.</param>
    /// <param name="pasid">PASID, or null for a request without PASID.</param>
    /// <param name="iova">Input address.</param>
    /// <returns>The entries in walk order.</returns>
    public IReadOnlyList<VtdImageEntry> Path(ushort requesterId, uint? pasid, ulong iova)
    {
        var path = new List<VtdImageEntry>();

        // An entry counts as in the image only when all its bytes are (an image loaded from JSON may cut one
        // short), so that whoever reads its other words from the path finds them.
        bool Read(VtdImageChunkKind kind, int level, ulong pa, out ulong value, ulong bytes = 8)
        {
            value = 0;
            if (!TryLocate(pa, out VtdImageChunk? c, out int off) || !TryLocate(pa + bytes - 8, out _, out _))
            {
                return false;
            }

            value = c!.Word(off);
            path.Add(new VtdImageEntry(kind, level, pa, value));
            return true;
        }

        bool scalable = Mode == VtdTranslationMode.Scalable;
        int devfn = requesterId & 0xFF;
        ulong rootPa = RootTable + ((ulong)(requesterId >> 8) * VtdFormat.RootEntrySize) + (scalable && devfn >= 128 ? 8UL : 0);
        if (!Read(VtdImageChunkKind.RootTable, 0, rootPa, out ulong root, scalable ? 8UL : VtdFormat.RootEntrySize) || (root & VtdFormat.Present) == 0)
        {
            return path;
        }

        ulong ctxPa = (root & VtdFormat.PointerMask) + (scalable ? (ulong)(devfn & 0x7F) * VtdFormat.ScalableContextEntrySize : (ulong)devfn * VtdFormat.LegacyContextEntrySize);
        if (!Read(scalable ? VtdImageChunkKind.ScalableContextTable : VtdImageChunkKind.LegacyContextTable, 0, ctxPa, out ulong c0, (ulong)(scalable ? VtdFormat.ScalableContextEntrySize : VtdFormat.LegacyContextEntrySize))
            || (c0 & VtdFormat.Present) == 0)
        {
            return path;
        }

        ulong table;
        int levels;
        if (!scalable)
        {
            if (((c0 >> VtdFormat.ContextTtShift) & 3) == VtdFormat.TtPassThrough)
            {
                return path;
            }

            table = c0 & VtdFormat.PointerMask;
            levels = (int)(ReadUInt64(ctxPa + 8) & VtdFormat.ContextAwMask) + 2;
        }
        else
        {
            uint p = pasid ?? (uint)(ReadUInt64(ctxPa + 8) & VtdFormat.ScalableContextRidPasidMask);
            ulong dirPa = (c0 & VtdFormat.PointerMask) + ((ulong)(p >> VtdFormat.PasidDirectoryShift) * VtdFormat.PasidDirectoryEntrySize);
            if (!Read(VtdImageChunkKind.PasidDirectory, 0, dirPa, out ulong de) || (de & VtdFormat.Present) == 0)
            {
                return path;
            }

            ulong pePa = (de & VtdFormat.PointerMask) + ((p & VtdFormat.PasidTableIndexMask) * VtdFormat.PasidEntrySize);
            if (!Read(VtdImageChunkKind.PasidTable, 0, pePa, out ulong pe, VtdFormat.PasidEntrySize) || (pe & VtdFormat.Present) == 0
                || ((pe >> VtdFormat.PasidPgttShift) & 7) == VtdFormat.PgttPassThrough)
            {
                return path;
            }

            table = pe & VtdFormat.PointerMask;
            levels = (int)((pe >> VtdFormat.PasidAwShift) & 7) + 2;
            int pgtt = (int)((pe >> VtdFormat.PasidPgttShift) & 7);
            if (pgtt is VtdFormat.PgttFirstLevel or VtdFormat.PgttNested)
            {
                if (!TryReadUInt64(pePa + 16, out ulong q2) || !FirstLevelPath(path, q2, pgtt == VtdFormat.PgttNested, table, levels - 2, iova, out ulong gpa))
                {
                    return path;
                }

                // Nested: the leaf's guest-physical page goes through the second level like any input address.
                iova = gpa;
            }
        }

        // AW 1-3 only, as the exporter walks; the unit's walker stops where the image path always
        // stopped: at an entry not in the image, not present, a leaf, or PS at levels 4 and 5.
        if (levels is >= 3 and <= 5)
        {
            var nonLeafReserved = new ulong[6];
            nonLeafReserved[4] = nonLeafReserved[5] = VtdFormat.SlPageSize;
            SecondLevelWalker.Walk(new EntrySource(this), table, levels, iova, new ulong[6], nonLeafReserved, out SecondLevelWalkTrace trace);
            for (int i = 0; i < trace.Count; i++)
            {
                SecondLevelWalkEntry e = trace.Entries[i];
                path.Add(new VtdImageEntry(VtdImageChunkKind.PageTable, e.Level, e.Address, e.Value));
            }
        }

        return path;
    }

    // The first-level entries from FLPTR to the leaf (FLPM: 4 or 5 levels), by the hardware's walker.
    // Nested: each entry's guest-physical address is translated through the second level at slRoot;
    // true when the walk reached a leaf there, with the guest-physical address it gives.
    private bool FirstLevelPath(List<VtdImageEntry> path, ulong q2, bool nested, ulong slRoot, int aw, ulong iova, out ulong gpa)
    {
        gpa = 0;
        ulong flptr = FirstLevelView.Flptr(q2);
        int levels = FirstLevelView.Levels(q2);
        FirstLevelWalkTrace trace;
        if (nested)
        {
            FirstLevelWalker.Walk(new ImageNestedSource(this, slRoot, aw), flptr, levels, iova, new ulong[6], FirstLevelView.FirstLevelNonLeafReserved, 0, out trace);
        }
        else
        {
            FirstLevelWalker.Walk(new ImageFirstLevelSource(this), flptr, levels, iova, new ulong[6], FirstLevelView.FirstLevelNonLeafReserved, 0, out trace);
        }

        ulong table = flptr;
        for (int i = 0; i < trace.Count; i++)
        {
            FirstLevelWalkEntry e = trace.Entries[i];
            ulong at = table + (((iova >> SecondLevelWalker.Shift(e.Level)) & 0x1FF) * 8);
            path.Add(nested
                ? new VtdImageEntry(VtdImageChunkKind.NestedFirstLevelTable, e.Level, e.HostAddress, e.Value) { GuestAddress = at }
                : new VtdImageEntry(VtdImageChunkKind.FirstLevelTable, e.Level, e.HostAddress, e.Value));
            table = e.Value & VtdFormat.FlAddressMask;
        }

        if (!nested || trace.Status != FirstLevelWalkStatus.Leaf)
        {
            return false;
        }

        gpa = trace.Output | (iova & ((1UL << SecondLevelWalker.Shift(trace.Level)) - 1));
        return true;
    }

    // First-level tables read from the image at host addresses; a read outside every chunk stops the walk.
    private readonly struct ImageFirstLevelSource(VtdImage image) : IFirstLevelEntrySource
    {
        public VtdFaultReason Read(ulong address, bool top, out ulong hostAddress, out ulong entry, out bool writable)
        {
            hostAddress = address;
            writable = true;
            return image.TryReadUInt64(address, out entry) ? VtdFaultReason.None
                : top ? VtdFaultReason.FirstLevelPointerInvalid : VtdFaultReason.FirstLevelReadError;
        }
    }

    // Nested first-level tables: guest-physical addresses translated through the image's second level.
    private readonly struct ImageNestedSource(VtdImage image, ulong slRoot, int aw) : IFirstLevelEntrySource
    {
        public VtdFaultReason Read(ulong address, bool top, out ulong hostAddress, out ulong entry, out bool writable)
        {
            entry = 0;
            writable = false;
            if (!FirstLevelView.TryTranslate(new EntrySource(image), slRoot, aw, address, out hostAddress))
            {
                return top ? VtdFaultReason.FirstLevelRootReadDenied : VtdFaultReason.FirstLevelEntryReadDenied;
            }

            return image.TryReadUInt64(hostAddress, out entry) ? VtdFaultReason.None
                : top ? VtdFaultReason.FirstLevelPointerInvalid : VtdFaultReason.FirstLevelReadError;
        }
    }

    // The hardware walker's view of an image: an entry outside every chunk is a read error.
    internal readonly struct EntrySource(VtdImage image) : ISecondLevelEntrySource
    {
        public bool TryRead(ulong pa, out ulong entry)
        {
            entry = 0;
            if (!image.TryLocate(pa, out VtdImageChunk? c, out int off))
            {
                return false;
            }

            entry = c!.Word(off);
            return true;
        }
    }

    /// <summary>Copies every chunk into <paramref name="memory"/> at its address.</summary>
    /// <param name="memory">Target memory; must contain every chunk.</param>
    /// <exception cref="ArgumentNullException"><paramref name="memory"/> is null.</exception>
    /// <exception cref="ArgumentOutOfRangeException">A chunk lies beyond the memory (chunks before it were copied).</exception>
    public void LoadInto(PhysicalMemory memory)
    {
        ArgumentNullException.ThrowIfNull(memory);
        using PhysicalMemory.AccessScope guard = memory.EnterAccess();
        foreach (VtdImageChunk c in Chunks)
        {
            memory.Write(c.Address, c.Data.Span);
        }
    }

    /// <summary>
    /// Moves every structure except nested first-level tables into the physical window [<paramref name="windowBase"/>,
    /// <paramref name="windowBase"/> + <paramref name="windowSize"/>), 4 KiB aligned, in address order
    /// (around nested first-level tables that lie in the window: those stay where the second level maps them),
    /// and rewrites every pointer the unit would follow — root → context table, context → PASID
    /// directory or second-level root, directory → PASID table, PASID entry → second-level root or
    /// (PGTT = 001) FLPTR, non-leaf paging entry → next table — plus RTADDR. The pointers of nested
    /// first-level tables (and a nested entry's FLPTR) are guest-physical and are not rewritten: the
    /// second-level leaves that map them are output addresses, which relocation keeps. A table named by a word
    /// of a paging table read both at level 1 and at a higher level (one root under entries of different AW)
    /// is such an output address too (the word is a 4 KiB leaf in the level-1 reading) and stays in place. Leaf entries (the output addresses of
    /// translations) are not changed. Pointers the unit would not follow (not-present entries, leaves,
    /// pointers to memory outside the image) are left as they are. Bytes a guest made two structures at once
    /// (see <see cref="VtdImageExporter"/>) are rewritten as the kind of their chunk, so their other reading may
    /// change. Probes are re-evaluated by the
    /// caller if needed (they are dropped).
    /// </summary>
    /// <param name="windowBase">4 KiB-aligned base of the window.</param>
    /// <param name="windowSize">Bytes in the window.</param>
    /// <returns>The relocated image.</returns>
    /// <exception cref="ArgumentException">The window is misaligned, too small, or reaches above the host address width.</exception>
    public VtdImage Relocate(ulong windowBase, ulong windowSize)
    {
        if ((windowBase & 0xFFF) != 0)
        {
            throw new ArgumentException("The relocation window must be 4 KiB aligned.", nameof(windowBase));
        }

        // Nested first-level tables stay where they are: the second-level leaves that map their
        // guest-physical addresses are output addresses, which relocation keeps. The other chunks are
        // packed into the window around them.
        var map = new Dictionary<ulong, ulong>(Chunks.Count);
        HashSet<ulong> pinned = OutputsOfTablesReadAtTwoLevels();
        VtdImageChunk[] kept = [.. Chunks.Where(c => c.Kind == VtdImageChunkKind.NestedFirstLevelTable || pinned.Contains(c.Address))];
        foreach (VtdImageChunk c in kept)
        {
            map[c.Address] = c.Address;
        }

        ulong next = windowBase;
        ulong limit = 1UL << HostAddressWidth;
        foreach (VtdImageChunk c in Chunks)
        {
            if (map.ContainsKey(c.Address))
            {
                continue;
            }

            ulong size = ((ulong)c.Size + 0xFFF) & ~0xFFFUL;
            for (bool bumped = true; bumped;)
            {
                bumped = false;
                foreach (VtdImageChunk k in kept)
                {
                    if (k.Address < next + size && next < k.Address + (ulong)k.Size)
                    {
                        next = (k.Address + (ulong)k.Size + 0xFFF) & ~0xFFFUL;
                        bumped = true;
                    }
                }
            }

            if (next - windowBase + size > windowSize)
            {
                throw new ArgumentException(string.Create(CultureInfo.InvariantCulture, $"The image needs more than the 0x{windowSize:x} bytes of the window at 0x{windowBase:x}."), nameof(windowSize));
            }

            if (next + size > limit || next + size < next)
            {
                throw new ArgumentException(string.Create(CultureInfo.InvariantCulture, $"The window at 0x{windowBase:x} reaches above the host address width ({HostAddressWidth} bits): the unit would not follow pointers there."), nameof(windowBase));
            }

            map[c.Address] = next;
            next += size;
        }

        // A pointer to a chunk's start, or (a structure a guest placed inside another; see VtdImageExporter)
        // into its interior.
        ulong Remap(ulong word, ulong mask) =>
            map.TryGetValue(word & mask, out ulong to) ? (word & ~mask) | to
            : TryLocate(word & mask, out VtdImageChunk? c, out int off) && map.TryGetValue(c!.Address, out ulong start) ? (word & ~mask) | (start + (ulong)off)
            : word;

        var moved = new List<VtdImageChunk>(Chunks.Count);
        foreach (VtdImageChunk c in Chunks)
        {
            byte[] d = c.Data.ToArray();
            Span<byte> s = d;
            void Fix(int off, ulong mask) =>
                BinaryPrimitives.WriteUInt64LittleEndian(d.AsSpan(off), Remap(BinaryPrimitives.ReadUInt64LittleEndian(d.AsSpan(off)), mask));
            ulong W(int off) => BinaryPrimitives.ReadUInt64LittleEndian(d.AsSpan(off));

            switch (c.Kind)
            {
                case VtdImageChunkKind.RootTable:
                    for (int off = 0; off + 16 <= s.Length; off += 16)
                    {
                        if ((W(off) & VtdFormat.Present) != 0)
                        {
                            Fix(off, VtdFormat.PointerMask);
                        }

                        if (Mode == VtdTranslationMode.Scalable && (W(off + 8) & VtdFormat.RootUpperPresent) != 0)
                        {
                            Fix(off + 8, VtdFormat.PointerMask);
                        }
                    }

                    break;
                case VtdImageChunkKind.LegacyContextTable:
                    for (int off = 0; off + 16 <= s.Length; off += 16)
                    {
                        ulong q0 = W(off);
                        // TT = 00/01 only, as the exporter follows (10 has no SLPTPTR, 11 is reserved).
                        if ((q0 & VtdFormat.Present) != 0 && ((q0 >> VtdFormat.ContextTtShift) & 3) is VtdFormat.TtTranslated or VtdFormat.TtTranslatedWithDeviceTlb)
                        {
                            Fix(off, VtdFormat.PointerMask);
                        }
                    }

                    break;
                case VtdImageChunkKind.ScalableContextTable:
                    for (int off = 0; off + 32 <= s.Length; off += 32)
                    {
                        if ((W(off) & VtdFormat.Present) != 0)
                        {
                            Fix(off, VtdFormat.PointerMask);
                        }
                    }

                    break;
                case VtdImageChunkKind.PasidDirectory:
                    for (int off = 0; off + 8 <= s.Length; off += 8)
                    {
                        if ((W(off) & VtdFormat.Present) != 0)
                        {
                            Fix(off, VtdFormat.PointerMask);
                        }
                    }

                    break;
                case VtdImageChunkKind.PasidTable:
                    for (int off = 0; off + 64 <= s.Length; off += 64)
                    {
                        ulong q0 = W(off);
                        int pgtt = (int)((q0 >> VtdFormat.PasidPgttShift) & 7);
                        if ((q0 & VtdFormat.Present) != 0 && pgtt is VtdFormat.PgttSecondLevel or VtdFormat.PgttNested)
                        {
                            Fix(off, VtdFormat.PointerMask);
                        }

                        // FLPTR of a first-level entry is host-physical; a nested one is guest-physical (kept).
                        if ((q0 & VtdFormat.Present) != 0 && pgtt == VtdFormat.PgttFirstLevel)
                        {
                            Fix(off + 16, VtdFormat.PointerMask);
                        }
                    }

                    break;
                case VtdImageChunkKind.PageTable:
                    for (int off = 0; off + 8 <= s.Length; off += 8)
                    {
                        if (SecondLevelWalker.IsTablePointer(W(off), c.Level))
                        {
                            Fix(off, VtdFormat.SlAddressMask);
                        }
                    }

                    break;
                case VtdImageChunkKind.FirstLevelTable:
                    for (int off = 0; off + 8 <= s.Length; off += 8)
                    {
                        if (FirstLevelView.IsTablePointer(W(off), c.Level))
                        {
                            Fix(off, VtdFormat.FlAddressMask);
                        }
                    }

                    break;
                default:
                    break;
            }

            moved.Add(c with { Address = map[c.Address], Data = d });
        }

        ulong rt = Remap(RtAddr, VtdFormat.PointerMask);
        return new VtdImage(rt, HostAddressWidth, TranslationEnabled, moved);
    }

    // One paging table can be read at two levels (one root under context or PASID entries of different
    // AW, or first-level entries of different FLPM): a word that is a table pointer in the higher reading
    // is a 4 KiB leaf in the lower one, so the table it names is also an output address, which relocation
    // must keep. Those tables stay where they are (their pointers then need no rewrite). The levels each
    // table is read at are found by walking the image from every context and PASID entry.
    private HashSet<ulong> OutputsOfTablesReadAtTwoLevels()
    {
        var tables = new Dictionary<ulong, VtdImageChunk>();
        var starts = new List<(ulong Table, int Level)>();
        foreach (VtdImageChunk c in Chunks)
        {
            switch (c.Kind)
            {
                case VtdImageChunkKind.PageTable or VtdImageChunkKind.FirstLevelTable:
                    tables[c.Address] = c;
                    break;
                case VtdImageChunkKind.LegacyContextTable:
                    for (int off = 0; off + 16 <= c.Size; off += 16)
                    {
                        ulong q0 = c.Word(off);
                        int aw = (int)(c.Word(off + 8) & VtdFormat.ContextAwMask);
                        if ((q0 & VtdFormat.Present) != 0 && ((q0 >> VtdFormat.ContextTtShift) & 3) is VtdFormat.TtTranslated or VtdFormat.TtTranslatedWithDeviceTlb && aw is >= 1 and <= 3)
                        {
                            starts.Add((q0 & VtdFormat.PointerMask, aw + 2));
                        }
                    }

                    break;
                case VtdImageChunkKind.PasidTable:
                    for (int off = 0; off + 64 <= c.Size; off += 64)
                    {
                        ulong q0 = c.Word(off), q2 = c.Word(off + 16);
                        int pgtt = (int)((q0 >> VtdFormat.PasidPgttShift) & 7);
                        int aw = (int)((q0 >> VtdFormat.PasidAwShift) & 7);
                        if ((q0 & VtdFormat.Present) == 0)
                        {
                            continue;
                        }

                        if (pgtt is VtdFormat.PgttSecondLevel or VtdFormat.PgttNested && aw is >= 1 and <= 3)
                        {
                            starts.Add((q0 & VtdFormat.PointerMask, aw + 2));
                        }
                        else if (pgtt == VtdFormat.PgttFirstLevel)
                        {
                            starts.Add((FirstLevelView.Flptr(q2), FirstLevelView.Levels(q2)));
                        }
                    }

                    break;
                default:
                    break;
            }
        }

        // Every (table, level) reading, from the starts down through the table pointers of that level.
        var levels = new Dictionary<ulong, int>();
        var work = new Stack<(ulong Table, int Level)>(starts);
        while (work.Count > 0)
        {
            (ulong table, int level) = work.Pop();
            if (!tables.TryGetValue(table, out VtdImageChunk? t) || level is < 1 or > 5)
            {
                continue;
            }

            levels.TryGetValue(table, out int seen);
            if ((seen & (1 << level)) != 0)
            {
                continue;
            }

            levels[table] = seen | (1 << level);
            bool first = t.Kind == VtdImageChunkKind.FirstLevelTable;
            for (int off = 0; off + 8 <= t.Size; off += 8)
            {
                ulong e = t.Word(off);
                if (first ? FirstLevelView.IsTablePointer(e, level) : SecondLevelWalker.IsTablePointer(e, level))
                {
                    work.Push((e & (first ? VtdFormat.FlAddressMask : VtdFormat.SlAddressMask), level - 1));
                }
            }
        }

        // Read at level 1 and at a higher level: the level-1 reading's leaves that name a chunk keep it in place.
        var pinned = new HashSet<ulong>();
        foreach ((ulong table, int mask) in levels)
        {
            if ((mask & 1 << 1) == 0 || (mask & ~(1 << 1)) == 0)
            {
                continue;
            }

            VtdImageChunk t = tables[table];
            bool first = t.Kind == VtdImageChunkKind.FirstLevelTable;
            for (int off = 0; off + 8 <= t.Size; off += 8)
            {
                ulong e = t.Word(off);
                ulong to = e & (first ? VtdFormat.FlAddressMask : VtdFormat.SlAddressMask);
                bool leaf = first ? (e & VtdFormat.FlPresent) != 0 : (e & (VtdFormat.SlRead | VtdFormat.SlWrite)) != 0;
                if (leaf && TryLocate(to, out VtdImageChunk? c, out int at) && at == 0)
                {
                    pinned.Add(c!.Address);
                }
            }
        }

        return pinned;
    }

    /// <summary>
    /// Evaluates <paramref name="probes"/> with the hardware model: a fresh <see cref="VtdUnit"/> with
    /// <paramref name="config"/> (caches empty) over a memory holding only this image, with RTADDR
    /// set, the root table latched (SRTP), the context cache and IOTLB invalidated and translation
    /// enabled as when exported. Each probe is one request; fault records are cleared after each so
    /// that <see cref="VtdProbeResult.FaultRecorded"/> reflects fault-processing-disable only.
    /// </summary>
    /// <param name="config">Capabilities of the unit that reads the image (normally the exporting unit's).</param>
    /// <param name="probes">Requests to evaluate.</param>
    /// <param name="memorySize">Physical memory size of the evaluating platform (reads at or above it are memory errors, and the
    /// image's bytes there are not loaded); default: the image's end rounded up to 2 MiB, at most <see cref="PhysicalMemory.MaxSize"/>.</param>
    /// <returns>A copy of this image with <see cref="Probes"/> set.</returns>
    /// <exception cref="ArgumentNullException"><paramref name="config"/> or <paramref name="probes"/> is null.</exception>
    /// <exception cref="ArgumentOutOfRangeException">A probe is empty, crosses a 4 KiB page or has a PASID wider than 20 bits, or
    /// <paramref name="memorySize"/> is not a positive multiple of 4 KiB up to <see cref="PhysicalMemory.MaxSize"/> (the message names it).</exception>
    public VtdImage Probe(VtdConfig config, IEnumerable<VtdProbe> probes, ulong? memorySize = null)
    {
        ArgumentNullException.ThrowIfNull(config);
        ArgumentNullException.ThrowIfNull(probes);
        VtdProbe[] requests = [.. probes];
        foreach (VtdProbe p in requests)
        {
            CheckProbe(p, nameof(probes));
        }

        if (memorySize is ulong m && (m == 0 || (m & 0xFFF) != 0 || m > PhysicalMemory.MaxSize))
        {
            throw new ArgumentOutOfRangeException(nameof(memorySize), m, string.Create(CultureInfo.InvariantCulture, $"The memory size must be a positive multiple of 4 KiB of at most 0x{PhysicalMemory.MaxSize:x} bytes."));
        }

        ulong size = memorySize ?? Math.Min(PhysicalMemory.MaxSize, Math.Max(2UL << 20, (End + (2UL << 20) - 1) & ~((2UL << 20) - 1)));
        using var memory = new PhysicalMemory(size);
        using (memory.EnterAccess())
        {
            // What lies at or above the memory's end is not there for the unit either: its reads there are memory errors.
            foreach (VtdImageChunk c in Chunks.Where(c => c.Address < size))
            {
                memory.Write(c.Address, c.Data.Span[..(int)Math.Min((ulong)c.Size, size - c.Address)]);
            }
        }
        var unit = new VtdUnit(memory, config);
        unit.Write64(VtdRegister.Rtaddr, RtAddr);
        unit.Write32(VtdRegister.Gcmd, VtdRegister.GcmdSrtp);
        unit.Write64(VtdRegister.Ccmd, VtdRegister.CcmdIcc | (1UL << VtdRegister.CcmdCirgShift));
        unit.Write64(VtdConfig.IotlbRegisterOffset + VtdRegister.IotlbInPair, (1UL << 63) | (1UL << 60));
        if (TranslationEnabled)
        {
            unit.Write32(VtdRegister.Gcmd, VtdRegister.GcmdTe);
        }

        var results = new List<VtdProbeResult>();
        foreach (VtdProbe p in requests)
        {
            VtdTranslation t = unit.Translate(p.RequesterId, p.Pasid, p.Iova, (ulong)p.Size, p.Access);
            results.Add(new VtdProbeResult(p, t.Status, t.PhysicalAddress, t.PageSize, t.Writable, t.Reason, t.FaultRecorded));
            if (t.IsFault)
            {
                for (uint i = 0; i < (uint)config.FaultRecordCount; i++)
                {
                    unit.Write64(VtdConfig.FaultRecordingRegisterOffset + (i * VtdRegister.FaultRecordSize) + 8, 1UL << 63);
                }

                unit.Write32(VtdRegister.Fsts, VtdRegister.FstsPfo);
            }
        }

        return new VtdImage(RtAddr, HostAddressWidth, TranslationEnabled, Chunks, results);
    }

    internal static void CheckHostAddressWidth(int hostAddressWidth)
    {
        if (hostAddressWidth is < 32 or > 52)
        {
            throw new ArgumentOutOfRangeException(nameof(hostAddressWidth), hostAddressWidth, "Host address width must be 32–52.");
        }
    }

    // A probe is one request as VtdUnit.Translate takes it.
    internal static void CheckProbe(VtdProbe p, string paramName)
    {
        if (p.Size is < 1 or > 4096 || (p.Iova & 0xFFF) + (ulong)p.Size > 4096 || p.Pasid > 0xF_FFFF)
        {
            throw new ArgumentOutOfRangeException(paramName, p, "A probe is one request: 1–4096 bytes inside one 4 KiB page, with a PASID of at most 20 bits.");
        }
    }

    private (VtdImageChunk Chunk, int Offset) Locate(ulong pa)
    {
        if (!TryLocate(pa, out VtdImageChunk? c, out int off) || (pa & 7) != 0)
        {
            throw new ArgumentOutOfRangeException(nameof(pa), pa, "No chunk of the image holds this 8-byte aligned address.");
        }

        return (c!, off);
    }

    private bool TryLocate(ulong pa, out VtdImageChunk? chunk, out int offset)
    {
        int lo = 0, hi = Chunks.Count - 1;
        while (lo <= hi)
        {
            int mid = (lo + hi) >>> 1;
            VtdImageChunk c = Chunks[mid];
            if (pa < c.Address)
            {
                hi = mid - 1;
            }
            else if (pa - c.Address + 8 > (ulong)c.Size)
            {
                lo = mid + 1;
            }
            else
            {
                chunk = c;
                offset = (int)(pa - c.Address);
                return true;
            }
        }

        chunk = null;
        offset = 0;
        return false;
    }
}
