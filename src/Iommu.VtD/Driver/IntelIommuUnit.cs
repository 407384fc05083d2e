using System.Runtime.CompilerServices;
using Iommu.Devices;
using Iommu.Memory;
using Iommu.VtD.Driver.Format;
using Iommu.VtD.Hardware;
using Microsoft.Extensions.Logging;

namespace Iommu.VtD.Driver;

/// <summary>
/// The driver's state for one remapping unit (<c>struct intel_iommu</c>): capabilities read from
/// its registers, the DID allocator, the root and context tables, and the invalidation interface
/// (queued invalidation with wait descriptors, or the CCMD/IOTLB registers without it).
/// </summary>
/// <remarks>
/// Talks to the hardware only through MMIO (<see cref="VtdUnit.Read64"/>, <see cref="VtdUnit.Write64"/>, …),
/// the fault-event interrupt, and the structures it writes into physical memory; it keeps no other
/// handle on the unit (a test checks the driver's IL for any other use of <see cref="VtdUnit"/>). Thread safety: <see cref="Lock"/> is the
/// kernel's <c>iommu->lock</c>; invalidation submission has its own lock (<c>qi->q_lock</c>).
/// </remarks>
[KernelSymbol("struct intel_iommu")]
public sealed class IntelIommuUnit
{
    private const ulong DidBusy = 1;
    private readonly VtdUnit _mmio; // used only through its register accessors
    private readonly PhysicalMemory _memory;
    private readonly FrameAllocator _frames;
    private readonly ILogger _log;
    private readonly ulong[] _domainIds;
    private readonly DmarDomain?[] _domains;
    private readonly Iommu.Internal.RawSpinLock _qiLock = new();
    private uint _gcmd;
    private ulong _qiBase;
    private int _qiEntries;
    private int _qiShift;
    private int _qiTail;
    private ulong _qiStatus;
    private uint _qiStatusSeq;

    internal IntelIommuUnit(VtdUnit hardware, int seqId, PhysicalMemory memory, FrameAllocator frames, bool scalableMode, ILogger log)
    {
        _mmio = hardware;
        Remapper = hardware;
        SeqId = seqId;
        _memory = memory;
        _frames = frames;
        _log = log;
        Cap = hardware.Read64(Dmar.CapReg);
        Ecap = hardware.Read64(Dmar.EcapReg);
        Agaw = CalculateAgaw(57);
        Msagaw = CalculateAgaw(64);
        // Scalable mode only with queued invalidation: the PASID cache can be invalidated only by
        // PASID-cache descriptors (there is no register interface for it), and Linux's PASID
        // teardown/setup paths submit those descriptors unconditionally.
        ScalableMode = scalableMode && DmarCap.EcapSmts(Ecap) && DmarCap.EcapQis(Ecap);
        NumDomains = DmarCap.Ndoms(Cap);
        _domainIds = new ulong[(NumDomains + 63) / 64];
        _domains = new DmarDomain?[NumDomains];

        // DID 0 is the caching-mode tag of not-present entries; in scalable mode DID 1 is
        // FLPT_DEFAULT_DID (first-level and pass-through PASID entries).
        _domainIds[0] |= 1;
        if (ScalableMode)
        {
            _domainIds[0] |= 2;
        }
    }

    /// <summary>Index of the unit (<c>iommu->seq_id</c>).</summary>
    public int SeqId { get; }

    /// <summary>CAP register value.</summary>
    public ulong Cap { get; }

    /// <summary>ECAP register value.</summary>
    public ulong Ecap { get; }

    /// <summary>AGAW for new domains (<c>iommu->agaw</c>): largest SAGAW bit ≤ <c>width_to_agaw(57)</c>.</summary>
    public int Agaw { get; }

    /// <summary>Largest supported AGAW (<c>iommu->msagaw</c>), used by pass-through context entries.</summary>
    public int Msagaw { get; }

    /// <summary>Whether the driver runs the unit in scalable mode (<c>sm_supported</c>): asked for, ECAP.SMTS, and ECAP.QI (the PASID cache is invalidated only by descriptors).</summary>
    [KernelSymbol("sm_supported")]
    public bool ScalableMode { get; }

    /// <summary>Scalable mode with PASID support (<c>pasid_supported</c>).</summary>
    [KernelSymbol("pasid_supported")]
    public bool PasidSupported => ScalableMode && DmarCap.EcapPasid(Ecap);

    /// <summary>Number of domain ids (<c>cap_ndoms</c>).</summary>
    public int NumDomains { get; }

    /// <summary>Root table physical address.</summary>
    public ulong RootTable { get; private set; }

    /// <summary>Whether invalidation goes through the queue.</summary>
    public bool QueuedInvalidation { get; private set; }

    /// <summary>DIDs currently allocated, reserved ones included.</summary>
    public int DomainIdsInUse
    {
        get
        {
            lock (Lock)
            {
                int n = 0;
                foreach (ulong w in _domainIds)
                {
                    n += System.Numerics.BitOperations.PopCount(w);
                }

                return n;
            }
        }
    }

    internal Lock Lock { get; } = new();

    // iommu->register_lock, for the fault handler's walk of the fault recording registers (only the fault list's lock is taken inside it).
    internal Lock RegisterLock { get; } = new();

    // The DRHD this state drives, as the PCI buses name it (PciBus.FindDmaRemapper): compared by
    // identity only, the way the kernel matches a device to a DRHD by its scope.
    internal IDmaRemapper Remapper { get; }

    // drhd->segment: the PCI segment of the bus whose DMAR scope names this unit, learned when the
    // driver first finds a device behind it (there is no register for it); 0 until then.
    internal ushort Segment { get; set; }

    internal bool CachingMode => DmarCap.CachingMode(Cap);

    /// <summary>The domain that owns <paramref name="did"/> on this unit, or null.</summary>
    /// <param name="did">Domain id.</param>
    /// <returns>The domain.</returns>
    public DmarDomain? DomainOf(ushort did)
    {
        lock (Lock)
        {
            return did < _domains.Length ? _domains[did] : null;
        }
    }

    // dmar_readq / dmar_writel for the fault handler (through the guarded accessors, as before).
    internal ulong ReadReg64(uint offset) => _mmio.Read64(offset);

    internal void WriteReg32(uint offset, uint value) => _mmio.Write32(offset, value);

    internal uint ReadReg32(uint offset) => _mmio.Read32(offset);

    internal void WriteReg64(uint offset, ulong value) => _mmio.Write64(offset, value);

    // init_dmars for one unit: root table, QI, global flushes, translation on.
    internal Errno Init()
    {
        if (!_frames.TryAllocate(out ulong root))
        {
            return ErrorDetail.Fail(Errno.ENOMEM, $"no frame for the root table of DMAR unit {SeqId}");
        }

        RootTable = root;
        _mmio.Write64Unguarded(Dmar.RtaddrReg, root | (ScalableMode ? Dmar.RtaddrSmt : 0));
        Command(Dmar.GcmdSrtp, oneShot: true);

        if (DmarCap.EcapQis(Ecap))
        {
            Errno err = EnableQueuedInvalidation();
            if (err != Errno.None)
            {
                return err;
            }
        }

        FlushContext(0, 0, 0, Dmar.CcmdGlobal);
        if (ScalableMode)
        {
            FlushPasidCacheGlobal();
        }

        FlushIotlb(0, 0, 0, Dmar.TlbGlobal);
        Command(Dmar.GcmdTe, oneShot: false);
        return Errno.None;
    }

    // domain_attach_iommu's DID allocation: lowest free, or -ENOSPC.
    internal Errno AllocateDid(DmarDomain domain, out ushort did)
    {
        did = 0;
        for (int w = 0; w < _domainIds.Length; w++)
        {
            ulong free = ~_domainIds[w];
            if (free == 0)
            {
                continue;
            }

            int bit = System.Numerics.BitOperations.TrailingZeroCount(free);
            int id = (w * 64) + bit;
            if (id >= NumDomains)
            {
                break;
            }

            _domainIds[w] |= DidBusy << bit;
            _domains[id] = domain;
            did = (ushort)id;
            return Errno.None;
        }

        return ErrorDetail.Fail(Errno.ENOSPC, $"DMAR unit {SeqId} has no free domain id (cap_ndoms = {NumDomains})");
    }

    internal void FreeDid(ushort did)
    {
        _domainIds[did / 64] &= ~(DidBusy << (did % 64));
        _domains[did] = null;
    }

    // iommu_context_addr: the context entry of (bus, devfn), allocating the context table if asked.
    internal ulong ContextEntryAddress(byte bus, byte devfn, bool alloc)
    {
        ulong rootEntry = RootEntry.Address(RootTable, bus, devfn, ScalableMode);
        var root = new RootEntry(_memory.ReadUInt64(rootEntry));
        if (!root.Present)
        {
            if (!alloc || !_frames.TryAllocate(out ulong table))
            {
                return 0;
            }

            root = RootEntry.ForContextTable(table);
            _memory.WriteUInt64(rootEntry, root.Value);
        }

        // Scalable: 32-byte entries, devfn 128–255 in the upper half's table.
        return ScalableMode
            ? root.ContextTable + ((ulong)(devfn & 0x7F) * ScalableContextEntry.Size)
            : root.ContextTable + ((ulong)devfn * ContextEntry.Size);
    }

    // Frees every context table (the unit is being torn down).
    internal void FreeContextTables()
    {
        for (int bus = 0; bus < 256; bus++)
        {
            for (int half = 0; half < (ScalableMode ? 2 : 1); half++)
            {
                var e = new RootEntry(_memory.ReadUInt64(RootEntry.HalfAddress(RootTable, bus, half)));
                if (e.Present)
                {
                    _frames.Free(e.ContextTable);
                }
            }
        }
    }

    // iommu_flush_write_buffer: only when the unit asks for it (CAP.RWBF).
    internal void FlushWriteBuffer()
    {
        if (DmarCap.Rwbf(Cap))
        {
            Command(Dmar.GcmdWbf, oneShot: true);
        }
    }

    /// <summary>Context-cache invalidation (<c>qi_flush_context</c> / <c>__iommu_flush_context</c>).</summary>
    internal void FlushContext(ushort did, ushort sid, int fm, int granularity)
    {
        if (QueuedInvalidation)
        {
            Submit(QiDescriptor.ContextCache(did, sid, fm, granularity), 0);
            return;
        }

        ulong cmd = Dmar.CcmdIcc | ((ulong)granularity << Dmar.CcmdCirgShift) | ((ulong)fm << Dmar.CcmdFmShift) | ((ulong)sid << Dmar.CcmdSidShift) | did;
        _mmio.Write64Unguarded(Dmar.CcmdReg, cmd);
        if ((_mmio.Read64Unguarded(Dmar.CcmdReg) & Dmar.CcmdIcc) != 0)
        {
            throw new InvalidOperationException($"DMAR unit {SeqId} did not complete a context-cache invalidation.");
        }
    }

    /// <summary>IOTLB invalidation (<c>qi_flush_iotlb</c> / <c>__iommu_flush_iotlb</c>).</summary>
    internal void FlushIotlb(ushort did, ulong addr, int sizeOrder, int granularity)
    {
        bool drainReads = DmarCap.ReadDrain(Cap), drainWrites = DmarCap.WriteDrain(Cap);
        if (QueuedInvalidation)
        {
            Submit(QiDescriptor.Iotlb(did, drainReads, drainWrites, granularity), addr | (uint)sizeOrder);
            return;
        }

        FlushIotlbRegister(did, addr, sizeOrder, granularity, drainReads, drainWrites);
    }

    // __iommu_flush_iotlb, out of line: its register accesses, inlined, would give every queued flush
    // their stack frame to clear.
    [MethodImpl(MethodImplOptions.NoInlining)]
    private void FlushIotlbRegister(ushort did, ulong addr, int sizeOrder, int granularity, bool drainReads, bool drainWrites)
    {
        ulong drain = (drainReads ? Dmar.IotlbDr : 0) | (drainWrites ? Dmar.IotlbDw : 0);
        uint iro = DmarCap.EcapIotlbOffset(Ecap);
        if (granularity == Dmar.TlbPage)
        {
            _mmio.Write64Unguarded(iro, addr | (uint)sizeOrder);
        }

        _mmio.Write64Unguarded(iro + 8, Dmar.IotlbIvt | ((ulong)granularity << Dmar.IotlbIirgShift) | drain | ((ulong)did << Dmar.IotlbDidShift));
        if ((_mmio.Read64Unguarded(iro + 8) & Dmar.IotlbIvt) != 0)
        {
            throw new InvalidOperationException($"DMAR unit {SeqId} did not complete an IOTLB invalidation.");
        }
    }

    /// <summary>PASID-cache invalidation of one PASID in a domain (<c>pasid_cache_invalidation_with_pasid</c>, granularity 1).</summary>
    internal void FlushPasidCache(ushort did, uint pasid)
    {
        if (QueuedInvalidation)
        {
            Submit(QiDescriptor.PasidCache(did, pasid, QiDescriptor.PcPasidSel), 0);
        }
    }

    /// <summary>PASID-cache invalidation of every PASID of a domain (<c>qi_flush_pasid_cache</c> with <c>QI_PC_ALL_PASIDS</c>).</summary>
    internal void FlushPasidCacheDomain(ushort did)
    {
        if (QueuedInvalidation)
        {
            Submit(QiDescriptor.PasidCache(did, 0, QiDescriptor.PcAllPasids), 0);
        }
    }

    private void FlushPasidCacheGlobal()
    {
        if (QueuedInvalidation)
        {
            Submit(QiDescriptor.PasidCache(0, 0, QiDescriptor.PcGlobal), 0);
        }
    }

    /// <summary>PASID-based IOTLB invalidation of a whole PASID (<c>qi_flush_piotlb</c> with npages = −1).</summary>
    internal void FlushPiotlbAll(ushort did, uint pasid) => FlushPiotlb(did, pasid, 0, ulong.MaxValue, ih: false);

    /// <summary>
    /// PASID-based IOTLB invalidation (<c>qi_flush_piotlb</c>): <paramref name="npages"/> = <see cref="ulong.MaxValue"/>
    /// (the kernel's −1) → every entry of (DID, PASID), G=10; otherwise G=11 with AM = log2 of
    /// <paramref name="npages"/> rounded up to a power of two and the address aligned down to that size
    /// (5.15 WARNs and aligns: a caller that wants a range covered passes a naturally aligned block).
    /// 0 pages sends nothing (a WARN in the kernel).
    /// </summary>
    internal void FlushPiotlb(ushort did, uint pasid, ulong addr, ulong npages, bool ih)
    {
        if (npages == 0 || !QueuedInvalidation)
        {
            return;
        }

        if (FlushesAllPages(npages))
        {
            Submit(QiDescriptor.PasidIotlb(did, pasid, QiDescriptor.GranNonGlobalPasid), 0);
            return;
        }

        int am = System.Numerics.BitOperations.Log2(System.Numerics.BitOperations.RoundUpToPowerOf2(npages));
        ulong aligned = addr & ~((1UL << (12 + am)) - 1);
        Submit(QiDescriptor.PasidIotlb(did, pasid, QiDescriptor.GranPsiPasid), QiDescriptor.PasidIotlbAddress(aligned, ih, am));
    }

    // Whether a flush of npages pages is a flush of everything: U64_MAX, or more pages than a 64-bit space
    // holds. 5.15/6.8 take the mask as ilog2(__roundup_pow_of_two(npages)), which above 2^63 shifts by 64
    // and flushes one page.
    internal static bool FlushesAllPages(ulong npages) => npages == ulong.MaxValue || npages > 1UL << 52;

    // The address mask of the smallest naturally aligned block of pages that holds pages first..last, wherever
    // the range starts (6.10's calculate_psi_aligned_address finds the same block).
    internal static int CoveringMask(ulong first, ulong last) =>
        first == last ? 0 : 64 - System.Numerics.BitOperations.LeadingZeroCount(first ^ last);

    /// <summary>Device-TLB invalidation of a function's translations without PASID (<c>qi_flush_dev_iotlb</c>), 2^<paramref name="mask"/> pages at <paramref name="addr"/>.</summary>
    internal void FlushDevIotlb(ushort sid, ushort pfsid, int qdep, ulong addr, int mask)
    {
        if (QueuedInvalidation)
        {
            Submit(QiDescriptor.DevIotlb(sid, pfsid, qdep), QiDescriptor.DevIotlbAddress(addr, mask));
        }
    }

    /// <summary>PASID-based device-TLB invalidation (<c>qi_flush_dev_iotlb_pasid</c>), 2^<paramref name="order"/> pages at <paramref name="addr"/>.</summary>
    internal void FlushDevIotlbPasid(ushort sid, ushort pfsid, uint pasid, int qdep, ulong addr, int order)
    {
        if (QueuedInvalidation)
        {
            Submit(QiDescriptor.PasidDevIotlb(sid, pfsid, pasid, qdep), QiDescriptor.PasidDevIotlbAddress(addr, order));
        }
    }

    // __iommu_calculate_agaw: the largest SAGAW bit at or below width_to_agaw(maxGaw), or -1.
    private int CalculateAgaw(int maxGaw)
    {
        int sagaw = DmarCap.Sagaw(Cap);
        for (int agaw = Math.Min(Dmar.WidthToAgaw(maxGaw), 4); agaw >= 0; agaw--)
        {
            if ((sagaw & (1 << agaw)) != 0)
            {
                return agaw;
            }
        }

        return -1;
    }

    private Errno EnableQueuedInvalidation()
    {
        // Linux: 256 descriptors; 32-byte descriptors (DW=1, 2 pages) in scalable mode, else 16 bytes (1 page).
        int pages = ScalableMode ? 2 : 1;
        if (!_frames.TryAllocateContiguous(pages, out ulong queue) || !_frames.TryAllocate(out ulong status))
        {
            return ErrorDetail.Fail(Errno.ENOMEM, $"no frames for the invalidation queue of DMAR unit {SeqId}");
        }

        _qiBase = queue;
        _qiShift = ScalableMode ? 5 : 4;
        _qiEntries = (pages * 4096) >> _qiShift;
        _qiStatus = status;
        _qiTail = 0;
        _mmio.Write64Unguarded(Dmar.IqtReg, 0);
        _mmio.Write64Unguarded(Dmar.IqaReg, queue | (ScalableMode ? Dmar.IqaDw256 | 1 : 0)); // QS = 1: two pages
        Command(Dmar.GcmdQie, oneShot: false);
        QueuedInvalidation = true;
        return Errno.None;
    }

    // qi_submit_sync of one 128-bit descriptor (every flush): the descriptor stays in registers, since
    // passing it as a span spills it to the stack and reloads it whole, which stalls on the two
    // narrower stores that wrote it.
    private void Submit(ulong q0, ulong q1)
    {
        using (_qiLock.EnterScope())
        {
            int index = _qiTail;
            WriteDescriptor(index, q0, q1, 0, 0);
            SubmitWaitAndCheck(index, (index + 1) & (_qiEntries - 1), waitDrain: false, q0, q1);
        }
    }

    // qi_submit_sync with several descriptors; waitDrain (QI_OPT_WAIT_DRAIN) sets PD in the appended wait.
    internal void SubmitSync(ReadOnlySpan<QiDesc> descs, bool waitDrain)
    {
        using (_qiLock.EnterScope())
        {
            int start = _qiTail, index = start;
            foreach (QiDesc d in descs)
            {
                WriteDescriptor(index, d.Q0, d.Q1, d.Q2, d.Q3);
                index = (index + 1) & (_qiEntries - 1);
            }

            QiDesc first = descs.IsEmpty ? default : descs[0];
            SubmitWaitAndCheck(start, index, waitDrain, first.Q0, first.Q1);
        }
    }

    // The rest of qi_submit_sync, under the queue's lock: the wait descriptor that writes a status word
    // at slot index (the submission began at slot start), the tail write, then the check of FSTS.IQE
    // and of the status word.
    private void SubmitWaitAndCheck(int start, int index, bool waitDrain, ulong firstQ0, ulong firstQ1)
    {
        // One status word per wait slot (qi->desc_status[wait_index]): a submission nested in this one
        // (an interrupt handler that runs on this thread at the tail write and flushes, which the
        // re-entrant queue lock lets through) writes its own word, not the one checked below.
        uint seq = ++_qiStatusSeq;
        ulong statusPa = _qiStatus + ((ulong)index << 2);
        ref uint status = ref Unsafe.Add(ref Unsafe.As<ulong, uint>(ref _frames.Region.Entry(statusPa & ~7UL)), index & 1);
        Volatile.Write(ref status, Dmar.QiInUse);
        ulong wait = QiDescriptor.WaitWithStatus(seq) | (waitDrain ? QiDescriptor.IwdPrqDrain : 0);
        WriteDescriptor(index, wait, statusPa, 0, 0);
        _qiTail = (index + 1) & (_qiEntries - 1); // 128 or 256: a mask, not a division
        _mmio.Write64Unguarded(Dmar.IqtReg, (ulong)_qiTail << _qiShift);

        if ((_mmio.Read32Unguarded(Dmar.FstsReg) & Dmar.FstsIqe) != 0)
        {
            QueueError(start, index, firstQ0, firstQ1);
        }

        if (Volatile.Read(ref status) != seq)
        {
            WaitNotCompleted(seq);
        }
    }

    // qi_check_fault: the unit stopped at a descriptor of this submission (IQH) with IQE set. Copy the
    // wait descriptor over it and clear IQE: the unit resumes from IQH, completes that copy of the wait
    // and the rest of the queue up to IQT, so the queue goes on without a tail write and nothing is
    // fetched twice. The kernel returns -EINVAL to the flush caller (here, the exception). 5.15 rewrites
    // the slot only when IQH is the submission's first descriptor and otherwise polls on with IQE set,
    // for ever; any slot of the submission is rewritten here, and so is every later rejected one the
    // unit stops at after the clear (a single rewrite left IQE set at the second and every later
    // submission failed behind it).
    [MethodImpl(MethodImplOptions.NoInlining)]
    private void QueueError(int start, int waitIndex, ulong firstQ0, ulong firstQ1)
    {
        ulong iqh = _mmio.Read64Unguarded(Dmar.IqhReg);
        Log.QueueError(_log, SeqId, firstQ0, _mmio.Read64Unguarded(Dmar.IqercdReg), iqh);
        int length = ((waitIndex - start) & (_qiEntries - 1)) + 1;
        ref ulong wait = ref _frames.Region.Entry(_qiBase + ((ulong)waitIndex << _qiShift));
        while (true)
        {
            int head = (int)(iqh >> _qiShift) & (_qiEntries - 1);
            int offset = (head - start) & (_qiEntries - 1);
            if (offset < length)
            {
                WriteDescriptor(head, wait, Unsafe.Add(ref wait, 1), _qiShift == 5 ? Unsafe.Add(ref wait, 2) : 0, _qiShift == 5 ? Unsafe.Add(ref wait, 3) : 0);
            }

            _mmio.Write32Unguarded(Dmar.FstsReg, Dmar.FstsIqe);

            // Each pass moves the head on past one rewritten slot, so this ends by the submission's wait.
            if (offset >= length - 1 || (_mmio.Read32Unguarded(Dmar.FstsReg) & Dmar.FstsIqe) == 0)
            {
                break;
            }

            iqh = _mmio.Read64Unguarded(Dmar.IqhReg);
        }

        throw new InvalidOperationException($"DMAR unit {SeqId} rejected invalidation descriptor 0x{firstQ0:x}/0x{firstQ1:x} (IQE).");
    }

    [MethodImpl(MethodImplOptions.NoInlining)]
    private void WaitNotCompleted(uint seq) =>
        throw new InvalidOperationException($"DMAR unit {SeqId} did not complete invalidation wait {seq}.");

    // The queue and the status word live in the driver's frames, inside the table region: plain stores
    // through its pointer. The unit reads a slot only after the tail write, on this thread, so the
    // quadwords need no ordering among themselves; the upper half of a 256-bit slot is written too
    // (zeros for a 128-bit descriptor), as the kernel's qi_submit_sync does.
    private void WriteDescriptor(int index, ulong q0, ulong q1, ulong q2, ulong q3)
    {
        ref ulong slot = ref _frames.Region.Entry(_qiBase + ((ulong)index << _qiShift));
        slot = q0;
        Unsafe.Add(ref slot, 1) = q1;
        if (_qiShift == 5)
        {
            Unsafe.Add(ref slot, 2) = q2;
            Unsafe.Add(ref slot, 3) = q3;
        }
    }

    // dmar_enable_qi / iommu_enable_translation / iommu_set_root_entry: write GCMD and check GSTS.
    private void Command(uint bit, bool oneShot)
    {
        uint value = oneShot ? _gcmd | bit : _gcmd |= bit;
        _mmio.Write32Unguarded(Dmar.GcmdReg, value);
        if ((_mmio.Read32Unguarded(Dmar.GstsReg) & bit) == 0 && bit != Dmar.GcmdWbf)
        {
            throw new InvalidOperationException($"DMAR unit {SeqId} did not acknowledge GCMD bit 0x{bit:x} in GSTS.");
        }
    }
}
