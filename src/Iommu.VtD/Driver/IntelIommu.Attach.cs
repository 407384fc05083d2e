using Iommu.Devices;
using Iommu.Domains;

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
            return InsertDevInfo(unit, (PciDevice)device, d)
                ? Errno.None
                : ErrorDetail.LastErrno == Errno.EBUSY ? Errno.EBUSY : ErrorDetail.Fail(Errno.EBUSY, $"could not program {device.Name} for the domain (no DID, or no table memory on DMAR unit {unit.SeqId})");
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
    // domain of its own for the group); an unused one is still trimmed here.
    private Errno PrepareDomainAttachDevice(DmarDomain domain, Device device)
    {
        IntelIommuUnit? unit = DeviceToIommu(device);
        if (unit is null)
        {
            return ErrorDetail.Fail(Errno.ENODEV, $"{device.Name} is not behind a VT-d unit of this driver");
        }

        int addrWidth = Math.Min(Dmar.AgawToWidth(unit.Agaw), Dmar.CapMgaw(unit.Cap));
        if (addrWidth < 64 && domain.MaxAddr > 1UL << addrWidth)
        {
            return ErrorDetail.Fail(Errno.EFAULT, $"DMAR unit {unit.SeqId} is {addrWidth} bits wide but the domain maps up to 0x{domain.MaxAddr:x} ({device.Name})");
        }

        domain.Gaw = addrWidth;
        if (unit.Agaw < domain.Agaw && !domain.IsIdentity)
        {
            domain.PageTable.ReduceLevels(unit.Agaw + 2);
            domain.Agaw = unit.Agaw;
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
            // A DID held on a unit: its context or PASID entries point at the top-level table.
            if (domain.IommuRefcnt[u.SeqId] > 0)
            {
                return ErrorDetail.Fail(Errno.EINVAL, $"{device.Name}: DMAR unit {unit.SeqId} walks {unit.Agaw + 2}-level tables, but the domain is in use with {domain.Agaw + 2} levels on DMAR unit {u.SeqId} (a domain in use is never trimmed)");
            }
        }

        return Errno.None;
    }

    // domain_attach_iommu: one DID per (domain, unit), allocated on the first reference.
    private Errno DomainAttachIommu(DmarDomain domain, IntelIommuUnit unit)
    {
        lock (unit.Lock)
        {
            if (++domain.IommuRefcnt[unit.SeqId] == 1)
            {
                if (domain.IsIdentity && unit.ScalableMode)
                {
                    domain.IommuDid[unit.SeqId] = Dmar.FlptDefaultDid;
                }
                else
                {
                    Errno err = unit.AllocateDid(domain, out ushort did);
                    if (err != Errno.None)
                    {
                        domain.IommuRefcnt[unit.SeqId]--;
                        return err;
                    }

                    domain.IommuDid[unit.SeqId] = did;
                }

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
                ushort did = domain.IommuDid[unit.SeqId];
                if (!(domain.IsIdentity && unit.ScalableMode))
                {
                    unit.FreeDid(did);
                }

                domain.IommuDid[unit.SeqId] = 0;
                UpdateIommuCap(domain);
            }
        }
    }

    // domain_update_iommu_cap (5.15): snooping, superpage, aperture, and the page sizes that follow.
    private void UpdateIommuCap(DmarDomain domain)
    {
        domain.IommuSnooping = SnoopingSupport();
        domain.IommuSuperpage = SuperpageSupport();
        domain.Geometry = domain.Geometry with { ApertureEnd = domain.Gaw >= 64 ? ulong.MaxValue : (1UL << domain.Gaw) - 1 };
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
    private bool InsertDevInfo(IntelIommuUnit unit, PciDevice device, DmarDomain domain)
    {
        if (DomainAttachIommu(domain, unit) != Errno.None)
        {
            return false;
        }

        var info = new DeviceDomainInfo(device, unit, domain)
        {
            PasidSupported = unit.PasidSupported && device.HasPasidCapability,
        };
        domain.Devices.Add(info);
        device.IommuPriv = info;

        if (unit.ScalableMode)
        {
            if (!AllocPasidTable(info))
            {
                Log.DeviceError(_log, device.Name, "PASID table allocation failed");
                RemoveDevInfo(info);
                return false;
            }

            Errno err = domain.IsIdentity
                ? SetupPassThrough(unit, domain, info, 0)
                : SetupSecondLevel(unit, domain, info, 0);
            if (err != Errno.None)
            {
                Log.DeviceError(_log, device.Name, "Setup RID2PASID failed");
                RemoveDevInfo(info);
                return false;
            }
        }

        if (!ContextMapping(unit, domain, info))
        {
            Log.DeviceError(_log, device.Name, "Domain context map failed");
            RemoveDevInfo(info);
            return false;
        }

        return true;
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

        foreach (byte devfn in DevFns(info.Device))
        {
            ContextClear(unit, info, devfn);
        }

        if (info.PasidEnabled)
        {
            info.Device.DisablePasid();
            info.PasidEnabled = false;
        }

        FreePasidTable(info);
        info.Domain.Devices.Remove(info);
        if (info.Device.IommuPriv == info)
        {
            info.Device.IommuPriv = null;
        }

        DomainDetachIommu(info.Domain, unit);
    }

    // Aux-domain PASID entries still present in the table about to be freed: the RID domain changes
    // (or the device goes) while aux domains are attached, e.g. after AUXD_DISABLE, which does not
    // detach them. 5.15 flushes only the RID domain's DID here (domain_context_clear_one), so the
    // PASID-cache and IOTLB entries tagged with the aux domains' DIDs survived the freeing of their
    // PASID table, and a DMA with such a PASID kept translating through the aux domain once PASID
    // was enabled again (found by the isolation property). Tearing each entry down flushes the PASID
    // cache for (DID, PASID) and that DID's IOTLB for every affected DID, as intel_pasid_tear_down_entry
    // does for the entry it clears (VT-d spec, "Guidance to Software for Invalidations").
    // The aux domains keep their bookkeeping: a later aux detach finds no entry and only drops the DID.
    private void TearDownAuxPasidEntries(IntelIommuUnit unit, DeviceDomainInfo info)
    {
        ulong entries = (ulong)info.PasidDirectoryPages * 512;
        for (ulong i = 0; i < entries; i++)
        {
            if ((_memory.ReadUInt64(info.PasidDirectory + (i * 8)) & Dmar.PasidPresent) == 0)
            {
                continue;
            }

            for (uint j = i == 0 ? 1u : 0u; j <= Dmar.PasidPteMask; j++)
            {
                TearDownPasidEntry(unit, info, (uint)(i << Dmar.PasidPdeShift) | j);
            }
        }
    }

    // The requester ids the device's DMA can carry: its own and its DMA aliases (pci_for_each_dma_alias, same bus).
    private static IEnumerable<byte> DevFns(PciDevice device)
    {
        yield return device.DevFn;
        foreach (byte alias in device.Spec.DmaAliases)
        {
            yield return alias;
        }
    }

    // domain_context_mapping(_one) for every alias; an already present entry is left alone.
    private bool ContextMapping(IntelIommuUnit unit, DmarDomain domain, DeviceDomainInfo info)
    {
        foreach (byte devfn in DevFns(info.Device))
        {
            if (!ContextMappingOne(unit, domain, info, devfn))
            {
                return false;
            }
        }

        return true;
    }

    private bool ContextMappingOne(IntelIommuUnit unit, DmarDomain domain, DeviceDomainInfo info, byte devfn)
    {
        byte bus = info.Bus;
        ushort did = domain.IommuDid[unit.SeqId];
        lock (unit.Lock)
        {
            ulong ce = unit.ContextEntryAddress(bus, devfn, alloc: true);
            if (ce == 0)
            {
                return false;
            }

            if ((_memory.ReadUInt64(ce) & Dmar.ContextPresent) != 0)
            {
                return true;
            }

            ulong lo, hi;
            if (unit.ScalableMode)
            {
                // PASID directory pointer, PDTS, RID_PASID = 0, present; FPD clear (fault processing on).
                lo = info.PasidDirectory | ((ulong)ContextPdts(info.MaxPasid) << 9) | Dmar.ContextPresent;
                hi = 0;
                _memory.WriteUInt64(ce + 8, hi);
                _memory.WriteUInt64(ce + 16, 0);
                _memory.WriteUInt64(ce + 24, 0);
            }
            else
            {
                ulong aw;
                int tt;
                ulong root = 0;
                if (domain.IsIdentity)
                {
                    // Pass-through: AW is the largest AGAW the hardware supports; ASR is ignored.
                    aw = (ulong)unit.Msagaw;
                    tt = Dmar.ContextTtPassThrough;
                }
                else
                {
                    aw = (ulong)domain.Agaw;
                    tt = Dmar.ContextTtMultiLevel;
                    root = domain.PageTable.Root;
                }

                hi = aw | ((ulong)did << 8);
                lo = root | ((ulong)tt << 2) | Dmar.ContextPresent;
                _memory.WriteUInt64(ce + 8, hi);
            }

            _memory.WriteUInt64(ce, lo);
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

        return true;
    }

    // domain_context_clear_one
    private void ContextClear(IntelIommuUnit unit, DeviceDomainInfo info, byte devfn)
    {
        byte bus = info.Bus;
        ushort didOld;
        lock (unit.Lock)
        {
            ulong ce = unit.ContextEntryAddress(bus, devfn, alloc: false);
            if (ce == 0 || (_memory.ReadUInt64(ce) & Dmar.ContextPresent) == 0)
            {
                return;
            }

            didOld = unit.ScalableMode
                ? (info.Domain.IsIdentity ? Dmar.FlptDefaultDid : info.Domain.IommuDid[unit.SeqId])
                : (ushort)((_memory.ReadUInt64(ce + 8) >> 8) & 0xFFFF);
            for (ulong q = 0; q < (unit.ScalableMode ? 32UL : 16UL); q += 8)
            {
                _memory.WriteUInt64(ce + q, 0);
            }
        }

        unit.FlushContext(didOld, (ushort)((bus << 8) | devfn), 0, Dmar.CcmdDevice);
        if (unit.ScalableMode)
        {
            unit.FlushPasidCacheDomain(didOld);
        }

        unit.FlushIotlb(didOld, 0, 0, Dmar.TlbDomain);
    }

    // context_get_sm_pds: PDTS such that the directory has max_pasid >> 6 entries.
    private static int ContextPdts(uint maxPasid)
    {
        uint maxPde = maxPasid >> Dmar.PasidPdeShift;
        int pds = System.Numerics.BitOperations.TrailingZeroCount(maxPde);
        return pds < 7 ? 0 : pds - 7;
    }

    // intel_pasid_alloc_table: a directory big enough for the device's PASIDs (one page without a PASID capability).
    private bool AllocPasidTable(DeviceDomainInfo info)
    {
        uint maxPasid = info.PasidSupported ? (uint)Math.Min(info.Device.MaxPasids, 1 << Math.Min(20, (int)((info.Unit.Ecap >> 35) & 0x1F) + 1)) : 0;
        ulong size = maxPasid >> (Dmar.PasidPdeShift - 3); // bytes of 8-byte directory entries
        int pages = size <= 4096 ? 1 : (int)System.Numerics.BitOperations.RoundUpToPowerOf2((size + 4095) / 4096);
        if (!_frames.TryAllocateContiguous(pages, out ulong dir))
        {
            return false;
        }

        info.PasidDirectory = dir;
        info.PasidDirectoryPages = pages;
        info.MaxPasid = (uint)pages << (12 + 3);
        return true;
    }

    // intel_pasid_free_table: the PASID tables the directory points to, then the directory.
    private void FreePasidTable(DeviceDomainInfo info)
    {
        if (info.PasidDirectory == 0)
        {
            return;
        }

        ulong entries = (ulong)info.PasidDirectoryPages * 512;
        for (ulong i = 0; i < entries; i++)
        {
            ulong pde = _memory.ReadUInt64(info.PasidDirectory + (i * 8));
            if ((pde & Dmar.PasidPresent) != 0)
            {
                _frames.Free(pde & ~0xFFFUL);
            }
        }

        for (int p = 0; p < info.PasidDirectoryPages; p++)
        {
            _frames.Free(info.PasidDirectory + ((ulong)p * 4096));
        }

        info.PasidDirectory = 0;
        info.PasidDirectoryPages = 0;
    }

    // intel_pasid_get_entry: the 64-byte PASID entry, allocating its PASID table; 0 when pasid ≥ max_pasid.
    private ulong PasidEntryAddress(DeviceDomainInfo info, uint pasid, bool alloc)
    {
        if (pasid >= info.MaxPasid || info.PasidDirectory == 0)
        {
            return 0;
        }

        ulong pdeAddr = info.PasidDirectory + ((ulong)(pasid >> Dmar.PasidPdeShift) * 8);
        ulong pde = _memory.ReadUInt64(pdeAddr);
        if ((pde & Dmar.PasidPresent) == 0)
        {
            if (!alloc || !_frames.TryAllocate(out ulong table))
            {
                return 0;
            }

            pde = table | Dmar.PasidPresent;
            _memory.WriteUInt64(pdeAddr, pde);
        }

        return (pde & ~0xFFFUL) + ((pasid & Dmar.PasidPteMask) * 64);
    }

    // intel_pasid_setup_second_level
    private Errno SetupSecondLevel(IntelIommuUnit unit, DmarDomain domain, DeviceDomainInfo info, uint pasid)
    {
        if (!Dmar.EcapSlts(unit.Ecap))
        {
            return ErrorDetail.Fail(Errno.EINVAL, $"DMAR unit {unit.SeqId} has no second-level translation in scalable mode");
        }

        if (domain.Agaw > unit.Agaw)
        {
            return ErrorDetail.Fail(Errno.EINVAL, $"the domain's page table has more levels than DMAR unit {unit.SeqId} walks");
        }

        ulong pte = PasidEntryAddress(info, pasid, alloc: true);
        if (pte == 0)
        {
            return ErrorDetail.Fail(Errno.ENODEV, $"no PASID entry for PASID {pasid} of {info.Device.Name} (table holds {info.MaxPasid})");
        }

        if ((_memory.ReadUInt64(pte) & Dmar.PasidPresent) != 0)
        {
            return ErrorDetail.Fail(Errno.EBUSY, $"PASID {pasid} of {info.Device.Name} is already in use");
        }

        ushort did = domain.IommuDid[unit.SeqId];
        ulong q0 = domain.PageTable.Root | ((ulong)domain.Agaw << 2) | ((ulong)Dmar.PgttSecondLevel << 6);
        ulong q1 = did
            | (Dmar.EcapSmpwc(unit.Ecap) ? 1UL << 23 : 0)           // PWSNP
            | (domain.Type == DomainType.Unmanaged ? 1UL << 24 : 0); // PGSNP
        ulong q2 = pasid != 0 && Dmar.EcapSrs(unit.Ecap) ? 1UL : 0; // SRE
        WritePasidEntry(pte, q0, q1, q2);
        PasidFlushCaches(unit, did, pasid);
        return Errno.None;
    }

    // intel_pasid_setup_pass_through
    private Errno SetupPassThrough(IntelIommuUnit unit, DmarDomain domain, DeviceDomainInfo info, uint pasid)
    {
        ulong pte = PasidEntryAddress(info, pasid, alloc: true);
        if (pte == 0)
        {
            return ErrorDetail.Fail(Errno.ENODEV, $"no PASID entry for PASID {pasid} of {info.Device.Name}");
        }

        if ((_memory.ReadUInt64(pte) & Dmar.PasidPresent) != 0)
        {
            return ErrorDetail.Fail(Errno.EBUSY, $"PASID {pasid} of {info.Device.Name} is already in use");
        }

        WritePasidEntry(pte, ((ulong)unit.Agaw << 2) | ((ulong)Dmar.PgttPassThrough << 6), Dmar.FlptDefaultDid, 0);
        PasidFlushCaches(unit, Dmar.FlptDefaultDid, pasid);
        return Errno.None;
    }

    private void WritePasidEntry(ulong pte, ulong q0, ulong q1, ulong q2)
    {
        for (ulong q = 8; q < 64; q += 8)
        {
            _memory.WriteUInt64(pte + q, 0);
        }

        _memory.WriteUInt64(pte + 8, q1);
        _memory.WriteUInt64(pte + 16, q2);
        _memory.WriteUInt64(pte, q0 | Dmar.PasidPresent); // present last
    }

    // pasid_flush_caches: with caching mode the not-present entry may be cached.
    private static void PasidFlushCaches(IntelIommuUnit unit, ushort did, uint pasid)
    {
        if (unit.CachingMode)
        {
            unit.FlushPasidCache(did, pasid);
            unit.FlushPiotlbAll(did, pasid);
        }
        else
        {
            unit.FlushWriteBuffer();
        }
    }

    // intel_pasid_tear_down_entry
    private void TearDownPasidEntry(IntelIommuUnit unit, DeviceDomainInfo info, uint pasid)
    {
        ulong pte = PasidEntryAddress(info, pasid, alloc: false);
        if (pte == 0)
        {
            return;
        }

        ulong q0 = _memory.ReadUInt64(pte);
        if ((q0 & Dmar.PasidPresent) == 0)
        {
            return;
        }

        ushort did = (ushort)(_memory.ReadUInt64(pte + 8) & 0xFFFF);
        int pgtt = (int)((q0 >> 6) & 7);
        for (ulong q = 0; q < 64; q += 8)
        {
            _memory.WriteUInt64(pte + q, 0);
        }

        unit.FlushPasidCache(did, pasid);
        if (pgtt is Dmar.PgttPassThrough or 1)
        {
            unit.FlushPiotlbAll(did, pasid);
        }
        else
        {
            unit.FlushIotlb(did, 0, 0, Dmar.TlbDomain);
        }
    }
}
