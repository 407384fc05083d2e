using Iommu.Domains;
using Iommu.VtD.Driver.Format;

namespace Iommu.VtD.Driver;

// PASID tables (drivers/iommu/intel/pasid.c): the per-device directory and tables, and the
// entries for second-level and pass-through translation. Entries are built with PasidEntry's named
// setters, never from bare bit positions.
public sealed partial class IntelIommu
{
    // intel_pasid_alloc_table: a directory big enough for the device's PASIDs (one page without a PASID capability).
    private Errno AllocPasidTable(DeviceDomainInfo info)
    {
        uint maxPasid = info.PasidSupported ? (uint)Math.Min(info.Device.MaxPasids, 1 << Math.Min(20, DmarCap.EcapPss(info.Unit.Ecap) + 1)) : 0;
        ulong size = maxPasid >> (PasidDirEntry.PdeShift - 3); // bytes of 8-byte directory entries
        int pages = size <= 4096 ? 1 : (int)System.Numerics.BitOperations.RoundUpToPowerOf2((size + 4095) / 4096);
        if (!_frames.TryAllocateContiguous(pages, out ulong dir))
        {
            return ErrorDetail.Fail(Errno.ENOMEM, $"no {pages} contiguous frames for the PASID directory of {info.Device.Name}");
        }

        info.PasidDirectory = dir;
        info.PasidDirectoryPages = pages;
        info.MaxPasid = (uint)pages << (12 + 3);
        return Errno.None;
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
            var pde = new PasidDirEntry(_memory.ReadUInt64(info.PasidDirectory + (i * PasidDirEntry.Size)));
            if (pde.Present)
            {
                _frames.Free(pde.Table);
            }
        }

        // free_pages of the directory's block: whole, so the next device's directory reuses it (frame by frame,
        // runs were never reused, and ~2,000 attach/detach cycles used up a default 256 MiB of table memory).
        _frames.FreeContiguous(info.PasidDirectory, info.PasidDirectoryPages);

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

        ulong pdeAddr = PasidDirEntry.Address(info.PasidDirectory, pasid);
        var pde = new PasidDirEntry(_memory.ReadUInt64(pdeAddr));
        if (!pde.Present)
        {
            if (!alloc || !_frames.TryAllocate(out ulong table))
            {
                return 0;
            }

            pde = PasidDirEntry.ForTable(table);
            _memory.WriteUInt64(pdeAddr, pde.Value);
        }

        return PasidEntry.Address(pde.Table, pasid);
    }

    // intel_pasid_get_entry and the present check every setter makes before it writes: the entry's
    // address, or lookupErrno when there is none (the setters disagree: -EINVAL in 5.15's first-level
    // setter, -ENODEV in the others) and -EBUSY when it is in use.
    private Errno FreePasidEntry(DeviceDomainInfo info, uint pasid, Errno lookupErrno, out ulong pte)
    {
        pte = PasidEntryAddress(info, pasid, alloc: true);
        if (pte == 0)
        {
            return ErrorDetail.Fail(lookupErrno, $"no PASID entry for PASID {pasid} of {info.Device.Name} (table holds {info.MaxPasid})");
        }

        return PasidEntry.LoadQ0(_memory, pte).Present
            ? ErrorDetail.Fail(Errno.EBUSY, $"PASID {pasid} of {info.Device.Name} is already in use")
            : Errno.None;
    }

    // The fields every setter ends with (DID, AW, PWSNP = ECAP.SMPWCS, PGTT, P), then the entry goes to
    // memory, P last, and pasid_flush_caches.
    private void CommitPasidEntry(IntelIommuUnit unit, ref PasidEntry pe, ushort did, int agaw, PasidPgtt pgtt, ulong pte, uint pasid)
    {
        pe.SetDomainId(did);
        pe.SetAddressWidth(agaw);
        pe.SetPageWalkSnoop(DmarCap.EcapSmpwc(unit.Ecap));
        pe.SetTranslationType(pgtt);
        pe.SetPresent();
        pe.Store(_memory, pte);
        PasidFlushCaches(unit, did, pasid);
    }

    // intel_pasid_setup_second_level
    private Errno SetupSecondLevel(IntelIommuUnit unit, DmarDomain domain, DeviceDomainInfo info, uint pasid)
    {
        if (!DmarCap.EcapSlts(unit.Ecap))
        {
            return ErrorDetail.Fail(Errno.EINVAL, $"DMAR unit {unit.SeqId} has no second-level translation in scalable mode");
        }

        if (domain.Agaw > unit.Agaw)
        {
            return ErrorDetail.Fail(Errno.EINVAL, $"the domain's page table has more levels than DMAR unit {unit.SeqId} walks");
        }

        Errno err = FreePasidEntry(info, pasid, Errno.ENODEV, out ulong pte);
        if (err != Errno.None)
        {
            return err;
        }

        var pe = default(PasidEntry);
        pe.SetSlptr(domain.PageTable.Root);
        pe.SetFaultEnable();
        if (domain.Type == DomainType.Unmanaged)
        {
            pe.SetPageSnoop(); // PASID_FLAG_PAGE_SNOOP: 5.15 sets it for UNMANAGED domains
        }

        // 5.15: supervisor requests for every PASID but RID2PASID when the unit has ECAP.SRS.
        if (pasid != 0 && DmarCap.EcapSrs(unit.Ecap))
        {
            pe.SetSre();
        }

        CommitPasidEntry(unit, ref pe, domain.IommuDid[unit.SeqId], domain.Agaw, PasidPgtt.SecondLevel, pte, pasid);
        return Errno.None;
    }

    // intel_pasid_setup_pass_through
    private Errno SetupPassThrough(IntelIommuUnit unit, DmarDomain domain, DeviceDomainInfo info, uint pasid)
    {
        Errno err = FreePasidEntry(info, pasid, Errno.ENODEV, out ulong pte);
        if (err != Errno.None)
        {
            return err;
        }

        var pe = default(PasidEntry);
        pe.SetDomainId(Dmar.FlptDefaultDid);
        pe.SetAddressWidth(unit.Agaw);
        pe.SetTranslationType(PasidPgtt.PassThrough);
        pe.SetFaultEnable();
        pe.SetPresent();
        pe.Store(_memory, pte);
        PasidFlushCaches(unit, Dmar.FlptDefaultDid, pasid);
        return Errno.None;
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

    // intel_pasid_tear_down_entry; faultIgnore (mm exit) leaves q0 = FPD so later DMA is dropped silently.
    private void TearDownPasidEntry(IntelIommuUnit unit, DeviceDomainInfo info, uint pasid, bool faultIgnore = false)
    {
        ulong pte = PasidEntryAddress(info, pasid, alloc: false);
        if (pte == 0)
        {
            return;
        }

        PasidEntry pe = PasidEntry.Load(_memory, pte);
        if (!pe.Present)
        {
            return;
        }

        ushort did = pe.DomainId;
        PasidPgtt pgtt = pe.Pgtt;
        if (faultIgnore)
        {
            PasidEntry.ClearWithFpd(_memory, pte);
        }
        else
        {
            PasidEntry.Clear(_memory, pte);
        }

        unit.FlushPasidCache(did, pasid);
        if (pgtt is PasidPgtt.PassThrough or PasidPgtt.FirstLevel)
        {
            unit.FlushPiotlbAll(did, pasid);
        }
        else
        {
            unit.FlushIotlb(did, 0, 0, Dmar.TlbDomain);
        }

        DevtlbInvalidationWithPasid(unit, info, pasid);
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
            if (!new PasidDirEntry(_memory.ReadUInt64(info.PasidDirectory + (i * PasidDirEntry.Size))).Present)
            {
                continue;
            }

            for (uint j = i == 0 ? 1u : 0u; j <= PasidEntry.PteMask; j++)
            {
                TearDownPasidEntry(unit, info, (uint)(i << PasidDirEntry.PdeShift) | j);
            }
        }
    }
}
