using System.Runtime.CompilerServices;

namespace Iommu.VtD.Hardware;

/// <content>Register-based (CCMD, IOTLB) and queued invalidation of the context cache, PASID cache and IOTLB.</content>
public sealed partial class VtdUnit
{
    // IQERCD.IQEI codes.
    private const int IqeiTail = 1;
    private const int IqeiFetch = 2;
    private const int IqeiType = 3;
    private const int IqeiReserved = 4;
    private const int IqeiWidth = 5;
    private const int IqeiTailMisaligned = 6;

    // Every invalidation starts here, before it retires or removes anything (TranslationCache's
    // ordering argument): a fill from a translation that started earlier is then dropped.
    private void BeginInvalidation() => Interlocked.Increment(ref _epoch);

    /// <summary>Told of every invalidation and global command (tests: a shadowing emulator); null normally.</summary>
    internal IVtdInvalidationObserver? InvalidationObserver { get; set; }

    private void InvalidateAllCaches()
    {
        BeginInvalidation();
        _contextCache.InvalidateAll();
        _pasidCache.InvalidateAll();
        _iotlb.InvalidateAll();
        Volatile.Write(ref _iotlbLevels, 0);
    }

    /// <summary>Context-cache invalidation; returns the actual granularity (1 global, 2 domain, 3 device) or 0 when not performed.</summary>
    /// <remarks>
    /// Legacy entries are tagged with their DID (not-present entries cached under caching mode with
    /// DID 0), so domain- and device-selective requests drop only entries whose DID matches. Scalable
    /// context entries carry no DID: device-selective ignores the DID and domain-selective is
    /// performed as global. QEMU 7.2 performs domain-selective as global in both modes.
    /// Domain-selective retires the DID's generation; device-selective visits only the sets of the
    /// (at most eight) source ids the function mask selects.
    /// </remarks>
    private int InvalidateContextCache(int granularity, ushort did, ushort sid, int functionMask)
    {
        // Counted only when performed: a command that reports CAIG 0 invalidated nothing.
        int caig = PerformContextInvalidation(granularity, did, sid, functionMask);
        _contextInvalidations += caig != 0 ? 1 : 0;
        return caig;
    }

    private int PerformContextInvalidation(int granularity, ushort did, ushort sid, int functionMask)
    {
        did &= _didMask;
        switch (granularity)
        {
            case 1:
                BeginInvalidation();
                _contextCache.InvalidateAll();
                return 1;
            case 2:
                BeginInvalidation();
                if (((_rootTable >> 10) & 3) != 0)
                {
                    _contextCache.InvalidateAll();
                    return 1;
                }

                _contextCache.InvalidateGroup(did);
                return 2;
            case 3:
                BeginInvalidation();

                // FM: 1 ignores SID bit 2, 2 ignores bits 2:1, 3 ignores bits 2:0.
                ushort ignored = functionMask switch { 1 => 0x4, 2 => 0x6, 3 => 0x7, _ => 0 };
                var match = new ContextMatch((ushort)(sid & ~ignored), (ushort)~ignored, did);
                for (int low = 0; low < 8; low++)
                {
                    if ((low & ~ignored) == 0)
                    {
                        _contextCache.Remove((sid & ~ignored | low) & _contextCache.SetMask, ref match);
                    }
                }

                return 3;
            default:
                return 0;
        }
    }

    /// <summary>IOTLB invalidation (legacy IOTLB descriptor or register): 1 global, 2 domain, 3 page-selective. Returns the actual granularity or 0.</summary>
    /// <remarks>
    /// Applies to the domain's entries of every PASID, as the spec's IOTLB invalidation does in scalable
    /// mode. Page-selective-within-domain removes second-level (and pass-through) entries in the address
    /// range, and every first-stage and nested entry of the DID whatever its address: their tags are
    /// first-stage input addresses, which the descriptor's address (a second-stage input) does not name
    /// (the VT-d specification's IOTLB Invalidate Descriptor, as later QEMU quotes it in "Flush stage-1
    /// cache in iotlb invalidation").
    /// A DID that never cached such an entry pays nothing for this.
    /// </remarks>
    private int InvalidateIotlb(int granularity, ushort did, ulong address, int addressMask)
    {
        // Each case that performs the invalidation counts it: a command that reports IAIG 0 invalidated nothing.
        did &= _didMask;
        switch (granularity)
        {
            case 1:
                BeginInvalidation();
                _iotlb.InvalidateAll();
                Volatile.Write(ref _iotlbLevels, 0);
                FlushAtcsForCachingMode(null, allPasids: true, 0, ulong.MaxValue);
                _iotlbInvalidations++;
                return 1;
            case 2:
                BeginInvalidation();
                _iotlb.InvalidateGroup(did);
                FlushAtcsForCachingMode(null, allPasids: true, 0, ulong.MaxValue);
                _iotlbInvalidations++;
                return 2;
            case 3:
                if (!_config.PageSelectiveInvalidation)
                {
                    BeginInvalidation();
                    _iotlb.InvalidateGroup(did);
                    FlushAtcsForCachingMode(null, allPasids: true, 0, ulong.MaxValue);
                    _iotlbInvalidations++;
                    return 2;
                }

                if (addressMask > _config.MaxAddressMaskValue)
                {
                    return 0;
                }

                BeginInvalidation();
                if (HasFirstStageEntries(did))
                {
                    // A DID's entries are all of one kind (a domain uses one stage), so dropping the
                    // DID's group removes exactly what the spec names.
                    _iotlb.InvalidateGroup(did);
                    FlushAtcsForCachingMode(null, allPasids: true, 0, ulong.MaxValue);
                    _iotlbInvalidations++;
                    return 3;
                }

                ulong first = (address >> 12) & ~((1UL << addressMask) - 1);
                RemoveIotlbPages(did, 0, first, 1UL << addressMask);
                FlushAtcsForCachingMode(null, allPasids: true, first << 12, (1UL << addressMask) << 12);
                _iotlbInvalidations++;
                return 3;
            default:
                return 0;
        }
    }

    // Before a first-stage or nested fill under did: from then on a page-selective IOTLB invalidation
    // of the DID drops its whole group (the fill's epoch check covers an invalidation in between).
    private void MarkFirstStageDid(ushort did)
    {
        ref int word = ref _firstStageDids[did >> 5];
        int bit = 1 << (did & 31);
        if ((Volatile.Read(ref word) & bit) == 0)
        {
            Interlocked.Or(ref word, bit);
        }
    }

    private bool HasFirstStageEntries(ushort did) => (Volatile.Read(ref _firstStageDids[did >> 5]) & (1 << (did & 31))) != 0;

    /// <summary>
    /// Removes the entries of <paramref name="did"/> (every PASID and kind when
    /// <paramref name="firstStageTag"/> is 0; else only the first-stage entries of that PASID tag) whose
    /// page overlaps [firstPage, firstPage + pages) in 4 KiB frames, visiting for each level the IOTLB
    /// may hold only the sets those pages map to (every set once the range has more pages at that
    /// level than there are sets).
    /// </summary>
    /// <remarks>The scope comes as scalars: a match built by the caller and passed by value is spilled
    /// and reloaded whole, which stalls on the narrower stores that built it (once per flush).</remarks>
    private void RemoveIotlbPages(ushort did, uint firstStageTag, ulong firstPage, ulong pages)
    {
        int levels = Volatile.Read(ref _iotlbLevels);
        for (int level = 1; levels >> level != 0; level++)
        {
            if ((levels & (1 << level)) == 0)
            {
                continue;
            }

            int frames = 9 * (level - 1);
            ulong lo = firstPage >> frames;
            ulong hi = (firstPage + pages - 1) >> frames;
            var match = new PageMatch(did, level, lo, hi, firstStageTag);
            if (hi - lo >= (ulong)_iotlb.Sets)
            {
                _iotlb.RemoveAll(ref match);
                continue;
            }

            for (ulong page = lo; page <= hi; page++)
            {
                _iotlb.Remove(IotlbSet(did, page, level), ref match);
            }
        }
    }

    /// <summary>PASID-cache invalidation: 0 domain-selective, 1 PASID-selective within the domain, 3 global.</summary>
    /// <remarks>
    /// Not-present PASID entries cached under caching mode match any DID: domain-selective requests
    /// drop all of them, PASID-selective ones those of the PASID. Both retire generations (the DID's
    /// or the (DID, PASID) pair's and the not-present pseudo-group's or pair's), scanning nothing.
    /// </remarks>
    private void InvalidatePasidCache(int granularity, ushort did, uint pasid)
    {
        _pasidInvalidations++;
        did &= _didMask;
        BeginInvalidation();
        if (granularity == 3)
        {
            _pasidCache.InvalidateAll();
            FlushAtcsForCachingMode(null, allPasids: true, 0, ulong.MaxValue);
            return;
        }

        if (granularity == 0)
        {
            _pasidCache.InvalidateGroup(did);
            _pasidCache.InvalidateGroup(_noDidGroup);
            FlushAtcsForCachingMode(null, allPasids: true, 0, ulong.MaxValue);
            return;
        }

        InvalidatePasidCell(_pasidCache, did, pasid);
        InvalidatePasidCell(_pasidCache, _noDidGroup, pasid);
        FlushAtcsForCachingMode(pasid, allPasids: false, 0, ulong.MaxValue);
    }

    // Retires a (group, PASID) pair's entries in one cache; nothing to do when no entry can hold it.
    private void InvalidatePasidCell(TranslationCache cache, int group, uint pasid)
    {
        int cell = _pasidTags.Find(group, pasid);
        if (cell >= 0)
        {
            cache.InvalidateCell(cell);
        }
    }

    // Device-selective context-cache invalidation: the source ids under the function mask, and for
    // legacy entries the DID.
    private readonly struct ContextMatch(ushort sid, ushort mask, ushort did) : TranslationCache.IEntryMatch
    {
        public bool Matches(ulong key0, ulong key1, ulong value0, ulong value1) =>
            ((ushort)key0 & mask) == sid && ((value0 & 8) != 0 || (ushort)value1 == did);
    }

    // Page-selective IOTLB invalidation at one level: the domain's entries whose page number lies in
    // [lo, hi]; of every PASID and kind, or (firstStageTag = PASID | FirstLevelTag) only the first-level
    // and nested entries of that PASID.
    private readonly struct PageMatch(ushort did, int level, ulong lo, ulong hi, uint firstStageTag) : TranslationCache.IEntryMatch
    {
        public bool Matches(ulong key0, ulong key1, ulong value0, ulong value1)
        {
            ulong page = key0 >> 3;
            return (ushort)key1 == did && (int)(key0 & 7) == level && page >= lo && page <= hi
                && (firstStageTag == 0 || (uint)(key1 >> 16) == firstStageTag || (uint)(key1 >> 16) == ((firstStageTag ^ FirstLevelTag) | NestedTag));
        }
    }

    /// <remarks>Ignored (ICC stays set) while queued invalidation is enabled, as QEMU does; the spec forbids the combination.</remarks>
    private void OnContextCommand()
    {
        ulong ccmd = Get64(VtdRegister.Ccmd);
        if ((ccmd & VtdRegister.CcmdIcc) == 0 || QueuedInvalidationEnabled)
        {
            return;
        }

        int actual = InvalidateContextCache(
            (int)((ccmd >> VtdRegister.CcmdCirgShift) & 3),
            (ushort)ccmd,
            (ushort)(ccmd >> VtdRegister.CcmdSidShift),
            (int)((ccmd >> VtdRegister.CcmdFmShift) & 3));
        InvalidationObserver?.OnContextCommand(ccmd);
        ccmd &= ~(VtdRegister.CcmdIcc | (3UL << VtdRegister.CcmdCaigShift));
        Set64(VtdRegister.Ccmd, ccmd | ((ulong)actual << VtdRegister.CcmdCaigShift));
    }

    /// <remarks>
    /// IAIG reports what was done: the requested granularity, domain-selective for a page request
    /// without CAP.PSI, 0 for an invalid granularity or AM above MAMV.
    /// </remarks>
    private void OnIotlbCommand()
    {
        uint reg = _iotlbRegs + VtdRegister.IotlbInPair;
        ulong cmd = Get64(reg);
        if ((cmd & VtdRegister.IotlbIvt) == 0 || QueuedInvalidationEnabled)
        {
            return;
        }

        ulong iva = Get64(_iotlbRegs + VtdRegister.IvaInPair);
        int actual = InvalidateIotlb(
            (int)((cmd >> VtdRegister.IotlbIirgShift) & 3),
            (ushort)(cmd >> VtdRegister.IotlbDidShift),
            iva & VtdFormat.PointerMask,
            (int)(iva & 0x3F));
        InvalidationObserver?.OnIotlbCommand(cmd, iva);
        cmd &= ~(VtdRegister.IotlbIvt | (3UL << VtdRegister.IotlbIaigShift));
        Set64(reg, cmd | ((ulong)actual << VtdRegister.IotlbIaigShift));
    }

    /// <summary>Processes descriptors from IQH to IQT, synchronously, until the queue is empty or a descriptor fails.</summary>
    /// <remarks>
    /// A failing descriptor sets FSTS.IQE and IQERCD.IQEI and leaves IQH pointing at it; IQT writes
    /// fetch nothing while IQE is set, and processing resumes from IQH as soon as software clears IQE
    /// (QEMU 7.2 waits for the next IQT write). QEMU 7.2 has no IQERCD and silently ignores a
    /// misaligned tail in a 256-bit queue (the spec reports IQEI 6).
    /// A tail error is reported for the IQT write that made it; resuming after IQE with that tail still
    /// in place fetches nothing and reports nothing again.
    /// </remarks>
    private void ProcessInvalidationQueue(bool tailWritten = true)
    {
        if (!QueuedInvalidationEnabled || (Get32(VtdRegister.Fsts) & VtdRegister.FstsIqe) != 0)
        {
            return;
        }

        ulong iqa = Get64(VtdRegister.Iqa);
        bool wide = (iqa & (1UL << 11)) != 0;
        int shift = wide ? 5 : 4;
        ulong entries = (4096UL << (int)(iqa & 7)) >> shift;
        ulong queueBase = iqa & VtdFormat.PointerMask; // bits at or above HAW kept: the fetch fails there (VtdConfig.HostAddressWidth)
        ulong iqt = Get64(VtdRegister.Iqt);
        ulong tail = (iqt & 0x7FFF0) >> shift;
        int tailError = wide && (iqt & 0x10) != 0 ? IqeiTailMisaligned : tail >= entries ? IqeiTail : 0;
        if (tailError != 0)
        {
            if (tailWritten)
            {
                ReportQueueError(tailError);
            }

            return;
        }

        ulong head = (Get64(VtdRegister.Iqh) & 0x7FFF0) >> shift;
        while (head != tail)
        {
            // One checked fetch of the whole descriptor by quadwords (zeros where never written), into
            // locals: no stack buffer, so the method is compiled like any other (tiered, with its profile).
            ulong pa = queueBase + (head << shift);
            if (!_memory.TryReadQuadwords(pa, wide ? 4 : 2, out ulong q0, out ulong q1, out ulong q2, out ulong q3))
            {
                ReportQueueError(IqeiFetch);
                return;
            }

            int error = (q2 | q3) != 0 ? IqeiReserved : ExecuteDescriptor(q0, q1, wide);
            if (error != 0)
            {
                ReportQueueError(error);
                return;
            }

            InvalidationObserver?.OnDescriptor(q0, q1);
            head = (head + 1) & (entries - 1); // a power of two
            Set64(VtdRegister.Iqh, head << shift);
        }
    }

    /// <summary>Executes one descriptor; returns 0 or the IQEI code of the error.</summary>
    /// <remarks>
    /// Reserved-bit masks are the spec's (type bits 11:9 are part of the type). Device-TLB and
    /// PASID-based device-TLB descriptors are delivered to the device named by their SID (see
    /// <c>DeliverDeviceTlbInvalidation</c>); interrupt-entry-cache descriptors are accepted and do nothing
    /// (no interrupt remapping is modelled). Page group responses (type 9) need ECAP.PRS. PASID-based descriptors (types 6–8) need
    /// a 256-bit queue (IQEI 5 otherwise). The PASID-based IOTLB descriptor (P_IOTLB) with G=10 drops
    /// every entry of the (DID, PASID): its first-level and nested entries, and, as before first-level
    /// translation was modelled, its second-level ones too (hardware may drop more than asked; the spec
    /// leaves PGTT 010 entries untouched, and Linux flushes those by DID). G=11 drops the first-level and
    /// nested entries of that (DID, PASID) overlapping 2^AM pages at ADDR (aligned down to 2^AM pages; AM
    /// above 52 counts as 52), and no second-level entry. IH is accepted and changes nothing (no
    /// paging-structure caches are modelled); G=00/01 are reserved here (unused by Linux,
    /// meaning UNVERIFIED). No P_IOTLB ever touches another PASID's entries. The IOTLB descriptor (type 2)
    /// drops first-level and nested entries of the DID as well (nested ones must go: Linux flushes second-level changes under nested by DID; for
    /// first-level ones this is more than the spec asks). The PASID-cache descriptor (type 7) drops
    /// cached PASID entries of every PGTT and no IOTLB entry (Linux follows it with a P_IOTLB).
    /// </remarks>
    private int ExecuteDescriptor(ulong q0, ulong q1, bool wide)
    {
        int type = (int)((q0 & 0xF) | ((q0 >> 5) & 0x70));
        int g = (int)((q0 >> VtdFormat.DescGranularityShift) & 3);
        ushort did = (ushort)(q0 >> VtdFormat.DescDidShift);
        switch (type)
        {
            case VtdFormat.DescContextCache:
                if ((q0 & 0xFFFC_0000_0000_F1C0) != 0 || q1 != 0 || g == 0)
                {
                    return IqeiReserved;
                }

                InvalidateContextCache(g, did, (ushort)(q0 >> VtdFormat.DescSidShift), (int)((q0 >> VtdFormat.DescFmShift) & 3));
                return 0;

            case VtdFormat.DescIotlb:
                if ((q0 & 0xFFFF_FFFF_0000_F100) != 0 || (q1 & 0xF80) != 0 || g == 0
                    || (g == 3 && (int)(q1 & 0x3F) > _config.MaxAddressMaskValue))
                {
                    return IqeiReserved;
                }

                InvalidateIotlb(g, did, q1 & VtdFormat.PointerMask, (int)(q1 & 0x3F));
                return 0;

            case VtdFormat.DescDeviceTlb:
                if ((q0 & 0x000F_0000_FFE0_F1F0) != 0 || (q0 >> 52) != 0 || (q1 & 0xFFE) != 0)
                {
                    return IqeiReserved;
                }

                DeliverDeviceTlbInvalidation((ushort)(q0 >> VtdFormat.DescSidShift), pasid: null, allPasids: true, q1, VtdFormat.DevTlbSize);
                return 0;

            case VtdFormat.DescInterruptEntryCache:
                return (q0 & 0xFFFF_0000_07FF_F1E0) != 0 || q1 != 0 ? IqeiReserved : 0;

            case VtdFormat.DescWait:
                return ExecuteWait(q0, q1);

            case VtdFormat.DescPasidIotlb:
                if (!wide)
                {
                    return IqeiWidth;
                }

                if ((q0 & 0xFFF0_0000_0000_F1C0) != 0 || (q1 & 0xF80) != 0 || g < 2)
                {
                    return IqeiReserved;
                }

                uint pasid = (uint)(q0 >> VtdFormat.DescPasidShift) & 0xF_FFFF;
                ushort pdid = (ushort)(did & _didMask);
                _iotlbInvalidations++; // VtdActivity counts PASID-based IOTLB descriptors as IOTLB invalidations
                BeginInvalidation();
                if (g == 2)
                {
                    InvalidatePasidCell(_iotlb, pdid, pasid);
                    InvalidatePasidCell(_iotlb, pdid, pasid | FirstLevelTag);
                    FlushAtcsForCachingMode(pasid, allPasids: false, 0, ulong.MaxValue);
                }
                else
                {
                    int am = Math.Min((int)(q1 & 0x3F), 52);
                    ulong first = (q1 >> 12) & ~((1UL << am) - 1);
                    RemoveIotlbPages(pdid, pasid | FirstLevelTag, first, 1UL << am);
                    FlushAtcsForCachingMode(pasid, allPasids: false, first << 12, (1UL << am) << 12);
                }

                return 0;

            case VtdFormat.DescPasidCache:
                if (!wide)
                {
                    return IqeiWidth;
                }

                if ((q0 & 0xFFF0_0000_0000_F1C0) != 0 || q1 != 0 || g == 2)
                {
                    return IqeiReserved;
                }

                InvalidatePasidCache(g, did, (uint)(q0 >> VtdFormat.DescPasidShift) & 0xF_FFFF);
                return 0;

            case VtdFormat.DescPasidDeviceTlb:
                if (!wide)
                {
                    return IqeiWidth;
                }

                // PFSID (q0 15:12 and 63:52) is reserved without ECAP.DIT, which this model never reports,
                // as for the device-TLB descriptor (type 3).
                if ((q0 & 0xFFF0_0000_0000_F000) != 0 || (q1 & 0x7FE) != 0)
                {
                    return IqeiReserved;
                }

                DeliverDeviceTlbInvalidation((ushort)(q0 >> VtdFormat.DescDidShift), (uint)(q0 >> VtdFormat.DescPasidShift) & 0xF_FFFF, allPasids: (q1 & 1) != 0, q1, VtdFormat.PasidDevTlbSize);
                return 0;

            case VtdFormat.DescPageGroupResponse when _config.PageRequests:
                return wide ? ExecutePageGroupResponse(q0, q1) : IqeiWidth;

            default:
                return IqeiType;
        }
    }

    /// <remarks>
    /// SW writes the 32-bit STDATA to STADDR; IF raises the invalidation-completion event; FN is a
    /// fence, trivially honoured because processing is synchronous. QEMU 7.2 aborts on SW+IF together
    /// and raises IQE for FN alone; the spec allows both, and so does this model.
    /// </remarks>
    private int ExecuteWait(ulong q0, ulong q1)
    {
        // PD (bit 7) needs ECAP.PDS; with it the drain is trivially complete (page requests are queued synchronously).
        ulong reserved = _config.PageRequestDrain ? 0x0000_0000_FFFF_F100UL : 0x0000_0000_FFFF_F180UL;
        if ((q0 & reserved) != 0 || (q1 & 0x3) != 0)
        {
            return IqeiReserved;
        }

        if ((q0 & VtdFormat.DescWaitSw) != 0)
        {
            if (!_memory.Contains(q1, 4))
            {
                return IqeiFetch;
            }

            _memory.WriteUInt32(q1, (uint)(q0 >> VtdFormat.DescWaitDataShift));
        }

        if ((q0 & VtdFormat.DescWaitIf) != 0)
        {
            SignalInvalidationCompletion();
        }

        return 0;
    }
}
