namespace Iommu.VtD.Tests.Hardware;

/// <summary>What a request asks for beyond its address: direction, privilege and instruction fetch.</summary>
internal readonly record struct ReferenceRequestKind(bool Write, bool Supervisor, bool Execute)
{
    public override string ToString() => (Write ? "W" : Execute ? "X" : "R") + (Supervisor ? "/S" : "/U");
}

/// <summary>
/// What <see cref="IndependentWalker.Request"/> makes of one first-level or nested request: the output
/// address, page size and whether a write with the same privilege would pass, or the fault reason (with
/// the other reasons a conforming unit may report instead where the spec fixes no order between two
/// faulting conditions); and the paging-entry words the request must leave in memory (A, EA, D set).
/// </summary>
internal sealed record ReferenceOutcome(
    bool Translated, ulong Pa, ulong PageSize, bool Writable, int Fault, IReadOnlyList<int> Alternatives,
    IReadOnlyList<(ulong Address, ulong Value)> Updates, string Path, bool Undecided = false)
{
    private static readonly (ulong, ulong)[] NoUpdates = [];

    public static ReferenceOutcome Open(string why) => new(false, 0, 0, false, 0, [], NoUpdates, why, Undecided: true);

    public static ReferenceOutcome Faulted(int fault, IReadOnlyList<int> alternatives, string why) => new(false, 0, 0, false, fault, alternatives, NoUpdates, why);

    public bool Accepts(int reason) => reason == Fault || Alternatives.Contains(reason);

    public override string ToString() => Undecided ? "open: " + Path
        : Translated ? $"0x{Pa:x} ({PageSize:x}, writable {Writable}) via {Path}, {Updates.Count} A/D update(s)"
        : $"fault 0x{Fault:x2}{(Alternatives.Count > 0 ? " (or " + string.Join(", ", Alternatives.Select(a => $"0x{a:x2}")) + ")" : "")} at {Path}";
}

/// <content>
/// First-level (PGTT 001) and nested (PGTT 011) requests with their attributes, written from the hardware
/// notes and the VT-d specification's first-level, nested and permission rules: IA-32e paging from FLPTR
/// (4 or 5 levels by FLPM), P at every level, U/S and R/W ANDed and XD ORed over the path and checked on
/// the leaf; SRE and ERE gate supervisor and execute requests; A (and EA with EAFE) is set in every entry
/// used and D in the leaf of a write. Nested: FLPTR, every table pointer and the leaf's output are
/// guest-physical and go through the second level (SLPTPTR, AW): a table read needs second-level R and
/// an A/D write needs second-level W on the page holding the entry; the output needs the request's access.
/// </content>
internal sealed partial class IndependentWalker
{
    // Fault reasons (scalable-mode table of the hardware notes).
    private const int NoExecuteRequests = 0x5C, NoSupervisorRequests = 0x5D;
    private const int FlReadError = 0x70, FlNotPresent = 0x71, FlReserved = 0x72, FlRootReadError = 0x73;
    private const int FlTableBeyondWidth = 0x74, FlRootNotReadable = 0x75, FlTableNotReadable = 0x76, FlEntryNotWritable = 0x77;
    private const int SlReadError = 0x78, SlPermission = 0x79, SlReserved = 0x7A, SlRootInvalid = 0x7B;
    private const int NonCanonical = 0x80, UserDenied = 0x81, ExecuteDenied = 0x82, OutputBeyondWidth = 0x83, SlOutputBeyond = 0x84;
    private const int WriteDenied = 0x85, InterruptAddress = 0x87;

    private enum SlStatus
    {
        Ok,
        ReadErrorTop,
        ReadError,
        NotPresent,
        Reserved,
    }

    /// <summary>
    /// Walks a request of any kind for a scalable-mode device whose PASID entry is first-level or nested;
    /// every other path (legacy, second-level, pass-through, a refused root/context/PASID structure) is left
    /// undecided here (<see cref="Walk"/> covers it).
    /// </summary>
    public ReferenceOutcome Request(ushort sid, uint? pasid, ulong iova, ReferenceRequestKind kind)
    {
        ulong rta = _rtaddr & ~0xFFFUL;
        if (!_enabled || Bits(_rtaddr, 11, 10) != 1 || !Bit(_ecap, 43))
        {
            return ReferenceOutcome.Open("not scalable mode");
        }

        Span<ulong> q = stackalloc ulong[8];
        if (ScalablePasidEntry(rta, sid >> 8, sid & 0xFF, pasid, q, out _) is ReferenceWalk refused)
        {
            return ReferenceOutcome.Open(refused.Path);
        }

        int pgtt = (int)Bits(q[0], 8, 6);
        if (pgtt is not (1 or 3))
        {
            return ReferenceOutcome.Open("PGTT " + pgtt);
        }

        // The privilege and execute bits travel in the PASID prefix: a request without PASID is a user,
        // non-execute request; ER is defined for reads only.
        bool supervisor = pasid is not null && kind.Supervisor;
        bool execute = pasid is not null && kind.Execute && !kind.Write;
        return FirstStage(q[0], q[2], pgtt == 3, iova, kind.Write, supervisor, execute);
    }

    private ReferenceOutcome FirstStage(ulong q0, ulong q2, bool nested, ulong iova, bool write, bool supervisor, bool execute)
    {
        int flpm = (int)Bits(q2, 3, 2);
        int aw = (int)Bits(q0, 4, 2);
        // Nested: FLPTR and the addresses in first-level entries are guest-physical, bounded by the second
        // level's input width (0x74 for a table, 0x84 for the output) rather than by HAW (fault 0x74 is "FL
        // entry address beyond MGAW", which a reserved-bit reading of 51:HAW would leave with nothing to catch).
        ulong flAboveWidth = nested ? ~((1UL << 52) - 1) : AboveHaw;
        if (flpm > 1 || (flpm == 1 && !Bit(_cap, 60)) || (q2 & flAboveWidth) != 0 || (nested && (!SagawHas(aw) || (q0 & AboveHaw) != 0)))
        {
            return ReferenceOutcome.Open("FLPM/FLPTR/AW/SLPTPTR");
        }

        bool sre = Bit(q2, 0), ere = Bit(q2, 1), wpe = Bit(q2, 4), nxe = Bit(q2, 5), smep = Bit(q2, 6), eafe = Bit(q2, 7);
        int levels = flpm == 0 ? 4 : 5;
        int width = levels == 4 ? 48 : 57;
        ulong upper = iova >> (width - 1);
        bool canonical = upper == 0 || upper == ulong.MaxValue >> (width - 1);

        // SRE/ERE are properties of the PASID entry and the canonical check one of the address: the spec
        // orders neither before the other, so either reason is accepted when both apply.
        int gate = supervisor && !sre ? NoSupervisorRequests : execute && !ere ? NoExecuteRequests : 0;
        if (gate != 0)
        {
            return ReferenceOutcome.Faulted(gate, canonical ? [] : [NonCanonical], "PASID entry SRE/ERE");
        }

        if (!canonical)
        {
            return ReferenceOutcome.Faulted(NonCanonical, [], "first level: non-canonical input");
        }

        ulong slRoot = q0 & ~0xFFFUL;
        int slLevels = aw + 2;
        int slWidth = Math.Min(30 + (9 * aw), _mgaw);
        ulong addrMask = ((1UL << 52) - 1) & ~0xFFFUL & ~flAboveWidth;
        ulong aboveHawBelow52 = ((1UL << 52) - 1) & flAboveWidth;
        ulong accessedBits = (1UL << 5) | (eafe ? 1UL << 10 : 0);

        // Where an A/D update would fault 0x77 (the second level denies writes to the page holding an
        // entry that needs A): hardware sets A as it walks, so 0x77 may come ahead of any later fault;
        // the spec does not say whether A is written before or after the lower levels are checked.
        var alternatives = new List<int>();
        var entries = new List<(ulong Host, ulong Value, bool SlWritable)>();
        bool user = true, readWrite = true, executeDisable = false;
        ulong table = q2 & ~0xFFFUL;
        int leafLevel = 0;
        for (int level = levels; level >= 1; level--)
        {
            int shift = 12 + (9 * (level - 1));
            ulong slot = table + (((iova >> shift) & 0x1FF) * 8);
            ulong host = slot;
            bool slWritable = true;
            bool top = level == levels;
            if (nested)
            {
                if (slot >> slWidth != 0)
                {
                    return Fail(FlTableBeyondWidth, "nested: table beyond the second level's width at level " + level);
                }

                SlStatus s = SlWalk(slRoot, slLevels, slot, out ulong slPa, out _, out bool slR, out slWritable, out _);
                switch (s)
                {
                    case SlStatus.ReadErrorTop:
                        return Fail(SlRootInvalid, "nested: SLPTPTR unreadable");
                    case SlStatus.ReadError:
                        return Fail(SlReadError, "nested: second-level read error");
                    case SlStatus.Reserved:
                        return Fail(SlReserved, "nested: second-level reserved bits");
                    case SlStatus.NotPresent:
                        return Fail(top ? FlRootNotReadable : FlTableNotReadable, "nested: table not mapped at level " + level);
                }

                if (!slR)
                {
                    return Fail(top ? FlRootNotReadable : FlTableNotReadable, "nested: table not readable at level " + level);
                }

                host = slPa;
            }

            if (!Read(host, out ulong e))
            {
                return Fail(top ? FlRootReadError : FlReadError, "first level: read error at level " + level);
            }

            if (!Bit(e, 0))
            {
                return Fail(FlNotPresent, "first level: P=0 at level " + level);
            }

            bool ps = Bit(e, 7);
            bool leaf = level == 1 || (ps && level <= 3);
            ulong reserved = aboveHawBelow52;
            if (ps && level >= 4)
            {
                reserved = ulong.MaxValue; // PS is reserved in a PML4E/PML5E
            }
            else if (leaf && level == 3 && !Bit(_cap, 56))
            {
                reserved = ulong.MaxValue; // a 1 GiB page without CAP.FL1GP
            }
            else if (leaf && level > 1)
            {
                reserved |= ((1UL << shift) - 1) & ~0x1FFFUL; // bit 12 is PAT in a large leaf
            }

            if ((e & reserved) != 0)
            {
                return Fail(FlReserved, "first level: reserved bits at level " + level);
            }

            user &= Bit(e, 2);
            readWrite &= Bit(e, 1);
            executeDisable |= Bit(e, 63);
            entries.Add((host, e, slWritable));
            if (nested && !slWritable && (e & accessedBits) != accessedBits && !alternatives.Contains(FlEntryNotWritable))
            {
                alternatives.Add(FlEntryNotWritable);
            }

            if (leaf)
            {
                leafLevel = level;
                break;
            }

            table = e & addrMask;
        }

        // Permissions over the whole path: user requests need U/S; writes need R/W unless supervisor with
        // WPE clear; execute requests fault on XD with NXE, or (supervisor) on a user page with SMEP.
        if (!supervisor && !user)
        {
            return Fail(UserDenied, "first level: U/S=0 for a user request");
        }

        if (write && !readWrite && (!supervisor || wpe))
        {
            return Fail(WriteDenied, "first level: R/W=0 for a write");
        }

        if (execute && ((executeDisable && nxe) || (supervisor && user && smep)))
        {
            return Fail(ExecuteDenied, "first level: no execute permission");
        }

        var updates = new List<(ulong Address, ulong Value)>();
        for (int i = 0; i < entries.Count; i++)
        {
            (ulong host, ulong value, bool slWritable) = entries[i];
            ulong needed = accessedBits | (i == entries.Count - 1 && write ? 1UL << 6 : 0);
            if ((value & needed) != needed)
            {
                if (!slWritable)
                {
                    return ReferenceOutcome.Faulted(FlEntryNotWritable, [], "nested: A/D update on a page the second level keeps read-only");
                }

                updates.Add((host, value | needed));
            }
        }

        ulong flSize = 1UL << (12 + (9 * (leafLevel - 1)));
        ulong output = (entries[^1].Value & addrMask & ~(flSize - 1)) | (iova & (flSize - 1));
        ulong pageSize = flSize;
        bool slWrite = true;
        if (nested)
        {
            // The spec names two reasons for an output beyond what the second level translates: SGN.4.x
            // (address beyond the hardware maximum) and SGN.5; the notes do not settle which one applies.
            if (output >> slWidth != 0)
            {
                return ReferenceOutcome.Faulted(SlOutputBeyond, [OutputBeyondWidth], "nested: output beyond the second level's width");
            }

            SlStatus s = SlWalk(slRoot, slLevels, output, out ulong pa, out ulong slSize, out bool slRead, out slWrite, out _);
            switch (s)
            {
                case SlStatus.ReadErrorTop:
                    return ReferenceOutcome.Faulted(SlRootInvalid, [], "nested output: SLPTPTR unreadable");
                case SlStatus.ReadError:
                    return ReferenceOutcome.Faulted(SlReadError, [], "nested output: second-level read error");
                case SlStatus.Reserved:
                    return ReferenceOutcome.Faulted(SlReserved, [], "nested output: second-level reserved bits");
                case SlStatus.NotPresent:
                    return ReferenceOutcome.Faulted(SlPermission, [], "nested output: not mapped by the second level");
            }

            if (!(write ? slWrite : slRead))
            {
                return ReferenceOutcome.Faulted(SlPermission, [], "nested output: second level denies the access");
            }

            output = pa;
            pageSize = Math.Min(flSize, slSize);
        }

        if (InInterruptWindow(output))
        {
            return ReferenceOutcome.Faulted(InterruptAddress, [], "output in the interrupt window");
        }

        bool writable = slWrite && (readWrite || (supervisor && !wpe));
        return new ReferenceOutcome(true, output, pageSize, writable, 0, [], updates, (nested ? "nested" : "first level") + " L" + leafLevel);

        ReferenceOutcome Fail(int reason, string why) => ReferenceOutcome.Faulted(reason, alternatives.Where(a => a != reason).ToArray(), why);
    }

    // One second-level walk of a guest-physical address in a nested entry: levels = AW + 2; an entry with
    // R = W = 0 is not present (nothing else of it is checked); R and W ANDed over the path.
    private SlStatus SlWalk(ulong table, int levels, ulong gpa, out ulong pa, out ulong size, out bool read, out bool write, out int leafLevel)
    {
        pa = size = 0;
        read = write = true;
        leafLevel = 0;
        ulong addrMask = ((1UL << 52) - 1) & ~0xFFFUL & ((1UL << _haw) - 1);
        ulong aboveHawBelow52 = ((1UL << 52) - 1) & ~((1UL << _haw) - 1);
        for (int level = levels; level >= 1; level--)
        {
            int shift = 12 + (9 * (level - 1));
            if (!Read(table + (((gpa >> shift) & 0x1FF) * 8), out ulong e))
            {
                return level == levels ? SlStatus.ReadErrorTop : SlStatus.ReadError;
            }

            if (!Bit(e, 0) && !Bit(e, 1))
            {
                return SlStatus.NotPresent;
            }

            read &= Bit(e, 0);
            write &= Bit(e, 1);
            bool ps = Bit(e, 7);
            bool leaf = level == 1 || (ps && level <= 3);
            ulong reserved = aboveHawBelow52 | (1UL << 62);
            if (!leaf)
            {
                reserved |= 1UL << 11;
                if (level >= 4 && ps)
                {
                    return SlStatus.Reserved;
                }
            }
            else
            {
                if (!Bit(_ecap, 7))
                {
                    reserved |= 1UL << 11;
                }

                if ((level == 2 && !Bit(_cap, 34)) || (level == 3 && !Bit(_cap, 35)))
                {
                    return SlStatus.Reserved;
                }

                if (level > 1)
                {
                    reserved |= ((1UL << shift) - 1) & ~0xFFFUL;
                }
            }

            if ((e & reserved) != 0)
            {
                return SlStatus.Reserved;
            }

            if (leaf)
            {
                size = 1UL << shift;
                pa = (e & addrMask & ~(size - 1)) | (gpa & (size - 1));
                leafLevel = level;
                return SlStatus.Ok;
            }

            table = e & addrMask;
        }

        throw new InvalidOperationException("unreachable");
    }
}
