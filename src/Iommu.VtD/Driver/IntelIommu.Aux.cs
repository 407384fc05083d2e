using Iommu.Devices;
using Iommu.Domains;
using Iommu.VtD.Driver.Format;

namespace Iommu.VtD.Driver;

public sealed partial class IntelIommu
{
    /// <inheritdoc/>
    /// <remarks>
    /// AUXD_CAPABILITY (<c>intel_iommu_dev_has_feat(AUX)</c>): a PCI device with a PASID capability
    /// and the Intel Scalable-IOV DVSEC, while every unit runs scalable mode with PASID.
    /// AUXD_ENABLED (<c>intel_iommu_dev_feat_enabled</c>): scalable mode everywhere and the device's
    /// info has <c>auxd_enabled</c>.
    /// </remarks>
    [KernelSymbol("intel_iommu_dev_has_feat")]
    [KernelSymbol("intel_iommu_dev_feat_enabled")]
    public Errno GetDevAttr(Device device, IommuDevAttr attr, out bool value)
    {
        _memory.ThrowIfDisposed();
        ArgumentNullException.ThrowIfNull(device);
        value = attr switch
        {
            IommuDevAttr.AuxdCapability => device is PciDevice { HasPasidCapability: true, HasScalableIovDvsec: true }
                && ScalableModeSupport && PasidModeSupport,
            IommuDevAttr.AuxdEnabled => ScalableModeSupport && device.IommuPriv is DeviceDomainInfo { AuxdEnabled: true },
            _ => false,
        };
        return attr is IommuDevAttr.AuxdCapability or IommuDevAttr.AuxdEnabled
            ? Errno.None
            : ErrorDetail.Fail(Errno.EINVAL, $"{attr} cannot be read");
    }

    /// <inheritdoc/>
    /// <remarks>
    /// AUXD_ENABLE (<c>intel_iommu_enable_auxd</c>): -EINVAL without a unit, without scalable mode
    /// and PASID on it; -ENODEV when PASID cannot be enabled for the device (no device info — it is
    /// attached to no domain — or no PASID support); otherwise sets PASIDE in the context entry
    /// (flushing it), enables PASID on the device and marks the info. Enabling twice is harmless.
    /// AUXD_DISABLE (<c>intel_iommu_disable_auxd</c>) clears the mark and returns 0 even with aux
    /// domains still attached (5.1–5.15 have no -EBUSY check).
    /// </remarks>
    [KernelSymbol("intel_iommu_enable_auxd")]
    [KernelSymbol("intel_iommu_disable_auxd")]
    public Errno SetDevAttr(Device device, IommuDevAttr attr)
    {
        _memory.ThrowIfDisposed();
        ArgumentNullException.ThrowIfNull(device);
        lock (_deviceDomainLock)
        {
            switch (attr)
            {
                case IommuDevAttr.AuxdEnable:
                    IntelIommuUnit? unit = DeviceToIommu(device);
                    if (unit is null)
                    {
                        return ErrorDetail.Fail(Errno.EINVAL, $"{device.Name} is not behind a VT-d unit of this driver");
                    }

                    if (!unit.ScalableMode || !unit.PasidSupported)
                    {
                        return ErrorDetail.Fail(Errno.EINVAL, $"DMAR unit {unit.SeqId} of {device.Name} is not in scalable mode with PASID support");
                    }

                    if (EnablePasid(unit, device) != Errno.None)
                    {
                        return ErrorDetail.Fail(Errno.ENODEV, $"PASID cannot be enabled for {device.Name} (no PASID capability, or not attached to a domain)");
                    }

                    ((DeviceDomainInfo)device.IommuPriv!).AuxdEnabled = true;
                    return Errno.None;

                case IommuDevAttr.AuxdDisable:
                    if (device.IommuPriv is DeviceDomainInfo info)
                    {
                        info.AuxdEnabled = false;
                    }

                    return Errno.None;

                default:
                    return ErrorDetail.Fail(Errno.EINVAL, $"{attr} cannot be set");
            }
        }
    }

    /// <inheritdoc/>
    /// <remarks>
    /// <c>intel_iommu_aux_attach_device</c> (5.15 with per-(domain, device) user counts):
    /// -EPERM unless AUX is enabled on the device and the domain is UNMANAGED; -ENODEV / -EFAULT from
    /// the attach preparation; -ENODEV when no PASID is left in [1, device max), a range that here also stops
    /// below the unit's 2 &lt;&lt; ECAP.PSS (5.15 does not stop there and hands out PASIDs the unit refuses); -ENOSPC without a
    /// free DID; the PASID-entry errors (-EINVAL, -ENODEV, -EBUSY). The first aux attach allocates
    /// the domain's default PASID; every device the domain is aux-attached to uses it. On failure
    /// the PASID is released when nothing else uses it (and, unlike 5.15, the field is reset).
    /// Unlike 5.15, a domain in use with more page-table levels than this device's unit walks is
    /// refused with -EINVAL (as in <see cref="AttachDev"/>) instead of having its top level freed.
    /// </remarks>
    [KernelSymbol("intel_iommu_aux_attach_device")]
    public Errno AuxAttachDev(IDomain domain, Device device)
    {
        _memory.ThrowIfDisposed();
        DmarDomain d = AsDmar(domain);
        ArgumentNullException.ThrowIfNull(device);
        lock (_deviceDomainLock)
        {
            if (!IsAuxDomain(device, d))
            {
                return ErrorDetail.Fail(Errno.EPERM, $"auxiliary domains are not enabled on {device.Name}, or the domain is not UNMANAGED");
            }

            Errno err = CheckLevelsInUse(d, device);
            if (err == Errno.None)
            {
                err = PrepareDomainAttachDevice(d, device);
            }

            return err != Errno.None ? err : AuxDomainAddDev(d, device);
        }
    }

    /// <inheritdoc/>
    /// <remarks>
    /// <c>intel_iommu_aux_detach_device</c>: silently nothing when AUX is no longer enabled on the
    /// device; otherwise the last user of (domain, device) tears down the PASID entry (flushing the
    /// PASID cache and IOTLB at once) and releases the DID; the last aux attachment of the domain
    /// releases its PASID (reset to 0 here; 5.15 keeps the stale number).
    /// </remarks>
    [KernelSymbol("intel_iommu_aux_detach_device")]
    public void AuxDetachDev(IDomain domain, Device device)
    {
        _memory.ThrowIfDisposed();
        DmarDomain d = AsDmar(domain);
        ArgumentNullException.ThrowIfNull(device);
        lock (_deviceDomainLock)
        {
            if (!IsAuxDomain(device, d))
            {
                return;
            }

            var info = (DeviceDomainInfo)device.IommuPriv!;
            if (!d.Subdevices.Exists(s => s.Device == device))
            {
                return; // never aux-attached to this device
            }

            if (UnlinkSubdevice(d, device) == 0)
            {
                // After a RID-domain change lost this aux entry, set_dev_pasid may have taken the
                // number on this device: that entry is not ours to clear.
                if (!_devPasids.ContainsKey((device, d.DefaultPasid)))
                {
                    TearDownPasidEntry(info.Unit, info, d.DefaultPasid);
                }

                DomainDetachIommu(d, info.Unit);
            }

            ReleaseDefaultPasidIfUnused(d);
        }
    }

    /// <inheritdoc/>
    [KernelSymbol("intel_iommu_aux_get_pasid")]
    public int AuxGetPasid(IDomain domain, Device device)
    {
        _memory.ThrowIfDisposed();
        DmarDomain d = AsDmar(domain);
        return d.DefaultPasid > 0 ? (int)d.DefaultPasid : ErrorDetail.Fail(Errno.EINVAL, "the domain has no aux PASID (never aux-attached)").ToKernelReturn();
    }

    /// <inheritdoc/>
    /// <remarks>The seed's <c>DOMAIN_ATTR_AUXD_ID</c>: the domain's default PASID, -EINVAL before the first aux attach; other attributes -EINVAL.</remarks>
    [KernelSymbol("intel_iommu_domain_get_attr", Version = "seed v4")]
    public Errno DomainGetAttr(IDomain domain, DomainAttr attr, out ulong value)
    {
        _memory.ThrowIfDisposed();
        DmarDomain d = AsDmar(domain);
        value = 0;
        if (attr != DomainAttr.AuxdId)
        {
            return ErrorDetail.Fail(Errno.EINVAL, $"intel-iommu has no {attr} attribute");
        }

        if (d.DefaultPasid == 0)
        {
            return ErrorDetail.Fail(Errno.EINVAL, "the domain has no aux PASID (never aux-attached)");
        }

        value = d.DefaultPasid;
        return Errno.None;
    }

    // intel_iommu_enable_pasid: PASIDE in the context entry (flushed) and PASID on in the device.
    private Errno EnablePasid(IntelIommuUnit unit, Device device)
    {
        if (device.IommuPriv is not DeviceDomainInfo info || !info.PasidSupported)
        {
            return Errno.EINVAL;
        }

        ulong ce;
        lock (unit.Lock)
        {
            ce = unit.ContextEntryAddress(info.Bus, info.DevFn, alloc: false);
            if (ce == 0)
            {
                return Errno.EINVAL;
            }

            ScalableContextEntry context = ScalableContextEntry.Load(_memory, ce);
            if (context.PasidEnabled)
            {
                ce = 0;
            }
            else
            {
                context.SetPasidEnable();
                context.StoreQ0(_memory, ce);
            }
        }

        if (ce != 0)
        {
            unit.FlushContext(info.Domain.IommuDid[unit.SeqId], (ushort)((info.Bus << 8) | info.DevFn), 0, Dmar.CcmdDevice);
        }

        if (!info.PasidEnabled)
        {
            info.Device.EnablePasid();
            info.PasidEnabled = true;
        }

        return Errno.None;
    }

    // aux_domain_add_dev
    private Errno AuxDomainAddDev(DmarDomain domain, Device device)
    {
        IntelIommuUnit? unit = DeviceToIommu(device);
        if (unit is null)
        {
            return ErrorDetail.Fail(Errno.ENODEV, $"{device.Name} is not behind a VT-d unit of this driver");
        }

        var pci = (PciDevice)device;
        if (domain.DefaultPasid == 0)
        {
            // ioasid_alloc(PASID_MIN, pci_max_pasids - 1) from the platform's one PASID namespace, the
            // range iommu_alloc_global_pasid uses too: aux and attached PASIDs never share a number. Unlike
            // 5.15, the range also stops below the unit's 2 << ECAP.PSS (iommu_alloc_global_pasid's cap): 5.15
            // would hand out a PASID the unit's hardware refuses, and every DMA through it would fail.
            uint pasid = _platform.Iommu.AllocGlobalPasid(pci);
            if (pasid == IommuCore.PasidInvalid)
            {
                return ErrorDetail.Fail(Errno.ENODEV, ErrorDetail.LastMessage ?? $"no free PASID for {device.Name}"); // names the range it searched
            }

            domain.DefaultPasid = pasid;
            Interlocked.Increment(ref _auxPasids);
        }

        if (LinkSubdevice(domain, device, unit) > 1)
        {
            return Errno.None; // another mdev of this parent already attached the domain: entry is programmed
        }

        Errno err = DomainAttachIommu(domain, unit);
        if (err == Errno.None)
        {
            err = SetupPagingPasid(unit, domain, (DeviceDomainInfo)device.IommuPriv!, domain.DefaultPasid);
            if (err != Errno.None)
            {
                DomainDetachIommu(domain, unit);
            }
        }

        if (err != Errno.None)
        {
            UnlinkSubdevice(domain, device);
            ReleaseDefaultPasidIfUnused(domain);
        }

        return err;
    }

    // intel_iommu_domain_free with aux attachments left (never detached, or left behind by AUXD_DISABLE,
    // which makes aux detach a no-op): 5.15's domain_exit walks only the RID devices, so each aux
    // PASID entry kept pointing at the page table it then freed, and DMA with the PASID walked
    // whatever the frames came to hold. Drop every attachment as its last aux detach would: tear the
    // entry down (flushing PASID cache, IOTLB and device-TLB), release the DID, then the PASID.
    private void AuxRemoveAllOnFree(DmarDomain domain)
    {
        foreach (DmarDomain.SubdevInfo sub in domain.Subdevices.ToArray())
        {
            domain.Subdevices.Remove(sub);

            // After a RID-domain change the entry went with the old table (TearDownAuxPasidEntries), and
            // set_dev_pasid may since have taken the number on this device: that entry is not ours.
            if (sub.Device.IommuPriv is DeviceDomainInfo info && info.Unit == sub.Unit
                && !_devPasids.ContainsKey((sub.Device, domain.DefaultPasid)))
            {
                TearDownPasidEntry(info.Unit, info, domain.DefaultPasid);
            }

            DomainDetachIommu(domain, sub.Unit);
        }

        ReleaseDefaultPasidIfUnused(domain);
    }

    private void ReleaseDefaultPasidIfUnused(DmarDomain domain)
    {
        if (domain.Subdevices.Count == 0 && domain.DefaultPasid != 0)
        {
            _platform.Iommu.FreeGlobalPasid(domain.DefaultPasid);
            domain.DefaultPasid = 0;
            Interlocked.Decrement(ref _auxPasids);
        }
    }

    // auxiliary_link_device: users of (domain, device) after the increment.
    private int LinkSubdevice(DmarDomain domain, Device device, IntelIommuUnit unit)
    {
        DmarDomain.SubdevInfo? sub = domain.Subdevices.Find(s => s.Device == device);
        if (sub is null)
        {
            DomainUpdateIotlb(domain, device);
            sub = new DmarDomain.SubdevInfo(device, unit);
            domain.Subdevices.Add(sub);
        }

        return ++sub.Users;
    }

    // auxiliary_unlink_device: users left; the entry goes at 0.
    private static int UnlinkSubdevice(DmarDomain domain, Device device)
    {
        DmarDomain.SubdevInfo? sub = domain.Subdevices.Find(s => s.Device == device);
        if (sub is null)
        {
            return 0;
        }

        if (--sub.Users == 0)
        {
            domain.Subdevices.Remove(sub);
        }

        return sub.Users;
    }
}
