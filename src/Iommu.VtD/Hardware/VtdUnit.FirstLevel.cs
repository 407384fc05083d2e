using Iommu.Devices;
using System.Runtime.CompilerServices;
using Iommu.Memory;

namespace Iommu.VtD.Hardware;

/// <content>First-level (PGTT = 001) and nested (PGTT = 011) translation.</content>
public sealed partial class VtdUnit
{
    // IOTLB tags of first-stage entries: the PASID with one of these bits, so their keys never equal a
    // second-level entry's of the same (DID, PASID). Both kinds share the cell PASID | FirstLevelTag,
    // which PASID-based IOTLB invalidation retires (it removes both; page-selective never touches
    // second-level entries, all-in-PASID drops those of the PASID too: see ExecuteDescriptor).
    private const uint FirstLevelTag = 1u << 20;
    private const uint NestedTag = 1u << 21;

    // IOTLB value bits of first-stage entries (beside the page-aligned output and IotlbRead): R/W and
    // U/S ANDed over the first-level path, XD ORed, D already set in the leaf, second-level R and W
    // (always set for first-level-only entries).
    private const ulong IotlbFlReadWrite = 1UL << 2;
    private const ulong IotlbFlUser = 1UL << 3;
    private const ulong IotlbFlExecuteDisable = 1UL << 4;
    private const ulong IotlbFlDirty = 1UL << 5;
    private const ulong IotlbSlRead = 1UL << 6;
    private const ulong IotlbSlWrite = 1UL << 7;

    // An A/D update lost to a concurrent change of the entry walks again; after this many tries it faults 0x91.
    private const int AccessedDirtyAttempts = 4;

    private readonly ulong[] _flLeafReserved = new ulong[6];
    private readonly ulong[] _flNonLeafReserved = new ulong[6];

    // Nested (PGTT = 011): the addresses in first-level entries are guest-physical, bounded by the second
    // level's input width (0x74 / 0x84 beyond it), not by HAW, so their bits 51:HAW are not reserved.
    private readonly ulong[] _flNestedLeafReserved = new ulong[6];
    private readonly ulong[] _flNestedNonLeafReserved = new ulong[6];

    private void InitFirstLevelMasks()
    {
        // Address bits 51:HAW in every entry; PS in PML4E/PML5E; the low address bits of large leaves;
        // a 1 GiB leaf without CAP.FL1GP (every bit, as a present entry then always faults 0x72).
        InitFirstLevelMasks(VtdFormat.FlAddressMask & ~_hawMask, _flLeafReserved, _flNonLeafReserved);
        InitFirstLevelMasks(0, _flNestedLeafReserved, _flNestedNonLeafReserved);
    }

    private void InitFirstLevelMasks(ulong address, ulong[] leaf, ulong[] nonLeaf)
    {
        for (int level = 1; level <= 5; level++)
        {
            nonLeaf[level] = address | (level >= 4 ? VtdFormat.FlPageSize : 0);
        }

        leaf[1] = address;
        leaf[2] = address | 0x1F_E000;
        leaf[3] = _config.FirstLevel1GiBPages ? address | 0x3FFF_E000 : ulong.MaxValue;
    }

    // SRE and ERE of the PASID entry, checked before the walk: supervisor requests need SRE (0x5D), execute
    // requests ERE (0x5C).
    private static VtdFaultReason PrivilegeGate(in PasidCacheEntry pe, DmaRequestAttributes attrs)
    {
        if ((attrs & DmaRequestAttributes.Privileged) != 0 && !pe.Has(VtdFormat.PasidSre))
        {
            return VtdFaultReason.SupervisorRequestsDisabled;
        }

        return (attrs & DmaRequestAttributes.Execute) != 0 && !pe.Has(VtdFormat.PasidEre)
            ? VtdFaultReason.ExecuteRequestsDisabled
            : VtdFaultReason.None;
    }

    /// <summary>
    /// The first-stage permission rules over the accumulated bits: a user request
    /// needs U/S everywhere (0x81); a write needs R/W everywhere unless it is a supervisor write with
    /// WPE = 0 (0x85); an execute request faults on XD with NXE = 1 or, supervisor, on a user page with
    /// SMEP = 1 (0x82). Reads need only P.
    /// </summary>
    private static VtdFaultReason FirstLevelPermission(bool user, bool readWrite, bool executeDisable, bool write, DmaRequestAttributes attrs, in PasidCacheEntry pe)
    {
        bool supervisor = (attrs & DmaRequestAttributes.Privileged) != 0;
        if (!supervisor && !user)
        {
            return VtdFaultReason.UserAccessDenied;
        }

        if (write && !readWrite && (!supervisor || pe.Has(VtdFormat.PasidWpe)))
        {
            return VtdFaultReason.ScalableWrite;
        }

        bool execute = (attrs & DmaRequestAttributes.Execute) != 0;
        if (execute && ((executeDisable && pe.Has(VtdFormat.PasidNxe)) || (supervisor && user && pe.Has(VtdFormat.PasidSmep))))
        {
            return VtdFaultReason.ExecuteDenied;
        }

        return VtdFaultReason.None;
    }

    /// <remarks>
    /// <para>Order (the VT-d spec's first-level and nested translation): canonical check for 48 (FLPM = 00) or 57 (FLPM = 01) bits (0x80);
    /// SRE (0x5D) and ERE (0x5C); the IOTLB; the walk (per level: read error 0x73 at the top, 0x70 below,
    /// P = 0 0x71, reserved 0x72); permissions (0x81, 0x85, 0x82); when nested, 0x77 if the second level
    /// does not let a needed accessed/dirty update be written (the updates belong to the first-level
    /// walk, so this comes before its output is translated), then the output through the second level
    /// (0x84, 0x7B/0x78/0x7A, 0x79); the interrupt range (0x87); then the accessed/dirty updates.</para>
    /// <para>Accessed/dirty: A (and EA with EAFE) in every entry used, D in the leaf for a write, each a
    /// compare-and-swap against the value the walk read (a changed entry makes the request walk again).
    /// They are written only once every check has passed, so a request that faults writes nothing
    /// (spec invariant 13 asks that a failed walk set no D; the model sets no A either). The spec's
    /// step order puts A/D before the output checks; the model writes them last so that no fault can
    /// follow them, and keeps only their 0x77 check in the spec's place. 0x90 (update without snooped walk) is not modelled: walks are snooped.</para>
    /// <para>IOTLB: an entry is filled only by a request that succeeded, tagged (DID, PASID, kind) with
    /// the accumulated permissions and whether D is already set. A hit that the request's permissions do
    /// not allow, or a write through a leaf not yet dirty, walks again (as an x86 TLB re-walks before
    /// faulting or setting D), so a hit never faults and the walk decides.</para>
    /// <para>Nested (PGTT = 011): FLPTR and every first-level table address are guest-physical and each
    /// entry is read through the second level (SLPTPTR, AW): beyond its input width 0x74, the second
    /// level's read error 0x7B (top) / 0x78, reserved 0x7A, no read on the top table 0x75 and on lower
    /// ones 0x76. The leaf's guest-physical output is translated with the request's access: beyond the
    /// second level's input width 0x84 (spec: "SL output beyond host width", which the second level's
    /// reserved address bits already fault as 0x7A, so the model gives 0x84 its other reading), not
    /// present or without the access 0x79. Effective permission = first-level rules ∧ second-level R/W;
    /// page size = the smaller of the two stages' pages. These assignments are UNVERIFIED
    /// (taken from the spec's fault-reason table only; neither Linux nor QEMU walks nested tables).</para>
    /// </remarks>
    private VtdTranslation TranslateFirstStage(in FirstStageRequest q, in PasidCacheEntry pe)
    {
        bool nested = pe.Pgtt == VtdFormat.PgttNested;
        int levels = pe.Flpm == 1 ? 5 : 4;
        ulong upper = q.Iova >> (levels == 5 ? 56 : 47);
        if (upper != 0 && upper != (ulong.MaxValue >> (levels == 5 ? 56 : 47)))
        {
            return Fault(q, VtdFaultReason.NonCanonicalAddress);
        }

        VtdFaultReason gate = PrivilegeGate(pe, q.Attrs);
        if (gate != VtdFaultReason.None)
        {
            return Fault(q, gate);
        }

        ulong key1 = IotlbKey1(pe.Did, q.Tag | (nested ? NestedTag : FirstLevelTag));
        bool refused = false;
        if (LookupIotlb(key1, pe.Did, q.Iova, out ulong hit, out int hitLevel))
        {
            _counters.Add(Counters.IotlbHit);
            bool allowed = FirstLevelPermission((hit & IotlbFlUser) != 0, (hit & IotlbFlReadWrite) != 0, (hit & IotlbFlExecuteDisable) != 0, q.Write, q.Attrs, pe) == VtdFaultReason.None
                && (hit & (q.Write ? IotlbSlWrite : IotlbSlRead)) != 0
                && (!q.Write || (hit & IotlbFlDirty) != 0);
            if (allowed)
            {
                ulong pageSize = 1UL << SecondLevelWalker.Shift(hitLevel);
                ulong pa = (hit & VtdFormat.PointerMask) | (q.Iova & (pageSize - 1));
                return InInterruptRange(pa, q.Size)
                    ? Fault(q, VtdFaultReason.ScalableInterruptAddress)
                    : VtdTranslation.Translated(q.Iova, pa, pageSize, FirstStageWritable((hit & IotlbFlReadWrite) != 0, (hit & IotlbSlWrite) != 0, q.Attrs, pe));
            }

            refused = true;
        }
        else
        {
            _counters.Add(Counters.IotlbMiss);
        }

        for (int attempt = 1; ; attempt++)
        {
            VtdTranslation t = WalkFirstStage(q, pe, nested, levels, key1, out bool lostUpdate);
            if (!lostUpdate)
            {
                // A walk past a hit it refused may fill this page at another level (the tables changed
                // under the cached entry) into a free slot, which retires nothing, and change what
                // the IOTLB answers: retire the memo's summaries of the old entry after that fill.
                if (refused)
                {
                    _shortcut.RetireAll();
                }

                return t;
            }

            if (attempt == AccessedDirtyAttempts)
            {
                return Fault(q, VtdFaultReason.FirstLevelAccessedDirtyFailed);
            }
        }
    }

    /// <summary>
    /// <see cref="TryTranslateThroughCaches"/> past a cached first-level or nested PASID entry
    /// (<paramref name="p1"/> its packed word 1): the IOTLB hit <see cref="TranslateFirstStage"/> would serve
    /// to a user, non-execute request (the only kind the memo sees), memoised under <paramref name="gen"/>.
    /// False, with no side effect, wherever that path would fault or walk.
    /// </summary>
    /// <remarks>
    /// The memo's bits say what the IOTLB entry lets such a request do without a walk: Read needs U/S
    /// and second-level R; Write needs U/S, R/W, second-level W and D already set in the leaf (a write
    /// through a clean leaf walks to set D, so it misses the memo); Writable is what the translation
    /// reports (R/W and second-level W, as <see cref="FirstStageWritable"/> for a user request).
    /// </remarks>
    private bool TryFirstStageThroughIotlb(uint gen, ulong requester, int pgtt, ulong p1, uint tag, ulong iova, ulong size, bool write, out ulong pa, out ulong pageSize, out bool writable)
    {
        pa = pageSize = 0;
        writable = false;
        int shift = ((p1 >> (16 + VtdFormat.PasidFlpmShift)) & 3) == 1 ? 56 : 47;
        ulong upper = iova >> shift;
        ushort did = (ushort)p1;
        if ((upper != 0 && upper != ulong.MaxValue >> shift)
            || !LookupIotlb(IotlbKey1(did, tag | (pgtt == VtdFormat.PgttNested ? NestedTag : FirstLevelTag)), did, iova, out ulong hit, out int level))
        {
            return false;
        }

        bool read = (hit & (IotlbFlUser | IotlbSlRead)) == (IotlbFlUser | IotlbSlRead);
        bool writes = (hit & (IotlbFlUser | IotlbFlReadWrite | IotlbSlWrite | IotlbFlDirty)) == (IotlbFlUser | IotlbFlReadWrite | IotlbSlWrite | IotlbFlDirty);
        ulong bytes = 1UL << SecondLevelWalker.Shift(level);
        ulong output = (hit & VtdFormat.PointerMask) | (iova & (bytes - 1));
        if (!(write ? writes : read) || InInterruptRange(output, size))
        {
            return false;
        }

        _counters.AddHits(pasid: true);
        pa = output;
        pageSize = bytes;
        writable = (hit & (IotlbFlReadWrite | IotlbSlWrite)) == (IotlbFlReadWrite | IotlbSlWrite);
        _shortcut.Fill(
            requester,
            iova,
            (output & ~0xFFFUL)
                | (read ? TranslationShortcut.Read : 0)
                | (writes ? TranslationShortcut.Write : 0)
                | (writable ? TranslationShortcut.Writable : 0)
                | TranslationShortcut.Scalable
                | ((ulong)(level - 1) << TranslationShortcut.LevelShift),
            gen);
        return true;
    }

    private VtdTranslation WalkFirstStage(in FirstStageRequest q, in PasidCacheEntry pe, bool nested, int levels, ulong key1, out bool lostUpdate)
    {
        lostUpdate = false;
        bool supervisor = (q.Attrs & DmaRequestAttributes.Privileged) != 0;
        int perLevel = !_config.QemuFirstLevelCheckOrder ? 0
            : (supervisor ? 0 : FirstLevelWalker.CheckUser)
                | (q.Write && (!supervisor || pe.Has(VtdFormat.PasidWpe)) ? FirstLevelWalker.CheckWrite : 0);
        int slLevels = pe.Aw + 2;
        int slWidth = Math.Min(30 + (9 * pe.Aw), _config.MaxGuestAddressWidth);
        FirstLevelWalkTrace trace;
        if (nested)
        {
            var source = new NestedEntrySource(_memory, pe.Slptptr, slLevels, slWidth, _leafReserved, _nonLeafReserved);
            FirstLevelWalker.Walk(source, pe.Flptr, levels, q.Iova, _flNestedLeafReserved, _flNestedNonLeafReserved, perLevel, out trace);
        }
        else
        {
            FirstLevelWalker.Walk(new FirstLevelMemorySource(_memory), pe.Flptr, levels, q.Iova, _flLeafReserved, _flNonLeafReserved, perLevel, out trace);
        }

        VtdFaultReason reason = trace.Status switch
        {
            FirstLevelWalkStatus.Leaf => FirstLevelPermission(trace.User, trace.ReadWrite, trace.ExecuteDisable, q.Write, q.Attrs, pe),
            FirstLevelWalkStatus.SourceFault => trace.Reason,
            FirstLevelWalkStatus.NotPresent => VtdFaultReason.FirstLevelNotPresent,
            FirstLevelWalkStatus.UserDenied => VtdFaultReason.UserAccessDenied,
            FirstLevelWalkStatus.WriteDenied => VtdFaultReason.ScalableWrite,
            _ => VtdFaultReason.FirstLevelReserved,
        };
        if (reason != VtdFaultReason.None)
        {
            return Fault(q, reason);
        }

        // The A/D updates belong to the first-level walk, before its output goes through the second
        // level: an update the second level does not let be written faults 0x77 ahead of 0x84/0x79/0x87
        // (checked here, written last, so that a request that faults still writes nothing).
        ulong accessed = VtdFormat.FlAccessed | (pe.Has(VtdFormat.PasidEafe) ? VtdFormat.FlExtendedAccessed : 0);
        int leaf = trace.Count - 1;
        for (int i = 0; i <= leaf; i++)
        {
            ref FirstLevelWalkEntry e = ref trace.Entries[i];
            ulong needed = accessed | (i == leaf && q.Write ? VtdFormat.FlDirty : 0);
            if ((e.Value & needed) != needed && !e.Writable)
            {
                return Fault(q, VtdFaultReason.FirstLevelEntryWriteDenied);
            }
        }

        int level = trace.Level;
        ulong output = trace.Output;
        bool slRead = true, slWrite = true;
        if (nested)
        {
            ulong gpa = trace.Output | (q.Iova & ((1UL << SecondLevelWalker.Shift(level)) - 1));
            if (!FitsWidth(gpa, q.Size, slWidth))
            {
                return Fault(q, VtdFaultReason.SecondLevelAddressBeyondWidth);
            }

            SecondLevelWalker.Walk(new MemoryEntrySource(_memory), pe.Slptptr, slLevels, gpa, _leafReserved, _nonLeafReserved, out SecondLevelWalkTrace sl);
            reason = sl.Status switch
            {
                SecondLevelWalkStatus.ReadError => sl.Level == slLevels ? VtdFaultReason.SecondLevelPointerInvalid : VtdFaultReason.SecondLevelReadError,
                SecondLevelWalkStatus.Reserved => VtdFaultReason.SecondLevelReserved,
                SecondLevelWalkStatus.Leaf when (q.Write ? sl.Write : sl.Read) => VtdFaultReason.None,
                _ => VtdFaultReason.SecondLevelNestedPermission,
            };
            if (reason != VtdFaultReason.None)
            {
                return Fault(q, reason);
            }

            slRead = sl.Read;
            slWrite = sl.Write;
            level = Math.Min(level, sl.Level);
            output = (sl.Output | (gpa & (sl.PageSize - 1))) & ~((1UL << SecondLevelWalker.Shift(level)) - 1);
        }

        ulong pageSize = 1UL << SecondLevelWalker.Shift(level);
        ulong pa = output | (q.Iova & (pageSize - 1));
        if (InInterruptRange(pa, q.Size))
        {
            return Fault(q, VtdFaultReason.ScalableInterruptAddress);
        }

        for (int i = 0; i <= leaf; i++)
        {
            ref FirstLevelWalkEntry e = ref trace.Entries[i];
            ulong needed = accessed | (i == leaf && q.Write ? VtdFormat.FlDirty : 0);
            if ((e.Value & needed) != needed && !SetBits(e.HostAddress, e.Value, needed))
            {
                lostUpdate = true;
                return default;
            }
        }

        bool dirty = q.Write || (trace.Entries[leaf].Value & VtdFormat.FlDirty) != 0;
        MarkFirstStageDid(pe.Did);
        FillIotlb(
            q.Epoch, key1, pe.Did, q.Tag | FirstLevelTag, q.Iova >> SecondLevelWalker.Shift(level), level,
            output | IotlbRead
                | (trace.ReadWrite ? IotlbFlReadWrite : 0) | (trace.User ? IotlbFlUser : 0)
                | (trace.ExecuteDisable ? IotlbFlExecuteDisable : 0) | (dirty ? IotlbFlDirty : 0)
                | (slRead ? IotlbSlRead : 0) | (slWrite ? IotlbSlWrite : 0));
        return VtdTranslation.Translated(q.Iova, pa, pageSize, FirstStageWritable(trace.ReadWrite, slWrite, q.Attrs, pe));
    }

    // What VtdTranslation.Writable reports: whether a write with the request's privilege would pass.
    private static bool FirstStageWritable(bool readWrite, bool slWrite, DmaRequestAttributes attrs, in PasidCacheEntry pe) =>
        slWrite && (readWrite || ((attrs & DmaRequestAttributes.Privileged) != 0 && !pe.Has(VtdFormat.PasidWpe)));

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static bool InInterruptRange(ulong pa, ulong size) => pa <= InterruptWindowLast && pa + size - 1 >= InterruptWindowBase;

    // One atomic read-modify-write of a paging entry: sets bits if it still holds what the walk read.
    private bool SetBits(ulong hostAddress, ulong seen, ulong bits)
    {
        Span<ulong> table = _memory.Table(hostAddress & ~0xFFFUL);
        return Interlocked.CompareExchange(ref table[(int)((hostAddress & 0xFFF) >> 3)], seen | bits, seen) == seen;
    }

    private VtdTranslation Fault(in FirstStageRequest q, VtdFaultReason reason) =>
        Fault(q.Sid, q.Iova, q.Write, q.HasPasid, q.Pasid, reason, q.Fpd, q.Attrs);

    /// <summary>A first-level or nested request as the scalable path hands it over.</summary>
    private readonly struct FirstStageRequest(
        long epoch, ushort sid, bool hasPasid, uint pasid, uint tag, ulong iova, ulong size, bool write, DmaRequestAttributes attrs, bool fpd)
    {
        public long Epoch { get; } = epoch;

        public ushort Sid { get; } = sid;

        public bool HasPasid { get; } = hasPasid;

        public uint Pasid { get; } = pasid;

        // The effective PASID (RID_PASID or 0 for requests without PASID).
        public uint Tag { get; } = tag;

        public ulong Iova { get; } = iova;

        public ulong Size { get; } = size;

        public bool Write { get; } = write;

        public DmaRequestAttributes Attrs { get; } = attrs;

        public bool Fpd { get; } = fpd;
    }

    /// <summary>Nested: first-level entries at guest-physical addresses, each translated through the second level for reading.</summary>
    private readonly struct NestedEntrySource(PhysicalMemory memory, ulong slRoot, int slLevels, int slWidth, ulong[] leafReserved, ulong[] nonLeafReserved)
        : IFirstLevelEntrySource
    {
        public VtdFaultReason Read(ulong address, bool top, out ulong hostAddress, out ulong entry, out bool writable)
        {
            hostAddress = entry = 0;
            writable = false;
            if (!FitsWidth(address, 8, slWidth))
            {
                return VtdFaultReason.FirstLevelTableBeyondWidth;
            }

            SecondLevelWalker.Walk(new MemoryEntrySource(memory), slRoot, slLevels, address, leafReserved, nonLeafReserved, out SecondLevelWalkTrace sl);
            switch (sl.Status)
            {
                case SecondLevelWalkStatus.ReadError:
                    return sl.Level == slLevels ? VtdFaultReason.SecondLevelPointerInvalid : VtdFaultReason.SecondLevelReadError;
                case SecondLevelWalkStatus.Reserved:
                    return VtdFaultReason.SecondLevelReserved;
                case SecondLevelWalkStatus.Leaf when sl.Read:
                    break;
                default:
                    return top ? VtdFaultReason.FirstLevelRootReadDenied : VtdFaultReason.FirstLevelEntryReadDenied;
            }

            hostAddress = sl.Output | (address & (sl.PageSize - 1));
            if (!memory.Contains(hostAddress, 8))
            {
                return top ? VtdFaultReason.FirstLevelPointerInvalid : VtdFaultReason.FirstLevelReadError;
            }

            entry = memory.ReadUInt64(hostAddress);
            writable = sl.Write;
            return VtdFaultReason.None;
        }
    }
}
