using Iommu.Devices;
using Iommu.VtD.Driver.Format;

namespace Iommu.VtD.Driver;

// Device-TLBs (ATS) on the driver side, 5.15 intel-iommu.c/pasid.c/svm.c: which devices may use ATS, PRI
// and PASID (probe), enabling them once the context entry is programmed (iommu_enable_dev_iotlb) and
// disabling them on removal, and the device-TLB invalidations that follow every IOTLB invalidation of a
// mapping's removal, so a device's ATC never outlives the unmap, the PASID tear-down or the mm change.
//
// Decisions (spec UNVERIFIED or silent, recorded here):
// * ATSR: the model has no ACPI DMAR table; every device behind a unit is covered by an ATSR (as with
//   firmware that lists all root ports, or sets ALL_PORTS). SATC is 5.17+ and not used.
// * PRI: pci_prg_resp_pasid_required is taken as set for every device with a PASID capability (a device that
//   uses PASIDs with PRI wants its responses tagged), so PRI is enabled after PASID; pci_reset_pri fails
//   only when PRI is already enabled. The device model keeps no outstanding-request allocation, so
//   PRQ_DEPTH is recorded but not passed.
// * ats_qdep: the device's ATS capability reports Invalidate Queue Depth 0, which PCIe reads as 32
//   (PCI_ATS_MAX_QDEP); descriptors then carry 0 (QI_DEV_IOTLB_MAX_INVS).
// * PFSID: no VFs are modelled, so with ECAP.DIT the PF is the device itself; the model's units never report DIT.
// * Aux (subdevice) and PASID-attached domains: 5.15 flushes only domain->devices, so an aux domain's unmap left
//   the device's ATC stale (fixed later by "iommu/vt-d: DevTLB invalidation for subdevices"). The model takes the
//   fix: the RID device-TLB descriptor goes to every ATS device that reaches the domain, through its RID, an aux
//   PASID or an attached PASID (a descriptor without PASID drops the range for every PASID of the function).
public sealed partial class IntelIommu
{
    /// <summary>Outstanding page requests granted to a device's PRI (<c>PRQ_DEPTH</c>: (4 KiB &lt;&lt; PRQ_ORDER 2) / 32 in 5.15).</summary>
    [KernelSymbol("PRQ_DEPTH")]
    private const int DevIotlbPriRequests = (0x1000 << 2) >> 5;

    // PCI_ATS_MAX_QDEP: what pci_ats_queue_depth returns for a capability whose depth field reads 0.
    private const int AtsMaxQdep = 32;

    // MAX_AGAW_PFN_WIDTH: the whole address space as a device-TLB mask (64 − 12).
    private const int MaxAgawPfnWidth = 64 - 12;

    // The support bits of dmar_insert_one_dev_info, set once at probe.
    private static (bool Ats, bool Pri) DevIotlbSupport(IntelIommuUnit unit, PciDevice device)
    {
        bool ats = DmarCap.EcapDevIotlbSupport(unit.Ecap) && device.HasAts; // and an ATSR covers it (see above)
        bool pri = ats && unit.ScalableMode && DmarCap.EcapPrs(unit.Ecap) && device.HasPri;
        return (ats, pri);
    }

    // iommu_enable_dev_iotlb: PFSID, then PASID, then PRI (reset + enable), then ATS and its queue depth.
    // PCIe leaves enabling PASID after ATS undefined, so PASID goes first even if it is never used.
    [KernelSymbol("iommu_enable_dev_iotlb")]
    private static void IommuEnableDevIotlb(IntelIommuUnit unit, DeviceDomainInfo info)
    {
        PciDevice pdev = info.Device;
        info.Pfsid = DmarCap.EcapDit(unit.Ecap) ? pdev.RequesterId : (ushort)0;
        if (info.PasidSupported && !info.PasidEnabled && pdev.EnablePasid() == Errno.None)
        {
            info.PasidEnabled = true;
        }

        // pci_prg_resp_pasid_required holds for every PASID-capable device here; pci_reset_pri fails while PRI is on.
        if (info.PriSupported && !pdev.PriEnabled && pdev.EnablePri() == Errno.None)
        {
            info.PriEnabled = true;
        }

        if (info.AtsSupported && pdev.EnableAts() == Errno.None)
        {
            info.AtsEnabled = true;
            info.AtsQdep = AtsMaxQdep;
        }
    }

    // iommu_disable_dev_iotlb: ATS, then PRI, then PASID (the reverse order).
    [KernelSymbol("iommu_disable_dev_iotlb")]
    private static void IommuDisableDevIotlb(DeviceDomainInfo info)
    {
        if (info.AtsEnabled)
        {
            info.Device.DisableAts();
            info.AtsEnabled = false;
        }

        if (info.PriEnabled)
        {
            info.Device.DisablePri();
            info.PriEnabled = false;
        }

        if (info.PasidEnabled)
        {
            info.Device.DisablePasid();
            info.PasidEnabled = false;
        }
    }

    // domain_update_iotlb, made monotonic: has_iotlb_device is set before a device that can use ATS
    // (ATS supported behind a unit with device-TLBs: a property of the device, fixed at probe) is
    // listed in the domain by RID, aux or PASID attach, and then stays set. 5.15 recomputes it from
    // ats_enabled at each change of the RID list only, so an aux domain's flag can lag its devices;
    // a flag that stays set costs only a walk of the lists that finds no ATS device.
    [KernelSymbol("domain_update_iotlb")]
    private void DomainUpdateIotlb(DmarDomain domain, Device device)
    {
        if (!domain.HasIotlbDevice && device is PciDevice pci && DeviceToIommu(pci) is { } unit && DevIotlbSupport(unit, pci).Ats)
        {
            domain.HasIotlbDevice = true;
        }
    }

    // iommu_flush_dev_iotlb: a device-TLB invalidation (no PASID) of 2^mask pages at addr for every ATS device
    // that reaches the domain (5.15 covers only the RID attachments; see the remarks above). As in 5.15,
    // nothing to do without has_iotlb_device, and the walk of the attachments holds device_domain_lock:
    // an attach or detach on another thread changes those lists meanwhile.
    [KernelSymbol("iommu_flush_dev_iotlb")]
    private void IommuFlushDevIotlb(DmarDomain domain, ulong addr, int mask)
    {
        if (!domain.HasIotlbDevice)
        {
            return;
        }

        lock (_deviceDomainLock)
        {
            foreach (DeviceDomainInfo info in domain.Devices)
            {
                if (info.AtsEnabled)
                {
                    info.Unit.FlushDevIotlb(info.Sid, info.Pfsid, info.AtsQdep, addr, mask);
                }
            }

            foreach (DmarDomain.SubdevInfo sub in domain.Subdevices)
            {
                FlushDevIotlbOf(sub.Device, addr, mask);
            }
        }

        if (domain.DevPasids.Count != 0)
        {
            DmarDomain.DevPasidInfo[] pasids;
            lock (domain.DevPasids)
            {
                pasids = [.. domain.DevPasids];
            }

            foreach (DmarDomain.DevPasidInfo p in pasids)
            {
                FlushDevIotlbOf(p.Device, addr, mask);
            }
        }
    }

    private static void FlushDevIotlbOf(Device device, ulong addr, int mask)
    {
        if (device.IommuPriv is DeviceDomainInfo { AtsEnabled: true } info)
        {
            info.Unit.FlushDevIotlb(info.Sid, info.Pfsid, info.AtsQdep, addr, mask);
        }
    }

    // The device-TLB half of iommu_flush_iotlb_psi / intel_flush_iotlb_all: after an unmap's IOTLB flush of the
    // naturally aligned block of 2^mask pages at addr; on a map only without caching mode (device-TLBs never
    // cache not-present entries).
    private void FlushDevIotlbAfterIotlb(IntelIommuUnit unit, DmarDomain domain, ulong addr, ulong size, bool map)
    {
        if (!domain.HasIotlbDevice || (map && unit.CachingMode))
        {
            return;
        }

        ulong first = addr >> 12;
        ulong last = (addr + size - 1) >> 12;
        int mask = IntelIommuUnit.CoveringMask(first, last);
        IommuFlushDevIotlb(domain, (first >> mask) << (mask + 12), mask);
    }

    // intel_flush_iotlb_all's device-TLB step: the whole space, skipped with caching mode as 5.15 does.
    private void FlushDevIotlbAll(IntelIommuUnit unit, DmarDomain domain)
    {
        if (!unit.CachingMode)
        {
            IommuFlushDevIotlb(domain, 0, MaxAgawPfnWidth);
        }
    }

    // devtlb_invalidation_with_pasid (intel_pasid_tear_down_entry step 7): the whole space; RID2PASID with
    // the RID descriptor, other PASIDs with the PASID-based one. Not with caching mode.
    [KernelSymbol("devtlb_invalidation_with_pasid")]
    private static void DevtlbInvalidationWithPasid(IntelIommuUnit unit, DeviceDomainInfo info, uint pasid)
    {
        if (unit.CachingMode || !info.AtsEnabled)
        {
            return;
        }

        if (pasid == RidPasid)
        {
            unit.FlushDevIotlb(info.Sid, info.Pfsid, info.AtsQdep, 0, MaxAgawPfnWidth);
        }
        else
        {
            unit.FlushDevIotlbPasid(info.Sid, info.Pfsid, pasid, info.AtsQdep, 0, MaxAgawPfnWidth);
        }
    }

    // __flush_svm_range_dev's device-TLB step (sdev->dev_iotlb): the PASID-based descriptor for the chunk.
    private static void SvmFlushDevIotlb(IntelIommuUnit unit, DeviceDomainInfo info, uint pasid, ulong addr, ulong pages)
    {
        if (info.AtsEnabled)
        {
            int order = System.Numerics.BitOperations.Log2(System.Numerics.BitOperations.RoundUpToPowerOf2(pages));
            unit.FlushDevIotlbPasid(info.Sid, info.Pfsid, pasid, info.AtsQdep, addr, order);
        }
    }
}
