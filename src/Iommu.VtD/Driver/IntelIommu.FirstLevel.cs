using Iommu.Domains;
using Iommu.VtD.Driver.Format;

namespace Iommu.VtD.Driver;

// First-level translation for DMA and UNMANAGED domains (domain_setup_first_level, intel_pasid_setup_first_level): the PASID entries that
// point a PASID at a domain's first-level table, and the PASID-based IOTLB flushes such a domain needs.
// Entries are built with PasidEntry's named setters.
public sealed partial class IntelIommu
{
    /// <summary>PASID of DMA without PASID in scalable mode (<c>PASID_RID2PASID</c>).</summary>
    private const uint RidPasid = 0;

    // The PASID entry of a paging domain, by the stage it uses: the one place RID2PASID, aux and PASID
    // attachments program a domain's PASID.
    private Errno SetupPagingPasid(IntelIommuUnit unit, DmarDomain domain, DeviceDomainInfo info, uint pasid) =>
        domain.NestParent is not null ? SetupNested(unit, domain, info, pasid)
        : domain.UseFirstLevel ? DomainSetupFirstLevel(unit, domain, info, pasid)
        : SetupSecondLevel(unit, domain, info, pasid);

    // domain_setup_first_level (5.15): skip top levels the unit does not walk (entry 0 must be present,
    // else -ENOMEM); 4 or 5 levels left, else -EINVAL; SUPERVISOR for PASID ≠ 0 (aux: SRE+WPE; RID2PASID
    // without SRE since 5.13), FL5LP for 5 levels, PAGE_SNOOP for UNMANAGED.
    internal Errno DomainSetupFirstLevel(IntelIommuUnit unit, DmarDomain domain, DeviceDomainInfo info, uint pasid)
    {
        ulong pgd = domain.FirstLevelTable.Root;
        int agaw = domain.Agaw;
        for (; agaw > unit.Agaw; agaw--)
        {
            ulong top = _memory.ReadUInt64(pgd);
            if (!FirstLevelPte.IsPresent(top))
            {
                return ErrorDetail.Fail(Errno.ENOMEM, $"the domain's top-level table has no entry 0 to start DMAR unit {unit.SeqId}'s {unit.Agaw + 2}-level walk from");
            }

            pgd = FirstLevelPte.Address(top);
        }

        int level = agaw + 2;
        if (level is not 4 and not 5)
        {
            return ErrorDetail.Fail(Errno.EINVAL, $"first-level tables have 4 or 5 levels; DMAR unit {unit.SeqId} walks {level} ({info.Device.Name})");
        }

        PasidFlags flags = (pasid != RidPasid ? PasidFlags.SupervisorMode : 0)
            | (level == 5 ? PasidFlags.Fl5lp : 0)
            | (domain.Type == DomainType.Unmanaged ? PasidFlags.PageSnoop : 0);
        return SetupFirstLevel(unit, info, pgd, pasid, domain.IommuDid[unit.SeqId], flags);
    }

    // intel_pasid_setup_first_level, 5.15 order: FLTS (-EINVAL), entry lookup (-EINVAL), present
    // (-EBUSY), SUPERVISOR without ECAP.SRS (-EINVAL), FL5LP without CAP.FL5LP (-EINVAL); then FLPTR,
    // SRE+WPE, FLPM, PGSNP, DID, AW = unit agaw, PWSNP, PGTT = 001, P; pasid_flush_caches.
    // Unlike 5.15, which clears the entry and writes FLPTR into memory before the SRS and FL5LP checks
    // (leaving a not-present entry with FLPTR on -EINVAL), nothing is written until every check has
    // passed, as 6.3 orders it; the errno and its order are 5.15's. CR0.WP is modelled as set (the kernel
    // always runs with it), so the supervisor path never fails on it.
    private Errno SetupFirstLevel(IntelIommuUnit unit, DeviceDomainInfo info, ulong pgd, uint pasid, ushort did, PasidFlags flags)
    {
        if (!DmarCap.EcapFlts(unit.Ecap))
        {
            return ErrorDetail.Fail(Errno.EINVAL, $"DMAR unit {unit.SeqId} has no first-level translation (ECAP.FLTS)");
        }

        Errno err = FreePasidEntry(info, pasid, Errno.EINVAL, out ulong pte);
        if (err != Errno.None)
        {
            return err;
        }

        if ((flags & PasidFlags.SupervisorMode) != 0 && !DmarCap.EcapSrs(unit.Ecap))
        {
            return ErrorDetail.Fail(Errno.EINVAL, $"DMAR unit {unit.SeqId} has no supervisor-request support (ECAP.SRS) for PASID {pasid} of {info.Device.Name}");
        }

        if ((flags & PasidFlags.Fl5lp) != 0 && !DmarCap.Fl5lp(unit.Cap))
        {
            return ErrorDetail.Fail(Errno.EINVAL, $"DMAR unit {unit.SeqId} has no 5-level first-level paging (CAP.FL5LP)");
        }

        var pe = default(PasidEntry);
        pe.SetFlptr(pgd);
        if ((flags & PasidFlags.SupervisorMode) != 0)
        {
            pe.SetSre();
            pe.SetWpe();
        }

        if ((flags & PasidFlags.Fl5lp) != 0)
        {
            pe.SetFlpm(1);
        }

        if ((flags & PasidFlags.PageSnoop) != 0)
        {
            pe.SetPageSnoop();
        }

        CommitPasidEntry(unit, ref pe, did, unit.Agaw, PasidPgtt.FirstLevel, pte, pasid);
        return Errno.None;
    }

    // The PASIDs through which a domain's tables are reached on a unit, each flushed alike: the aux
    // default PASID, the PASIDs attached with iommu_attach_device_pasid on this unit (6.x
    // cache_tag_flush_range walks dev_pasids the same way), then RID2PASID when the domain has RID
    // attachments (domain_flush_piotlb, 5.15 order). A first-level IOTLB entry is tagged with its PASID,
    // so a PASID left out here would keep a stale translation after the unmap.
    private static void DomainFlushPiotlb(IntelIommuUnit unit, DmarDomain domain, ulong addr, ulong npages, bool ih)
    {
        ushort did = domain.IommuDid[unit.SeqId];
        if (domain.DefaultPasid != 0)
        {
            unit.FlushPiotlb(did, domain.DefaultPasid, addr, npages, ih);
        }

        if (domain.DevPasids.Count != 0)
        {
            lock (domain.DevPasids)
            {
                foreach (DmarDomain.DevPasidInfo p in domain.DevPasids)
                {
                    if (p.UnitSeqId == unit.SeqId)
                    {
                        unit.FlushPiotlb(did, p.Pasid, addr, npages, ih);
                    }
                }
            }
        }

        if (domain.Devices.Count != 0)
        {
            unit.FlushPiotlb(did, RidPasid, addr, npages, ih);
        }
    }

    // iommu_flush_iotlb_psi for a first-level domain: P_IOTLB over the smallest naturally aligned block
    // that covers [addr, addr + size) (5.15 passes the page count and lets qi_flush_piotlb align the
    // address down, which can leave the range's tail stale; later kernels compute the aligned block as
    // here), or the whole PASID when the block is wider than CAP.MAMV allows.
    internal static void FlushFirstLevelRange(IntelIommuUnit unit, DmarDomain domain, ulong addr, ulong size, bool leavesOnly)
    {
        ulong first = addr >> 12;
        ulong last = (addr + size - 1) >> 12;
        int mask = IntelIommuUnit.CoveringMask(first, last);
        if (mask > DmarCap.MaxAmaskVal(unit.Cap))
        {
            DomainFlushPiotlb(unit, domain, 0, ulong.MaxValue, ih: false);
            return;
        }

        DomainFlushPiotlb(unit, domain, (first >> mask) << (mask + 12), 1UL << mask, leavesOnly);
    }

    // PASID_FLAG_*: what domain_setup_first_level asks of intel_pasid_setup_first_level.
    [Flags]
    private enum PasidFlags
    {
        [KernelSymbol("PASID_FLAG_SUPERVISOR_MODE")]
        SupervisorMode = 1 << 0,

        [KernelSymbol("PASID_FLAG_FL5LP")]
        Fl5lp = 1 << 1,

        [KernelSymbol("PASID_FLAG_PAGE_SNOOP")]
        PageSnoop = 1 << 2,
    }
}
