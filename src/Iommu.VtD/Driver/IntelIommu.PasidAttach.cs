using Iommu.Devices;
using Iommu.Domains;
using Iommu.VtD.Driver.Format;

namespace Iommu.VtD.Driver;

// PASID attach for paging and identity domains (IIommuPasidOps): the ≈6.5 intel_iommu_set_dev_pasid
// and intel_iommu_remove_dev_pasid, over the 5.15 driver's PASID tables. Not in 5.15 or 6.3 (6.3
// implements set_dev_pasid for SVA domains only).
public sealed partial class IntelIommu : IIommuPasidOps
{
    // (device, PASID) → the domain attached there by set_dev_pasid; under _deviceDomainLock. The
    // domain's DevPasids list is the same relation seen from the domain (dmar_domain->dev_pasids).
    private readonly Dictionary<(Device Device, uint Pasid), DmarDomain> _devPasids = [];

    /// <inheritdoc/>
    /// <remarks>
    /// <para>Version: ≈6.5 behaviour (<c>intel_iommu_set_dev_pasid</c> for paging domains; the exact
    /// version is UNVERIFIED). In order: -EOPNOTSUPP for a nested domain (6.7/6.8 give
    /// nested domains no <c>set_dev_pasid</c>); -ENODEV when no unit of this driver serves the device;
    /// -EOPNOTSUPP when the unit has no scalable mode with PASID (<c>pasid_supported</c>); -ENODEV when
    /// the device has no device info (attached to no RID domain here, so no PASID table; 6.x keeps the
    /// table from probe); -EOPNOTSUPP when the device has no PASID capability (decided: 6.x would write
    /// an entry the device can never use); -EBUSY when this driver already set that (device, PASID)
    /// or an SVA bind holds it (6.2's SVA domain in the PASID array, also after the process exited);
    /// -EINVAL for a domain in use with more levels than the unit walks (as <see cref="AttachDev"/>);
    /// -ENODEV for a PASID beyond the device's PASID table and -EBUSY for a present entry (PASID 0 =
    /// RID2PASID, or an aux domain's PASID on this device) — checked here, before the domain is
    /// touched, where 6.5 learns them from the setter after <c>domain_attach_iommu</c>; -EFAULT from
    /// the attach preparation; -ENOSPC without a free DID on the unit; -ENODEV without memory for the
    /// PASID table page.</para>
    /// <para>The entry is a second-level entry with the domain's DID on the device's unit (SRE when
    /// ECAP.SRS, as for every PASID but 0), or a pass-through entry (DID 1) for the identity domain; a
    /// domain may span devices and units. PASID is then enabled in the device's context entry and
    /// the device. Unmap flushes need no per-PASID work: they invalidate the domain's DID on every
    /// unit it holds one on, and a DID-selective IOTLB invalidation drops every PASID's entries.</para>
    /// <para>On failure nothing is left behind: no entry, no DID reference, no tracking.</para>
    /// </remarks>
    [KernelSymbol("intel_iommu_set_dev_pasid", Version = "6.5")]
    public Errno SetDevPasid(IDomain domain, Device device, uint pasid)
    {
        _memory.ThrowIfDisposed();
        DmarDomain d = AsDmar(domain);
        ArgumentNullException.ThrowIfNull(device);
        if (d.NestParent is not null)
        {
            // 6.7/6.8 intel_nested_domain_ops have no set_dev_pasid (the core's -EOPNOTSUPP); the parent's
            // free would not reach such an entry either.
            return ErrorDetail.Fail(Errno.EOPNOTSUPP, "a nested domain cannot be attached to a PASID (no set_dev_pasid for nested domains)");
        }

        lock (_deviceDomainLock)
        {
            IntelIommuUnit? unit = DeviceToIommu(device);
            if (unit is null)
            {
                return ErrorDetail.Fail(Errno.ENODEV, $"{device.Name} is not behind a VT-d unit of this driver");
            }

            if (!unit.ScalableMode || !unit.PasidSupported)
            {
                return ErrorDetail.Fail(Errno.EOPNOTSUPP, $"DMAR unit {unit.SeqId} of {device.Name} is not in scalable mode with PASID support");
            }

            if (device.IommuPriv is not DeviceDomainInfo info)
            {
                return ErrorDetail.Fail(Errno.ENODEV, $"{device.Name} is attached to no domain, so it has no PASID table");
            }

            if (!info.PasidSupported)
            {
                return ErrorDetail.Fail(Errno.EOPNOTSUPP, $"{device.Name} has no PASID capability");
            }

            if (_devPasids.ContainsKey((device, pasid)))
            {
                return ErrorDetail.Fail(Errno.EBUSY, $"PASID {pasid} of {device.Name} is already attached to a domain");
            }

            // 6.2 keeps an SVA bind's domain in the group's pasid_array until the unbind (also after mm exit, which
            // leaves the entry cleared with FPD): the slot is taken. The 5.15 bind here is not in the core's array, so
            // the driver answers for it; otherwise the unbind's tear-down would remove the attached domain's entry.
            if (SvaHoldsPasid(device, pasid))
            {
                return ErrorDetail.Fail(Errno.EBUSY, $"PASID {pasid} of {device.Name} is bound to a process (SVA)");
            }

            Errno err = CheckLevelsInUse(d, device);
            if (err == Errno.None)
            {
                err = CheckPasidEntryFree(info, pasid);
            }

            if (err == Errno.None)
            {
                err = PrepareDomainAttachDevice(d, device);
            }

            if (err == Errno.None)
            {
                err = DomainAttachIommu(d, unit);
                if (err != Errno.None)
                {
                    err = ErrorDetail.Fail(err, $"no free domain id on DMAR unit {unit.SeqId} for PASID {pasid} of {device.Name}");
                }
            }

            if (err != Errno.None)
            {
                return err;
            }

            // Listed before the entry exists and unlisted after it is gone: an unmap running meanwhile
            // (it takes no driver lock) flushes this PASID whenever the hardware may have cached
            // through it. (6.5 lists it after programming the entry.)
            var link = new DmarDomain.DevPasidInfo(device, unit.SeqId, pasid);
            DomainUpdateIotlb(d, device);
            lock (d.DevPasids)
            {
                d.DevPasids.Add(link);
            }

            err = DomainSetupPasidEntry(unit, d, info, pasid);
            if (err == Errno.None)
            {
                err = EnablePasid(unit, device);
                if (err != Errno.None)
                {
                    TearDownPasidEntry(unit, info, pasid);
                    err = ErrorDetail.Fail(err, $"PASID cannot be enabled for {device.Name}");
                }
            }

            if (err != Errno.None)
            {
                lock (d.DevPasids)
                {
                    d.DevPasids.Remove(link);
                }

                DomainDetachIommu(d, unit);
                return err;
            }

            _devPasids.Add((device, pasid), d);
            return Errno.None;
        }
    }

    /// <inheritdoc/>
    /// <remarks>
    /// <para>Version: ≈6.5 behaviour (<c>intel_iommu_remove_dev_pasid</c>). Tears the PASID entry down
    /// (clear, PASID-cache invalidation, then IOTLB: DID-selective for a second-level entry,
    /// PASID-selective for pass-through) and then drops the domain's reference on the unit, so the DID
    /// cannot be reused before the flush (the ≈6.5 source drops it first).</para>
    /// <para>A (device, PASID) this driver did not set — the core's unwind calls every group device —
    /// is left alone: 6.5 tears the entry down regardless, which would destroy an aux domain's entry at
    /// that PASID.</para>
    /// </remarks>
    [KernelSymbol("intel_iommu_remove_dev_pasid", Version = "6.5")]
    public void RemoveDevPasid(Device device, uint pasid)
    {
        _memory.ThrowIfDisposed();
        ArgumentNullException.ThrowIfNull(device);
        lock (_deviceDomainLock)
        {
            if (!_devPasids.Remove((device, pasid), out DmarDomain? d))
            {
                return;
            }

            IntelIommuUnit unit = DeviceToIommu(device)!;
            if (device.IommuPriv is DeviceDomainInfo info)
            {
                TearDownPasidEntry(unit, info, pasid);
            }

            lock (d.DevPasids)
            {
                d.DevPasids.RemoveAll(p => p.Device == device && p.Pasid == pasid);
            }

            DomainDetachIommu(d, unit);
        }
    }

    /// <inheritdoc/>
    /// <remarks>6.2 <c>alloc_iommu</c>: <c>2 &lt;&lt; ECAP.PSS</c> when the unit has scalable mode with PASID, else 0
    /// (and 0 for a device no unit of this driver serves).</remarks>
    [KernelSymbol("iommu_device.max_pasids", Version = "6.2")]
    public uint MaxPasids(Device device)
    {
        _memory.ThrowIfDisposed();
        ArgumentNullException.ThrowIfNull(device);
        return DeviceToIommu(device) is { PasidSupported: true } unit ? (uint)Math.Min(2UL << DmarCap.EcapPss(unit.Ecap), uint.MaxValue) : 0; // 2UL: PSS may be 31
    }

    // An SVA bind of (device, PASID) exists (until its unbind, whatever the state of its entry). Lock order as
    // SvaBind: _deviceDomainLock, then _pasidMutex.
    private bool SvaHoldsPasid(Device device, uint pasid)
    {
        lock (_pasidMutex)
        {
            return _pasidPrivate.TryGetValue(pasid, out IntelSvm? svm) && FindSdev(svm, device) is not null;
        }
    }

    // The entry's refusals (beyond the table, or present) before anything changes: attaching the domain
    // to the unit would already have turned on its superpage sizes and trimmed its levels.
    private Errno CheckPasidEntryFree(DeviceDomainInfo info, uint pasid)
    {
        if (pasid >= info.MaxPasid)
        {
            return ErrorDetail.Fail(Errno.ENODEV, $"no PASID entry for PASID {pasid} of {info.Device.Name} (table holds {info.MaxPasid})");
        }

        ulong pte = PasidEntryAddress(info, pasid, alloc: false);
        return pte != 0 && PasidEntry.LoadQ0(_memory, pte).Present
            ? ErrorDetail.Fail(Errno.EBUSY, $"PASID {pasid} of {info.Device.Name} is already in use")
            : Errno.None;
    }

    // The one place a domain's PASID entry is built for set_dev_pasid (and re-built after a RID domain
    // change): pass-through for the identity domain, otherwise the stage the domain uses (first level,
    // second level, or nested over its parent) through SetupPagingPasid.
    private Errno DomainSetupPasidEntry(IntelIommuUnit unit, DmarDomain domain, DeviceDomainInfo info, uint pasid) =>
        domain.PassThrough
            ? SetupPassThrough(unit, domain, info, pasid)
            : SetupPagingPasid(unit, domain, info, pasid);

    // The device's RID domain changed: its PASID table was freed with the old device info (its
    // entries torn down and flushed), but 6.x keeps one PASID table per device for its lifetime, so
    // PASID attachments survive a RID change. Re-program them into the new table. A failure (no
    // memory for a PASID table page) leaves that PASID without an entry: its DMA faults.
    private void RestoreDevPasids(IntelIommuUnit unit, DeviceDomainInfo info)
    {
        foreach (KeyValuePair<(Device Device, uint Pasid), DmarDomain> a in _devPasids)
        {
            if (a.Key.Device != info.Device)
            {
                continue;
            }

            if (DomainSetupPasidEntry(unit, a.Value, info, a.Key.Pasid) != Errno.None || EnablePasid(unit, info.Device) != Errno.None)
            {
                Log.DeviceError(_log, info.Device.Name, $"PASID {a.Key.Pasid} could not be re-programmed after the RID domain changed");
            }
        }
    }

    // The domain is being freed with PASID attachments the driver still holds: the core frees only a domain no
    // group names, but a device taken out of its group (iommu_group_remove_device) keeps its attachments, which
    // no group names any more. Take each entry down as remove_dev_pasid does (clear, PASID-cache and IOTLB
    // flush, then the unit's DID reference), as the free does for the RID's devices (5.15 domain_exit ->
    // domain_remove_dev_info) and aux domains, so no entry keeps pointing at the freed tables. Under
    // _deviceDomainLock.
    private void RemoveDevPasidsOnFree(DmarDomain domain)
    {
        List<(Device Device, uint Pasid)>? held = null;
        foreach (KeyValuePair<(Device Device, uint Pasid), DmarDomain> a in _devPasids)
        {
            if (a.Value == domain)
            {
                (held ??= []).Add(a.Key);
            }
        }

        foreach ((Device device, uint pasid) in held ?? [])
        {
            RemoveDevPasid(device, pasid);
        }
    }

    // The device goes away (release_device): its PASID attachments end with it.
    private void ForgetDevPasids(Device device)
    {
        List<(Device Device, uint Pasid)>? gone = null;
        foreach (KeyValuePair<(Device Device, uint Pasid), DmarDomain> a in _devPasids)
        {
            if (a.Key.Device == device)
            {
                (gone ??= []).Add(a.Key);
            }
        }

        if (gone is null)
        {
            return;
        }

        IntelIommuUnit? unit = DeviceToIommu(device);
        foreach ((Device Device, uint Pasid) key in gone)
        {
            _devPasids.Remove(key, out DmarDomain? d);
            lock (d!.DevPasids)
            {
                d.DevPasids.RemoveAll(p => p.Device == device && p.Pasid == key.Pasid);
            }

            if (unit is not null)
            {
                DomainDetachIommu(d, unit);
            }
        }
    }
}
