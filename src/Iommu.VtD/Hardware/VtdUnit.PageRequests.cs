using System.Collections.Concurrent;
using Iommu.Devices;
using Iommu.Memory;
using Iommu.VtD.Internal;

namespace Iommu.VtD.Hardware;

/// <content>ATS translation requests, device-TLB invalidations delivered to devices, the page request queue and page group responses.</content>
public sealed partial class VtdUnit : IDmaRemapperAts
{
    // An attribute bit no public value uses: marks a translation request on its way through TranslateCore.
    private const DmaRequestAttributes AtsTranslationRequest = (DmaRequestAttributes)(1 << 30);

    // Another such bit: marks a fault met by a page request, recorded with T1 = 0, T2 = 1 (RecordFault).
    private const DmaRequestAttributes PageRequestMarker = (DmaRequestAttributes)(1 << 29);

    // Page request and page group response descriptor fields are in VtdFormat.
    private const ulong PrqRingMask = 0x7FFE0;

    // Devices that sent translation or page requests, by requester id: where invalidations and responses go.
    private readonly ConcurrentDictionary<ushort, PciDevice> _atsDevices = new();

    // The same devices as an array the caching-mode ATC flush walks without locking or allocating; replaced (under
    // _learnLock) only when a requester is new or another device object took its requester id.
    private PciDevice[] _learned = [];
    private readonly Lock _learnLock = new();

    // CAP.CM, read on every invalidation: one field load instead of two.
    private readonly bool _cachingMode;

    private bool _prMsiPending;
    private ulong _prMsiAddress;
    private uint _prMsiData;

    /// <summary>Raised when the unit sends its page request event interrupt (PEADDR/PEDATA).</summary>
    public event EventHandler<VtdInterruptEventArgs>? PageRequestEvent;

    /// <summary>
    /// An ATS translation request from <paramref name="device"/> (<see cref="IDmaRemapperAts"/>): translates the 4 KiB page
    /// at <paramref name="address"/> and answers with the access the tables grant, instead of faulting on it.
    /// </summary>
    /// <param name="device">The requester.</param>
    /// <param name="pasid">PASID prefix, or null.</param>
    /// <param name="address">Untranslated address; bits 11:0 are ignored.</param>
    /// <param name="write">False for No Write (NW = 1): the completion then grants read only.</param>
    /// <returns>The completion.</returns>
    /// <exception cref="ArgumentOutOfRangeException"><paramref name="pasid"/> is above 0xFFFFF.</exception>
    /// <remarks>
    /// <para>Without ECAP.DT (<see cref="VtdConfig.DeviceTlb"/>) the unit answers Unsupported Request and records nothing.
    /// With translation disabled the completion is the identity with read and write. In legacy mode (translation requests through a TT = 01 context entry are not
    /// modelled) the request is an Unsupported Request with fault 0x0D (UNVERIFIED which code hardware logs).</para>
    /// <para>In scalable mode the context entry's DTE = 0 faults 0x44; context, PASID-directory and PASID-entry
    /// faults, reserved bits, read errors and the canonical check are recorded as for untranslated requests
    /// and answered Unsupported Request. A page that is not present or lacks the permission (0x71, 0x81, 0x82, 0x85,
    /// 0x86) is no fault: the completion grants what the tables allow (write first, then read for a write request;
    /// nothing when even a read is refused), so a PRI device can send a page request. So is an address above 2^MGAW − 1
    /// past the width check of a second-level or pass-through entry (CAP.MGAW: a null completion, R = W = 0). Such walks are neither recorded
    /// nor counted in <see cref="Activity"/>. A write request sets A/D as a write does; a read request never grants write
    /// (so no D bit is owed).</para>
    /// </remarks>
    public AtsCompletion TranslationRequest(PciDevice device, uint? pasid, ulong address, bool write)
    {
        _memory.ThrowIfDisposed();
        ArgumentNullException.ThrowIfNull(device);
        if (pasid is uint p && p > 0xF_FFFF)
        {
            ThrowHelper.Pasid(p);
        }

        if (!_config.DeviceTlb)
        {
            return default;
        }

        using PhysicalMemory.AccessScope guard = _memory.EnterAccess();
        Learn(device);
        ulong page = address & ~0xFFFUL;
        ushort sid = device.RequesterId;
        AtsCompletion completion;
        ulong rt = Volatile.Read(ref _rootTable);
        if ((rt & TranslationEnabledBit) == 0)
        {
            completion = new AtsCompletion(true, page, 4096, true, true, DmaFaultReason.None);
        }
        else if (((rt >> 10) & 3) != 1)
        {
            VtdTranslation f = Fault(sid, page, write, pasid.HasValue, pasid.GetValueOrDefault(), VtdFaultReason.ContextEntryTranslationType, false, AtsTranslationRequest);
            completion = Unsupported(f.Reason);
        }
        else
        {
            completion = Complete(TranslateCore(sid, pasid.HasValue, pasid.GetValueOrDefault(), page, 4096, write, AtsTranslationRequest));
            if (write && completion.Success && !completion.Read)
            {
                // Not writable (or not present): what a read may still get.
                AtsCompletion read = Complete(TranslateCore(sid, pasid.HasValue, pasid.GetValueOrDefault(), page, 4096, false, AtsTranslationRequest));
                completion = read.Success ? read with { Write = false } : read;
            }
        }

        if (_interruptPending)
        {
            RaisePendingInterrupts();
        }

        return completion;

        AtsCompletion Complete(VtdTranslation t) => t.Status switch
        {
            VtdTranslationStatus.Translated or VtdTranslationStatus.MemoryError => new AtsCompletion(true, t.PhysicalAddress, t.PageSize, true, write && t.Writable, DmaFaultReason.None),
            VtdTranslationStatus.Fault when IsAtsRecoverable(t.Reason) || IsAboveMgaw(t.Reason, page) => new AtsCompletion(true, 0, 4096, false, false, DmaFaultReason.None),
            _ => Unsupported(t.Reason),
        };

        static AtsCompletion Unsupported(VtdFaultReason reason) => new(false, 0, 0, false, false, reason.ToDmaFaultReason());
    }

    // CAP.MGAW: a translation request above 2^MGAW - 1 from an allowed device (its context and PASID entries passed)
    // gets a null completion, R = W = 0, and records nothing.
    private bool IsAboveMgaw(VtdFaultReason reason, ulong address) => reason == VtdFaultReason.ScalableAddressBeyondWidth && !FitsWidth(address, 1, _config.MaxGuestAddressWidth);

    // Faults an ATS translation request turns into a completion that grants less (not present, permission).
    private static bool IsAtsRecoverable(VtdFaultReason reason) => reason is VtdFaultReason.FirstLevelNotPresent
        or VtdFaultReason.UserAccessDenied or VtdFaultReason.ExecuteDenied or VtdFaultReason.ScalableWrite or VtdFaultReason.ScalableRead;

    // The walk of an ATS translation request: recoverable faults are not recorded; the others are, with the request's own FPD.
    private VtdTranslation TranslateForAts(long epoch, ushort sid, bool hasPasid, uint pasid, uint effective, ulong iova, ulong size, bool write, DmaRequestAttributes attrs, bool fpd, in PasidCacheEntry pe)
    {
        // The marker tells Fault not to count the recoverable outcomes (the walk only reads attrs' privilege and execute bits).
        VtdTranslation t = TranslatePasidEntry(epoch, sid, hasPasid, pasid, effective, iova, size, write, attrs | AtsTranslationRequest, fpd: true, pe);
        if (!t.IsFault || IsAtsRecoverable(t.Reason) || IsAboveMgaw(t.Reason, iova) || (fpd && IsQualified(t.Reason)))
        {
            return t;
        }

        bool recorded;
        using (_lock.EnterScope())
        {
            recorded = RecordFault(sid, iova, write, hasPasid, pasid, t.Reason, attrs | AtsTranslationRequest);
        }

        return VtdTranslation.Faulted(iova, t.Reason, recorded);
    }

    /// <summary>
    /// A page request message from <paramref name="device"/> (<see cref="IDmaRemapperAts"/>): written as a 32-byte descriptor
    /// at PQA + PQT for software, with PQT advanced, PRS.PPR set and the page request event raised.
    /// </summary>
    /// <param name="device">The requester.</param>
    /// <param name="request">The message.</param>
    /// <returns>True when queued.</returns>
    /// <exception cref="ArgumentOutOfRangeException">The PASID is above 0xFFFFF or the group index outside 0–511.</exception>
    /// <remarks>
    /// <para>In order: without ECAP.PRS nothing happens; in legacy mode fault 0x32; context faults as for DMA, then
    /// PRE = 0 faults 0x47 (qualified) — none of these is queued. Then, while PRS.PRO is set the request is dropped
    /// silently; a full queue (PQT + 32 = PQH modulo its size: one slot always stays free) sets PRO and raises the
    /// event by the rule below, and drops the request. A dropped request with LPIG is answered by the unit only when
    /// <see cref="VtdConfig.PageRequestOverflowResponse"/> is set. A queue slot outside memory drops the request.</para>
    /// <para>Event rule: the event fires only when PRS had neither PPR nor PRO before this request; it sets PECTL.IP and,
    /// when PECTL.IM is clear, sends the interrupt and clears IP. Writing PRS so that PPR and PRO are both clear clears IP;
    /// clearing IM with IP set sends the interrupt.</para>
    /// <para>Execute and privileged requested (ER, PM) come from the PASID prefix, so a request without PASID is written
    /// with both clear whatever the message says.</para>
    /// <para>Stop markers (LPIG with neither read nor write) are queued like any request (software drops them). Private
    /// data (PDP) is not modelled: descriptors carry PDP = 0 and q2 = q3 = 0. QEMU's implicit P_IOTLB invalidation
    /// before queueing is not modelled: the translation request that preceded found no usable entry.</para>
    /// </remarks>
    public bool PageRequest(PciDevice device, PageRequestMessage request)
    {
        _memory.ThrowIfDisposed();
        ArgumentNullException.ThrowIfNull(device);
        if (request.Pasid is uint p && p > 0xF_FFFF)
        {
            ThrowHelper.Pasid(p);
        }

        if (request.GroupIndex is < 0 or > 0x1FF)
        {
            throw new ArgumentOutOfRangeException(nameof(request), request.GroupIndex, "A page request group index has 9 bits (0–511).");
        }

        if (!_config.PageRequests)
        {
            return false;
        }

        using PhysicalMemory.AccessScope guard = _memory.EnterAccess();
        Learn(device);
        bool queued = QueuePageRequest(device, request);
        if (_interruptPending)
        {
            RaisePendingInterrupts();
        }

        return queued;
    }

    private bool QueuePageRequest(PciDevice device, in PageRequestMessage request)
    {
        ushort sid = device.RequesterId;
        ulong page = request.Address & ~0xFFFUL;
        bool hasPasid = request.Pasid.HasValue;
        uint pasid = request.Pasid.GetValueOrDefault();

        // Execute and privilege travel in the PASID prefix: a request without one carries neither.
        bool execute = hasPasid && request.Execute;
        bool privileged = hasPasid && request.Privileged;
        DmaRequestAttributes attrs = PageRequestMarker
            | (privileged ? DmaRequestAttributes.Privileged : 0)
            | (execute ? DmaRequestAttributes.Execute : 0);
        ulong rt = Volatile.Read(ref _rootTable);
        if (((rt >> 10) & 3) != 1)
        {
            Fault(sid, page, request.Write, hasPasid, pasid, VtdFaultReason.LegacyModePageRequest, false, attrs);
            return false;
        }

        VtdFaultReason r = LookupContext(Volatile.Read(ref _epoch), rt & VtdFormat.PointerMask, sid, scalable: true, out ContextCacheEntry ctx);
        if (r == VtdFaultReason.None && !ctx.Present)
        {
            r = VtdFaultReason.ScalableContextEntryNotPresent;
        }
        else if (r == VtdFaultReason.None && !ctx.PageRequestEnable)
        {
            r = VtdFaultReason.PageRequestDisabled;
        }
        else if (r == VtdFaultReason.None && BeyondPss(hasPasid, pasid))
        {
            r = VtdFaultReason.PasidBeyondDirectory; // as for a translation (TranslateScalable)
        }

        if (r != VtdFaultReason.None)
        {
            Fault(sid, page, request.Write, hasPasid, pasid, r, ctx.Fpd, attrs);
            return false;
        }

        bool respond;
        using (_lock.EnterScope())
        {
            uint prs = Get32(VtdRegister.Prs);
            respond = request.LastInGroup && _config.PageRequestOverflowResponse is not null;
            if ((prs & VtdRegister.PrsPro) == 0)
            {
                ulong pqa = Get64(VtdRegister.Pqa);
                ulong size = 4096UL << (int)(pqa & 7);
                ulong head = (Get64(VtdRegister.Pqh) & PrqRingMask) % size;
                ulong tail = (Get64(VtdRegister.Pqt) & PrqRingMask) % size;
                ulong slot = (pqa & VtdFormat.PointerMask) + tail;
                if ((tail + 32) % size == head)
                {
                    Set32(VtdRegister.Prs, prs | VtdRegister.PrsPro);
                    SignalPageRequestEvent(prs);
                }
                else if (_memory.Contains(slot, 32))
                {
                    _memory.WriteUInt64(slot, VtdFormat.PrqDescType | (hasPasid ? VtdFormat.PrqPasidPresent : 0) | ((ulong)sid << VtdFormat.PrqRidShift)
                        | ((ulong)pasid << VtdFormat.PrqPasidShift) | (execute ? VtdFormat.PrqExecute : 0) | (privileged ? VtdFormat.PrqPrivileged : 0));
                    _memory.WriteUInt64(slot + 8, page | (request.Read ? VtdFormat.PrqRead : 0) | (request.Write ? VtdFormat.PrqWrite : 0)
                        | (request.LastInGroup ? VtdFormat.PrqLastInGroup : 0) | ((ulong)(uint)request.GroupIndex << VtdFormat.PrqGroupIndexShift));
                    _memory.WriteUInt64(slot + 16, 0);
                    _memory.WriteUInt64(slot + 24, 0);
                    Set64(VtdRegister.Pqt, (tail + 32) % size);
                    Set32(VtdRegister.Prs, prs | VtdRegister.PrsPpr);
                    SignalPageRequestEvent(prs);
                    return true;
                }
                else
                {
                    respond = false;
                }
            }
        }

        if (respond)
        {
            device.ReceivePageGroupResponse(request.Pasid, request.GroupIndex, _config.PageRequestOverflowResponse!.Value);
        }

        return false;
    }

    private void DefinePageRequestRegisters()
    {
        Define(VtdRegister.Pqh, 8, 0, wmask: PrqRingMask);
        Define(VtdRegister.Pqt, 8, 0, wmask: PrqRingMask);
        Define(VtdRegister.Pqa, 8, 0, wmask: 0xFFFF_FFFF_FFFF_F007);
        Define(VtdRegister.Prs, 4, 0, w1c: VtdRegister.PrsPpr | VtdRegister.PrsPro);

        // Reset masked, as FECTL and IECTL (UNVERIFIED for PECTL; QEMU resets it unmasked).
        Define(VtdRegister.Pectl, 4, VtdRegister.EventControlIm, wmask: VtdRegister.EventControlIm);
        Define(VtdRegister.Pedata, 4, 0, wmask: 0xFFFF);
        Define(VtdRegister.Peaddr, 4, 0, wmask: 0xFFFF_FFFC);
        Define(VtdRegister.Peuaddr, 4, 0, wmask: 0xFFFF_FFFF);
    }

    // Event rule: only when the status had neither PPR nor PRO before.
    private void SignalPageRequestEvent(uint oldPrs)
    {
        if ((oldPrs & (VtdRegister.PrsPpr | VtdRegister.PrsPro)) != 0)
        {
            return;
        }

        Set32(VtdRegister.Pectl, Get32(VtdRegister.Pectl) | VtdRegister.EventControlIp);
        OnPageRequestEventControl();
    }

    private void OnPageRequestEventControl()
    {
        if (TakeUnmaskedEvent(VtdRegister.Pectl, out ulong address, out uint data))
        {
            (_prMsiAddress, _prMsiData, _prMsiPending) = (address, data, true);
        }
    }

    private void OnPageRequestStatusWritten()
    {
        if ((Get32(VtdRegister.Prs) & (VtdRegister.PrsPpr | VtdRegister.PrsPro)) == 0)
        {
            Set32(VtdRegister.Pectl, Get32(VtdRegister.Pectl) & ~VtdRegister.EventControlIp);
        }
    }

    // Taken by RaisePendingInterrupts under the lock.
    private (bool Pending, ulong Address, uint Data) TakePageRequestMsi()
    {
        (bool, ulong, uint) msi = (_prMsiPending, _prMsiAddress, _prMsiData);
        _prMsiPending = false;
        return msi;
    }

    private void RaisePageRequestEvent(ulong address, uint data) => PageRequestEvent?.Invoke(this, new VtdInterruptEventArgs(address, data));

    /// <remarks>
    /// Later QEMU's reserved masks (so PDP = 1 and PASID-less responses with private data are rejected, IQEI 4).
    /// PP = 0 is accepted (a response to a request without PASID; QEMU reports it unsupported). A response for
    /// a requester that never sent a request is accepted and goes nowhere. The code is passed on as written
    /// (0 Success, 1 Invalid Request; the device takes anything else as Response Failure, as QEMU does with 2).
    /// </remarks>
    private int ExecutePageGroupResponse(ulong q0, ulong q1)
    {
        if ((q0 & 0xFFF0_0000_0000_01E0) != 0 || (q1 & 0xFFFF_FFFF_FFFF_F003) != 0)
        {
            return IqeiReserved;
        }

        ushort rid = (ushort)(q0 >> VtdFormat.PrqRidShift);
        if (_atsDevices.TryGetValue(rid, out PciDevice? device))
        {
            uint? pasid = (q0 & VtdFormat.PgrPasidPresent) != 0 ? (uint)(q0 >> VtdFormat.PrqPasidShift) & 0xF_FFFF : null;
            device.ReceivePageGroupResponse(pasid, (int)((q1 >> VtdFormat.PrqGroupIndexShift) & 0x1FF), (int)((q0 >> VtdFormat.PgrCodeShift) & 0xF));
        }

        return 0;
    }

    /// <remarks>
    /// Size encoding of both descriptors: <see cref="VtdFormat.DeviceTlbRange"/>. Type 3 (no PASID prefix) drops every
    /// translation in the range, with or without PASID, as an invalidate request without PASID does in PCIe (UNVERIFIED);
    /// type 8 with G = 1 does the same, with G = 0 only that PASID's. Descriptors for a requester that never sent a
    /// translation request go nowhere.
    /// </remarks>
    /// <remarks>
    /// A caching-mode unit stands for a virtual IOMMU, and upstream Linux counts on that IOMMU's host to keep device TLBs
    /// coherent: with CAP.CM = 1 it sends no device-TLB invalidation when it tears a PASID entry down or flushes a whole
    /// domain (5.15 <c>intel_pasid_tear_down_entry</c>, <c>intel_flush_iotlb_all</c>; 6.x still does not). So the unit
    /// does the host's part: every IOTLB, PASID-IOTLB or PASID-cache invalidation it executes in caching mode also drops
    /// the range it names from the ATC of every device that sent it translation requests (for a PASID, that PASID's
    /// translations and those of requests without PASID). The unit does not know which domain filled an ATC entry, so devices of other domains lose theirs
    /// too; that costs them a new translation request, never a stale translation. Without caching mode nothing happens here.
    /// </remarks>
    [System.Runtime.CompilerServices.MethodImpl(System.Runtime.CompilerServices.MethodImplOptions.AggressiveInlining)]
    private void FlushAtcsForCachingMode(uint? pasid, bool allPasids, ulong address, ulong size)
    {
        if (_cachingMode)
        {
            FlushLearnedAtcs(pasid, allPasids, address, size);
        }
    }

    [System.Runtime.CompilerServices.MethodImpl(System.Runtime.CompilerServices.MethodImplOptions.NoInlining)]
    private void FlushLearnedAtcs(uint? pasid, bool allPasids, ulong address, ulong size)
    {
        foreach (PciDevice device in Volatile.Read(ref _learned))
        {
            device.InvalidateAtc(pasid, allPasids, address, size);
            if (pasid is not null)
            {
                // Requests without PASID translate through the RID_PASID entry, whichever PASID a context names for it.
                device.InvalidateAtc(null, allPasids: false, address, size);
            }
        }
    }

    // Records the device that sent a translation or page request as where invalidations and responses for its
    // requester id go (the common case, a device already known, takes no lock).
    private void Learn(PciDevice device)
    {
        if (_atsDevices.TryGetValue(device.RequesterId, out PciDevice? known) && ReferenceEquals(known, device))
        {
            return;
        }

        lock (_learnLock)
        {
            _atsDevices[device.RequesterId] = device;
            Volatile.Write(ref _learned, [.. _atsDevices.Values]);
        }
    }

    private void DeliverDeviceTlbInvalidation(ushort sid, uint? pasid, bool allPasids, ulong q1, ulong sizeBit)
    {
        if (!_atsDevices.TryGetValue(sid, out PciDevice? device))
        {
            return;
        }

        (ulong addr, ulong size) = VtdFormat.DeviceTlbRange(q1, sizeBit);
        device.InvalidateAtc(pasid, allPasids, addr, size);
    }
}
