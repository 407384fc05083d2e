using Iommu.Devices;
using Iommu.Domains;
using Iommu.VtD.Driver;
using static Iommu.VtD.Tests.Driver.DriverTestKit;
using static Iommu.VtD.Tests.Driver.FirstLevelTestKit;

namespace Iommu.VtD.Tests.Driver;

/// <summary>
/// Device DMA through what the driver programs for first-level, aux first-level and nested domains, on the
/// unit's own first-level and nested walk: the page reached, the fault reasons, and that every flush the
/// driver sends is enough (a warmed IOTLB never serves a removed translation).
/// </summary>
public sealed class FirstLevelDmaTests
{
    private static DmaResult Write(DriverBed f, PciDevice dev, uint? pasid, ulong iova, DmaRequestAttributes attributes = DmaRequestAttributes.None)
    {
        Span<byte> b = stackalloc byte[8];
        return dev.DmaWrite(pasid, iova, b, attributes);
    }

    private static DmaResult Read(PciDevice dev, uint? pasid, ulong iova, DmaRequestAttributes attributes = DmaRequestAttributes.None)
    {
        Span<byte> b = stackalloc byte[8];
        return dev.DmaRead(pasid, iova, b, attributes);
    }

    [Theory]
    [InlineData("Fl48")]
    [InlineData("Fl57")]
    [InlineData("Fl48Cm")]
    public void A_first_level_dma_domain_translates_and_an_unmap_stops_a_warmed_iotlb(string config)
    {
        using DriverBed f = NewFl(config);
        PciDevice dev = f.AddDevice("0000:00:03.0");
        IDomain dom = f.Iommu.GetDomainForDev(dev)!;
        Assert.True(((DmarDomain)dom).UseFirstLevel);
        Assert.Equal(Errno.None, f.Iommu.Map(dom, 0x1234_5000, 0x1_2000_0000, K4, RW));
        Assert.Equal(Errno.None, f.Iommu.Map(dom, 0x4000_0000, 0x1_C000_0000, G1, IommuProt.Read));
        f.AssertDma(dev, null, 0x1234_5008, 0x1_2000_0008);
        f.AssertDma(dev, null, 0x1234_5008, 0x1_2000_0008, "again, from the IOTLB");
        Assert.True(Read(dev, null, 0x4000_0ABC).IsOk);
        Assert.Equal(0x1_C000_0ABCUL, Read(dev, null, 0x4000_0ABC).Address);
        Assert.Equal(0x85, Write(f, dev, null, 0x4000_0ABC).FaultReason.Code); // read-only 1 GiB page
        Assert.Equal(0x71, Read(dev, null, 0x1234_6000).FaultReason.Code);

        Assert.Equal(K4, f.Iommu.Unmap(dom, 0x1234_5000, K4));
        Assert.Equal(0x71, Read(dev, null, 0x1234_5008).FaultReason.Code);
        Assert.Equal(G1, f.Iommu.Unmap(dom, 0x4000_0000, G1));
        Assert.Equal(0x71, Read(dev, null, 0x4000_0ABC).FaultReason.Code);

        // Not-present → present needs no flush, caching mode or not.
        Assert.Equal(Errno.None, f.Iommu.Map(dom, 0x1234_6000, 0x1_2000_1000, K4, RW));
        f.AssertDma(dev, null, 0x1234_6000, 0x1_2000_1000, "right after map");
    }

    [Fact]
    public void Rid2pasid_refuses_supervisor_requests_and_an_aux_pasid_takes_them_with_write_protect()
    {
        using DriverBed f = NewFl("Fl48", FirstLevelPolicy.AllWhenEveryUnitHasFlts);
        PciDevice parent = f.AuxParent("0000:00:02.0");
        IDomain rid = f.Iommu.GetDomainForDev(parent)!;
        Assert.Equal(Errno.None, f.Iommu.Map(rid, 0x10_0000, 0x1_0000_0000, K4, RW));
        Assert.Equal(0x5D, Read(parent, 0, 0x10_0000, DmaRequestAttributes.Privileged).FaultReason.Code); // no SRE since 5.13
        Assert.True(Read(parent, 0, 0x10_0000).IsOk);

        IDomain aux = f.Unmanaged();
        Assert.Equal(Errno.None, f.Iommu.Map(aux, 0x10_0000, 0x1_4000_0000, K4, IommuProt.Read));
        Assert.Equal(Errno.None, f.Iommu.Map(aux, 0x20_0000, 0x1_4000_1000, K4, RW));
        Assert.Equal(Errno.None, f.Iommu.AttachDeviceAux(aux, parent));
        Assert.Equal(0x1_4000_0000UL, Read(parent, 1, 0x10_0000).Address);
        Assert.Equal(0x1_4000_0000UL, Read(parent, 1, 0x10_0000, DmaRequestAttributes.Privileged).Address); // SRE
        Assert.Equal(0x85, Write(f, parent, 1, 0x10_0000, DmaRequestAttributes.Privileged).FaultReason.Code); // WPE
        Assert.Equal(0x1_4000_1000UL, Write(f, parent, 1, 0x20_0000, DmaRequestAttributes.Privileged).Address);
        Assert.Equal(0x1_0000_0000UL, Read(parent, null, 0x10_0000).Address); // without PASID: the RID domain

        Assert.Equal(K4, f.Iommu.Unmap(aux, 0x20_0000, K4));
        Assert.Equal(0x71, Write(f, parent, 1, 0x20_0000).FaultReason.Code);
        f.Iommu.DetachDeviceAux(aux, parent);
        Assert.False(Read(parent, 1, 0x10_0000).IsOk);
    }

    [Fact]
    public void A_nested_domain_reaches_guest_mapped_pages_and_every_invalidation_path_is_enough()
    {
        using DriverBed f = NewFl("Fl48");
        PciDevice dev = f.AddDevice("0000:00:03.0");
        Assert.Equal(Errno.None, f.Driver.DomainAllocNestParent(f.Pci, out DmarDomain? parent));

        // Guest memory: GPA [0, 8 MiB) → host 0x1_0000_0000; the guest's 4-level table at GPA 0x1000 maps
        // VA 0x7000 → GPA 0x80_0000 (host 0x1_8000_0000) and VA 0x8000 → GPA 0x80_1000 (host 0x1_8000_1000).
        const ulong HostBase = 0x1_0000_0000, Table = 0x67; // P | R/W | U/S | A | D
        Assert.Equal(Errno.None, f.Iommu.Map(parent!, 0, HostBase, 8 * Sizes.MiB, RW));
        Assert.Equal(Errno.None, f.Iommu.Map(parent!, 0x80_0000, 0x1_8000_0000, 2 * K4, RW));
        f.Platform.Memory.WriteUInt64(HostBase + 0x1000, 0x2000 | Table);
        f.Platform.Memory.WriteUInt64(HostBase + 0x2000, 0x3000 | Table);
        f.Platform.Memory.WriteUInt64(HostBase + 0x3000, 0x4000 | Table);
        f.Platform.Memory.WriteUInt64(HostBase + 0x4000 + (7 * 8), 0x80_0000 | Table);
        Assert.Equal(Errno.None, f.Driver.DomainAllocNested(parent!, new IommuHwptVtdS1(IommuVtdS1.None, 0x1000, 48), out DmarDomain? nested));
        Assert.Equal(Errno.None, f.Driver.AttachNestedDev(nested!, dev));
        f.AssertDma(dev, null, 0x7010, 0x1_8000_0010);

        // The guest retargets VA 0x7000 to GPA 0x80_1000: stale until it invalidates its stage 1.
        f.Platform.Memory.WriteUInt64(HostBase + 0x4000 + (7 * 8), 0x80_1000 | Table);
        Assert.Equal(0x1_8000_0010UL, Read(dev, null, 0x7010).Address);
        Assert.Equal(Errno.None, f.Driver.CacheInvalidateUser(nested!, [new IommuHwptVtdS1Invalidate(0x7000, 1, IommuVtdInv.Leaf)], out int processed));
        Assert.Equal(1, processed);
        f.AssertDma(dev, null, 0x7010, 0x1_8000_1010, "after the user's invalidation");

        // The host unmaps the guest page from the parent: the parent's flush reaches the nested DID.
        Assert.Equal(K4, f.Iommu.Unmap(parent!, 0x80_1000, K4));
        Assert.False(Read(dev, null, 0x7010).IsOk);

        // Tear-down: the device's requests no longer use the nested entry.
        f.Driver.DetachDev(nested!, dev);
        Assert.False(Read(dev, null, 0x7010).IsOk);
    }
    // A first-level IOTLB entry is tagged with its PASID: the unmap of a domain attached with
    // iommu_attach_device_pasid must flush that PASID too, not only RID2PASID and the aux PASID.
    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public void Unmap_of_a_first_level_domain_stops_dma_on_its_attached_pasids(bool alsoRid)
    {
        using DriverBed f = NewFl("Fl48", FirstLevelPolicy.AllWhenEveryUnitHasFlts);
        PciDevice a = f.AuxParent("0000:00:02.0");
        PciDevice b = f.AuxParent("0000:00:05.0");
        IDomain dom = f.Unmanaged();
        Assert.True(((DmarDomain)dom).UseFirstLevel);
        Assert.Equal(Errno.None, f.Iommu.Map(dom, 0x10_0000, 0x1_4000_0000, K4, RW));
        Assert.Equal(Errno.None, f.Iommu.Map(dom, 0x11_0000, 0x1_4000_1000, K4, RW));
        uint pa = f.Iommu.AllocGlobalPasid(a);
        uint pb = f.Iommu.AllocGlobalPasid(b);
        Assert.Equal(Errno.None, f.Iommu.AttachDevicePasid(dom, a, pa));
        Assert.Equal(Errno.None, f.Iommu.AttachDevicePasid(dom, b, pb));
        if (alsoRid)
        {
            Assert.Equal(Errno.None, f.Iommu.AttachDevice(dom, f.AddDevice("0000:00:06.0")));
        }

        foreach ((PciDevice dev, uint pasid) in new[] { (a, pa), (b, pb) })
        {
            Assert.Equal(0x1_4000_0008UL, Read(dev, pasid, 0x10_0008).Address);
            Assert.Equal(0x1_4000_1008UL, Write(f, dev, pasid, 0x11_0008).Address);
        }

        Assert.Equal(K4, f.Iommu.Unmap(dom, 0x10_0000, K4));
        foreach ((PciDevice dev, uint pasid) in new[] { (a, pa), (b, pb) })
        {
            Assert.Equal(0x71, Read(dev, pasid, 0x10_0008).FaultReason.Code);
            Assert.Equal(0x1_4000_1008UL, Read(dev, pasid, 0x11_0008).Address);
        }

        f.Iommu.DetachDevicePasid(dom, a, pa);
        Assert.Equal(K4, f.Iommu.Unmap(dom, 0x11_0000, K4));
        Assert.False(Read(a, pa, 0x11_0008).IsOk);
        Assert.Equal(0x71, Read(b, pb, 0x11_0008).FaultReason.Code);
    }
}
