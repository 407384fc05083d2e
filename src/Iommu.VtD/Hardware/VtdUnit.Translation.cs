using System.Runtime.CompilerServices;

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
    private readonly Dictionary<ushort, ContextCacheEntry> _contextCache = new(256);
    private readonly Dictionary<PasidKey, PasidCacheEntry> _pasidCache = new(256);
    private readonly Dictionary<IotlbKey, IotlbEntry> _iotlb;
    private readonly ulong[] _leafReserved = new ulong[6];
    private readonly ulong[] _nonLeafReserved = new ulong[6];
    private int _iotlbLevels;     // bit n set: the IOTLB may hold level-n entries
    private ulong _rootTable;     // latched by SRTP
    private int _rootTableMode;   // RTADDR.TTM latched by SRTP
    private long _contextHits, _contextMisses, _pasidHits, _pasidMisses, _iotlbHits, _iotlbMisses;
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

    private VtdTranslation TranslateLocked(ushort sid, bool hasPasid, uint pasid, ulong iova, ulong size, bool write)
    {
        if (!TranslationEnabled)
        {
            return VtdTranslation.Translated(iova, iova, 4096, true);
        }

        // Requests without PASID to 0xFEEx_xxxx are interrupt messages, never DMA-remapped.
        if (!hasPasid && iova <= InterruptWindowLast && iova + size - 1 >= InterruptWindowBase)
        {
            return VtdTranslation.Interrupt(iova);
        }

        if (_rootTableMode == 0)
        {
            return hasPasid
                ? Fault(sid, iova, write, true, pasid, VtdFaultReason.LegacyModePasidRequest, false)
                : TranslateLegacy(sid, iova, size, write);
        }

        if (_rootTableMode == 1 && _config.ScalableMode)
        {
            return TranslateScalable(sid, hasPasid, pasid, iova, size, write);
        }

        return Fault(sid, iova, write, hasPasid, pasid, VtdFaultReason.RootTableAddressInvalid, false);
    }

    private VtdTranslation TranslateLegacy(ushort sid, ulong iova, ulong size, bool write)
    {
        if (_contextCache.TryGetValue(sid, out ContextCacheEntry ctx) && !ctx.Scalable)
        {
            _contextHits++;
        }
        else
        {
            _contextMisses++;
            VtdFaultReason r = ReadLegacyContext(sid, out ctx);
            if (r != VtdFaultReason.None)
            {
                return Fault(sid, iova, write, false, 0, r, ctx.Fpd);
            }

            // Caching mode: a not-present entry may be cached too (tagged with DID 0).
            if (ctx.Present || _config.CachingMode)
            {
                _contextCache[sid] = ctx;
            }
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

        return TranslateSecondLevel(sid, false, 0, NoPasidTag, ctx.Did, ctx.Pointer, ctx.Aw + 2, iova, size, write, ctx.Fpd, scalable: false);
    }

    /// <remarks>
    /// Spec order: root entry (read error 0x8, not present 0x1, reserved 0xA), context entry (read
    /// error 0x9, reserved 0xB, then AW/TT validity 0x3). A not-present context entry is returned
    /// with <see cref="ContextCacheEntry.Present"/> false and its FPD, which applies to fault 0x2.
    /// </remarks>
    private VtdFaultReason ReadLegacyContext(ushort sid, out ContextCacheEntry ctx)
    {
        ctx = default;
        ulong rootPa = _rootTable + ((ulong)(sid >> 8) * VtdFormat.RootEntrySize);
        if (!_memory.Contains(rootPa, VtdFormat.RootEntrySize))
        {
            return VtdFaultReason.RootTableInvalid;
        }

        ulong r0 = _memory.ReadUInt64(rootPa);
        ulong r1 = _memory.ReadUInt64(rootPa + 8);
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

        ulong c0 = _memory.ReadUInt64(ctxPa);
        ulong c1 = _memory.ReadUInt64(ctxPa + 8);
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
            VtdFormat.TtTranslatedWithDeviceTlb => false, // needs ECAP.DT, which this model never reports
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

    private VtdTranslation TranslateScalable(ushort sid, bool hasPasid, uint pasid, ulong iova, ulong size, bool write)
    {
        if (_contextCache.TryGetValue(sid, out ContextCacheEntry ctx) && ctx.Scalable)
        {
            _contextHits++;
        }
        else
        {
            _contextMisses++;
            VtdFaultReason r = ReadScalableContext(sid, out ctx);
            if (r != VtdFaultReason.None)
            {
                return Fault(sid, iova, write, hasPasid, pasid, r, ctx.Fpd);
            }

            if (ctx.Present || _config.CachingMode)
            {
                _contextCache[sid] = ctx;
            }
        }

        if (!ctx.Present)
        {
            return Fault(sid, iova, write, hasPasid, pasid, VtdFaultReason.ScalableContextEntryNotPresent, ctx.Fpd);
        }

        if (hasPasid && !ctx.PasidEnable)
        {
            return Fault(sid, iova, write, true, pasid, VtdFaultReason.PasidDisabled, ctx.Fpd);
        }

        // Requests without PASID use RID_PASID (ECAP.RPS) or PASID 0.
        uint effective = hasPasid ? pasid : (_config.RidPasidSupport ? ctx.RidPasid : 0);
        if ((effective >> VtdFormat.PasidDirectoryShift) >= (1u << (ctx.Pdts + 7)))
        {
            return Fault(sid, iova, write, hasPasid, pasid, VtdFaultReason.PasidBeyondDirectory, ctx.Fpd);
        }

        var key = new PasidKey(sid, effective);
        if (_pasidCache.TryGetValue(key, out PasidCacheEntry pe))
        {
            _pasidHits++;
        }
        else
        {
            _pasidMisses++;
            VtdFaultReason r = ReadPasidEntry(ctx.Pointer, effective, out pe);
            if (r != VtdFaultReason.None)
            {
                return Fault(sid, iova, write, hasPasid, pasid, r, ctx.Fpd || pe.Fpd);
            }

            if (pe.Present || _config.CachingMode)
            {
                _pasidCache[key] = pe;
            }
        }

        bool fpd = ctx.Fpd || pe.Fpd;
        if (!pe.Present)
        {
            return Fault(sid, iova, write, hasPasid, pasid, pe.NotPresentReason, fpd);
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

        return TranslateSecondLevel(sid, hasPasid, pasid, effective, pe.Did, pe.Slptptr, pe.Aw + 2, iova, size, write, fpd, scalable: true);
    }

    /// <remarks>
    /// Scalable root entry: only the half selected by devfn is checked (present, then reserved bits).
    /// QEMU 7.2 checks reserved bits of both halves and reports legacy fault codes throughout.
    /// Context entry reserved bits include DTE (no ECAP.DT), PASIDE (without ECAP.PASID), PRE (no
    /// ECAP.PRS), RID_PRIV (no ECAP.RPRIVS) and a non-zero RID_PASID without ECAP.RPS.
    /// </remarks>
    private VtdFaultReason ReadScalableContext(ushort sid, out ContextCacheEntry ctx)
    {
        ctx = default;
        ctx.Scalable = true;
        int devfn = sid & 0xFF;
        ulong rootPa = _rootTable + ((ulong)(sid >> 8) * VtdFormat.RootEntrySize);
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

        ulong c0 = _memory.ReadUInt64(ctxPa);
        ulong c1 = _memory.ReadUInt64(ctxPa + 8);
        ulong c2 = _memory.ReadUInt64(ctxPa + 16);
        ulong c3 = _memory.ReadUInt64(ctxPa + 24);
        ctx.Fpd = (c0 & VtdFormat.Fpd) != 0;
        if ((c0 & VtdFormat.Present) == 0)
        {
            return VtdFaultReason.None;
        }

        ulong reservedLow = VtdFormat.ScalableContextReservedLow | ~_hawMask | VtdFormat.ScalableContextDte | VtdFormat.ScalableContextPre
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
        ctx.RidPasid = (uint)(c1 & VtdFormat.ScalableContextRidPasidMask);
        return VtdFaultReason.None;
    }

    /// <remarks>
    /// Directory entry: read error 0x50, not present 0x51 (qualified, its FPD applies), reserved 0x52.
    /// PASID entry: read error 0x58, not present 0x59, reserved 0x5A, then PGTT/AW validity 0x5B.
    /// Only PGTT 010 (with ECAP.SLTS) and 100 (with ECAP.PT) are accepted: first-level and nested
    /// translation are not modelled, so their ECAP bits are clear and PGTT 001/011 are invalid.
    /// QEMU 7.2 reports all of these as 0x58, checks no reserved bits and walks PGTT 001/011 as
    /// second level.
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

        ulong q0 = _memory.ReadUInt64(pePa);
        pe.Fpd |= (q0 & VtdFormat.Fpd) != 0;
        if ((q0 & VtdFormat.Present) == 0)
        {
            pe.NotPresentReason = VtdFaultReason.PasidEntryNotPresent;
            return VtdFaultReason.None;
        }

        ulong q1 = _memory.ReadUInt64(pePa + 8);
        ulong q2 = _memory.ReadUInt64(pePa + 16);
        ulong rest = 0;
        for (ulong i = 3; i < 8; i++)
        {
            rest |= _memory.ReadUInt64(pePa + (i * 8));
        }

        if ((q0 & (VtdFormat.PasidReservedQ0 | ~_hawMask)) != 0 || (q1 & VtdFormat.PasidReservedQ1) != 0
            || (q2 & (VtdFormat.PasidReservedQ2 | ~_hawMask)) != 0 || rest != 0)
        {
            return VtdFaultReason.PasidEntryReserved;
        }

        int pgtt = (int)((q0 >> VtdFormat.PasidPgttShift) & 7);
        int aw = (int)((q0 >> VtdFormat.PasidAwShift) & 7);
        bool pgttOk = pgtt switch
        {
            VtdFormat.PgttSecondLevel => _config.SecondLevelTranslation,
            VtdFormat.PgttPassThrough => _config.PassThrough,
            _ => false,
        };
        if (!pgttOk || !_config.SupportsAw(aw))
        {
            return VtdFaultReason.PasidEntryInvalid;
        }

        pe.Present = true;
        pe.Pgtt = (byte)pgtt;
        pe.Aw = (byte)aw;
        pe.Did = (ushort)(q1 & VtdFormat.PasidDidMask & _didMask);
        pe.Slptptr = q0 & VtdFormat.PointerMask;
        return VtdFaultReason.None;
    }

    /// <remarks>
    /// Walk order per level: memory error (top level: invalid pointer 0x3/0x7B, below: 0x7/0x78),
    /// R=W=0 (not present: 0x5/0x85 for writes, 0x6/0x86 for reads), reserved bits (0xC/0x7A).
    /// Permissions are the AND over the path and are checked at the leaf. The leaf is cached with
    /// its permissions even when this request lacks one, and a later IOTLB hit is checked against
    /// the cached permissions and faults the same way (QEMU 7.2 instead refuses such a hit without
    /// recording a VT-d fault). With caching mode a not-present entry is cached as a negative entry
    /// covering that entry's whole range.
    /// </remarks>
    private VtdTranslation TranslateSecondLevel(
        ushort sid, bool hasPasid, uint pasid, uint tag, ushort did, ulong root, int levels,
        ulong iova, ulong size, bool write, bool fpd, bool scalable)
    {
        VtdFaultReason permission = write
            ? (scalable ? VtdFaultReason.ScalableWrite : VtdFaultReason.Write)
            : (scalable ? VtdFaultReason.ScalableRead : VtdFaultReason.Read);

        if (LookupIotlb(did, tag, iova, out IotlbEntry hit, out int hitLevel))
        {
            _iotlbHits++;
            if (!(write ? hit.Write : hit.Read))
            {
                return Fault(sid, iova, write, hasPasid, pasid, permission, fpd);
            }

            return Finish(hit.Output, hitLevel, hit.Write);
        }

        _iotlbMisses++;
        ulong table = root;
        bool r = true, w = true;
        for (int level = levels; ; level--)
        {
            int shift = 12 + (9 * (level - 1));
            ulong pa = table + (((iova >> shift) & 0x1FF) * 8);
            if (!_memory.Contains(pa, 8))
            {
                VtdFaultReason reason = level == levels
                    ? (scalable ? VtdFaultReason.SecondLevelPointerInvalid : VtdFaultReason.ContextEntryInvalid)
                    : (scalable ? VtdFaultReason.SecondLevelReadError : VtdFaultReason.PagingEntryInvalid);
                return Fault(sid, iova, write, hasPasid, pasid, reason, fpd);
            }

            ulong pte = _memory.ReadUInt64(pa);
            if ((pte & (VtdFormat.SlRead | VtdFormat.SlWrite)) == 0)
            {
                if (_config.CachingMode)
                {
                    InsertIotlb(new IotlbKey(did, tag, iova >> shift, (byte)level), default);
                }

                return Fault(sid, iova, write, hasPasid, pasid, permission, fpd);
            }

            bool leaf = level == 1 || (level <= 3 && (pte & VtdFormat.SlPageSize) != 0);
            if ((pte & (leaf ? _leafReserved[level] : _nonLeafReserved[level])) != 0)
            {
                return Fault(sid, iova, write, hasPasid, pasid, scalable ? VtdFaultReason.SecondLevelReserved : VtdFaultReason.PagingEntryReserved, fpd);
            }

            r &= (pte & VtdFormat.SlRead) != 0;
            w &= (pte & VtdFormat.SlWrite) != 0;
            if (!leaf)
            {
                table = pte & VtdFormat.SlAddressMask;
                continue;
            }

            var entry = new IotlbEntry(pte & VtdFormat.SlAddressMask & ~((1UL << shift) - 1), r, w);
            InsertIotlb(new IotlbKey(did, tag, iova >> shift, (byte)level), entry);
            if (!(write ? w : r))
            {
                return Fault(sid, iova, write, hasPasid, pasid, permission, fpd);
            }

            return Finish(entry.Output, level, w);
        }

        VtdTranslation Finish(ulong outputBase, int level, bool writable)
        {
            ulong pageSize = 1UL << (12 + (9 * (level - 1)));
            ulong pa = outputBase | (iova & (pageSize - 1));
            if (pa <= InterruptWindowLast && pa + size - 1 >= InterruptWindowBase)
            {
                return Fault(sid, iova, write, hasPasid, pasid, scalable ? VtdFaultReason.ScalableInterruptAddress : VtdFaultReason.InterruptAddress, fpd);
            }

            return VtdTranslation.Translated(iova, pa, pageSize, writable);
        }
    }

    private bool LookupIotlb(ushort did, uint tag, ulong iova, out IotlbEntry entry, out int level)
    {
        int levels = _iotlbLevels;
        for (level = 1; levels >> level != 0; level++)
        {
            if ((levels & (1 << level)) != 0
                && _iotlb.TryGetValue(new IotlbKey(did, tag, iova >> (12 + (9 * (level - 1))), (byte)level), out entry))
            {
                return true;
            }
        }

        entry = default;
        return false;
    }

    private void InsertIotlb(IotlbKey key, IotlbEntry entry)
    {
        // When full, drop everything: hardware may evict any entry at any time.
        if (_iotlb.Count >= _config.IotlbCapacity && !_iotlb.ContainsKey(key))
        {
            _iotlb.Clear();
            _iotlbLevels = 0;
        }

        _iotlb[key] = entry;
        _iotlbLevels |= 1 << key.Level;
    }

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
        public ulong Pointer;      // SLPTPTR (legacy) or PASIDDIRPTR (scalable)
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
    }

    private readonly record struct PasidKey(ushort Sid, uint Pasid);

    private readonly record struct IotlbKey(ushort Did, uint Pasid, ulong PageNumber, byte Level);

    // Output = page-aligned output address; Read = Write = false is a cached not-present entry.
    private readonly record struct IotlbEntry(ulong Output, bool Read, bool Write);
}
