using Iommu.Devices;

namespace Iommu.VtD.Hardware;

/// <content>Primary fault recording, the fault event and the invalidation-completion event.</content>
public sealed partial class VtdUnit
{
    private int _nextFaultRecord;
    private bool _faultMsiPending;
    private bool _invMsiPending;
    private ulong _faultMsiAddress;
    private uint _faultMsiData;
    private ulong _invMsiAddress;
    private uint _invMsiData;
    private volatile bool _interruptPending;

    /// <summary>
    /// Whether a fault reason is "qualified", i.e. suppressed when fault processing is disabled (FPD)
    /// in a structure on the request's path. Faults met while reading the root, context or PASID
    /// structures themselves (memory errors, reserved bits, root not present) are not qualified:
    /// FPD is not yet known or not trusted there.
    /// </summary>
    /// <param name="reason">The reason.</param>
    /// <returns>True when FPD may suppress it.</returns>
    /// <remarks>QEMU 7.2 also treats 0x58 (its catch-all PASID code) as not qualified.</remarks>
    public static bool IsQualified(VtdFaultReason reason) => reason switch
    {
        VtdFaultReason.None => false,
        VtdFaultReason.RootEntryNotPresent or VtdFaultReason.RootTableInvalid or VtdFaultReason.ContextTableInvalid
            or VtdFaultReason.RootEntryReserved or VtdFaultReason.ContextEntryReserved => false,
        >= VtdFaultReason.RootTableAddressInvalid and <= VtdFaultReason.ScalableRootEntryReserved => false,
        VtdFaultReason.ScalableContextTableReadError or VtdFaultReason.ScalableContextEntryReserved => false,
        VtdFaultReason.PasidDirectoryReadError or VtdFaultReason.PasidDirectoryEntryReserved => false,
        VtdFaultReason.PasidTableReadError or VtdFaultReason.PasidEntryReserved => false,
        _ => true,
    };

    /// <summary>Records a fault unless FPD suppresses it; returns the fault result.</summary>
    private VtdTranslation Fault(
        ushort sid, ulong address, bool write, bool pasidPresent, uint pasid, VtdFaultReason reason, bool fpd,
        DmaRequestAttributes attrs = DmaRequestAttributes.None)
    {
        // Faults take the writer side: the fault registers and counters are the unit's state.
        bool recorded = false;
        using (_lock.EnterScope())
        {
            // A translation request that finds no page or no permission is answered, not faulted: not counted.
            if ((attrs & AtsTranslationRequest) != 0 && IsAtsRecoverable(reason))
            {
                return VtdTranslation.Faulted(address, reason, recorded: false);
            }

            _faultsByReason[(byte)reason]++;
            if (!fpd || !IsQualified(reason))
            {
                recorded = RecordFault(sid, address, write, pasidPresent, pasid, reason, attrs);
            }
        }

        return VtdTranslation.Faulted(address, reason, recorded);
    }

    /// <remarks>
    /// Spec primary fault logging: the record at the internal index is used if its F is clear,
    /// otherwise PFO is set and the fault is lost. QEMU 7.2 additionally drops a fault when a pending
    /// record has the same source id (fault compression); this model records every fault, and it
    /// records the full 20-bit PASID (QEMU truncates PV to 16 bits and logs PP=1 with RID_PASID
    /// for untagged scalable-mode requests; here PP is set only for requests that carried a PASID).
    /// PRIV and EXE repeat the request's attributes; only requests with PASID carry them. Faults met by page
    /// requests record T1 = 0, T2 = 1; those met by ATS translation requests AT = 01 (QEMU records neither).
    /// </remarks>
    private bool RecordFault(ushort sid, ulong address, bool write, bool pasidPresent, uint pasid, VtdFaultReason reason, DmaRequestAttributes attrs)
    {
        uint fsts = Get32(VtdRegister.Fsts);
        if ((fsts & VtdRegister.FstsPfo) != 0)
        {
            return false;
        }

        int index = _nextFaultRecord;
        uint rec = FaultRecordOffset(index);
        if ((Get64(rec + 8) & VtdRegister.FrcdF) != 0)
        {
            Set32(VtdRegister.Fsts, fsts | VtdRegister.FstsPfo);
            return false;
        }

        // Request type (T1 = bit 126, T2 = bit 92): 00 write, 01 page request, 10 read. AT (125:124):
        // 01 for an ATS translation request, 00 for an untranslated request.
        ulong hi = sid
            | ((ulong)(byte)reason << VtdRegister.FrcdFrShift)
            | ((attrs & PageRequestMarker) != 0 ? VtdRegister.FrcdT2 : write ? 0 : VtdRegister.FrcdT)
            | ((attrs & AtsTranslationRequest) != 0 ? VtdRegister.FrcdAtTranslationRequest : 0)
            | VtdRegister.FrcdF;
        if (pasidPresent)
        {
            hi |= VtdRegister.FrcdPp | ((ulong)(pasid & 0xF_FFFF) << VtdRegister.FrcdPvShift)
                | ((attrs & DmaRequestAttributes.Privileged) != 0 ? VtdRegister.FrcdPriv : 0)
                | ((attrs & DmaRequestAttributes.Execute) != 0 ? VtdRegister.FrcdExe : 0);
        }

        Set64(rec, address & ~0xFFFUL);
        Set64(rec + 8, hi);
        _nextFaultRecord = (index + 1) % _config.FaultRecordCount;

        uint updated = fsts | VtdRegister.FstsPpf;
        if ((fsts & VtdRegister.FstsPpf) == 0)
        {
            updated = (updated & ~VtdRegister.FstsFriMask) | ((uint)index << VtdRegister.FstsFriShift);
        }

        Set32(VtdRegister.Fsts, updated);
        if ((fsts & (VtdRegister.FstsPpf | VtdRegister.FstsPfo | VtdRegister.FstsIqe | VtdRegister.FstsIce | VtdRegister.FstsIte)) == 0)
        {
            SignalFaultEvent();
        }

        return true;
    }

    /// <summary>Reports an invalidation-queue error: FSTS.IQE, IQERCD.IQEI and the fault event.</summary>
    private void ReportQueueError(int iqei)
    {
        uint fsts = Get32(VtdRegister.Fsts);
        Set64(VtdRegister.Iqercd, (Get64(VtdRegister.Iqercd) & ~0xFUL) | (uint)iqei);
        Set32(VtdRegister.Fsts, fsts | VtdRegister.FstsIqe);
        if ((fsts & (VtdRegister.FstsPpf | VtdRegister.FstsPfo | VtdRegister.FstsIqe | VtdRegister.FstsIce | VtdRegister.FstsIte)) == 0)
        {
            SignalFaultEvent();
        }
    }

    private void SignalFaultEvent()
    {
        uint fectl = Get32(VtdRegister.Fectl) | VtdRegister.EventControlIp;
        Set32(VtdRegister.Fectl, fectl);
        OnFaultEventControl();
    }

    // Pending interrupt is sent once the mask is cleared.
    private void OnFaultEventControl()
    {
        if (TakeUnmaskedEvent(VtdRegister.Fectl, out ulong address, out uint data))
        {
            (_faultMsiAddress, _faultMsiData, _faultMsiPending) = (address, data, true);
        }
    }

    // The three event register sets share a layout: control, data (+4), address (+8), upper address (+12).
    // A pending, unmasked event clears IP and yields its message, to be sent once the lock is released.
    private bool TakeUnmaskedEvent(uint control, out ulong address, out uint data)
    {
        uint ctl = Get32(control);
        if ((ctl & VtdRegister.EventControlIp) == 0 || (ctl & VtdRegister.EventControlIm) != 0)
        {
            (address, data) = (0, 0);
            return false;
        }

        Set32(control, ctl & ~VtdRegister.EventControlIp);
        address = ((ulong)Get32(control + 12) << 32) | Get32(control + 8);
        data = Get32(control + 4);
        _interruptPending = true;
        return true;
    }

    // IP is cleared once software has serviced every status condition.
    private void UpdateFaultInterruptPending()
    {
        uint fsts = Get32(VtdRegister.Fsts);
        if ((fsts & (VtdRegister.FstsPpf | VtdRegister.FstsPfo | VtdRegister.FstsIqe | VtdRegister.FstsIce | VtdRegister.FstsIte)) == 0)
        {
            Set32(VtdRegister.Fectl, Get32(VtdRegister.Fectl) & ~VtdRegister.EventControlIp);
        }
    }

    /// <summary>After software cleared an FRCD.F: recompute FSTS.PPF and FRI (the first pending record from the old FRI on).</summary>
    private void OnFaultRecordCleared()
    {
        uint fsts = Get32(VtdRegister.Fsts);
        int n = _config.FaultRecordCount;
        int fri = (int)((fsts & VtdRegister.FstsFriMask) >> VtdRegister.FstsFriShift) % n;
        int pending = -1;
        for (int i = 0; i < n; i++)
        {
            int idx = (fri + i) % n;
            if ((Get64(FaultRecordOffset(idx) + 8) & VtdRegister.FrcdF) != 0)
            {
                pending = idx;
                break;
            }
        }

        fsts = pending < 0
            ? fsts & ~VtdRegister.FstsPpf
            : (fsts & ~VtdRegister.FstsFriMask) | ((uint)pending << VtdRegister.FstsFriShift) | VtdRegister.FstsPpf;
        Set32(VtdRegister.Fsts, fsts);
        UpdateFaultInterruptPending();
    }

    private void SignalInvalidationCompletion()
    {
        uint ics = Get32(VtdRegister.Ics);
        if ((ics & VtdRegister.IcsIwc) != 0)
        {
            return;
        }

        Set32(VtdRegister.Ics, ics | VtdRegister.IcsIwc);
        Set32(VtdRegister.Iectl, Get32(VtdRegister.Iectl) | VtdRegister.EventControlIp);
        OnInvalidationEventControl();
    }

    private void OnInvalidationEventControl()
    {
        if (TakeUnmaskedEvent(VtdRegister.Iectl, out ulong address, out uint data))
        {
            (_invMsiAddress, _invMsiData, _invMsiPending) = (address, data, true);
        }
    }
}
