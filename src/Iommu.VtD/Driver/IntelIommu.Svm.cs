using Iommu.Devices;
using Iommu.Mm;
using Iommu.VtD.Driver.Format;

namespace Iommu.VtD.Driver;

// drivers/iommu/intel/svm.c (5.15): an mm bound to devices through a first-level PASID entry that points
// at the process's own page tables (DID FLPT_DEFAULT_DID), kept in step by an mmu notifier.
public sealed partial class IntelIommu : IIommuSvaOps
{
    // pasid_private_array (PASID → intel_svm); guarded by _pasidMutex (5.15's pasid_mutex).
    private readonly Dictionary<uint, IntelSvm> _pasidPrivate = [];
    private readonly Lock _pasidMutex = new();

    /// <inheritdoc/>
    /// <remarks>
    /// 5.15 <c>intel_iommu_dev_enable_feat</c>: IOPF is 0 when the device's info has <c>pri_supported</c> (ECAP.DT
    /// and ATS, scalable mode, ECAP.PRS and PRI), else -ENODEV, and changes nothing. SVA: -EINVAL without device info or unit; -ENODEV when the unit cannot do SVM
    /// (5.15 <c>intel_svm_check</c>: scalable mode with PASID, and CAP.FL1GP for a CPU with 1 GiB pages) or PASID cannot be enabled; -EINVAL unless
    /// the driver's attach enabled PASID, PRI and ATS on the device (<c>info-&gt;pasid_enabled/pri_enabled/ats_enabled</c>;
    /// a capability switched on by another caller does not count); then <c>iopf_queue_add_device</c> on the unit's iopf queue
    /// (-EBUSY when the device is already on one) and <c>iommu_register_device_fault_handler(iommu_queue_iopf)</c>
    /// (-EBUSY when the device already has a fault handler — 5.15 then leaves it on the iopf queue, so the next
    /// enable fails -EBUSY as well).
    /// </remarks>
    [KernelSymbol("intel_iommu_dev_enable_feat")]
    public Errno SvaEnableFeature(Device device, IommuDevFeature feature)
    {
        _memory.ThrowIfDisposed();
        ArgumentNullException.ThrowIfNull(device);
        if (feature == IommuDevFeature.Iopf)
        {
            // intel_iommu_dev_has_feat: info && info->pri_supported, which the attach worked out from ECAP.DT, ATS,
            // scalable mode, ECAP.PRS and the PRI capability together.
            return device.IommuPriv is DeviceDomainInfo { PriSupported: true }
                ? Errno.None
                : ErrorDetail.Fail(Errno.ENODEV, $"{device.Name} has no page-request support here (IOPF needs an attached device with ATS and PRI behind a scalable-mode unit with ECAP.DT and ECAP.PRS)");
        }

        if (feature != IommuDevFeature.Sva)
        {
            return ErrorDetail.Fail(Errno.ENODEV, $"feature {feature} is not an SVA feature");
        }

        lock (_deviceDomainLock)
        {
            IntelIommuUnit? unit = DeviceToIommu(device);
            if (device.IommuPriv is not DeviceDomainInfo info || unit is null)
            {
                return ErrorDetail.Fail(Errno.EINVAL, $"{device.Name} has no VT-d device info (not attached)");
            }

            // intel_svm_check (VTD_FLAG_SVM_CAPABLE): pasid_supported, and CAP.FL1GP because the CPU has 1 GiB pages
            // (X86_FEATURE_GBPAGES: model decision, every SVA-capable x86-64 CPU has it; no LA57 CPU is modelled, so
            // CAP.FL5LP is not needed). The model's FL1GP implies ECAP.FLTS.
            if (!unit.PasidSupported || !DmarCap.Fl1gp(unit.Cap))
            {
                return ErrorDetail.Fail(Errno.ENODEV, $"DMAR unit {unit.SeqId} is not SVM-capable (scalable mode with PASID, 1 GiB first-level pages for the CPU's tables)");
            }

            if (EnablePasid(unit, device) != Errno.None)
            {
                return ErrorDetail.Fail(Errno.ENODEV, $"PASID cannot be enabled for {device.Name}");
            }

            // The driver's own record (info->pri_enabled/ats_enabled): set by its attach, and only where the unit
            // supports them (ECAP.DT, ECAP.PRS), not by the device's capability bits another caller may have set.
            if (!info.PasidEnabled || !info.PriEnabled || !info.AtsEnabled)
            {
                return ErrorDetail.Fail(Errno.EINVAL, $"{device.Name} needs PASID, PRI and ATS enabled for SVA");
            }

            // 5.15: a failed handler registration leaves the device on the iopf queue.
            Errno ret = _platform.Iommu.IopfQueueAddDevice(_iopfQueues[unit.SeqId]!, device);
            return ret == Errno.None ? _platform.Iommu.RegisterDeviceFaultHandler(device, _platform.Iommu.QueueIopf, device) : ret;
        }
    }

    /// <inheritdoc/>
    /// <remarks>
    /// 5.15 <c>intel_iommu_dev_disable_feat</c>: IOPF 0. SVA: <c>iommu_unregister_device_fault_handler</c> (-EBUSY while page
    /// requests await a response: SVA stays enabled), then <c>iopf_queue_remove_device</c> (-EINVAL when the device is not on
    /// its unit's iopf queue).
    /// </remarks>
    [KernelSymbol("intel_iommu_dev_disable_feat")]
    public Errno SvaDisableFeature(Device device, IommuDevFeature feature)
    {
        _memory.ThrowIfDisposed();
        ArgumentNullException.ThrowIfNull(device);
        switch (feature)
        {
            case IommuDevFeature.Iopf:
                return Errno.None;
            case IommuDevFeature.Sva:
                Errno ret = _platform.Iommu.UnregisterDeviceFaultHandler(device);
                return ret == Errno.None ? _platform.Iommu.IopfQueueRemoveDevice(DeviceToIommu(device) is { } unit ? IopfQueueOf(unit.SeqId) : null, device) : ret;

            default:
                return ErrorDetail.Fail(Errno.ENODEV, $"feature {feature} is not an SVA feature");
        }
    }

    /// <inheritdoc/>
    /// <remarks>
    /// 5.15 <c>intel_svm_bind</c>/<c>intel_svm_bind_mm</c>: -EINVAL without a unit or device info, or for a
    /// process that has exited (model decision: no mm to subscribe to); the mm's <c>intel_svm</c> is created
    /// with its notifier on the first bind; a pair already bound gets <c>users++</c> and the same handle;
    /// otherwise <c>intel_pasid_setup_first_level(mm.Pgd, pasid, DID 1)</c> (its errno returned, the svm
    /// dropped again if no device is left).
    /// </remarks>
    [KernelSymbol("intel_svm_bind")]
    public Errno SvaBind(Device device, ProcessAddressSpace mm, uint pasid, object? drvdata, out IommuSva? handle)
    {
        _memory.ThrowIfDisposed();
        ArgumentNullException.ThrowIfNull(device);
        ArgumentNullException.ThrowIfNull(mm);
        handle = null;

        // The svm's notifier is registered and unregistered with neither driver lock held: the process's lock, which
        // mmu_notifier_(un)register takes, is held while the process's notifiers run, and a user's notifier that
        // unmaps a domain with an ATS device takes _deviceDomainLock (iommu_flush_dev_iotlb). 5.15 holds only
        // pasid_mutex there (device_domain_lock is a spinlock). An svm not yet (or no longer) listed has no devices:
        // its notifier calls do nothing.
        IntelSvm? fresh = null, drop = null;
        try
        {
            while (true)
            {
                // mm->pgd is read before the driver locks: it takes the process's lock, held while the process's
                // notifiers run (see above). 0 once the process exited.
                ulong pgd = mm.Pgd;
                lock (_deviceDomainLock)
                lock (_pasidMutex)
                {
                    IntelIommuUnit? unit = DeviceToIommu(device);
                    if (unit is null || device.IommuPriv is not DeviceDomainInfo info)
                    {
                        return ErrorDetail.Fail(Errno.EINVAL, $"{device.Name} is not attached behind a VT-d unit of this driver");
                    }

                    if (mm.Exited || pgd == 0)
                    {
                        return ErrorDetail.Fail(Errno.EINVAL, $"{mm} has exited");
                    }

                    bool created = false;
                    if (_pasidPrivate.TryGetValue(pasid, out IntelSvm? svm) && svm.Mm != mm)
                    {
                        // One PASID, one mm: never program another process's tables behind this svm's notifier.
                        return ErrorDetail.Fail(Errno.EBUSY, $"PASID {pasid} is bound to {svm.Mm}, not {mm}");
                    }

                    if (svm is null)
                    {
                        if (fresh is null)
                        {
                            goto Register;
                        }

                        svm = fresh;
                        fresh = null;
                        _pasidPrivate.Add(pasid, svm);
                        created = true;
                    }

                    foreach (IntelSvmDev d in svm.Devices)
                    {
                        if (d.Device == device)
                        {
                            d.Users++;
                            handle = d;
                            return Errno.None;
                        }
                    }

                    // The entry is programmed and the device listed in one section with the svm's release (the exit's
                    // intel_mm_release): either the release finds the device and tears its entry down before the exit
                    // frees the tables, or the bind finds the svm released and programs nothing. (5.15's caller holds
                    // a reference on a live mm; the model's process may exit on another thread meanwhile.)
                    Errno err;
                    IntelSvmDev? sdev = null;
                    lock (svm.Devices)
                    {
                        err = svm.Released
                            ? ErrorDetail.Fail(Errno.EINVAL, $"{mm} has exited")
                            : SetupFirstLevel(unit, info, pgd, pasid, Dmar.FlptDefaultDid, 0);
                        if (err == Errno.None)
                        {
                            sdev = new IntelSvmDev(device, mm, unit, info, pasid);
                            svm.Devices.Add(sdev);
                        }
                    }

                    if (err != Errno.None)
                    {
                        if (created || svm.Devices.Count == 0)
                        {
                            _pasidPrivate.Remove(pasid);
                            drop = svm;
                        }

                        return err;
                    }

                    handle = sdev;
                    return Errno.None;
                }

            Register:
                fresh = new IntelSvm(this, mm, pasid);
                try
                {
                    mm.MmuNotifierRegister(fresh);
                }
                catch (InvalidOperationException) when (mm.Exited)
                {
                    fresh = null;
                    return ErrorDetail.Fail(Errno.EINVAL, $"{mm} has exited");
                }
            }
        }
        finally
        {
            fresh?.Mm.MmuNotifierUnregister(fresh);
            drop?.Mm.MmuNotifierUnregister(drop);
        }
    }

    /// <inheritdoc/>
    /// <remarks>
    /// 5.15 <c>intel_svm_unbind_mm</c>: <c>users--</c>; at 0 the PASID entry is torn down (no fault-ignore), the PASID's
    /// page requests are drained (<c>intel_svm_drain_prq</c>, when the device has PRI enabled and the unit a page request
    /// queue: requests of the PASID still in the queue are handled, the device's iopf work is flushed — its answers find
    /// no bind and are not sent, as in 5.15 — then a fence wait, a P_IOTLB of the PASID with the RID domain's DID, a PASID
    /// device-TLB invalidation of one page at address 0 and a wait with PD; model decision: PD only with ECAP.PDS, which
    /// 5.15 sets unconditionally), and the mm's last device unregisters the notifier. A handle of another driver or one no longer bound
    /// returns false.
    /// </remarks>
    [KernelSymbol("intel_svm_unbind")]
    public bool SvaUnbind(IommuSva handle)
    {
        _memory.ThrowIfDisposed();
        ArgumentNullException.ThrowIfNull(handle);
        if (handle is not IntelSvmDev sdev)
        {
            return false;
        }

        IntelSvm? drop = null;
        try
        {
            return UnbindLocked(sdev, out drop);
        }
        finally
        {
            // With neither driver lock held (see SvaBind): the svm is no longer listed and has no devices.
            drop?.Mm.MmuNotifierUnregister(drop);
        }
    }

    private bool UnbindLocked(IntelSvmDev sdev, out IntelSvm? drop)
    {
        drop = null;
        lock (_deviceDomainLock)
        lock (_pasidMutex)
        {
            if (!_pasidPrivate.TryGetValue(sdev.Pasid, out IntelSvm? svm) || !svm.Devices.Contains(sdev))
            {
                return false;
            }

            if (--sdev.Users > 0)
            {
                return true;
            }

            lock (svm.Devices)
            {
                svm.Devices.Remove(sdev);
            }

            // The device may have been detached meanwhile; its PASID table then went with its info.
            if (sdev.Device.IommuPriv == sdev.Info)
            {
                TearDownPasidEntry(sdev.Unit, sdev.Info, sdev.Pasid);
                IntelSvmDrainPrq(sdev.Info, sdev.Unit, sdev.Pasid);
            }

            // The drain dropped both locks while it waited: another unbind may have emptied and dropped this svm meanwhile
            // (and a bind made a new one for the same PASID), so only the unbind that finds its own svm still listed
            // and empty removes it.
            if (svm.Devices.Count == 0 && _pasidPrivate.TryGetValue(sdev.Pasid, out IntelSvm? listed) && listed == svm)
            {
                _pasidPrivate.Remove(sdev.Pasid);
                drop = svm;
            }

            return true;
        }
    }

    /// <inheritdoc/>
    /// <remarks>5.15 <c>intel_svm_get_pasid</c>: the bind's PASID, or <see cref="IommuCore.PasidInvalid"/> for a handle no longer bound.</remarks>
    [KernelSymbol("intel_svm_get_pasid")]
    public uint SvaGetPasid(IommuSva handle)
    {
        _memory.ThrowIfDisposed();
        ArgumentNullException.ThrowIfNull(handle);
        lock (_pasidMutex)
        {
            return handle is IntelSvmDev sdev && _pasidPrivate.TryGetValue(sdev.Pasid, out IntelSvm? svm) && svm.Devices.Contains(sdev)
                ? sdev.Pasid
                : IommuCore.PasidInvalid;
        }
    }

    // intel_invalidate_range: one P_IOTLB page-selective per power-of-two chunk of the range, per device.
    private static void SvmInvalidateRange(IntelSvm svm, ulong start, ulong end)
    {
        ulong pages = (end - start + 4095) >> 12;
        if (pages == 0 || end <= start)
        {
            return;
        }

        ulong p = System.Numerics.BitOperations.RoundUpToPowerOf2(pages);
        ulong chunk = p << 12;
        ulong first = start & ~(chunk - 1);
        ulong last = (end + chunk - 1) & ~(chunk - 1);
        IntelSvmDev[] devs;
        lock (svm.Devices)
        {
            devs = [.. svm.Devices];
        }

        foreach (IntelSvmDev d in devs)
        {
            for (ulong a = first; a < last; a += chunk)
            {
                d.Unit.FlushPiotlb(Dmar.FlptDefaultDid, svm.Pasid, a, p, ih: false);
                SvmFlushDevIotlb(d.Unit, d.Info, svm.Pasid, a, p);
            }
        }
    }

    // intel_mm_release: tear every bound device's entry down with fault-ignore; binds stay until unbind.
    private void SvmRelease(IntelSvm svm)
    {
        IntelSvmDev[] devs;
        lock (svm.Devices)
        {
            svm.Released = true; // no bind programs an entry on these tables from here on
            devs = [.. svm.Devices];
        }

        // Under _deviceDomainLock, as every detach (RemoveDevInfo) is: otherwise a detach of the device's RID domain
        // between the check and the tear-down frees the PASID table this writes FPD into, and the frame may already
        // be another table. 5.15 runs intel_mm_release under RCU only; taking the lock here (after the process's
        // lock, the order a munmap's notifiers already use) closes the model's window. A bind or unbind holds it
        // only without the process's lock.
        lock (_deviceDomainLock)
        {
            foreach (IntelSvmDev d in devs)
            {
                if (d.Device.IommuPriv == d.Info)
                {
                    TearDownPasidEntry(d.Unit, d.Info, svm.Pasid, faultIgnore: true);
                }
            }
        }
    }

    // struct intel_svm: one per bound mm (PASID), its notifier and its devices.
    private sealed class IntelSvm(IntelIommu owner, ProcessAddressSpace mm, uint pasid) : MmuNotifier
    {
        public ProcessAddressSpace Mm { get; } = mm;

        public uint Pasid { get; } = pasid;

        public List<IntelSvmDev> Devices { get; } = [];

        // Set by the release (mm exit), under the Devices lock.
        public bool Released { get; set; }

        public override void InvalidateRange(ProcessAddressSpace mm, ulong start, ulong end) => SvmInvalidateRange(this, start, end);

        public override void Release(ProcessAddressSpace mm) => owner.SvmRelease(this);
    }

    // struct intel_svm_dev: one per (mm, device); the handle users hold.
    private sealed class IntelSvmDev(Device device, ProcessAddressSpace mm, IntelIommuUnit unit, DeviceDomainInfo info, uint pasid)
        : IommuSva(device, mm)
    {
        public IntelIommuUnit Unit { get; } = unit;

        public DeviceDomainInfo Info { get; } = info;

        public uint Pasid { get; } = pasid;

        public int Users { get; set; } = 1;
    }
}
