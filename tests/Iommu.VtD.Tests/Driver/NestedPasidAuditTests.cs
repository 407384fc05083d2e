using CsCheck;
using Iommu.Devices;
using Iommu.Domains;
using Iommu.VtD.Driver;
using Iommu.VtD.Hardware;
using static Iommu.VtD.Tests.Driver.DriverTestKit;
using static Iommu.VtD.Tests.Driver.FirstLevelTestKit;

namespace Iommu.VtD.Tests.Driver;

/// <summary>
/// Audit of nested domains and PASID attach against the kernels the members name (6.7/6.8 nested.c,
/// 6.4 iommu.c): device-TLB flushes for nested translations, a freed parent, global PASID ranges. What a
/// user observes: DMA through the ATC and the unit, PASID entry bytes, the PASID handed out.
/// </summary>
public sealed class NestedPasidAuditTests
{
    private const int DescDevTlb = 3;
    private const ulong HostBase = 0x1_0000_0000, GuestPage = 0x80_0000, HostPage = 0x1_8000_0000, Table = 0x67;

    private static readonly VtdConfig AtsConfig = VtdConfig.ScalableModeFirstLevel48Bit with { DeviceTlb = true };

    private static PciDevice AtsDevice(DriverBed f, string bdf) =>
        f.Pci.AddDevice(new PciDeviceSpec(bdf) { PasidWidth = 20, Ats = true, Acs = true });

    // Guest memory GPA [0, 8 MiB) → HostBase; the guest's 4-level table at GPA 0x1000 maps VA 0x7000 →
    // GPA 0x80_0000 (host 0x1_8000_0000); GPA 0x80_1000 → host 0x1_8000_1000 is mapped too.
    private static (DmarDomain Parent, DmarDomain Nested) GuestNested(DriverBed f)
    {
        Assert.Equal(Errno.None, f.Driver.DomainAllocNestParent(f.Pci, out DmarDomain? parent));
        Assert.Equal(Errno.None, f.Iommu.Map(parent!, 0, HostBase, 8 * Sizes.MiB, RW));
        Assert.Equal(Errno.None, f.Iommu.Map(parent!, GuestPage, HostPage, 2 * K4, RW));
        f.Platform.Memory.WriteUInt64(HostBase + 0x1000, 0x2000 | Table);
        f.Platform.Memory.WriteUInt64(HostBase + 0x2000, 0x3000 | Table);
        f.Platform.Memory.WriteUInt64(HostBase + 0x3000, 0x4000 | Table);
        f.Platform.Memory.WriteUInt64(HostBase + 0x4000 + (7 * 8), GuestPage | Table);
        Assert.Equal(Errno.None, f.Driver.DomainAllocNested(parent!, new IommuHwptVtdS1(IommuVtdS1.None, 0x1000, 48), out DmarDomain? nested));
        return (parent!, nested!);
    }

    private static DmaResult AtsRead(PciDevice dev, uint? pasid, ulong iova)
    {
        Span<byte> b = stackalloc byte[8];
        return dev.AtsDmaRead(pasid, iova, b);
    }

    private static DmaResult Read(PciDevice dev, uint? pasid, ulong iova)
    {
        Span<byte> b = stackalloc byte[8];
        return dev.DmaRead(pasid, iova, b);
    }

    // 6.8 iommu_flush_iotlb_psi → parent_domain_flush: for every nested child with has_iotlb_device,
    // iommu_flush_dev_iotlb(device_info, 0, MAX_AGAW_PFN_WIDTH) on each of its devices ("Address translation
    // cache in device side caches the result of nested translation").
    [Fact]
    public void A_parent_unmap_drops_the_nested_translation_from_an_ats_devices_atc()
    {
        using DriverBed f = NewFl(AtsConfig);
        PciDevice dev = AtsDevice(f, "0000:00:03.0");
        Assert.True(dev.AtsEnabled);
        (DmarDomain parent, DmarDomain nested) = GuestNested(f);
        Assert.Equal(Errno.None, f.Driver.AttachNestedDev(nested, dev));
        DmaResult warm = AtsRead(dev, null, 0x7010);
        Assert.True(warm.IsOk, warm.ToString());
        Assert.Equal(HostPage + 0x10, warm.Address);

        var qi = new QiTrace(f);
        Assert.Equal(K4, f.Iommu.Unmap(parent, GuestPage, K4));
        Assert.False(AtsRead(dev, null, 0x7010).IsOk, "the ATC still serves the nested translation of a page the parent unmapped");
        Assert.Contains(qi.Since(), d => d.Type == DescDevTlb);
    }

    // 6.8 intel_nested_flush_cache: after the P_IOTLB, nested_flush_dev_iotlb for each ATS device of the
    // nested domain (mask = ilog2(roundup_pow_of_two(npages)), or 64 - 12 for all).
    [Fact]
    public void User_invalidation_flushes_the_device_tlb_of_ats_devices_in_the_nested_domain()
    {
        using DriverBed f = NewFl(AtsConfig);
        PciDevice dev = AtsDevice(f, "0000:00:03.0");
        (_, DmarDomain nested) = GuestNested(f);
        Assert.Equal(Errno.None, f.Driver.AttachNestedDev(nested, dev));
        Assert.Equal(HostPage + 0x10, AtsRead(dev, null, 0x7010).Address);

        // The guest retargets VA 0x7000 and invalidates its stage 1.
        f.Platform.Memory.WriteUInt64(HostBase + 0x4000 + (7 * 8), (GuestPage + K4) | Table);
        var qi = new QiTrace(f);
        Assert.Equal(Errno.None, f.Driver.CacheInvalidateUser(nested, [new IommuHwptVtdS1Invalidate(0x7000, 1, IommuVtdInv.Leaf)], out int processed));
        Assert.Equal(1, processed);
        Assert.Equal(HostPage + K4 + 0x10, AtsRead(dev, null, 0x7010).Address);
        Assert.Contains(qi.Since(), d => d.Type == DescDevTlb);
    }

    // A page count above the address space (but not U64_MAX) must invalidate everything: 6.8 takes the mask as
    // ilog2(__roundup_pow_of_two(npages)), which for npages > 2^63 shifts 1 by 64 and comes out as a one-page
    // flush, leaving the retargeted page's stale translation in the IOTLB and the ATC. We flush all instead.
    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public void User_invalidation_of_more_pages_than_the_address_space_flushes_everything(bool ats)
    {
        using DriverBed f = NewFl(AtsConfig);
        PciDevice dev = AtsDevice(f, "0000:00:03.0");
        (_, DmarDomain nested) = GuestNested(f);
        Assert.Equal(Errno.None, f.Driver.AttachNestedDev(nested, dev));
        Assert.Equal(HostPage + 0x10, ats ? AtsRead(dev, null, 0x7010).Address : Read(dev, null, 0x7010).PhysicalAddress);

        f.Platform.Memory.WriteUInt64(HostBase + 0x4000 + (7 * 8), (GuestPage + K4) | Table);
        Assert.Equal(Errno.None, f.Driver.CacheInvalidateUser(nested, [new IommuHwptVtdS1Invalidate(0, (1UL << 63) + 1, IommuVtdInv.Leaf)], out int processed));
        Assert.Equal(1, processed);
        Assert.Equal(HostPage + K4 + 0x10, ats ? AtsRead(dev, null, 0x7010).Address : Read(dev, null, 0x7010).PhysicalAddress);
    }

    // 6.7/6.8 intel_nested_domain_ops = { attach_dev, free[, cache_invalidate_user] }: no set_dev_pasid, so
    // iommu_attach_device_pasid answers -EOPNOTSUPP. The driver's own entry point must refuse a nested domain
    // too: its SetDevPasid would otherwise program an entry the parent's free (which detaches only the
    // nested children's RID attachments) leaves pointing at a freed second-level table.
    [Fact]
    public void A_nested_domain_cannot_be_attached_to_a_pasid_and_no_pasid_outlives_the_parent()
    {
        using DriverBed f = NewFl("Fl48");
        PciDevice dev = f.AddDevice("0000:00:03.0", pasidWidth: 20);
        (DmarDomain parent, DmarDomain nested) = GuestNested(f);
        uint pasid = f.Iommu.AllocGlobalPasid(dev);
        int dids = f.Driver.Units[0].DomainIdsInUse;
        Assert.Equal(Errno.EOPNOTSUPP, f.Iommu.AttachDevicePasid(nested, dev, pasid));
        Errno err = f.Driver.SetDevPasid(nested, dev, pasid);
        ulong[]? e = f.PasidEntry(dev, pasid);
        bool translated = Read(dev, pasid, 0x7010).IsOk;
        f.Iommu.DomainFree(parent);
        Assert.False(Read(dev, pasid, 0x7010).IsOk, "DMA with the nested child's PASID still translates after the parent was freed");
        Assert.Equal(Errno.EOPNOTSUPP, err);
        Assert.True(e is null || (e[0] & 1) == 0, "set_dev_pasid of a nested domain wrote a PASID entry");
        Assert.False(translated);
        Assert.Equal(dids, f.Driver.Units[0].DomainIdsInUse);
    }

    // Isolation oracle over random sequences: an ATS device in a nested domain reads VA 0x7010 through its ATC
    // and through the unit; it must reach exactly host(guest target) while attached and the parent maps the
    // target, and fault otherwise, whatever the ATC and IOTLB held before.
    [Fact]
    public void Random_parent_and_guest_changes_never_leave_a_stale_nested_translation()
    {
        Gen.Int[0, 4].Array[1, 24].Sample(ops =>
        {
            using DriverBed f = NewFl(AtsConfig);
            PciDevice dev = AtsDevice(f, "0000:00:03.0");
            (DmarDomain parent, DmarDomain nested) = GuestNested(f);
            Assert.Equal(Errno.None, f.Driver.AttachNestedDev(nested, dev));
            bool attached = true;
            int target = 0; // the guest's VA 0x7000 → GuestPage + target * 4 KiB
            bool[] mapped = [true, true];
            foreach (int op in ops)
            {
                switch (op)
                {
                    case 0: // the host toggles one guest page in the parent
                        int page = mapped[target] ? target : 1 - target;
                        ulong gpa = GuestPage + ((ulong)page * K4);
                        if (mapped[page])
                        {
                            Assert.Equal(K4, f.Iommu.Unmap(parent, gpa, K4));
                        }
                        else
                        {
                            Assert.Equal(Errno.None, f.Iommu.Map(parent, gpa, HostPage + ((ulong)page * K4), K4, RW));
                        }

                        mapped[page] = !mapped[page];
                        break;
                    case 1: // the guest retargets VA 0x7000 and invalidates
                        target = 1 - target;
                        f.Platform.Memory.WriteUInt64(HostBase + 0x4000 + (7 * 8), (GuestPage + ((ulong)target * K4)) | Table);
                        Assert.Equal(Errno.None, f.Driver.CacheInvalidateUser(nested, [new IommuHwptVtdS1Invalidate(0x7000, 1, IommuVtdInv.Leaf)], out _));
                        break;
                    case 2:
                        if (attached)
                        {
                            f.Driver.DetachDev(nested, dev);
                        }
                        else
                        {
                            Assert.Equal(Errno.None, f.Driver.AttachNestedDev(nested, dev));
                        }

                        attached = !attached;
                        break;
                    case 3:
                        f.Iommu.FlushIotlbAll(parent);
                        break;
                    default: // the guest invalidates everything
                        Assert.Equal(Errno.None, f.Driver.CacheInvalidateUser(nested, [new IommuHwptVtdS1Invalidate(0, ulong.MaxValue, IommuVtdInv.None)], out _));
                        break;
                }

                bool reach = attached && mapped[target];
                ulong want = HostPage + ((ulong)target * K4) + 0x10;
                foreach (DmaResult r in new[] { AtsRead(dev, null, 0x7010), Read(dev, null, 0x7010) })
                {
                    Assert.True(reach ? r.IsOk && r.Address == want : !r.IsOk, $"after op {op}: {r} (attached {attached}, target {target}, mapped {mapped[target]})");
                }
            }
        }, iter: 60);
    }

    // 6.4 iommu_alloc_global_pasid: max_pasids = min(device PASID capability, the IOMMU instance's
    // max_pasids), which intel-iommu sets only when pasid_supported (else 0 → IOMMU_PASID_INVALID).
    [Fact]
    public void A_device_behind_a_unit_without_pasid_support_gets_no_global_pasid()
    {
        using DriverBed f = new(VtdConfig.Legacy48Bit, memory: SmallMemory);
        PciDevice dev = f.AddDevice("0000:00:03.0", pasidWidth: 20);
        Assert.Equal(IommuCore.PasidInvalid, f.Iommu.AllocGlobalPasid(dev));
    }

    // The same min(): a 4-bit PASID unit (ECAP.PSS = 3, 16 PASIDs) under a 20-bit device hands out 1..15 only.
    [Fact]
    public void Global_pasids_stay_below_the_units_pasid_size()
    {
        using DriverBed f = NewFl(VtdConfig.ScalableModeFirstLevel48Bit with { PasidWidth = 4 });
        PciDevice dev = f.AddDevice("0000:00:03.0", pasidWidth: 20);
        for (uint want = 1; want < 16; want++)
        {
            Assert.Equal(want, f.Iommu.AllocGlobalPasid(dev));
        }

        Assert.Equal(IommuCore.PasidInvalid, f.Iommu.AllocGlobalPasid(dev));
    }
}
