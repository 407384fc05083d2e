using Iommu.Devices;
using Iommu.Domains;
using Iommu.VtD.Driver.Format;

namespace Iommu.VtD.Driver;

public sealed partial class IntelIommu
{
    /// <inheritdoc/>
    /// <remarks>
    /// 5.15 order: RMRR-locked device with an UNMANAGED domain → -EPERM; aux-enabled device with an
    /// UNMANAGED domain → -EPERM; the current RID domain is detached first (so a later failure
    /// leaves the device attached to nothing); <c>prepare_domain_attach_device</c> (-ENODEV,
    /// -EFAULT); then context (and PASID) programming, where any failure, DID exhaustion included,
    /// surfaces as -EBUSY. Unlike 5.15, a domain in use on a unit with more page-table levels than this
    /// device's unit walks is refused with -EINVAL, as 6.12's <c>paging_domain_compatible</c> does: 5.15
    /// drops the top level and frees it while the wider unit still walks from it. That refusal comes
    /// before the device's current domain is detached, so the device keeps it.
    /// </remarks>
    [KernelSymbol("intel_iommu_attach_device")]
    public Errno AttachDev(IDomain domain, Device device)
    {
        _memory.ThrowIfDisposed();
        DmarDomain d = AsDmar(domain);
        ArgumentNullException.ThrowIfNull(device);
        if (d.Type == DomainType.Unmanaged && device is PciDevice { RmrrLocked: true })
        {
            Log.RmrrLocked(_log, device.Name);
            return ErrorDetail.Fail(Errno.EPERM, $"{device.Name} is ineligible for IOMMU domain attach due to platform RMRR requirement");
        }

        lock (_deviceDomainLock)
        {
            if (IsAuxDomain(device, d))
            {
                return ErrorDetail.Fail(Errno.EPERM, $"{device.Name} has auxiliary domains enabled; UNMANAGED domains attach to it only in aux mode");
            }

            Errno err = CheckLevelsInUse(d, device);
            if (err != Errno.None)
            {
                return err;
            }

            if (device.IommuPriv is DeviceDomainInfo old)
            {
                RemoveDevInfo(old);
            }

            err = PrepareDomainAttachDevice(d, device);
            if (err != Errno.None)
            {
                return err;
            }

            IntelIommuUnit unit = DeviceToIommu(device)!;
            err = InsertDevInfo(unit, (PciDevice)device, d);
            if (err == Errno.None)
            {
                RestoreDevPasids(unit, (DeviceDomainInfo)device.IommuPriv!);
                SiDomainMapRmrrs(d, (PciDevice)device);
            }

            return err is Errno.None or Errno.EBUSY
                ? err
                : ErrorDetail.Fail(Errno.EBUSY, $"could not program {device.Name} for the domain (no DID, or no table memory on DMAR unit {unit.SeqId})");
        }
    }

    /// <inheritdoc/>
    [KernelSymbol("intel_iommu_detach_device")]
    public void DetachDev(IDomain domain, Device device)
    {
        _memory.ThrowIfDisposed();
        ArgumentNullException.ThrowIfNull(device);
        lock (_deviceDomainLock)
        {
            if (device.IommuPriv is DeviceDomainInfo info)
            {
                RemoveDevInfo(info);
            }
        }
    }

    // is_aux_domain: device info with auxd_enabled and an UNMANAGED domain.
    private static bool IsAuxDomain(Device device, DmarDomain domain) =>
        device.IommuPriv is DeviceDomainInfo { AuxdEnabled: true } && domain.Type == DomainType.Unmanaged;

    // prepare_domain_attach_device: unit, width check, gaw, and dropping page-table levels. 5.15 drops
    // levels (freeing the old top-level table) even when the domain is in use on a wider unit, whose
    // context/PASID entry still points at that frame with the old AW: once the frame is reused, DMA
    // through the wider unit walks whatever it now holds. We follow the later kernel instead
    // (paging_domain_compatible, 6.12): a domain in use with more levels than the unit walks is refused
    // with -EINVAL by CheckLevelsInUse, before the device loses its old domain (type1 then keeps a
    // domain of its own for the group); an unused one is still trimmed here. gaw, too, is kept within
    // the levels and, while in use, within every unit's width (5.15 raises it on a wider unit).
    private Errno PrepareDomainAttachDevice(DmarDomain domain, Device device)
    {
        IntelIommuUnit? unit = DeviceToIommu(device);
        if (unit is null)
        {
            return ErrorDetail.Fail(Errno.ENODEV, $"{device.Name} is not behind a VT-d unit of this driver");
        }

        int addrWidth = Math.Min(Dmar.AgawToWidth(unit.Agaw), DmarCap.Mgaw(unit.Cap));
        if (addrWidth < 64 && domain.MaxAddr > 1UL << addrWidth)
        {
            return ErrorDetail.Fail(Errno.EFAULT, $"DMAR unit {unit.SeqId} is {addrWidth} bits wide but the domain maps up to 0x{domain.MaxAddr:x} ({device.Name})");
        }

        // 5.15 sets gaw to this unit's width, even above what the (already dropped) levels walk: the next
        // map there hits BUG_ON(!domain_pfn_supported) in __domain_mapping (here: a leaf at the IOVA modulo
        // the table's reach), and above a narrower unit the domain is still on, a map succeeds that unit's
        // devices cannot reach. As 6.12, where a domain's width never grows (paging_domain_compatible), gaw
        // only narrows while the domain is in use, and never exceeds its levels.
        bool inUse = Array.Exists(domain.IommuRefcnt, c => c > 0);
        int gaw = Math.Min(addrWidth, Dmar.AgawToWidth(Math.Min(domain.Agaw, unit.Agaw)));
        domain.Gaw = inUse ? Math.Min(gaw, domain.Gaw) : gaw;
        if (unit.Agaw < domain.Agaw && !domain.IsIdentity)
        {
            // Maps on other threads may be walking the table: the drop waits for them (see DmarDomain).
            domain.DropLevelsExclusive(
                () =>
                {
                    if (unit.Agaw < domain.Agaw)
                    {
                        if (domain.UseFirstLevel)
                        {
                            domain.FirstLevelTable.ReduceLevels(unit.Agaw + 2);
                        }
                        else
                        {
                            domain.PageTable.ReduceLevels(unit.Agaw + 2);
                        }

                        domain.Agaw = unit.Agaw;
                    }
                },
                () => Units.All(u => u.Agaw >= domain.Agaw));
        }

        return Errno.None;
    }

    // Refuses a domain in use with more page-table levels than the device's unit walks (see
    // PrepareDomainAttachDevice), before anything changes: the device keeps what it had.
    private Errno CheckLevelsInUse(DmarDomain domain, Device device)
    {
        IntelIommuUnit? unit = DeviceToIommu(device);
        if (unit is null || unit.Agaw >= domain.Agaw || domain.IsIdentity)
        {
            return Errno.None;
        }

        foreach (IntelIommuUnit u in _units)
        {
            // A DID held on a unit (the domain's, or a nested child's): its context or PASID entries point at the top-level table.
            if (domain.IommuRefcnt[u.SeqId] > 0 || NestedChildInUse(domain, u.SeqId))
            {
                return ErrorDetail.Fail(Errno.EINVAL, $"{device.Name}: DMAR unit {unit.SeqId} walks {unit.Agaw + 2}-level tables, but the domain is in use with {domain.Agaw + 2} levels on DMAR unit {u.SeqId} (a domain in use is never trimmed)");
            }
        }

        return Errno.None;
    }

    // Whether a nested child of the domain holds a DID on the unit. The children list has its own lock
    // (s1_lock in 6.8): nested domains come and go without the device-domain lock held here.
    private static bool NestedChildInUse(DmarDomain domain, int seqId)
    {
        lock (domain.NestedChildren)
        {
            return domain.NestedChildren.Exists(c => c.IommuRefcnt[seqId] > 0);
        }
    }

    // domain_attach_iommu: one DID per (domain, unit), allocated on the first reference.
    private Errno DomainAttachIommu(DmarDomain domain, IntelIommuUnit unit)
    {
        lock (unit.Lock)
        {
            if (++domain.IommuRefcnt[unit.SeqId] == 1)
            {
                // Every domain takes a DID, the scalable-mode pass-through one too: its PASID entries carry
                // FLPT_DEFAULT_DID, but 5.15 allocates one for it all the same, so later domains number as there.
                Errno err = unit.AllocateDid(domain, out ushort did);
                if (err != Errno.None)
                {
                    domain.IommuRefcnt[unit.SeqId]--;
                    return err;
                }

                domain.IommuDid[unit.SeqId] = did;
                UpdateIommuCap(domain);
            }

            return Errno.None;
        }
    }

    // domain_detach_iommu
    private void DomainDetachIommu(DmarDomain domain, IntelIommuUnit unit)
    {
        lock (unit.Lock)
        {
            if (--domain.IommuRefcnt[unit.SeqId] == 0)
            {
                unit.FreeDid(domain.IommuDid[unit.SeqId]);
                domain.IommuDid[unit.SeqId] = 0;
                UpdateIommuCap(domain);
            }
        }
    }

    // domain_update_iommu_cap (5.15): snooping, superpage, aperture, and the page sizes that follow.
    private void UpdateIommuCap(DmarDomain domain)
    {
        domain.IommuSnooping = SnoopingSupport();
        domain.IommuSuperpage = SuperpageSupport(domain.UseFirstLevel);

        // First level: the lower canonical half only (bit gaw−1 would sign-extend into the upper half).
        int apertureBits = domain.UseFirstLevel ? domain.Gaw - 1 : domain.Gaw;
        domain.Geometry = domain.Geometry with { ApertureEnd = apertureBits >= 64 ? ulong.MaxValue : (1UL << apertureBits) - 1 };
        if (domain.IommuSuperpage == 1)
        {
            domain.PgsizeBitmap |= Sz2M;
        }
        else if (domain.IommuSuperpage >= 2)
        {
            domain.PgsizeBitmap |= Sz2M | Sz1G;
        }
    }

    // dmar_insert_one_dev_info: DID, device info, PASID table and RID2PASID entry, context entries.
    private Errno InsertDevInfo(IntelIommuUnit unit, PciDevice device, DmarDomain domain)
    {
        Errno err = DomainAttachIommu(domain, unit);
        if (err != Errno.None)
        {
            return err;
        }

        (bool ats, bool pri) = DevIotlbSupport(unit, device);
        var info = new DeviceDomainInfo(device, unit, domain)
        {
            PasidSupported = unit.PasidSupported && device.HasPasidCapability,
            AtsSupported = ats,
            PriSupported = pri,
        };
        DomainUpdateIotlb(domain, device);
        domain.Devices.Add(info);
        device.IommuPriv = info;

        if (unit.ScalableMode)
        {
            err = AllocPasidTable(info);
            if (err != Errno.None)
            {
                Log.DeviceError(_log, device.Name, "PASID table allocation failed");
                RemoveDevInfo(info);
                return err;
            }

            err = domain.PassThrough
                ? SetupPassThrough(unit, domain, info, 0)
                : SetupPagingPasid(unit, domain, info, 0);
            if (err != Errno.None)
            {
                Log.DeviceError(_log, device.Name, "Setup RID2PASID failed");
                RemoveDevInfo(info);
                return err;
            }
        }

        err = ContextMapping(unit, domain, info);
        if (err != Errno.None)
        {
            Log.DeviceError(_log, device.Name, "Domain context map failed");
            RemoveDevInfo(info);
            return err;
        }

        return Errno.None;
    }

    // dmar_remove_one_dev_info: RID2PASID teardown, context clear, PASID table free, DID release.
    private void RemoveDevInfo(DeviceDomainInfo info)
    {
        IntelIommuUnit unit = info.Unit;
        if (unit.ScalableMode && info.PasidDirectory != 0)
        {
            TearDownPasidEntry(unit, info, 0);
            TearDownAuxPasidEntries(unit, info);
        }

        IommuDisableDevIotlb(info);
        foreach ((byte bus, byte devfn) in DmaAliases(info.Device))
        {
            ContextClear(unit, info, bus, devfn);
        }

        FreePasidTable(info);
        info.Domain.Devices.Remove(info);
        if (info.Device.IommuPriv == info)
        {
            info.Device.IommuPriv = null;
        }

        DomainDetachIommu(info.Domain, unit);
    }

    // The requester ids the device's DMA can carry, as pci_for_each_dma_alias lists them: its own, its declared
    // DMA aliases (same bus), and for each PCIe-to-PCI bridge above it (secondary bus, 00.0), the ID such a bridge
    // gives the transactions it forwards from its conventional PCI side. The secondary bus is the bus of the
    // function below the bridge on the path.
    private static IEnumerable<(byte Bus, byte DevFn)> DmaAliases(PciDevice device)
    {
        yield return (device.BusNumber, device.DevFn);
        foreach (byte alias in device.Spec.DmaAliases)
        {
            yield return (device.BusNumber, alias);
        }

        for (PciDevice child = device; child.Upstream is PciDevice bridge; child = bridge)
        {
            if (bridge.IsPcieToPciBridge)
            {
                yield return (child.BusNumber, 0);
            }
        }
    }

    // domain_context_mapping(_one) for every alias; an already present entry is left alone.
    private Errno ContextMapping(IntelIommuUnit unit, DmarDomain domain, DeviceDomainInfo info)
    {
        foreach ((byte bus, byte devfn) in DmaAliases(info.Device))
        {
            Errno err = ContextMappingOne(unit, domain, info, bus, devfn);
            if (err != Errno.None)
            {
                return err;
            }
        }

        return Errno.None;
    }

    private Errno ContextMappingOne(IntelIommuUnit unit, DmarDomain domain, DeviceDomainInfo info, byte bus, byte devfn)
    {
        ushort did = domain.IommuDid[unit.SeqId];

        // iommu_support_dev_iotlb matches the device's own bus/devfn: DMA aliases get no DTE/PRE.
        bool own = bus == info.Bus && devfn == info.DevFn;
        lock (unit.Lock)
        {
            ulong ce = unit.ContextEntryAddress(bus, devfn, alloc: true);
            if (ce == 0)
            {
                return ErrorDetail.Fail(Errno.ENOMEM, $"no frame for the context table of bus {bus:x2} on DMAR unit {unit.SeqId}");
            }

            if ((_memory.ReadUInt64(ce) & ContextEntry.PresentBit) != 0)
            {
                return Errno.None;
            }

            if (unit.ScalableMode)
            {
                // PASID directory pointer, PDTS, RID_PASID = 0, present; FPD clear (fault processing on).
                var sc = default(ScalableContextEntry);
                sc.SetPasidDirectory(info.PasidDirectory);
                sc.SetPdts(ScalableContextEntry.Pds(info.MaxPasid));
                if (own && info.AtsSupported)
                {
                    sc.SetDeviceTlbEnable();
                }

                if (own && info.PriSupported)
                {
                    sc.SetPageRequestEnable();
                }

                sc.SetPresent();
                sc.Store(_memory, ce);
            }
            else
            {
                var c = default(ContextEntry);
                c.SetDomainId(did);
                if (domain.PassThrough)
                {
                    // Pass-through: AW is the largest AGAW the hardware supports; ASR is ignored.
                    c.SetAddressWidth(unit.Msagaw);
                    c.SetTranslationType(ContextEntry.TtPassThrough);
                }
                else
                {
                    c.SetAddressWidth(domain.Agaw);
                    c.SetTranslationType(own && info.AtsSupported ? ContextEntry.TtDevIotlb : ContextEntry.TtMultiLevel);
                    c.SetAddressRoot(domain.PageTable.Root);
                }

                c.SetPresent();
                c.Store(_memory, ce);
            }
        }

        // Not-present → present: with caching mode the unit may have cached the not-present entry
        // under DID 0, so flush that context entry and the domain's IOTLB; otherwise the write buffer.
        if (unit.CachingMode)
        {
            unit.FlushContext(0, (ushort)((bus << 8) | devfn), 0, Dmar.CcmdDevice);
            unit.FlushIotlb(did, 0, 0, Dmar.TlbDomain);
        }
        else
        {
            unit.FlushWriteBuffer();
        }

        if (own)
        {
            IommuEnableDevIotlb(unit, info);
        }

        return Errno.None;
    }

    // domain_context_clear_one
    private void ContextClear(IntelIommuUnit unit, DeviceDomainInfo info, byte bus, byte devfn)
    {
        ushort didOld;
        lock (unit.Lock)
        {
            ulong ce = unit.ContextEntryAddress(bus, devfn, alloc: false);
            if (ce == 0 || (_memory.ReadUInt64(ce) & ContextEntry.PresentBit) == 0)
            {
                return;
            }

            if (unit.ScalableMode)
            {
                didOld = info.Domain.PassThrough ? Dmar.FlptDefaultDid : info.Domain.IommuDid[unit.SeqId];
                ScalableContextEntry.Clear(_memory, ce);
            }
            else
            {
                didOld = ContextEntry.Load(_memory, ce).DomainId;
                ContextEntry.Clear(_memory, ce);
            }
        }

        unit.FlushContext(didOld, (ushort)((bus << 8) | devfn), 0, Dmar.CcmdDevice);
        if (unit.ScalableMode)
        {
            unit.FlushPasidCacheDomain(didOld);
        }

        unit.FlushIotlb(didOld, 0, 0, Dmar.TlbDomain);
    }
}
