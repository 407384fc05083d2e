using Iommu.Devices;
using Iommu.Faults;
using Iommu.VtD.Driver.Format;
using Iommu.VtD.Hardware;

namespace Iommu.VtD.Driver;

// drivers/iommu/intel/svm.c (5.15), the page request side: the page request queue of each unit and its
// interrupt thread, the report to the core's fault routing, page group responses, and the drain on unbind.
public sealed partial class IntelIommu : IIommuPageResponseOps
{
    private const int CanonicalBits = 48; // boot_cpu_data.x86_virt_bits: no LA57 CPU is modelled

    // Per unit (by SeqId): its page request queue, or null without ECAP.PRS; its iopf queue.
    private PrqState?[] _prq = [];
    private IopfQueue?[] _iopfQueues = [];

    /// <summary>
    /// Answers a page request through the unit (<c>intel_svm_page_response</c>): a page group response descriptor
    /// with the request's PASID, RID and group index and the response's code.
    /// </summary>
    /// <param name="device">The device that sent the request.</param>
    /// <param name="fault">The pending request (its PASID, group index and flags are used).</param>
    /// <param name="response">The answer (only its code is used).</param>
    /// <returns>
    /// 0; in order: -ENODEV for a null or non-PCI device or one behind no unit of this driver; -EINVAL for a null request or
    /// response, a request without PASID, or PASID 0 or beyond 20 bits; -ENODEV when the PASID has no bound process or
    /// the device is not bound to it (for instance after unbind).
    /// </returns>
    /// <remarks>
    /// 5.15. A descriptor is sent only when the request was the last of its group (or carried private data); one the unit
    /// rejects (IQE) is logged and still answers 0, as 5.15 ignores <c>qi_submit_sync</c>'s result. The code is
    /// written unchanged, as 5.15 does: the generic FAILURE (2) goes out as RC = 2, a code VT-d reserves
    /// (its Response Failure is 0xF); the device model takes any code other than 0 and 1 as a failure.
    /// </remarks>
    [KernelSymbol("intel_svm_page_response")]
    public Errno PageResponse(Device device, IommuFault fault, IommuPageResponse response)
    {
        _memory.ThrowIfDisposed();
        if (device is not PciDevice pci || DeviceToIommu(device) is not IntelIommuUnit unit)
        {
            return ErrorDetail.Fail(Errno.ENODEV, $"{device?.Name ?? "null"} is not a PCI device behind a VT-d unit of this driver");
        }

        if (fault is null || response is null)
        {
            return ErrorDetail.Fail(Errno.EINVAL, "no page request or response");
        }

        bool pasidPresent = fault.Flags.HasFlag(PageRequestFlags.PasidValid);
        bool priv = fault.Flags.HasFlag(PageRequestFlags.PrivData);
        bool last = fault.Flags.HasFlag(PageRequestFlags.LastPage);
        lock (_pasidMutex)
        {
            if (!pasidPresent)
            {
                return ErrorDetail.Fail(Errno.EINVAL, $"page request of {device.Name} has no PASID");
            }

            if (fault.Pasid == 0 || fault.Pasid >= 1u << 20)
            {
                return ErrorDetail.Fail(Errno.EINVAL, $"PASID {fault.Pasid} is outside [1, 2^20)");
            }

            if (!_pasidPrivate.TryGetValue(fault.Pasid, out IntelSvm? svm) || FindSdev(svm, device) is null)
            {
                return ErrorDetail.Fail(Errno.ENODEV, $"{device.Name} is not bound to PASID {fault.Pasid}");
            }

            if (last || priv)
            {
                try
                {
                    unit.SubmitSync([PageRequestQueue.PageGroupResponse(fault.Pasid, pci.RequesterId, pasidPresent, priv, (int)response.Code, fault.GroupId, last, 0, 0)], waitDrain: false);
                }
                catch (InvalidOperationException ex) when (ex is not ObjectDisposedException)
                {
                    // 5.15 ignores qi_submit_sync's result here: a descriptor the unit rejects (IQE, logged by the
                    // submission as qi_check_fault does; e.g. a unit without ECAP.PRS) still answers 0, and the core
                    // drops the pending request.
                }
            }

            return Errno.None;
        }
    }

    // iommu->iopf_queue of a unit ("iopf_queue/dmarN-iopfq"), or null without PASID support. Model decision: 5.15
    // allocates it only with the page request queue (ECAP.PRS) and would dereference a null queue when SVA is
    // enabled on an SVM-capable unit without PRS; here every PASID-capable unit has one (fed only with a PRQ).
    internal IopfQueue? IopfQueueOf(int seqId)
    {
        return (uint)seqId < (uint)_iopfQueues.Length ? _iopfQueues[seqId] : null;
    }

    // intel_svm_enable_prq at init (5.15 init_dmars, for units with PASID support and ECAP.PRS): the queue's pages,
    // the iopf queue "dmarN-iopfq", the threaded interrupt, PQH = PQT = 0, PQA = base | PRQ_ORDER.
    private void IntelSvmEnablePrq(VtdUnit hardware, IntelIommuUnit unit, int count)
    {
        if (_prq.Length != count)
        {
            _prq = new PrqState?[count];
            _iopfQueues = new IopfQueue?[count];
        }

        if (!unit.PasidSupported)
        {
            return;
        }

        _iopfQueues[unit.SeqId] = _platform.Iommu.IopfQueueAlloc($"dmar{unit.SeqId}-iopfq");
        if (!DmarCap.EcapPrs(unit.Ecap))
        {
            return;
        }

        if (!_frames.TryAllocateContiguous(1 << PageRequestQueue.Order, out ulong prq))
        {
            ErrorDetail.Fail(Errno.ENOMEM, $"no frames for the page request queue of DMAR unit {unit.SeqId}").ThrowIfError();
        }

        string irq = $"dmar{unit.SeqId}-prq";
        var state = new PrqState(unit, prq, irq, PrqIrqThread, ex => Log.IrqThreadFailed(_log, ex, irq));
        _prq[unit.SeqId] = state;
        _iopfQueues[unit.SeqId]!.SourceFlush = state.Irq.Synchronize;
        hardware.PageRequestEvent += (_, _) => state.Irq.Wake();
        unit.WriteReg32(PageRequestQueue.PectlReg, 0); // request_threaded_irq unmasks the event (dmar_msi_unmask)
        unit.WriteReg64(PageRequestQueue.PqhReg, 0);
        unit.WriteReg64(PageRequestQueue.PqtReg, 0);
        unit.WriteReg64(PageRequestQueue.PqaReg, prq | PageRequestQueue.Order);
    }

    // A pass on the unit's PRQ thread: inside an access scope, as every entry point, so Platform.Dispose waits for a
    // pass in progress (and a pass that starts once Dispose has started ends with ObjectDisposedException) instead of
    // freeing the queue and the invalidation queue under it.
    private void PrqIrqThread(PrqState s)
    {
        using Iommu.Memory.PhysicalMemory.AccessScope guard = _memory.EnterAccess();
        PrqEventThread(s);
    }

    // prq_event_thread (5.15), one pass at a time (IRQF_ONESHOT), on the unit's PRQ thread (see ThreadedIrq) or inline
    // from the drain: clear PPR, walk PQH..PQT (bad requests answered
    // INVALID when they end a group: no PASID, not canonical, privileged with read/write, execute with read, no svm
    // or sdev, report failed; stop markers dropped), PQH = tail, then PRO cleared only if the queue is empty.
    private void PrqEventThread(PrqState s)
    {
        IntelIommuUnit unit = s.Unit;
        lock (s.Lock)
        {
            // Clear PPR first, so a request queued from here on raises the interrupt again.
            unit.WriteReg32(PageRequestQueue.PrsReg, PageRequestQueue.PrsPpr);
            ulong tail = unit.ReadReg64(PageRequestQueue.PqtReg) & PageRequestQueue.RingMask;
            ulong head = unit.ReadReg64(PageRequestQueue.PqhReg) & PageRequestQueue.RingMask;
            IntelSvm? svm = null;
            IntelSvmDev? sdev = null;
            while (head != tail)
            {
                PageRequestDescriptor req = ReadPrq(s, head);
                head = (head + 32) & PageRequestQueue.RingMask;
                // Every bad request (5.15's "goto bad_req") also drops the cached svm and sdev, so the next request
                // looks both up again: a device not bound to the next request's PASID is answered Invalid rather than
                // reported under the sdev cached from before the bad request.
                if (!req.PasidPresent || !IsCanonical(req.Address) || (req.PmReq && (req.RdReq || req.WrReq)) || (req.ExeReq && req.RdReq))
                {
                    (svm, sdev) = (null, null);
                    HandleBadPrqEvent(unit, req);
                    continue;
                }

                if (req.Lpig && !req.RdReq && !req.WrReq)
                {
                    continue; // stop marker: no response
                }

                // 5.15 caches the svm and the sdev across descriptors and re-looks-up the sdev only when the RID
                // changes, even if the svm did (then the request is reported for the cached sdev's device); a bad
                // request empties both caches.
                if (svm is null || svm.Pasid != req.Pasid)
                {
                    lock (_pasidMutex)
                    {
                        svm = _pasidPrivate.GetValueOrDefault(req.Pasid);
                    }

                    if (svm is null)
                    {
                        sdev = null;
                        HandleBadPrqEvent(unit, req);
                        continue;
                    }
                }

                if (sdev is null || ((PciDevice)sdev.Device).RequesterId != req.Rid)
                {
                    sdev = FindSdevBySid(svm, req.Rid);
                    if (sdev is null)
                    {
                        svm = null;
                        HandleBadPrqEvent(unit, req);
                        continue;
                    }
                }

                Errno reported;
                try
                {
                    reported = IntelSvmPrqReport(sdev.Device, req);
                }
                catch (Exception ex) when (ex is not ObjectDisposedException)
                {
                    // A device fault handler that throws fails the report as an error return does in 5.15: the
                    // request is answered Invalid and the walk goes on (PQH still moves past it below), rather than
                    // leave it unanswered, re-read by every later pass ahead of other devices' requests.
                    Log.IrqThreadFailed(_log, ex, s.Irq.Name);
                    reported = Errno.EFAULT;
                }

                if (reported != Errno.None)
                {
                    HandleBadPrqEvent(unit, req);
                }
            }

            unit.WriteReg64(PageRequestQueue.PqhReg, tail);

            // Clear an overflow only once the queue is empty, and drop the partial groups whose last request may be lost.
            if ((unit.ReadReg32(PageRequestQueue.PrsReg) & PageRequestQueue.PrsPro) != 0)
            {
                head = unit.ReadReg64(PageRequestQueue.PqhReg) & PageRequestQueue.RingMask;
                tail = unit.ReadReg64(PageRequestQueue.PqtReg) & PageRequestQueue.RingMask;
                if (head == tail)
                {
                    _ = _platform.Iommu.IopfQueueDiscardPartial(_iopfQueues[unit.SeqId]);
                    unit.WriteReg32(PageRequestQueue.PrsReg, PageRequestQueue.PrsPro);
                }
            }
        }
    }

    private PageRequestDescriptor ReadPrq(PrqState s, ulong offset)
    {
        ulong at = s.Base + offset;
        return new PageRequestDescriptor(_memory.ReadUInt64(at), _memory.ReadUInt64(at + 8), _memory.ReadUInt64(at + 16), _memory.ReadUInt64(at + 24));
    }

    private static bool IsCanonical(ulong address) => ((long)address << (64 - CanonicalBits) >> (64 - CanonicalBits)) == (long)address;

    // handle_bad_prq_event: an Invalid Request response, only for a request that expects one (LPIG or PDP).
    private static void HandleBadPrqEvent(IntelIommuUnit unit, in PageRequestDescriptor req)
    {
        if (!req.Lpig && !req.PrivDataPresent)
        {
            return;
        }

        unit.SubmitSync([PageRequestQueue.PageGroupResponse(req.Pasid, req.Rid, req.PasidPresent, req.PrivDataPresent, PageRequestQueue.RespInvalid, req.PrgIndex, req.Lpig, req.Q2, req.Q3)], waitDrain: false);
    }

    // intel_svm_prq_report: the descriptor as an IOMMU_FAULT_PAGE_REQ event (private data is not carried: IommuFault has no field for it).
    private Errno IntelSvmPrqReport(Device device, in PageRequestDescriptor req)
    {
        if (device is not PciDevice)
        {
            return Errno.ENODEV;
        }

        PageRequestFlags flags = req.Lpig ? PageRequestFlags.LastPage : PageRequestFlags.None;
        if (req.PasidPresent)
        {
            flags |= PageRequestFlags.PasidValid | PageRequestFlags.ResponseNeedsPasid;
        }

        if (req.PrivDataPresent)
        {
            flags |= PageRequestFlags.LastPage | PageRequestFlags.PrivData; // VT-d answers every request with private data
        }

        uint perm = (req.RdReq ? 1u : 0) | (req.WrReq ? 2u : 0) | (req.ExeReq ? 4u : 0) | (req.PmReq ? 8u : 0);
        return _platform.Iommu.ReportDeviceFault(device, new IommuFault
        {
            Type = IommuFaultType.PageRequest,
            Flags = flags,
            Address = req.Address,
            Pasid = req.Pasid,
            GroupId = req.PrgIndex,
            Perm = perm,
        });
    }

    // intel_svm_drain_prq (5.15), called with _deviceDomainLock and _pasidMutex held once, after the PASID entry is
    // torn down: wait while the PRQ holds a request of the PASID, flush the device's iopf work, then fence + P_IOTLB
    // (RID domain's DID) + PASID dev-TLB + drain wait, again while PRO is set. "Waiting for the PRQ thread" runs a pass
    // of it here. The descriptors' ids are read before the first wait, which drops both locks (a detach may run then).
    private void IntelSvmDrainPrq(DeviceDomainInfo info, IntelIommuUnit unit, uint pasid)
    {
        PrqState? s = (uint)unit.SeqId < (uint)_prq.Length ? _prq[unit.SeqId] : null;
        if (s is null || !info.PriEnabled)
        {
            return;
        }

        ushort sid = info.Device.RequesterId;
        ushort did = info.Domain.DidOn(unit.SeqId);

        // An unbind from a callback of the PRQ thread's own pass (a device fault handler) cannot wait for that pass, and
        // a pass run inside it would report the outer pass's requests again: the outer pass goes on with them after the
        // callback returns (answering those of the PASID Invalid: it is bound no more). In 5.15 this waits forever.
        bool inPass = s.Irq.IsCurrentThread;
        while (!inPass && PrqHolds(s, pasid))
        {
            WithoutUnbindLocks(() => PrqEventThread(s));
        }

        WithoutUnbindLocks(() => _platform.Iommu.IopfQueueFlushDev(info.Device));
        while (true)
        {
            // Model decision: PD only with ECAP.PDS (5.15 sets it unconditionally; a unit without PDS rejects it).
            unit.SubmitSync(
                [
                    PageRequestQueue.DrainFence(),
                    new QiDesc(QiDescriptor.PasidIotlb(did, pasid, QiDescriptor.GranNonGlobalPasid), 0),
                    new QiDesc(QiDescriptor.PasidDevIotlb(sid, info.Pfsid, pasid, info.AtsQdep), 0), // one page at 0, S = 0
                ],
                waitDrain: DmarCap.EcapPds(unit.Ecap));
            if (inPass || (unit.ReadReg32(PageRequestQueue.PrsReg) & PageRequestQueue.PrsPro) == 0)
            {
                return;
            }

            WithoutUnbindLocks(() => PrqEventThread(s));
        }
    }

    // Any descriptor between PQH and PQT with this PASID?
    private bool PrqHolds(PrqState s, uint pasid)
    {
        ulong tail = s.Unit.ReadReg64(PageRequestQueue.PqtReg) & PageRequestQueue.RingMask;
        ulong head = s.Unit.ReadReg64(PageRequestQueue.PqhReg) & PageRequestQueue.RingMask;
        for (; head != tail; head = (head + 32) & PageRequestQueue.RingMask)
        {
            PageRequestDescriptor req = ReadPrq(s, head);
            if (req.PasidPresent && req.Pasid == pasid)
            {
                return true;
            }
        }

        return false;
    }

    // The kernel drops pasid_mutex around the waits of the drain: the PRQ thread and the iopf worker take it. The
    // unbind's _deviceDomainLock (5.15's device_domain_lock is a spinlock, never held across these sleeps) goes too:
    // what those threads run (a device fault handler, an MMU notifier on a COW break) may map or unmap a domain with an
    // ATS device, which takes it (iommu_flush_dev_iotlb); held here, the unbind and that thread waited for each other.
    private void WithoutUnbindLocks(Action action)
    {
        bool domainLock = _deviceDomainLock.IsHeldByCurrentThread;
        _pasidMutex.Exit();
        if (domainLock)
        {
            _deviceDomainLock.Exit();
        }

        try
        {
            action();
        }
        finally
        {
            if (domainLock)
            {
                _deviceDomainLock.Enter();
            }

            _pasidMutex.Enter();
        }
    }

    private static IntelSvmDev? FindSdev(IntelSvm svm, Device device)
    {
        lock (svm.Devices)
        {
            return svm.Devices.Find(d => d.Device == device);
        }
    }

    private static IntelSvmDev? FindSdevBySid(IntelSvm svm, ushort rid)
    {
        lock (svm.Devices)
        {
            return svm.Devices.Find(d => d.Device is PciDevice p && p.RequesterId == rid);
        }
    }

    // The per-unit page request queue (iommu->prq and its interrupt thread's oneshot lock).
    private sealed class PrqState
    {
        public PrqState(IntelIommuUnit unit, ulong @base, string irqName, Action<PrqState> pass, Action<Exception> onFailure)
        {
            Unit = unit;
            Base = @base;
            Irq = new ThreadedIrq(irqName, () => pass(this), onFailure);
        }

        public IntelIommuUnit Unit { get; }

        public ulong Base { get; }

        public Lock Lock { get; } = new();

        // The unit's PRQ interrupt: prq_event_thread on its own thread.
        public ThreadedIrq Irq { get; }
    }
}
