using Iommu.Devices;
using Iommu.Domains;
using Iommu.VtD.Driver;
using Iommu.VtD.Hardware;
using static Iommu.VtD.Tests.Driver.DriverTestKit;

namespace Iommu.VtD.Tests.Driver;

public sealed class AuxDomainTests
{
    private const ulong Iova = 0x4000_0000;
    private const ulong PaDefault = 0x1_0000_0000, PaA = 0x1_4000_0000, PaB = 0x1_8000_0000;

    [Theory]
    [MemberData(nameof(ScalableConfigs), MemberType = typeof(DriverTestKit))]
    public void Pasid_tagged_dma_reaches_only_its_domain_and_untagged_dma_uses_the_default_domain(string config)
    {
        using DriverBed f = New(config);
        PciDevice parent = f.AuxParent("0000:00:02.0");
        IDomain def = f.Iommu.GetDmaDomain(parent)!;
        Assert.Equal(DomainType.Dma, def.Type);
        IDomain a = f.Unmanaged(), b = f.Unmanaged();
        Assert.Equal(Errno.None, f.Iommu.AttachDeviceAux(a, parent));
        Assert.Equal(Errno.None, f.Iommu.AttachDeviceAux(b, parent));
        uint pa = (uint)f.Iommu.AuxGetPasid(a, parent), pb = (uint)f.Iommu.AuxGetPasid(b, parent);
        Assert.NotEqual(pa, pb);

        Assert.Equal(Errno.None, f.Iommu.Map(def, Iova, PaDefault, M2, RW));
        Assert.Equal(Errno.None, f.Iommu.Map(a, Iova, PaA, M2, RW));
        Assert.Equal(Errno.None, f.Iommu.Map(b, Iova, PaB, M2, RW));
        Assert.Equal(Errno.None, f.Iommu.Map(b, Iova + G1, PaB + M2, K4, RW)); // only b maps this

        f.AssertDma(parent, null, Iova + 0x100, PaDefault + 0x100);
        f.AssertDma(parent, pa, Iova + 0x100, PaA + 0x100);
        f.AssertDma(parent, pb, Iova + 0x100, PaB + 0x100);
        f.AssertDma(parent, pb, Iova + G1, PaB + M2);
        f.AssertDma(parent, pa, Iova + G1, 0, "a must not see b's pages");
        f.AssertDma(parent, null, Iova + G1, 0, "the default domain must not see b's pages");
        f.AssertDma(parent, Math.Max(pa, pb) + 1, Iova + 0x100, 0, "an unused PASID translates nothing");

        // Detach a with a warm IOTLB: its PASID faults at once; b and the default domain are unaffected.
        f.Iommu.DetachDeviceAux(a, parent);
        f.AssertDma(parent, pa, Iova + 0x100, 0, "after aux detach");
        f.AssertDma(parent, pb, Iova + 0x100, PaB + 0x100);
        f.AssertDma(parent, null, Iova + 0x100, PaDefault + 0x100);

        // Unmapping in b does not touch the default domain's translation of the same IOVA.
        Assert.Equal(M2, f.Iommu.Unmap(b, Iova, M2));
        f.AssertDma(parent, pb, Iova + 0x100, 0, "after unmap in b");
        f.AssertDma(parent, null, Iova + 0x100, PaDefault + 0x100);
        f.AssertDma(parent, pb, Iova + G1, PaB + M2);
    }

    [Theory]
    [MemberData(nameof(ScalableConfigs), MemberType = typeof(DriverTestKit))]
    public void Unmapping_in_the_default_domain_does_not_disturb_aux_translations(string config)
    {
        using DriverBed f = New(config);
        PciDevice parent = f.AuxParent("0000:00:02.0");
        IDomain def = f.Iommu.GetDmaDomain(parent)!;
        IDomain a = f.Unmanaged();
        Assert.Equal(Errno.None, f.Iommu.AttachDeviceAux(a, parent));
        uint pa = (uint)f.Iommu.AuxGetPasid(a, parent);
        Assert.Equal(Errno.None, f.Iommu.Map(def, Iova, PaDefault, K4, RW));
        Assert.Equal(Errno.None, f.Iommu.Map(a, Iova, PaA, K4, RW));
        f.AssertDma(parent, null, Iova, PaDefault);
        f.AssertDma(parent, pa, Iova, PaA);
        Assert.Equal(K4, f.Iommu.Unmap(def, Iova, K4));
        f.AssertDma(parent, null, Iova, 0, "after unmap in the default domain");
        f.AssertDma(parent, pa, Iova, PaA);
    }

    [Theory]
    [MemberData(nameof(ScalableConfigs), MemberType = typeof(DriverTestKit))]
    public void One_domain_aux_attached_to_two_parents_shares_one_pasid_and_one_did(string config)
    {
        using DriverBed f = New(config);
        PciDevice p1 = f.AuxParent("0000:00:02.0");
        PciDevice p2 = f.AuxParent("0000:00:05.0");
        IDomain a = f.Unmanaged();
        int didsBefore = f.Driver.Units[0].DomainIdsInUse;
        Assert.Equal(Errno.None, f.Iommu.AttachDeviceAux(a, p1));
        Assert.Equal(Errno.None, f.Iommu.AttachDeviceAux(a, p2));
        Assert.Equal(didsBefore + 1, f.Driver.Units[0].DomainIdsInUse);
        int pasid = f.Iommu.AuxGetPasid(a, p1);
        Assert.Equal(pasid, f.Iommu.AuxGetPasid(a, p2));
        Assert.Equal(1, f.Driver.PasidsInUse);

        Assert.Equal(Errno.None, f.Iommu.Map(a, Iova, PaA, K4, RW));
        f.AssertDma(p1, (uint)pasid, Iova, PaA);
        f.AssertDma(p2, (uint)pasid, Iova, PaA);

        f.Iommu.DetachDeviceAux(a, p1);
        f.AssertDma(p1, (uint)pasid, Iova, 0, "p1 detached");
        f.AssertDma(p2, (uint)pasid, Iova, PaA, "p2 still attached");
        Assert.Equal(pasid, f.Iommu.AuxGetPasid(a, p2));
        Assert.Equal(didsBefore + 1, f.Driver.Units[0].DomainIdsInUse);

        // Unmap with p2 still attached flushes p2's IOTLB.
        Assert.Equal(K4, f.Iommu.Unmap(a, Iova, K4));
        f.AssertDma(p2, (uint)pasid, Iova, 0, "after unmap");

        f.Iommu.DetachDeviceAux(a, p2);
        Assert.Equal(didsBefore, f.Driver.Units[0].DomainIdsInUse);
        Assert.Equal(0, f.Driver.PasidsInUse);
        Assert.Equal(0, ((DmarDomain)a).DidOn(0));
    }

    [Fact]
    public void Aux_and_normal_attachment_of_one_domain_share_a_did_and_both_translate()
    {
        using DriverBed f = New("Sm48");
        PciDevice parent = f.AuxParent("0000:00:02.0");
        PciDevice plain = f.AddDevice("0000:00:06.0");
        IDomain a = f.Unmanaged();
        Assert.Equal(Errno.None, f.Iommu.AttachDevice(a, plain));
        ushort did = ((DmarDomain)a).DidOn(0);
        Assert.True(did >= 2, $"DID {did}: 0 and 1 are reserved in scalable mode");
        Assert.Equal(Errno.None, f.Iommu.AttachDeviceAux(a, parent));
        Assert.Equal(did, ((DmarDomain)a).DidOn(0));
        uint pasid = (uint)f.Iommu.AuxGetPasid(a, parent);
        Assert.Equal(Errno.None, f.Iommu.Map(a, Iova, PaA, M2, RW));
        f.AssertDma(plain, null, Iova + 8, PaA + 8);
        f.AssertDma(parent, pasid, Iova + 8, PaA + 8);
        f.Iommu.DetachDevice(a, plain);
        f.AssertDma(plain, null, Iova + 8, 0, "plain detached back to its default domain");
        f.AssertDma(parent, pasid, Iova + 8, PaA + 8);
        Assert.Equal(did, ((DmarDomain)a).DidOn(0));
        f.Iommu.DetachDeviceAux(a, parent);
        Assert.Equal(0, ((DmarDomain)a).DidOn(0));
    }

    [Theory]
    [MemberData(nameof(ScalableConfigs), MemberType = typeof(DriverTestKit))]
    public void Users_are_counted_per_domain_and_device(string config)
    {
        using DriverBed f = New(config);
        PciDevice parent = f.AuxParent("0000:00:02.0");
        IDomain a = f.Unmanaged();
        Assert.Equal(Errno.None, f.Iommu.AttachDeviceAux(a, parent));
        Assert.Equal(Errno.None, f.Iommu.AttachDeviceAux(a, parent));
        uint pasid = (uint)f.Iommu.AuxGetPasid(a, parent);
        Assert.Equal(Errno.None, f.Iommu.Map(a, Iova, PaA, K4, RW));
        f.AssertDma(parent, pasid, Iova, PaA);

        f.Iommu.DetachDeviceAux(a, parent);
        f.AssertDma(parent, pasid, Iova, PaA, "one user left");
        Assert.Equal((int)pasid, f.Iommu.AuxGetPasid(a, parent));

        f.Iommu.DetachDeviceAux(a, parent);
        f.AssertDma(parent, pasid, Iova, 0, "last user gone");
        Assert.Equal(0, f.Driver.PasidsInUse);

        // A third detach is harmless.
        f.Iommu.DetachDeviceAux(a, parent);
        Assert.Equal(0, f.Driver.PasidsInUse);
    }

    [Fact]
    public void Pasids_are_allocated_lowest_free_from_1_and_released_with_the_last_aux_attachment()
    {
        using DriverBed f = New("Sm48");
        PciDevice parent = f.AuxParent("0000:00:02.0");
        IDomain a = f.Unmanaged(), b = f.Unmanaged(), c = f.Unmanaged(), d = f.Unmanaged();
        Assert.Equal(Errno.None, f.Iommu.AttachDeviceAux(a, parent));
        Assert.Equal(Errno.None, f.Iommu.AttachDeviceAux(b, parent));
        Assert.Equal(Errno.None, f.Iommu.AttachDeviceAux(c, parent));
        Assert.Equal(1, f.Iommu.AuxGetPasid(a, parent));
        Assert.Equal(2, f.Iommu.AuxGetPasid(b, parent));
        Assert.Equal(3, f.Iommu.AuxGetPasid(c, parent));
        Assert.Equal(3, f.Driver.PasidsInUse);

        f.Iommu.DetachDeviceAux(b, parent);
        Assert.Equal(2, f.Driver.PasidsInUse);
        Assert.Equal(Errno.None, f.Iommu.AttachDeviceAux(d, parent));
        Assert.Equal(2, f.Iommu.AuxGetPasid(d, parent));

        // The released PASID no longer translates for b's pages; d's PASID 2 translates d's pages.
        Assert.Equal(Errno.None, f.Iommu.Map(b, Iova, PaB, K4, RW));
        Assert.Equal(Errno.None, f.Iommu.Map(d, Iova, PaA, K4, RW));
        f.AssertDma(parent, 2, Iova, PaA);

        // Model choice (remarks): default_pasid is reset on release, so b has no PASID any more
        // and a later aux attach allocates afresh instead of reusing a stale number.
        Assert.Equal(Errno.EINVAL.ToKernelReturn(), f.Iommu.AuxGetPasid(b, parent));
        Assert.Equal(Errno.None, f.Iommu.AttachDeviceAux(b, parent));
        Assert.Equal(4, f.Iommu.AuxGetPasid(b, parent));
        f.AssertDma(parent, 4, Iova, PaB);
        f.AssertDma(parent, 2, Iova, PaA);
    }

    [Fact]
    public void Exhausting_the_devices_pasid_space_is_enodev_and_leaks_nothing()
    {
        using DriverBed f = New("Sm48");
        PciDevice parent = f.AuxParent("0000:00:02.0", pasidWidth: 2); // PASIDs 1..3
        var doms = new List<IDomain>();
        for (int i = 1; i <= 3; i++)
        {
            IDomain d = f.Unmanaged();
            Assert.Equal(Errno.None, f.Iommu.AttachDeviceAux(d, parent));
            Assert.Equal(i, f.Iommu.AuxGetPasid(d, parent));
            doms.Add(d);
        }

        int dids = f.Driver.Units[0].DomainIdsInUse;
        IDomain extra = f.Unmanaged();
        long frames = f.Platform.Frames.LiveFrames;
        Assert.Equal(Errno.ENODEV, f.Iommu.AttachDeviceAux(extra, parent));
        Assert.Equal(dids, f.Driver.Units[0].DomainIdsInUse);
        Assert.Equal(3, f.Driver.PasidsInUse);
        Assert.Equal(frames, f.Platform.Frames.LiveFrames);
        Assert.Equal(Errno.EINVAL.ToKernelReturn(), f.Iommu.AuxGetPasid(extra, parent));

        f.Iommu.DetachDeviceAux(doms[1], parent);
        Assert.Equal(Errno.None, f.Iommu.AttachDeviceAux(extra, parent));
        Assert.Equal(2, f.Iommu.AuxGetPasid(extra, parent));
        Assert.Equal(Errno.None, f.Iommu.Map(extra, Iova, PaB, K4, RW));
        f.AssertDma(parent, 2, Iova, PaB);
    }

    [Fact]
    public void Pasid_namespace_is_shared_across_devices_and_limited_by_the_first_devices_width()
    {
        using DriverBed f = New("Sm48");
        PciDevice wide = f.AuxParent("0000:00:02.0", pasidWidth: 20);
        PciDevice narrow = f.AuxParent("0000:00:05.0", pasidWidth: 1); // PASID 1 only
        IDomain a = f.Unmanaged(), b = f.Unmanaged();
        Assert.Equal(Errno.None, f.Iommu.AttachDeviceAux(a, wide));
        Assert.Equal(1, f.Iommu.AuxGetPasid(a, wide));
        Assert.Equal(Errno.ENODEV, f.Iommu.AttachDeviceAux(b, narrow)); // 1 is taken globally
        Assert.Equal(Errno.None, f.Iommu.AttachDeviceAux(a, narrow));   // reuses the domain's PASID 1
        Assert.Equal(Errno.None, f.Iommu.Map(a, Iova, PaA, K4, RW));
        f.AssertDma(narrow, 1, Iova, PaA);
        f.AssertDma(wide, 1, Iova, PaA);
    }

    [Fact]
    public void Aux_attach_without_a_free_did_is_enospc_and_dids_are_recycled_lowest_first()
    {
        using var f = new DriverBed(VtdConfig.ScalableMode48Bit with { DomainIdEncoding = 0 }, memory: SmallMemory);
        IntelIommuUnit unit = f.Driver.Units[0];
        Assert.Equal(16, unit.NumDomains);
        PciDevice parent = f.AuxParent("0000:00:02.0");
        // 0 and 1 reserved, 1 for the parent's default domain.
        Assert.Equal(3, unit.DomainIdsInUse);
        var doms = new List<IDomain>();
        for (int i = 0; i < 13; i++)
        {
            IDomain d = f.Unmanaged();
            Assert.Equal(Errno.None, f.Iommu.AttachDeviceAux(d, parent));
            doms.Add(d);
        }

        Assert.Equal(16, unit.DomainIdsInUse);
        var dids = doms.Select(d => (int)((DmarDomain)d).DidOn(0)).ToList();
        Assert.DoesNotContain(0, dids);
        Assert.DoesNotContain(1, dids);
        Assert.Equal(13, dids.Distinct().Count());

        IDomain extra = f.Unmanaged();
        Assert.Equal(Errno.ENOSPC, f.Iommu.AttachDeviceAux(extra, parent));
        Assert.Equal(13, f.Driver.PasidsInUse);
        Assert.Equal(Errno.EINVAL.ToKernelReturn(), f.Iommu.AuxGetPasid(extra, parent));

        // Free two DIDs; the next attach gets the lower one.
        ushort low = ((DmarDomain)doms[3]).DidOn(0), high = ((DmarDomain)doms[7]).DidOn(0);
        f.Iommu.DetachDeviceAux(doms[7], parent);
        f.Iommu.DetachDeviceAux(doms[3], parent);
        Assert.Equal(Errno.None, f.Iommu.AttachDeviceAux(extra, parent));
        Assert.Equal(Math.Min(low, high), ((DmarDomain)extra).DidOn(0));
        Assert.Equal(Errno.None, f.Iommu.Map(extra, Iova, PaA, K4, RW));
        f.AssertDma(parent, (uint)f.Iommu.AuxGetPasid(extra, parent), Iova, PaA);
    }

    [Fact]
    public void Disabling_aux_with_domains_attached_succeeds_and_makes_aux_detach_a_no_op()
    {
        // §2.5/§2.6: AUXD_DISABLE returns 0 even with aux domains attached; aux detach is then a silent no-op.
        using DriverBed f = New("Sm48");
        PciDevice parent = f.AuxParent("0000:00:02.0");
        IDomain a = f.Unmanaged();
        Assert.Equal(Errno.None, f.Iommu.AttachDeviceAux(a, parent));
        uint pasid = (uint)f.Iommu.AuxGetPasid(a, parent);
        Assert.Equal(Errno.None, f.Iommu.Map(a, Iova, PaA, K4, RW));
        Assert.Equal(Errno.None, f.Iommu.SetDevAttr(parent, IommuDevAttr.AuxdDisable));
        Assert.Equal(Errno.None, f.Iommu.GetDevAttr(parent, IommuDevAttr.AuxdEnabled, out bool enabled));
        Assert.False(enabled);
        f.Iommu.DetachDeviceAux(a, parent);
        Assert.Equal(1, f.Driver.PasidsInUse);
        Assert.Equal((int)pasid, f.Iommu.AuxGetPasid(a, parent));
        Assert.Equal(Errno.EPERM, f.Iommu.AttachDeviceAux(f.Unmanaged(), parent));
    }

    [Fact]
    public void Aux_attach_of_a_dma_domain_is_eperm()
    {
        using DriverBed f = New("Sm48");
        PciDevice parent = f.AuxParent("0000:00:02.0");
        IDomain dma = f.Iommu.DomainAllocType(f.Pci, DomainType.Dma)!;
        Assert.Equal(Errno.EPERM, f.Iommu.AttachDeviceAux(dma, parent));
        Assert.Equal(Errno.EPERM, f.Iommu.AttachDeviceAux(f.Iommu.GetDmaDomain(parent)!, parent));
        Assert.Equal(0, f.Driver.PasidsInUse);
    }
}
