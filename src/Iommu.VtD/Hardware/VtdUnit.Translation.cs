using Iommu.Devices;
using Iommu.Internal;
using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;

namespace Iommu.VtD.Hardware;

/// <content>Request translation: legacy and scalable-mode table walks, second-level walks, cache lookups.</content>
public sealed partial class VtdUnit
{
    // IOTLB tag of legacy-mode (PASID-less) translations.
    private const uint NoPasidTag = uint.MaxValue;

    private const ulong InterruptWindowBase = 0xFEE0_0000;
    private const ulong InterruptWindowLast = 0xFEEF_FFFF;

    private readonly ulong _hawMask;
    private readonly ushort _didMask;
    private readonly ulong[] _leafReserved = new ulong[6];
    private readonly ulong[] _nonLeafReserved = new ulong[6];

    // The caches (see TranslationCache): groups are DIDs, plus one pseudo-group after the last DID
    // (scalable context entries, which carry no DID; not-present PASID entries, which match any DID).
    private readonly TranslationCache _contextCache;
    private readonly TranslationCache _pasidCache;
    private readonly TranslationCache _iotlb;
    private readonly PasidTagTable _pasidTags = new(4096);
    private readonly int _noDidGroup;

    // Incremented (interlocked) at the start of every invalidation; a fill whose translation started
    // under another value is dropped (TranslationCache's ordering argument).
    private long _epoch;

    // The memo of the three caches' answers (not a hardware structure; see its remarks).
    private readonly TranslationShortcut _shortcut;
    private int _iotlbLevels;     // bit n set: the IOTLB may hold level-n entries

    // Bit d set: the IOTLB may hold first-stage or nested entries tagged with DID d (set before such a
    // fill, like _iotlbLevels, and never cleared). A page-selective IOTLB invalidation of such a DID
    // drops all of them (see InvalidateIotlb).
    private readonly int[] _firstStageDids = new int[65536 / 32];
    // RTADDR latched by SRTP (table address | TTM, bits 11:10) | TranslationEnabledBit (GSTS.TES): one word, so a
    // request that reads it once sees the root table and the enable of one state. Reset and RestoreState change
    // both at once, with no lock a request takes; read separately, a request could see the enable of one state
    // and the root table of another (a fault neither state gives).
    private ulong _rootTable;
    private const ulong TranslationEnabledBit = 1;

    /// <summary>The RTADDR value latched by the last SRTP (table address | TTM): what the unit walks (the image exporter reads it).</summary>
    internal ulong LatchedRootTable => Volatile.Read(ref _rootTable) & ~TranslationEnabledBit;

    // GSTS.TES as the translation path sees it.
    private bool TranslationEnabled => (Volatile.Read(ref _rootTable) & TranslationEnabledBit) != 0;
    private readonly Counters _counters;
    private long _contextInvalidations, _pasidInvalidations, _iotlbInvalidations;
    private readonly long[] _faultsByReason = new long[256];

    private void InitPagingMasks()
    {
        // Spec reserved bits: bits 51:HAW of the address, bit 62, bit 11 (except SNP in leaves with
        // ECAP.SC), PS in PML4E/PML5E, PS where the page size is unsupported, and the low address
        // bits of large leaves. Bits 63, 61:52, 10, 8 (A without SLADE), 6:2 are not checked.
        ulong common = (VtdFormat.SlAddressMask & ~_hawMask) | VtdFormat.SlReserved62;
        ulong snp = _config.SnoopControl ? 0 : VtdFormat.SlSnoop;
        for (int level = 1; level <= 5; level++)
        {
            _nonLeafReserved[level] = common | VtdFormat.SlSnoop | (level >= 4 ? VtdFormat.SlPageSize : 0);
        }

        _leafReserved[1] = common | snp;
        _leafReserved[2] = _config.SecondLevel2MiBPages ? common | snp | 0x1F_F000 : ulong.MaxValue;
        _leafReserved[3] = _config.SecondLevel1GiBPages ? common | snp | 0x3FFF_F000 : ulong.MaxValue;
    }

    /// <remarks>
    /// Draining: a walk that overlaps an invalidation may have read a table the driver freed after that
    /// invalidation completed and another mapping reused, and so reach a page the request's domain
    /// never mapped. Such a walk's translation is not used: when the epoch moved while it ran, the
    /// request is translated again, after the invalidation (a fault found by such a walk stands: the
    /// entry it met is one the driver was removing). Hardware gets the same from draining (CAP.DRD/DWD):
    /// an invalidation completes only after the requests that were using the old tables.
    /// </remarks>
    private VtdTranslation TranslateCore(ushort sid, bool hasPasid, uint pasid, ulong iova, ulong size, bool write, DmaRequestAttributes attrs = DmaRequestAttributes.None)
    {
        while (true)
        {
            // Read before anything cached is looked at, so every fill is checked against it.
            long epoch = Volatile.Read(ref _epoch);
            VtdTranslation t = TranslateFrom(epoch, sid, hasPasid, pasid, iova, size, write, attrs);
            if (t.Status != VtdTranslationStatus.Translated || Volatile.Read(ref _epoch) == epoch)
            {
                return t;
            }
        }
    }

    private VtdTranslation TranslateFrom(long epoch, ushort sid, bool hasPasid, uint pasid, ulong iova, ulong size, bool write, DmaRequestAttributes attrs)
    {
        ulong rt = Volatile.Read(ref _rootTable);
        if ((rt & TranslationEnabledBit) == 0)
        {
            return VtdTranslation.Translated(iova, iova, 4096, true);
        }

        // Requests without PASID to 0xFEEx_xxxx are interrupt messages, never DMA-remapped.
        if (!hasPasid && iova <= InterruptWindowLast && iova + size - 1 >= InterruptWindowBase)
        {
            return VtdTranslation.Interrupt(iova);
        }

        int mode = (int)((rt >> 10) & 3);
        if (mode == 0)
        {
            return hasPasid
                ? Fault(sid, iova, write, true, pasid, VtdFaultReason.LegacyModePasidRequest, false)
                : TranslateLegacy(epoch, rt & VtdFormat.PointerMask, sid, iova, size, write);
        }

        if (mode == 1 && _config.ScalableMode)
        {
            return TranslateScalable(epoch, rt & VtdFormat.PointerMask, sid, hasPasid, pasid, iova, size, write, attrs);
        }

        return Fault(sid, iova, write, hasPasid, pasid, VtdFaultReason.RootTableAddressInvalid, false);
    }

    /// <summary>
    /// The DMA path's common case: translation enabled, the context (and PASID) entry and the page
    /// cached, the access allowed. Anything else returns false with no side effect, and the caller
    /// runs <see cref="TranslateCore"/>, which then counts, walks, fills and faults as it always does;
    /// on success the hits are counted here, so both routes count a request once.
    /// </summary>
    private bool TryTranslateCached(ushort sid, bool hasPasid, uint pasid, ulong iova, ulong size, bool write, out VtdTranslation result)
    {
        if (TryTranslateCached(sid, hasPasid, pasid, iova, size, write, out ulong pa, out ulong pageSize, out bool writable))
        {
            result = VtdTranslation.Translated(iova, pa, pageSize, writable);
            return true;
        }

        result = default;
        return false;
    }

    /// <inheritdoc cref="TryTranslateCached(ushort, bool, uint, ulong, ulong, bool, out VtdTranslation)"/>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private bool TryTranslateCached(ushort sid, bool hasPasid, uint pasid, ulong iova, ulong size, bool write, out ulong pa, out ulong pageSize, out bool writable)
    {
        // Read before any cache is looked at (TranslationShortcut's ordering argument).
        uint gen = _shortcut.Generation;
        ulong requester = TranslationShortcut.Requester(sid, hasPasid, pasid);
        if (size - 1 < 4096 - (iova & 0xFFF)
            && _shortcut.TryGet(requester, iova, gen, out ulong memo)
            && (memo & (write ? TranslationShortcut.Write : TranslationShortcut.Read)) != 0)
        {
            _shortcut.CountHit(memo);
            pageSize = 1UL << (12 + (9 * (int)((memo >> TranslationShortcut.LevelShift) & 3)));
            pa = TranslationShortcut.OutputAddress(memo, iova);
            writable = (memo & TranslationShortcut.Writable) != 0;
            return true;
        }

        return TryTranslateThroughCaches(gen, requester, sid, hasPasid, pasid, iova, size, write, out pa, out pageSize, out writable);
    }

    // The caches one by one (the memo missed); on success the answer is memoised under gen.
    [MethodImpl(MethodImplOptions.NoInlining)]
    private bool TryTranslateThroughCaches(uint gen, ulong requester, ushort sid, bool hasPasid, uint pasid, ulong iova, ulong size, bool write, out ulong pa, out ulong pageSize, out bool writable)
    {
        pa = pageSize = 0;
        writable = false;
        ulong rt = Volatile.Read(ref _rootTable);
        if ((rt & TranslationEnabledBit) == 0 || (!hasPasid && iova <= InterruptWindowLast && iova + size - 1 >= InterruptWindowBase))
        {
            return false;
        }

        bool scalable;
        ulong c0, c1;
        if ((rt & 0xC00) == 0)
        {
            scalable = false;
            if (hasPasid || !_contextCache.TryGet(sid & _contextCache.SetMask, ContextKey(sid, scalable: false), 0, out c0, out c1)
                || (c0 & 1) == 0 || ((c0 >> 4) & 3) is not (VtdFormat.TtTranslated or VtdFormat.TtTranslatedWithDeviceTlb))
            {
                return false;
            }
        }
        else if ((rt & 0xC00) == 0x400 && _config.ScalableMode)
        {
            scalable = true;
            if (!_contextCache.TryGet(sid & _contextCache.SetMask, ContextKey(sid, scalable: true), 0, out c0, out c1)
                || (c0 & 1) == 0 || (hasPasid && (c0 & 4) == 0))
            {
                return false;
            }
        }
        else
        {
            return false;
        }

        ushort did;
        int aw;
        uint tag = NoPasidTag;
        if (!scalable)
        {
            did = (ushort)c1;
            aw = (int)((c0 >> 6) & 7);
        }
        else
        {
            tag = hasPasid ? pasid : (_config.RidPasidSupport ? (uint)(c1 >> 16) & 0xF_FFFF : 0);
            if ((tag >> VtdFormat.PasidDirectoryShift) >= (1u << ((int)((c0 >> 9) & 7) + 7))
                || !_pasidCache.TryGet(PasidSet(sid, tag), PasidKey(sid, tag), 0, out ulong p0, out ulong p1)
                || (p0 & 1) == 0)
            {
                return false;
            }

            int pgtt = (int)((p0 >> 2) & 7);
            if (pgtt is VtdFormat.PgttFirstLevel or VtdFormat.PgttNested)
            {
                return TryFirstStageThroughIotlb(gen, requester, pgtt, p1, tag, iova, size, write, out pa, out pageSize, out writable);
            }

            if (pgtt != VtdFormat.PgttSecondLevel)
            {
                return false;
            }

            did = (ushort)p1;
            aw = (int)((p0 >> 5) & 7);
        }

        if (!FitsWidth(iova, size, Math.Min(30 + (9 * aw), _config.MaxGuestAddressWidth))
            || !LookupIotlb(IotlbKey1(did, tag), did, iova, out ulong hit, out int level)
            || (hit & (write ? IotlbWrite : IotlbRead)) == 0)
        {
            return false;
        }

        ulong bytes = 1UL << (12 + (9 * (level - 1)));
        ulong output = (hit & VtdFormat.PointerMask) | (iova & (bytes - 1));
        if (output <= InterruptWindowLast && output + size - 1 >= InterruptWindowBase)
        {
            return false;
        }

        _counters.AddHits(scalable);
        pa = output;
        pageSize = bytes;
        writable = (hit & IotlbWrite) != 0;
        _shortcut.Fill(
            requester,
            iova,
            (output & ~0xFFFUL)
                | ((hit & IotlbRead) != 0 ? TranslationShortcut.Read : 0)
                | (writable ? TranslationShortcut.Write | TranslationShortcut.Writable : 0)
                | (scalable ? TranslationShortcut.Scalable : 0)
                | ((ulong)(level - 1) << TranslationShortcut.LevelShift),
            gen);
        return true;
    }

    /// <summary>
    /// The device's context entry: from the context cache, or read from the root and context tables
    /// and filled in (a not-present entry too, under caching mode). Returns the fault reason of a read
    /// that failed, with the FPD it met in <paramref name="ctx"/>.
    /// </summary>
    private VtdFaultReason LookupContext(long epoch, ulong rootTable, ushort sid, bool scalable, out ContextCacheEntry ctx)
    {
        ulong key = ContextKey(sid, scalable);
        int set = sid & _contextCache.SetMask;
        if (_contextCache.TryGet(set, key, 0, out ulong v0, out ulong v1))
        {
            _counters.Add(Counters.ContextHit);
            ctx = ContextCacheEntry.Unpack(v0, v1);
            return VtdFaultReason.None;
        }

        _counters.Add(Counters.ContextMiss);
        VtdFaultReason r = scalable ? ReadScalableContext(rootTable, sid, out ctx) : ReadLegacyContext(rootTable, sid, out ctx);
        if (r == VtdFaultReason.None && (ctx.Present || _config.CachingMode))
        {
            // Legacy entries are tagged with their DID (DID 0 when not present); scalable ones carry
            // none, so their group is never invalidated by DID.
            TranslationCache.Stamp stamp = _contextCache.Snapshot(scalable ? _noDidGroup : ctx.Did, PasidTagTable.None);
            _contextCache.Fill(set, key, 0, ctx.Pack0(), ctx.Pack1(), stamp, ref _epoch, epoch);
        }

        return r;
    }

    private VtdTranslation TranslateLegacy(long epoch, ulong rootTable, ushort sid, ulong iova, ulong size, bool write)
    {
        VtdFaultReason r = LookupContext(epoch, rootTable, sid, scalable: false, out ContextCacheEntry ctx);
        if (r != VtdFaultReason.None)
        {
            return Fault(sid, iova, write, false, 0, r, ctx.Fpd);
        }

        if (!ctx.Present)
        {
            return Fault(sid, iova, write, false, 0, VtdFaultReason.ContextEntryNotPresent, ctx.Fpd);
        }

        if (ctx.Tt == VtdFormat.TtPassThrough)
        {
            return FitsWidth(iova, size, _config.HostAddressWidth)
                ? VtdTranslation.Translated(iova, iova, 4096, true)
                : Fault(sid, iova, write, false, 0, VtdFaultReason.AddressBeyondMgaw, ctx.Fpd);
        }

        if (!FitsWidth(iova, size, Math.Min(30 + (9 * ctx.Aw), _config.MaxGuestAddressWidth)))
        {
            return Fault(sid, iova, write, false, 0, VtdFaultReason.AddressBeyondMgaw, ctx.Fpd);
        }

        return TranslateSecondLevel(new SecondLevelRequest(epoch, sid, hasPasid: false, pasid: 0, NoPasidTag, ctx.Did, ctx.Pointer, ctx.Aw + 2, iova, size, write, ctx.Fpd, scalable: false));
    }

    /// <remarks>
    /// Spec order: root entry (read error 0x8, not present 0x1, reserved 0xA), context entry (read
    /// error 0x9, reserved 0xB, then AW/TT validity 0x3). A not-present context entry is returned
    /// with <see cref="ContextCacheEntry.Present"/> false and its FPD, which applies to fault 0x2.
    /// </remarks>
    /// <summary>
    /// Reads the 64-bit words of one table entry as one fetch, a snapshot of a single moment.
    /// </summary>
    /// <remarks>
    /// Hardware reads an entry in one memory transaction, while software changes it one 64-bit word
    /// at a time: the kernel clears the word with P first when it tears an entry down, and sets P last
    /// when it programs one. Read word by word, a walk could pair the old present word with a DID word
    /// already cleared, and cache a live entry under DID 0, which no invalidation of the entry's real
    /// DID retires: the device then kept translating through a domain it had left (found by the DMA
    /// API race with default-domain detach and reattach). So the words are read again until two reads
    /// agree: each word then held its value from its first read to its second, an interval that
    /// contains the moment between the two passes.
    /// </remarks>
    private void FetchEntry(ulong pa, Span<ulong> words)
    {
        for (int i = 0; i < words.Length; i++)
        {
            words[i] = _memory.ReadUInt64(pa + ((ulong)i * 8));
        }

        bool changed;
        do
        {
            changed = false;
            for (int i = 0; i < words.Length; i++)
            {
                ulong w = _memory.ReadUInt64(pa + ((ulong)i * 8));
                if (w != words[i])
                {
                    words[i] = w;
                    changed = true;
                }
            }
        }
        while (changed);
    }

    private VtdFaultReason ReadLegacyContext(ulong rootTable, ushort sid, out ContextCacheEntry ctx)
    {
        ctx = default;
        ulong rootPa = rootTable + ((ulong)(sid >> 8) * VtdFormat.RootEntrySize);
        if (!_memory.Contains(rootPa, VtdFormat.RootEntrySize))
        {
            return VtdFaultReason.RootTableInvalid;
        }

        Span<ulong> root = stackalloc ulong[2];
        FetchEntry(rootPa, root);
        ulong r0 = root[0], r1 = root[1];
        if ((r0 & VtdFormat.Present) == 0)
        {
            return VtdFaultReason.RootEntryNotPresent;
        }

        if (r1 != 0 || (r0 & (VtdFormat.RootReservedLow | ~_hawMask)) != 0)
        {
            return VtdFaultReason.RootEntryReserved;
        }

        ulong ctxPa = (r0 & VtdFormat.PointerMask) + ((ulong)(sid & 0xFF) * VtdFormat.LegacyContextEntrySize);
        if (!_memory.Contains(ctxPa, VtdFormat.LegacyContextEntrySize))
        {
            return VtdFaultReason.ContextTableInvalid;
        }

        Span<ulong> entry = stackalloc ulong[2];
        FetchEntry(ctxPa, entry);
        ulong c0 = entry[0], c1 = entry[1];
        ctx.Fpd = (c0 & VtdFormat.Fpd) != 0;
        if ((c0 & VtdFormat.Present) == 0)
        {
            return VtdFaultReason.None;
        }

        if ((c0 & (VtdFormat.ContextReservedLow | ~_hawMask)) != 0 || (c1 & VtdFormat.ContextReservedHigh) != 0)
        {
            return VtdFaultReason.ContextEntryReserved;
        }

        int tt = (int)((c0 >> VtdFormat.ContextTtShift) & 3);
        int aw = (int)(c1 & VtdFormat.ContextAwMask);
        bool ttOk = tt switch
        {
            VtdFormat.TtTranslated => true,
            VtdFormat.TtTranslatedWithDeviceTlb => _config.DeviceTlb, // ECAP.DT; untranslated requests walk as TT = 00
            VtdFormat.TtPassThrough => _config.PassThrough,
            _ => false,
        };
        if (!ttOk || !_config.SupportsAw(aw))
        {
            return VtdFaultReason.ContextEntryInvalid;
        }

        ctx.Present = true;
        ctx.Tt = (byte)tt;
        ctx.Aw = (byte)aw;
        ctx.Did = (ushort)((c1 >> VtdFormat.ContextDidShift) & _didMask);
        ctx.Pointer = c0 & VtdFormat.PointerMask;
        return VtdFaultReason.None;
    }

    private VtdTranslation TranslateScalable(long epoch, ulong rootTable, ushort sid, bool hasPasid, uint pasid, ulong iova, ulong size, bool write, DmaRequestAttributes attrs)
    {
        bool ats = (attrs & AtsTranslationRequest) != 0;
        attrs &= ~AtsTranslationRequest;

        // What the fault record says of the request: AT = translation request for ATS (RecordFault).
        DmaRequestAttributes mark = ats ? AtsTranslationRequest : DmaRequestAttributes.None;
        VtdFaultReason r = LookupContext(epoch, rootTable, sid, scalable: true, out ContextCacheEntry ctx);
        if (r != VtdFaultReason.None)
        {
            return Fault(sid, iova, write, hasPasid, pasid, r, ctx.Fpd, mark);
        }

        if (!ctx.Present)
        {
            return Fault(sid, iova, write, hasPasid, pasid, VtdFaultReason.ScalableContextEntryNotPresent, ctx.Fpd, mark);
        }

        if (ats && !ctx.DeviceTlbEnable)
        {
            return Fault(sid, iova, write, hasPasid, pasid, VtdFaultReason.DeviceTlbDisabled, ctx.Fpd, attrs | mark);
        }

        if (hasPasid && !ctx.PasidEnable)
        {
            return Fault(sid, iova, write, true, pasid, VtdFaultReason.PasidDisabled, ctx.Fpd, mark);
        }

        // Requests without PASID use RID_PASID (ECAP.RPS) or PASID 0. A PASID wider than ECAP.PSS is an error of the
        // request (the spec names no code for it): reported as beyond the directory, the nearest condition it defines.
        uint effective = hasPasid ? pasid : (_config.RidPasidSupport ? ctx.RidPasid : 0);
        if ((effective >> VtdFormat.PasidDirectoryShift) >= (1u << (ctx.Pdts + 7)) || BeyondPss(hasPasid, pasid))
        {
            return Fault(sid, iova, write, hasPasid, pasid, VtdFaultReason.PasidBeyondDirectory, ctx.Fpd, mark);
        }

        ulong pkey = PasidKey(sid, effective);
        int pset = PasidSet(sid, effective);
        PasidCacheEntry pe;
        if (_pasidCache.TryGet(pset, pkey, 0, out ulong p0, out ulong p1))
        {
            _counters.Add(Counters.PasidHit);
            pe = PasidCacheEntry.Unpack(p0, p1);
        }
        else
        {
            _counters.Add(Counters.PasidMiss);
            r = ReadPasidEntry(ctx.Pointer, effective, out pe);
            if (r != VtdFaultReason.None)
            {
                return Fault(sid, iova, write, hasPasid, pasid, r, ctx.Fpd || pe.Fpd, mark);
            }

            if (pe.Present || _config.CachingMode)
            {
                // A not-present entry matches any DID: it lives in the pseudo-group and its PASID's pseudo-cell.
                int group = pe.Present ? pe.Did : _noDidGroup;
                TranslationCache.Stamp stamp = _pasidCache.Snapshot(group, _pasidTags.GetOrAdd(group, effective));
                _pasidCache.Fill(pset, pkey, 0, pe.Pack0(), pe.Pack1(), stamp, ref _epoch, epoch);
            }
        }

        bool fpd = ctx.Fpd || pe.Fpd;
        if (!pe.Present)
        {
            return Fault(sid, iova, write, hasPasid, pasid, pe.NotPresentReason, fpd, attrs | mark);
        }

        if (ats)
        {
            return TranslateForAts(epoch, sid, hasPasid, pasid, effective, iova, size, write, attrs, fpd, pe);
        }

        return TranslatePasidEntry(epoch, sid, hasPasid, pasid, effective, iova, size, write, attrs, fpd, pe);
    }

    // The walk a PASID entry selects; ATS translation requests run it with fault recording off (TranslateForAts).
    private VtdTranslation TranslatePasidEntry(long epoch, ushort sid, bool hasPasid, uint pasid, uint effective, ulong iova, ulong size, bool write, DmaRequestAttributes attrs, bool fpd, in PasidCacheEntry pe)
    {
        if (pe.Pgtt is VtdFormat.PgttFirstLevel or VtdFormat.PgttNested)
        {
            return TranslateFirstStage(new FirstStageRequest(epoch, sid, hasPasid, pasid, effective, iova, size, write, attrs, fpd), pe);
        }

        // SRE and ERE gate every translation type; first-stage walks check them after the canonical check.
        VtdFaultReason gate = PrivilegeGate(pe, attrs);
        if (gate != VtdFaultReason.None)
        {
            return Fault(sid, iova, write, hasPasid, pasid, gate, fpd, attrs);
        }

        if (pe.Pgtt == VtdFormat.PgttPassThrough)
        {
            return FitsWidth(iova, size, _config.HostAddressWidth)
                ? VtdTranslation.Translated(iova, iova, 4096, true)
                : Fault(sid, iova, write, hasPasid, pasid, VtdFaultReason.ScalableAddressBeyondWidth, fpd);
        }

        if (!FitsWidth(iova, size, Math.Min(30 + (9 * pe.Aw), _config.MaxGuestAddressWidth)))
        {
            return Fault(sid, iova, write, hasPasid, pasid, VtdFaultReason.ScalableAddressBeyondWidth, fpd);
        }

        return TranslateSecondLevel(new SecondLevelRequest(epoch, sid, hasPasid, pasid, effective, pe.Did, pe.Slptptr, pe.Aw + 2, iova, size, write, fpd, scalable: true));
    }

    /// <remarks>
    /// Scalable root entry: only the half selected by devfn is checked (present, then reserved bits).
    /// QEMU 7.2 checks reserved bits of both halves and reports legacy fault codes throughout.
    /// Context entry reserved bits include DTE (no ECAP.DT), PASIDE (without ECAP.PASID), PRE (no
    /// ECAP.PRS), RID_PRIV (no ECAP.RPRIVS) and a non-zero RID_PASID without ECAP.RPS.
    /// </remarks>
    private VtdFaultReason ReadScalableContext(ulong rootTable, ushort sid, out ContextCacheEntry ctx)
    {
        ctx = default;
        ctx.Scalable = true;
        int devfn = sid & 0xFF;
        ulong rootPa = rootTable + ((ulong)(sid >> 8) * VtdFormat.RootEntrySize);
        if (!_memory.Contains(rootPa, VtdFormat.RootEntrySize))
        {
            return VtdFaultReason.ScalableRootTableReadError;
        }

        ulong half = _memory.ReadUInt64(rootPa + (devfn >= 128 ? 8UL : 0));
        if ((half & VtdFormat.Present) == 0)
        {
            return VtdFaultReason.ScalableRootEntryNotPresent;
        }

        if ((half & (VtdFormat.RootReservedLow | ~_hawMask)) != 0)
        {
            return VtdFaultReason.ScalableRootEntryReserved;
        }

        ulong ctxPa = (half & VtdFormat.PointerMask) + ((ulong)(devfn & 0x7F) * VtdFormat.ScalableContextEntrySize);
        if (!_memory.Contains(ctxPa, VtdFormat.ScalableContextEntrySize))
        {
            return VtdFaultReason.ScalableContextTableReadError;
        }

        Span<ulong> entry = stackalloc ulong[4];
        FetchEntry(ctxPa, entry);
        ulong c0 = entry[0], c1 = entry[1], c2 = entry[2], c3 = entry[3];
        ctx.Fpd = (c0 & VtdFormat.Fpd) != 0;
        if ((c0 & VtdFormat.Present) == 0)
        {
            return VtdFaultReason.None;
        }

        ulong reservedLow = VtdFormat.ScalableContextReservedLow | ~_hawMask
            | (_config.DeviceTlb ? 0 : VtdFormat.ScalableContextDte)
            | (_config.PageRequests ? 0 : VtdFormat.ScalableContextPre)
            | (_config.PasidSupport ? 0 : VtdFormat.ScalableContextPaside);
        ulong reservedHigh = VtdFormat.ScalableContextReservedHigh | VtdFormat.ScalableContextRidPriv
            | (_config.RidPasidSupport ? 0 : VtdFormat.ScalableContextRidPasidMask);
        if ((c0 & reservedLow) != 0 || (c1 & reservedHigh) != 0 || c2 != 0 || c3 != 0)
        {
            return VtdFaultReason.ScalableContextEntryReserved;
        }

        ctx.Present = true;
        ctx.Pointer = c0 & VtdFormat.PointerMask;
        ctx.Pdts = (byte)((c0 >> VtdFormat.ScalableContextPdtsShift) & 7);
        ctx.PasidEnable = (c0 & VtdFormat.ScalableContextPaside) != 0;
        ctx.DeviceTlbEnable = (c0 & VtdFormat.ScalableContextDte) != 0;
        ctx.PageRequestEnable = (c0 & VtdFormat.ScalableContextPre) != 0;
        ctx.RidPasid = (uint)(c1 & VtdFormat.ScalableContextRidPasidMask);
        return VtdFaultReason.None;
    }

    /// <remarks>
    /// Directory entry: read error 0x50, not present 0x51 (qualified, its FPD applies), reserved 0x52.
    /// PASID entry: read error 0x58, not present 0x59, reserved 0x5A, then PGTT/AW/FLPM validity 0x5B.
    /// PGTT 001 needs ECAP.FLTS, 010 ECAP.SLTS, 011 ECAP.NEST, 100 ECAP.PT; FLPM = 01 needs CAP.FL5LP
    /// (checked for 001 and 011 only). Reserved bits: q0 11:10, q1 22:16, q2 11:8, q3–q7, pointer bits
    /// at or above HAW, SLADE without ECAP.SLADS (never reported), and SRE / ERE / EAFE without ECAP.SRS / ERS / EAFS. The caching fields of q1
    /// (PWSNP, PGSNP, CD, EMTE, EMT, PWT, PCD, PAT) are accepted and not interpreted: no memory types
    /// are modelled. QEMU 7.2 reports all of these as 0x58, checks no reserved bits and walks PGTT
    /// 001/011 as second level.
    /// </remarks>
    private VtdFaultReason ReadPasidEntry(ulong directory, uint pasid, out PasidCacheEntry pe)
    {
        pe = default;
        ulong dirPa = directory + ((ulong)(pasid >> VtdFormat.PasidDirectoryShift) * VtdFormat.PasidDirectoryEntrySize);
        if (!_memory.Contains(dirPa, VtdFormat.PasidDirectoryEntrySize))
        {
            return VtdFaultReason.PasidDirectoryReadError;
        }

        ulong d = _memory.ReadUInt64(dirPa);
        pe.Fpd = (d & VtdFormat.Fpd) != 0;
        if ((d & VtdFormat.Present) == 0)
        {
            pe.NotPresentReason = VtdFaultReason.PasidDirectoryEntryNotPresent;
            return VtdFaultReason.None;
        }

        if ((d & (VtdFormat.PasidDirectoryReserved | ~_hawMask)) != 0)
        {
            return VtdFaultReason.PasidDirectoryEntryReserved;
        }

        ulong pePa = (d & VtdFormat.PointerMask) + ((pasid & VtdFormat.PasidTableIndexMask) * VtdFormat.PasidEntrySize);
        if (!_memory.Contains(pePa, VtdFormat.PasidEntrySize))
        {
            return VtdFaultReason.PasidTableReadError;
        }

        Span<ulong> entry = stackalloc ulong[8];
        FetchEntry(pePa, entry);
        ulong q0 = entry[0];
        pe.Fpd |= (q0 & VtdFormat.Fpd) != 0;
        if ((q0 & VtdFormat.Present) == 0)
        {
            pe.NotPresentReason = VtdFaultReason.PasidEntryNotPresent;
            return VtdFaultReason.None;
        }

        ulong q1 = entry[1];
        ulong q2 = entry[2];
        ulong rest = entry[3] | entry[4] | entry[5] | entry[6] | entry[7];

        // FLPTR is host-physical (its bits at or above HAW are reserved), except under nested translation,
        // where it is guest-physical and bounded by the second level's input width instead (0x74 when the
        // walk reads it). SRE, ERE and EAFE are reserved without the capability that gives them meaning.
        int pgtt = (int)((q0 >> VtdFormat.PasidPgttShift) & 7);
        ulong flptrReserved = pgtt == VtdFormat.PgttNested ? ~(VtdFormat.FlAddressMask | 0xFFF) : ~_hawMask;
        ulong q2Reserved = VtdFormat.PasidReservedQ2 | flptrReserved
            | (_config.SupervisorRequests ? 0 : VtdFormat.PasidSre)
            | (_config.ExecuteRequests ? 0 : VtdFormat.PasidEre)
            | (_config.ExtendedAccessedFlag ? 0 : VtdFormat.PasidEafe);
        // SLADE is reserved without ECAP.SLADS, which this model never reports (no second-level A/D).
        if ((q0 & (VtdFormat.PasidReservedQ0 | VtdFormat.PasidSlade | ~_hawMask)) != 0 || (q1 & VtdFormat.PasidReservedQ1) != 0
            || (q2 & q2Reserved) != 0 || rest != 0)
        {
            return VtdFaultReason.PasidEntryReserved;
        }

        int aw = (int)((q0 >> VtdFormat.PasidAwShift) & 7);
        int flpm = (int)((q2 >> VtdFormat.PasidFlpmShift) & 3);
        bool pgttOk = pgtt switch
        {
            VtdFormat.PgttFirstLevel => _config.FirstLevelTranslation,
            VtdFormat.PgttSecondLevel => _config.SecondLevelTranslation,
            VtdFormat.PgttNested => _config.NestedTranslation,
            VtdFormat.PgttPassThrough => _config.PassThrough,
            _ => false,
        };

        // FLPM 00 (4-level) always, 01 (5-level) with CAP.FL5LP; it matters only where a first level is walked.
        bool flpmOk = pgtt is not (VtdFormat.PgttFirstLevel or VtdFormat.PgttNested)
            || flpm == 0 || (flpm == 1 && _config.FirstLevel5LevelPaging);
        if (!pgttOk || !flpmOk || !_config.SupportsAw(aw))
        {
            return VtdFaultReason.PasidEntryInvalid;
        }

        pe.Present = true;
        pe.Pgtt = (byte)pgtt;
        pe.Aw = (byte)aw;
        pe.Did = (ushort)(q1 & VtdFormat.PasidDidMask & _didMask);
        pe.Slptptr = q0 & VtdFormat.PointerMask;
        pe.Flptr = q2 & VtdFormat.PointerMask;
        pe.Flags = (byte)((q2 & (VtdFormat.PasidSre | VtdFormat.PasidEre | VtdFormat.PasidWpe | VtdFormat.PasidNxe | VtdFormat.PasidSmep | VtdFormat.PasidEafe))
            | ((ulong)flpm << VtdFormat.PasidFlpmShift));
        return VtdFaultReason.None;
    }

    /// <remarks>
    /// Walk order per level: memory error (top level: invalid pointer 0x3/0x7B, below: 0x7/0x78),
    /// R=W=0 (not present: 0x5/0x85 for writes, 0x6/0x86 for reads), reserved bits (0xC/0x7A).
    /// Permissions are the AND over the path and are checked at the leaf. The leaf is cached with
    /// its permissions even when this request lacks one, and a later IOTLB hit is checked against
    /// the cached permissions and faults the same way (QEMU 7.2 instead refuses such a hit without
    /// recording a VT-d fault). With caching mode a not-present entry is cached as a negative entry
    /// covering that entry's whole range. The walk itself is <see cref="SecondLevelWalker"/>'s.
    /// </remarks>
    private VtdTranslation TranslateSecondLevel(in SecondLevelRequest q)
    {
        VtdFaultReason permission = q.Write
            ? (q.Scalable ? VtdFaultReason.ScalableWrite : VtdFaultReason.Write)
            : (q.Scalable ? VtdFaultReason.ScalableRead : VtdFaultReason.Read);

        ulong key1 = IotlbKey1(q.Did, q.Tag);
        if (LookupIotlb(key1, q.Did, q.Iova, out ulong hit, out int hitLevel))
        {
            _counters.Add(Counters.IotlbHit);
            if ((hit & (q.Write ? IotlbWrite : IotlbRead)) == 0)
            {
                return Fault(q, permission);
            }

            return FinishSecondLevel(q, hit & VtdFormat.PointerMask, hitLevel, (hit & IotlbWrite) != 0);
        }

        _counters.Add(Counters.IotlbMiss);
        SecondLevelWalker.Walk(new MemoryEntrySource(_memory), q.Root, q.Levels, q.Iova, _leafReserved, _nonLeafReserved, out SecondLevelWalkTrace trace);
        int level = trace.Level;
        switch (trace.Status)
        {
            case SecondLevelWalkStatus.ReadError:
                VtdFaultReason reason = level == q.Levels
                    ? (q.Scalable ? VtdFaultReason.SecondLevelPointerInvalid : VtdFaultReason.ContextEntryInvalid)
                    : (q.Scalable ? VtdFaultReason.SecondLevelReadError : VtdFaultReason.PagingEntryInvalid);
                return Fault(q, reason);

            case SecondLevelWalkStatus.NotPresent:
                if (_config.CachingMode)
                {
                    FillIotlb(q.Epoch, key1, q.Did, q.Tag, q.Iova >> SecondLevelWalker.Shift(level), level, 0);
                }

                return Fault(q, permission);

            case SecondLevelWalkStatus.Reserved:
                return Fault(q, q.Scalable ? VtdFaultReason.SecondLevelReserved : VtdFaultReason.PagingEntryReserved);

            default:
                FillIotlb(q.Epoch, key1, q.Did, q.Tag, q.Iova >> SecondLevelWalker.Shift(level), level, trace.Output | (trace.Read ? IotlbRead : 0) | (trace.Write ? IotlbWrite : 0));
                if (!(q.Write ? trace.Write : trace.Read))
                {
                    return Fault(q, permission);
                }

                return FinishSecondLevel(q, trace.Output, level, trace.Write);
        }
    }

    private VtdTranslation FinishSecondLevel(in SecondLevelRequest q, ulong outputBase, int level, bool writable)
    {
        ulong pageSize = 1UL << SecondLevelWalker.Shift(level);
        ulong pa = outputBase | (q.Iova & (pageSize - 1));
        if (pa <= InterruptWindowLast && pa + q.Size - 1 >= InterruptWindowBase)
        {
            return Fault(q, q.Scalable ? VtdFaultReason.ScalableInterruptAddress : VtdFaultReason.InterruptAddress);
        }

        return VtdTranslation.Translated(q.Iova, pa, pageSize, writable);
    }

    private VtdTranslation Fault(in SecondLevelRequest q, VtdFaultReason reason) =>
        Fault(q.Sid, q.Iova, q.Write, q.HasPasid, q.Pasid, reason, q.Fpd);

    // IOTLB value: page-aligned output address | R | W; R = W = 0 is a cached not-present entry.
    private const ulong IotlbRead = 1;
    private const ulong IotlbWrite = 2;

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static ulong IotlbKey1(ushort did, uint tag) => did | ((ulong)tag << 16);

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static ulong IotlbKey0(ulong pageNumber, int level) => (pageNumber << 3) | (uint)level;

    // The IOTLB set of a page: page number plus fixed multiples of DID and level (VtdConfig.IotlbCapacity).
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private int IotlbSet(ushort did, ulong pageNumber, int level) =>
        (int)((pageNumber + ((ulong)did * 0x3B) + ((ulong)level * 0x9E5)) & (ulong)_iotlb.SetMask);

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private bool LookupIotlb(ulong key1, ushort did, ulong iova, out ulong value, out int level)
    {
        int levels = Volatile.Read(ref _iotlbLevels);
        for (level = 1; levels >> level != 0; level++)
        {
            ulong page = iova >> (12 + (9 * (level - 1)));
            if ((levels & (1 << level)) != 0
                && _iotlb.TryGet(IotlbSet(did, page, level), IotlbKey0(page, level), key1, out value))
            {
                return true;
            }
        }

        value = 0;
        return false;
    }

    private void FillIotlb(long epoch, ulong key1, ushort did, uint tag, ulong pageNumber, int level, ulong value)
    {
        // Announce the level before the entry can be seen; a global invalidation clears the bits and
        // retires every entry, so a bit cleared under a fill only costs that entry a later miss.
        if ((Volatile.Read(ref _iotlbLevels) & (1 << level)) == 0)
        {
            Interlocked.Or(ref _iotlbLevels, 1 << level);
        }

        int cell = tag == NoPasidTag ? PasidTagTable.None : _pasidTags.GetOrAdd(did, tag);
        TranslationCache.Stamp stamp = _iotlb.Snapshot(did, cell);
        _iotlb.Fill(IotlbSet(did, pageNumber, level), IotlbKey0(pageNumber, level), key1, value, 0, stamp, ref _epoch, epoch);
    }

    private static ulong ContextKey(ushort sid, bool scalable) => sid | 0x1_0000UL | (scalable ? 0x2_0000UL : 0);

    private static ulong PasidKey(ushort sid, uint pasid) => sid | ((ulong)pasid << 16) | (1UL << 40);

    // The PASID-cache set: source id plus a fixed multiple of the PASID (VtdConfig.PasidCacheCapacity).
    private int PasidSet(ushort sid, uint pasid) => (int)((sid + (pasid * 0x2Fu)) & (uint)_pasidCache.SetMask);

    // ECAP.PSS: requests-with-PASID whose PASID is wider than PSS + 1 bits are treated as errors.
    private bool BeyondPss(bool hasPasid, uint pasid) => hasPasid && (pasid >> _config.PasidWidth) != 0;

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static bool FitsWidth(ulong iova, ulong size, int width) =>
        width >= 64 || ((iova + size - 1) >> width) == 0;

    private struct ContextCacheEntry
    {
        public bool Scalable;
        public bool Present;
        public bool Fpd;
        public byte Tt;
        public byte Aw;
        public byte Pdts;
        public bool PasidEnable;
        public ushort Did;         // legacy only; 0 for not-present entries (caching mode)
        public uint RidPasid;
        public bool DeviceTlbEnable;   // scalable DTE
        public bool PageRequestEnable; // scalable PRE
        public ulong Pointer;      // SLPTPTR (legacy) or PASIDDIRPTR (scalable)

        // Word 0: pointer | present | FPD | PASIDE | scalable | TT (5:4) | AW (8:6) | PDTS (11:9); word 1: DID | RID_PASID << 16 | DTE << 40 | PRE << 41.
        public readonly ulong Pack0() =>
            Pointer | (Present ? 1UL : 0) | (Fpd ? 2UL : 0) | (PasidEnable ? 4UL : 0) | (Scalable ? 8UL : 0)
            | ((ulong)Tt << 4) | ((ulong)Aw << 6) | ((ulong)Pdts << 9);

        public readonly ulong Pack1() => Did | ((ulong)RidPasid << 16) | (DeviceTlbEnable ? 1UL << 40 : 0) | (PageRequestEnable ? 1UL << 41 : 0);

        public static ContextCacheEntry Unpack(ulong w0, ulong w1) => new()
        {
            Pointer = w0 & VtdFormat.PointerMask,
            Present = (w0 & 1) != 0,
            Fpd = (w0 & 2) != 0,
            PasidEnable = (w0 & 4) != 0,
            Scalable = (w0 & 8) != 0,
            Tt = (byte)((w0 >> 4) & 3),
            Aw = (byte)((w0 >> 6) & 7),
            Pdts = (byte)((w0 >> 9) & 7),
            Did = (ushort)w1,
            RidPasid = (uint)(w1 >> 16) & 0xF_FFFF,
            DeviceTlbEnable = (w1 & (1UL << 40)) != 0,
            PageRequestEnable = (w1 & (1UL << 41)) != 0,
        };
    }

    private struct PasidCacheEntry
    {
        public bool Present;
        public VtdFaultReason NotPresentReason;
        public bool Fpd;           // directory FPD | entry FPD
        public byte Pgtt;
        public byte Aw;
        public ushort Did;
        public ulong Slptptr;
        public ulong Flptr;        // below 2^52 (bits at or above HAW are reserved)
        public byte Flags;         // q2 7:0: SRE, ERE, FLPM, WPE, NXE, SMEP, EAFE at their q2 positions

        public readonly bool Has(ulong q2Bit) => (Flags & q2Bit) != 0;

        public readonly int Flpm => (Flags >> VtdFormat.PasidFlpmShift) & 3;

        // Word 0: SLPTPTR | present | FPD | PGTT (4:2) | AW (7:5); word 1: DID | (not present) reason << 16
        // or (present) q2 flags << 16 | FLPTR >> 12 << 24.
        public readonly ulong Pack0() =>
            Slptptr | (Present ? 1UL : 0) | (Fpd ? 2UL : 0) | ((ulong)Pgtt << 2) | ((ulong)Aw << 5);

        public readonly ulong Pack1() => Did
            | (Present ? ((ulong)Flags << 16) | (Flptr >> 12 << 24) : (ulong)(byte)NotPresentReason << 16);

        public static PasidCacheEntry Unpack(ulong w0, ulong w1)
        {
            bool present = (w0 & 1) != 0;
            return new()
            {
                Slptptr = w0 & VtdFormat.PointerMask,
                Present = present,
                Fpd = (w0 & 2) != 0,
                Pgtt = (byte)((w0 >> 2) & 7),
                Aw = (byte)((w0 >> 5) & 7),
                Did = (ushort)w1,
                NotPresentReason = present ? VtdFaultReason.None : (VtdFaultReason)(byte)(w1 >> 16),
                Flags = present ? (byte)(w1 >> 16) : (byte)0,
                Flptr = present ? w1 >> 24 << 12 : 0,
            };
        }
    }

    /// <summary>
    /// The cache hit and miss counters, striped by thread (<see cref="ThreadStripe"/>) so that translating
    /// threads do not share a cache line: plain increments of the calling thread's stripe (no interlocked
    /// operation). A count can be lost only when two threads whose stripes coincide increment the same
    /// counter at the same instant. Requests the memo served are counted by the memo
    /// (<see cref="TranslationShortcut.CountHit"/>, on the device's DMA path too) and added in here.
    /// </summary>
    private sealed unsafe class Counters
    {
        public const int ContextHit = 0;
        public const int ContextMiss = 1;
        public const int PasidHit = 2;
        public const int PasidMiss = 3;
        public const int IotlbHit = 4;
        public const int IotlbMiss = 5;

        // Requests the caches served whole (AddHits), by mode: one increment for what the caches would have
        // counted as two or three hits; Sum adds them back into the hits they stand for.
        private const int WholeLegacy = 6;
        private const int WholeScalable = 7;

        private readonly TranslationShortcut _memo;
        private readonly long[] _counts; // pinned; keeps _stripes valid
        private readonly long* _stripes;

        public Counters(TranslationShortcut memo)
        {
            _memo = memo;
            _counts = ThreadStripe.Allocate(out _stripes);
        }

        [MethodImpl(MethodImplOptions.AggressiveInlining)]
        public void Add(int counter) => _stripes[ThreadStripe.Offset + (nuint)counter]++;

        // A request served entirely from the caches: context (and PASID) and IOTLB hits.
        [MethodImpl(MethodImplOptions.AggressiveInlining)]
        public void AddHits(bool pasid) => _stripes[ThreadStripe.Offset + (nuint)(pasid ? WholeScalable : WholeLegacy)]++;

        public long Sum(int counter)
        {
            long legacy = ThreadStripe.Sum(_stripes, WholeLegacy) + _memo.Hits(scalable: false);
            long scalable = ThreadStripe.Sum(_stripes, WholeScalable) + _memo.Hits(scalable: true);
            return ThreadStripe.Sum(_stripes, counter) + counter switch
            {
                ContextHit or IotlbHit => legacy + scalable,
                PasidHit => scalable,
                _ => 0,
            };
        }
    }
}
