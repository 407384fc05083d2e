using System.Globalization;
using Iommu.VtD.Hardware;

namespace Iommu.VtD.Diagnostics;

/// <summary>
/// Decoders that turn what the hardware reads into words: fault reasons, single table entries and
/// whole walks of a <see cref="VtdImage"/>. They read the image only (the bytes in memory), never the
/// driver, so they describe what the unit would do, bugs in the driver's programming included.
/// </summary>
/// <remarks>Stateless and thread-safe.</remarks>
public static partial class VtdDecoder
{
    /// <summary>
    /// The fault-condition code and meaning of a fault reason, e.g. "SGN.6: write request without
    /// write permission (no second-level mapping, or W clear)" for 0x85.
    /// </summary>
    /// <param name="reason">A fault reason (FRCD.FR), defined or not.</param>
    /// <returns>The description; an undefined code reads "0xNN: reserved fault reason".</returns>
    public static string DescribeFaultReason(VtdFaultReason reason) => reason switch
    {
        VtdFaultReason.None => "No fault",
        VtdFaultReason.RootEntryNotPresent => "LRT.2: root entry not present",
        VtdFaultReason.ContextEntryNotPresent => "LCT.2: context entry not present",
        VtdFaultReason.ContextEntryInvalid => "LCT.4.x: invalid context entry programming (AW not in SAGAW, unsupported TT, unreadable SLPTPTR)",
        VtdFaultReason.AddressBeyondMgaw => "LGN.1.x: input address beyond the address width",
        VtdFaultReason.Write => "LGN.2: write request without write permission (no second-level mapping, or W clear)",
        VtdFaultReason.Read => "LGN.3: read request without read permission (no second-level mapping, or R clear)",
        VtdFaultReason.PagingEntryInvalid => "LSL.1: error reading a second-level paging entry",
        VtdFaultReason.RootTableInvalid => "LRT.1: error reading the root entry",
        VtdFaultReason.ContextTableInvalid => "LCT.1: error reading the context entry",
        VtdFaultReason.RootEntryReserved => "LRT.3: reserved bits set in a present root entry",
        VtdFaultReason.ContextEntryReserved => "LCT.3: reserved bits set in a present context entry",
        VtdFaultReason.PagingEntryReserved => "LSL.2: reserved bits set in a present second-level paging entry",
        VtdFaultReason.ContextEntryTranslationType => "LCT.5: translation type blocks the request (ATS requests; not produced by this model)",
        VtdFaultReason.InterruptAddress => "LGN.4: translated address falls in the interrupt range 0xFEEx_xxxx",
        VtdFaultReason.RootTableAddressInvalid => "RTA.1: invalid root-table address or translation-table mode",
        VtdFaultReason.LegacyModePasidRequest => "RTA.2: request with PASID while the root table is in legacy mode",
        VtdFaultReason.LegacyModePageRequest => "RTA.3: page request while the root table is in legacy mode",
        VtdFaultReason.ScalableRootTableReadError => "SRT.1: error reading the scalable-mode root entry",
        VtdFaultReason.ScalableRootEntryNotPresent => "SRT.2: scalable-mode root entry half (LP or UP) not present",
        VtdFaultReason.ScalableRootEntryReserved => "SRT.3: reserved bits set in the scalable-mode root entry",
        VtdFaultReason.ScalableContextTableReadError => "SCT.1: error reading the scalable-mode context entry",
        VtdFaultReason.ScalableContextEntryNotPresent => "SCT.2: scalable-mode context entry not present",
        VtdFaultReason.ScalableContextEntryReserved => "SCT.3: reserved bits set in the scalable-mode context entry",
        VtdFaultReason.ScalableContextEntryInvalid => "SCT.4.x: invalid scalable-mode context entry programming",
        VtdFaultReason.DeviceTlbDisabled => "SCT.5: DTE clear for an ATS request",
        VtdFaultReason.PasidDisabled => "SCT.6: PASIDE clear for a request with PASID",
        VtdFaultReason.PasidBeyondDirectory => "SCT.7: PASID beyond the directory size given by PDTS",
        VtdFaultReason.PageRequestDisabled => "SCT.8: PRE clear for a page request",
        VtdFaultReason.RidPasidInvalid => "SCT.9: error in the RID_PASID field",
        VtdFaultReason.PasidDirectoryReadError => "SPD.1: error reading the PASID-directory entry",
        VtdFaultReason.PasidDirectoryEntryNotPresent => "SPD.2: PASID-directory entry not present",
        VtdFaultReason.PasidDirectoryEntryReserved => "SPD.3: reserved bits set in the PASID-directory entry",
        VtdFaultReason.PasidTableReadError => "SPT.1: error reading the PASID-table entry",
        VtdFaultReason.PasidEntryNotPresent => "SPT.2: PASID-table entry not present",
        VtdFaultReason.PasidEntryReserved => "SPT.3: reserved bits set in the PASID-table entry",
        VtdFaultReason.PasidEntryInvalid => "SPT.4.x: invalid PASID-table entry programming (PGTT, AW)",
        VtdFaultReason.ExecuteRequestsDisabled => "SPT.5: ERE clear for an execute request",
        VtdFaultReason.SupervisorRequestsDisabled => "SPT.6: SRE clear for a supervisor request",
        VtdFaultReason.FirstLevelReadError => "SFL.1: error reading a first-level entry",
        VtdFaultReason.FirstLevelNotPresent => "SFL.2: first-level entry not present",
        VtdFaultReason.FirstLevelReserved => "SFL.3: reserved bits set in a first-level entry",
        VtdFaultReason.FirstLevelPointerInvalid => "SFL.4: error reading the first-level root (bad FLPTR)",
        VtdFaultReason.FirstLevelTableBeyondWidth => "SFL.5: nested: a first-level table address (guest-physical) beyond the second level's input width",
        VtdFaultReason.FirstLevelRootReadDenied => "SFL.6: nested: second level denies read on the top first-level table",
        VtdFaultReason.FirstLevelEntryReadDenied => "SFL.7: nested: second level denies read on a first-level table",
        VtdFaultReason.FirstLevelEntryWriteDenied => "SFL.8: nested: second level denies the write of a first-level accessed/dirty update",
        VtdFaultReason.SecondLevelReadError => "SSL.1: error reading a second-level entry (below the top level)",
        VtdFaultReason.SecondLevelNestedPermission => "SSL.2: R/W permission missing on a second-level entry during a nested walk",
        VtdFaultReason.SecondLevelReserved => "SSL.3: reserved bits set in a second-level entry",
        VtdFaultReason.SecondLevelPointerInvalid => "SSL.4: invalid SLPTPTR (the top-level second-level table cannot be read)",
        VtdFaultReason.SecondLevelAccessedDirtyNoSnoop => "SSL.5: second-level A/D update needed without snoop",
        VtdFaultReason.NonCanonicalAddress => "SGN.1: first-level input address not canonical",
        VtdFaultReason.UserAccessDenied => "SGN.2: U/S clear for a user request",
        VtdFaultReason.ExecuteDenied => "SGN.3: no execute permission",
        VtdFaultReason.ScalableAddressBeyondWidth => "SGN.4.x: input address beyond the address width",
        VtdFaultReason.SecondLevelAddressBeyondWidth => "SGN.5: second-level entry address beyond the maximum",
        VtdFaultReason.ScalableWrite => "SGN.6: write request without write permission (no second-level mapping, or W clear)",
        VtdFaultReason.ScalableRead => "SGN.7: read request without read permission (no second-level mapping, or R clear)",
        VtdFaultReason.ScalableInterruptAddress => "SGN.8: translated address falls in the interrupt range",
        VtdFaultReason.FirstLevelAccessedDirtyNoSnoop => "SFL.9: first-level A/D update needed without snoop",
        VtdFaultReason.FirstLevelAccessedDirtyFailed => "SFL.10: first-level A/D update failed",
        _ => string.Create(CultureInfo.InvariantCulture, $"0x{(byte)reason:x2}: reserved fault reason"),
    };

    /// <summary>The name of an entry as the VT-d specification and debugfs call it: "root entry", "context entry (scalable)", "PASID directory entry", "PASID table entry", "PML4E", "PDPE", "PDE", "PTE" (second- and first-level paging entries alike).</summary>
    /// <param name="entry">The entry.</param>
    /// <returns>The name; a level-5 entry is "PML5E".</returns>
    /// <exception cref="ArgumentOutOfRangeException">The entry's kind is not defined.</exception>
    public static string EntryName(VtdImageEntry entry) => entry.Kind switch
    {
        VtdImageChunkKind.RootTable => "root entry",
        VtdImageChunkKind.LegacyContextTable => "context entry (legacy)",
        VtdImageChunkKind.ScalableContextTable => "context entry (scalable)",
        VtdImageChunkKind.PasidDirectory => "PASID directory entry",
        VtdImageChunkKind.PasidTable => "PASID table entry",
        VtdImageChunkKind.PageTable or VtdImageChunkKind.FirstLevelTable or VtdImageChunkKind.NestedFirstLevelTable => entry.Level switch
        {
            5 => "PML5E",
            4 => "PML4E",
            3 => "PDPE",
            2 => "PDE",
            1 => "PTE",
            _ => string.Create(CultureInfo.InvariantCulture, $"level-{entry.Level} entry"),
        },
        _ => throw new ArgumentOutOfRangeException(nameof(entry), entry.Kind, "Unknown structure kind."),
    };

    /// <summary>The name of a PASID entry's PGTT field: "first-level", "second-level", "nested", "pass-through", or the number when reserved.</summary>
    /// <param name="pgtt">PGTT (bits 8:6 of the PASID entry's first word).</param>
    /// <returns>The name.</returns>
    public static string PgttName(int pgtt) => pgtt switch
    {
        VtdFormat.PgttFirstLevel => "first-level",
        VtdFormat.PgttSecondLevel => "second-level",
        VtdFormat.PgttNested => "nested",
        VtdFormat.PgttPassThrough => "pass-through",
        _ => string.Create(CultureInfo.InvariantCulture, $"reserved ({pgtt})"),
    };

    /// <summary>
    /// Decodes one entry of <paramref name="image"/> read by a request from
    /// <paramref name="requesterId"/> with <paramref name="pasid"/>: the index the walk used and the
    /// fields that steer it (present bits, pointers, PASIDE/PDTS/RID_PASID, PGTT/DID/AW, R/W, leaf size).
    /// </summary>
    /// <param name="image">The image the entry was read from (context and PASID entries' second words are read from it).</param>
    /// <param name="entry">An entry, normally one of <see cref="VtdImage.Path"/>.</param>
    /// <param name="requesterId">bus &lt;&lt; 8 | devfn of the request (names the context entry's devfn).</param>
    /// <param name="pasid">The request's PASID, or null: then the context entry's RID_PASID names the PASID directory index.</param>
    /// <returns>The description.</returns>
    /// <exception cref="ArgumentNullException"><paramref name="image"/> is null.</exception>
    /// <exception cref="ArgumentOutOfRangeException">The entry's kind is not defined, or a context or PASID entry is not in the image.</exception>
    public static VtdEntryDescription DescribeEntry(VtdImage image, VtdImageEntry entry, ushort requesterId, uint? pasid)
    {
        ArgumentNullException.ThrowIfNull(image);
        return Describe(image, null, entry, requesterId, pasid);
    }

    /// <summary>
    /// Decodes one entry as <see cref="DescribeEntry(VtdImage, VtdImageEntry, ushort, uint?)"/> does, judged
    /// against the capabilities of the unit <paramref name="config"/> describes: besides the reserved bits
    /// every unit faults on, those its capabilities leave reserved (SNP without snoop control, superpage
    /// sizes it lacks, DTE/PRE/PASIDE/RID_PASID, SRE/ERE/EAFE, SLADE) and programming it rejects (TT = 01
    /// without device-TLB support, TT = 10 or PGTT without the translation type, an AW outside SAGAW,
    /// 5-level first-level paging without support) end the meaning with "…: fault 0xNN", the reason that unit records.
    /// </summary>
    /// <param name="image">The image the entry was read from.</param>
    /// <param name="config">The unit's configuration (its HAW replaces the image's).</param>
    /// <param name="entry">An entry, normally one of <see cref="VtdImage.Path"/>.</param>
    /// <param name="requesterId">bus &lt;&lt; 8 | devfn of the request.</param>
    /// <param name="pasid">The request's PASID, or null.</param>
    /// <returns>The description.</returns>
    /// <exception cref="ArgumentNullException"><paramref name="image"/> or <paramref name="config"/> is null.</exception>
    /// <exception cref="ArgumentOutOfRangeException">The entry's kind is not defined, or a context or PASID entry is not in the image.</exception>
    public static VtdEntryDescription DescribeEntry(VtdImage image, VtdConfig config, VtdImageEntry entry, ushort requesterId, uint? pasid)
    {
        ArgumentNullException.ThrowIfNull(image);
        ArgumentNullException.ThrowIfNull(config);
        return Describe(image, config, entry, requesterId, pasid);
    }

    // Without a configuration only what every unit faults on is flagged (HAW from the image).
    private static VtdEntryDescription Describe(VtdImage image, VtdConfig? config, VtdImageEntry entry, ushort requesterId, uint? pasid, RequestState? request = null)
    {
        string name = EntryName(entry);
        ulong v = entry.Value;
        ulong ptr = v & VtdFormat.PointerMask;
        int devfn = requesterId & 0xFF;
        bool present = (v & VtdFormat.Present) != 0;
        string index, meaning;
        switch (entry.Kind)
        {
            case VtdImageChunkKind.RootTable:
                index = Inv($"bus {(entry.Address & 0xFFF) >> 4}");
                string half = image.Mode == VtdTranslationMode.Scalable ? ((entry.Address & 8) != 0 ? "UP " : "LP ") : "";
                meaning = present ? Inv($"{half}present, context table @0x{ptr:x}") : $"{half}not present";
                break;
            case VtdImageChunkKind.ScalableContextTable:
            {
                ulong q1 = image.ReadUInt64(entry.Address + 8);
                index = Inv($"devfn 0x{devfn:x2}");
                meaning = !present ? "not present" : Inv(
                    $"PASIDE={Bit(v, VtdFormat.ScalableContextPaside)} PDTS={(v >> VtdFormat.ScalableContextPdtsShift) & 7} RID_PASID={q1 & VtdFormat.ScalableContextRidPasidMask}, PASID dir @0x{ptr:x}");
                break;
            }

            case VtdImageChunkKind.LegacyContextTable:
            {
                ulong q1 = image.ReadUInt64(entry.Address + 8);
                int tt = (int)((v >> VtdFormat.ContextTtShift) & 3);
                index = Inv($"devfn 0x{devfn:x2}");
                // TT = 11 is reserved: the unit faults (invalid context entry) whatever the capabilities.
                string ttName = tt switch { VtdFormat.TtPassThrough => "pass-through", 3 => "reserved (3)", _ => "translated" };
                meaning = !present ? "not present" : Inv(
                    $"TT={ttName} DID {(q1 >> VtdFormat.ContextDidShift) & 0xFFFF} AW {AwName((int)(q1 & VtdFormat.ContextAwMask), config)}")
                    + (tt == VtdFormat.TtPassThrough ? "" : Inv($", SLPTPTR 0x{ptr:x}"));
                break;
            }

            case VtdImageChunkKind.PasidDirectory:
                index = Inv($"{EffectivePasid(image, requesterId, pasid) >> VtdFormat.PasidDirectoryShift}");
                meaning = present ? Inv($"present, PASID table @0x{ptr:x}") : "not present";
                break;
            case VtdImageChunkKind.PasidTable:
            {
                index = Inv($"{(entry.Address & 0xFFF) / VtdFormat.PasidEntrySize}");
                meaning = present ? DescribePasidEntry(v, image.ReadUInt64(entry.Address + 8), image.ReadUInt64(entry.Address + 16), config) : "not present";
                break;
            }

            case VtdImageChunkKind.PageTable:
                index = Inv($"{(entry.Address & 0xFFF) / 8}");
                meaning = DescribePte(v, entry.Level);
                break;
            case VtdImageChunkKind.FirstLevelTable:
                index = Inv($"{(entry.Address & 0xFFF) / 8}");
                meaning = DescribeFirstLevelEntry(v, entry.Level, false);
                break;
            case VtdImageChunkKind.NestedFirstLevelTable:
                index = Inv($"{(entry.Address & 0xFFF) / 8}");
                meaning = DescribeFirstLevelEntry(v, entry.Level, true)
                    + (entry.GuestAddress is ulong gpa ? Inv($" (read at GPA 0x{gpa:x} → host 0x{entry.Address:x})") : "");
                break;
            default:
                throw new ArgumentOutOfRangeException(nameof(entry), entry.Kind, "Unknown structure kind.");
        }

        // Within a walk the request's own faults are judged too, each where the unit checks it.
        var fault = request is null
            ? UnitFault(image, config, entry)
            : RequestFaultBefore(image, entry, pasid) ?? UnitFault(image, config, entry) ?? RequestFault(image, config, entry, pasid, request.Value);
        if (fault is (string why, VtdFaultReason reason))
        {
            meaning += Inv($"; {why}: fault 0x{(byte)reason:x2}");
        }

        return new VtdEntryDescription(name, index, entry.Address, v, meaning);
    }

    /// <summary>
    /// Decodes every entry a request reads on its way through <paramref name="image"/>
    /// (<see cref="VtdImage.Path"/>): root entry, context entry, PASID-directory and PASID entries
    /// (scalable mode), then the paging entries down to the leaf: second-level entries (R/W), or
    /// first-level entries (PGTT = 001: P/RW/US/PWT/PCD/A/D/PS/EA/XD named; nested: each with the
    /// guest-physical address read and the host address it went to, then the second-level entries of
    /// the leaf's guest-physical page).
    /// </summary>
    /// <remarks>An entry the unit faults on whatever its capabilities (reserved bits, address bits at or above
    /// the image's HAW, TT = 11, AW 5-7, a reserved PGTT or FLPM) ends "…: fault 0xNN" with the reason the unit
    /// records; what depends on the unit's capabilities is judged only by the overload that takes its
    /// configuration.</remarks>
    /// <param name="image">The image.</param>
    /// <param name="requesterId">bus &lt;&lt; 8 | devfn.</param>
    /// <param name="pasid">PASID, or null for a request without PASID.</param>
    /// <param name="iova">Input address.</param>
    /// <returns>The entries in walk order, decoded; the walk stops where <see cref="VtdImage.Path"/> stops. A request
    /// without PASID to 0xFEEx_xxxx is an interrupt message, which reads no entry: the list is then empty.</returns>
    /// <exception cref="ArgumentNullException"><paramref name="image"/> is null.</exception>
    public static IReadOnlyList<VtdEntryDescription> DescribeWalk(VtdImage image, ushort requesterId, uint? pasid, ulong iova)
    {
        ArgumentNullException.ThrowIfNull(image);
        return Walk(image, null, requesterId, pasid, iova);
    }

    /// <summary>
    /// Decodes a walk as <see cref="DescribeWalk(VtdImage, ushort, uint?, ulong)"/> does, each entry judged
    /// against the unit <paramref name="config"/> describes (see <see cref="DescribeEntry(VtdImage, VtdConfig, VtdImageEntry, ushort, uint?)"/>):
    /// the first entry whose meaning ends "…: fault 0xNN" is where that unit stops, with that reason. Faults the request
    /// itself causes are stated at the entry after which the unit checks them: a PASID in legacy mode (root entry), a
    /// PASID with PASIDE 0 or beyond PDTS and an input beyond the context's AW, MGAW or HAW (context entry), an input
    /// beyond the PASID entry's width or not canonical (PASID entry), and an output in the interrupt window (the leaf,
    /// when its walk grants both read and write, and for first-level leaves user access too).
    /// </summary>
    /// <param name="image">The image.</param>
    /// <param name="config">The unit's configuration.</param>
    /// <param name="requesterId">bus &lt;&lt; 8 | devfn.</param>
    /// <param name="pasid">PASID, or null for a request without PASID.</param>
    /// <param name="iova">Input address.</param>
    /// <returns>The entries in walk order, decoded; the walk stops where <see cref="VtdImage.Path"/> stops.</returns>
    /// <exception cref="ArgumentNullException"><paramref name="image"/> or <paramref name="config"/> is null.</exception>
    public static IReadOnlyList<VtdEntryDescription> DescribeWalk(VtdImage image, VtdConfig config, ushort requesterId, uint? pasid, ulong iova)
    {
        ArgumentNullException.ThrowIfNull(image);
        ArgumentNullException.ThrowIfNull(config);
        return Walk(image, config, requesterId, pasid, iova);
    }

    private static VtdEntryDescription[] Walk(VtdImage image, VtdConfig? config, ushort requesterId, uint? pasid, ulong iova)
    {
        if (IsInterruptMessage(pasid, iova))
        {
            return [];
        }

        IReadOnlyList<VtdImageEntry> path = image.Path(requesterId, pasid, iova);
        var result = new VtdEntryDescription[path.Count];
        var request = new RequestState(iova, true, true, false);
        for (int i = 0; i < path.Count; i++)
        {
            request = After(request, path[i]);
            result[i] = Describe(image, config, path[i], requesterId, pasid, request);
        }

        return result;
    }

    /// <summary>
    /// PGTT and DID of a PASID entry, then the fields of the walk its PGTT names: AW and SLPTPTR
    /// (second level, nested), FLPM, FLPTR and the set first-level controls SRE/ERE/WPE/NXE/SMEP/EAFE
    /// (first level, nested; a nested FLPTR is guest-physical).
    /// </summary>
    internal static string DescribePasidEntry(ulong q0, ulong q1, ulong q2, VtdConfig? config = null)
    {
        int pgtt = (int)((q0 >> VtdFormat.PasidPgttShift) & 7);
        string s = Inv($"PGTT={PgttName(pgtt)} DID {q1 & VtdFormat.PasidDidMask}");
        if (pgtt is VtdFormat.PgttSecondLevel or VtdFormat.PgttNested)
        {
            s += Inv($" AW {AwName((int)((q0 >> VtdFormat.PasidAwShift) & 7), config)}, SLPTPTR 0x{q0 & VtdFormat.PointerMask:x}");
        }

        if (pgtt is VtdFormat.PgttFirstLevel or VtdFormat.PgttNested)
        {
            int flpm = (int)((q2 >> VtdFormat.PasidFlpmShift) & 3);
            string levels = flpm switch { 0 => "4-level", 1 => "5-level", _ => Inv($"reserved ({flpm})") };
            string controls = string.Join(' ', new[]
            {
                (VtdFormat.PasidSre, "SRE"), (VtdFormat.PasidEre, "ERE"), (VtdFormat.PasidWpe, "WPE"),
                (VtdFormat.PasidNxe, "NXE"), (VtdFormat.PasidSmep, "SMEP"), (VtdFormat.PasidEafe, "EAFE"),
            }.Where(f => (q2 & f.Item1) != 0).Select(f => f.Item2));
            s += Inv($"{(pgtt == VtdFormat.PgttNested ? "," : "")} FLPM {levels}, FLPTR {(pgtt == VtdFormat.PgttNested ? "GPA " : "")}0x{FirstLevelView.Flptr(q2):x}")
                + (controls.Length == 0 ? "" : " " + controls);
        }

        return s;
    }

    /// <summary>
    /// The set bits of a first-level (IA-32e) entry by name (P RW US PWT PCD A D PS EA XD) and what it
    /// points at: "P RW US A leaf: 4K page @0x…" or "P RW US A next table @0x…"; nested pointers
    /// and pages are guest-physical ("@GPA 0x…").
    /// </summary>
    internal static string DescribeFirstLevelEntry(ulong pte, int level, bool guestPhysical)
    {
        if ((pte & VtdFormat.FlPresent) == 0)
        {
            return "not present";
        }

        string bits = FirstLevelBits(pte, level);
        string at = guestPhysical ? "@GPA " : "@";
        ulong addr = pte & VtdFormat.FlAddressMask;
        if (FirstLevelView.IsLeaf(pte, level))
        {
            return Inv($"{bits} leaf: {PageSizeName(level)} page {at}0x{FirstLevelView.LeafAddress(pte, level):x}");
        }

        return (pte & VtdFormat.FlPageSize) != 0
            ? Inv($"{bits}: PS reserved at this level")
            : Inv($"{bits} next table {at}0x{addr:x}");
    }

    /// <summary>
    /// The set P/RW/US/PWT/PCD/A/D/PS/EA/XD bits of a first-level entry at <paramref name="level"/>, by
    /// name, space-separated; bit 7 of a PTE (level 1) is PAT, not PS, and bit 12 of a 2M or 1G leaf is PAT.
    /// </summary>
    /// <remarks>Bits are named as written. XD is shown whatever the PASID entry's NXE: whether hardware
    /// faults XD with NXE = 0 is UNVERIFIED (Linux 5.15 writes it so), and the unit model honours XD only
    /// with NXE = 1, so an "XD" here need not stop anything. The G bit (8) is not named: Linux never sets it.</remarks>
    internal static string FirstLevelBits(ulong pte, int level) => string.Join(' ', new[]
    {
        (VtdFormat.FlPresent, "P"), (VtdFormat.FlReadWrite, "RW"), (VtdFormat.FlUser, "US"),
        (VtdFormat.FlWriteThrough, "PWT"), (VtdFormat.FlCacheDisable, "PCD"), (VtdFormat.FlAccessed, "A"),
        (VtdFormat.FlDirty, "D"), (VtdFormat.FlPageSize, level == 1 ? "PAT" : "PS"),
        (level is 2 or 3 && (pte & VtdFormat.FlPageSize) != 0 ? FirstLevelView.LargePagePat : 0, "PAT"), (VtdFormat.FlExtendedAccessed, "EA"),
        (VtdFormat.FlExecuteDisable, "XD"),
    }.Where(f => (pte & f.Item1) != 0).Select(f => f.Item2));

    /// <summary>R/W and what a second-level entry at <paramref name="level"/> points at ("PS reserved at this level" at levels 4 and 5).</summary>
    internal static string DescribePte(ulong pte, int level)
    {
        if ((pte & (VtdFormat.SlRead | VtdFormat.SlWrite)) == 0)
        {
            return "not present";
        }

        ulong addr = pte & VtdFormat.SlAddressMask;
        if (IsLeaf(pte, level))
        {
            return Inv($"{Permissions(pte)} leaf: {PageSizeName(level)} page @0x{addr:x}");
        }

        // PS in a PML4E or PML5E is a reserved bit: the unit faults there instead of following the pointer.
        return (pte & VtdFormat.SlPageSize) != 0
            ? Inv($"{Permissions(pte)}: PS reserved at this level")
            : Inv($"{Permissions(pte)} next table @0x{addr:x}");
    }

    /// <summary>Whether a present second-level entry maps a page (level 1, or PS at levels 2 and 3).</summary>
    internal static bool IsLeaf(ulong pte, int level) => level == 1 || (level <= 3 && (pte & VtdFormat.SlPageSize) != 0);

    /// <summary>"RW", "R" or "W".</summary>
    internal static string Permissions(ulong pte) =>
        ((pte & VtdFormat.SlRead) != 0 ? "R" : "") + ((pte & VtdFormat.SlWrite) != 0 ? "W" : "");

    /// <summary>"4K", "2M", "1G" for leaves at levels 1, 2, 3.</summary>
    internal static string PageSizeName(int level) => level switch
    {
        1 => "4K",
        2 => "2M",
        3 => "1G",
        _ => Inv($"level-{level}"),
    };

    // A request without PASID uses the context entry's RID_PASID in scalable mode.
    private static uint EffectivePasid(VtdImage image, ushort requesterId, uint? pasid) =>
        pasid ?? (image.ContextEntryAddress(requesterId) is ulong ce
            ? (uint)(image.ReadUInt64(ce + 8) & VtdFormat.ScalableContextRidPasidMask)
            : 0);

    private static int Bit(ulong v, ulong mask) => (v & mask) != 0 ? 1 : 0;

    private static string Inv(FormattableString s) => s.ToString(CultureInfo.InvariantCulture);
}
