using Iommu.Devices;
using Iommu.Domains;
using Iommu.VtD.Driver;
using static Iommu.VtD.Tests.Driver.DriverTestKit;

namespace Iommu.VtD.Tests.Driver;

/// <summary>Audit of the 5.15 aux-domain API against the Intel driver model: findings pinned as tests.</summary>
public sealed class AuxAuditTests
{
    private const ulong Iova = 0x4000_0000;
    private const ulong PaA = 0x1_4000_0000, PaB = 0x1_8000_0000;

    // intel_iommu_domain_free -> domain_exit -> domain_remove_dev_info only walks domain->devices (RID
    // attachments): an aux-attached domain's PASID entry keeps pointing at the page table domain_exit
    // frees (a use after free in 5.15). The model must not break isolation: the freed domain's PASID
    // must fault, and the tables handed to the next domain must not be reachable through it.
    [Theory]
    [MemberData(nameof(ScalableConfigs), MemberType = typeof(DriverTestKit))]
    public void Freeing_an_aux_attached_domain_leaves_no_pasid_entry_pointing_at_its_freed_tables(string config)
    {
        using DriverBed f = New(config);
        PciDevice parent = f.AuxParent("0000:00:02.0");
        int didsBefore = f.Driver.Units[0].DomainIdsInUse;
        IDomain a = f.Unmanaged();
        Assert.Equal(Errno.None, f.Iommu.AttachDeviceAux(a, parent));
        uint pasid = (uint)f.Iommu.AuxGetPasid(a, parent);
        Assert.Equal(Errno.None, f.Iommu.Map(a, Iova, PaA, K4, RW));
        f.AssertDma(parent, pasid, Iova, PaA);

        FreeAndCheckNothingLeft(f, a, parent, pasid, didsBefore);

        // A late aux detach of the freed domain is harmless.
        f.Iommu.DetachDeviceAux(a, parent);
        Assert.Equal(0, f.Driver.PasidsInUse);
        Assert.Equal(didsBefore, f.Driver.Units[0].DomainIdsInUse);
    }

    // Same, after AUXD_DISABLE made the aux detach a no-op (5.15 has no -EBUSY): freeing the domain is
    // the last chance to drop its PASID entry, DID and PASID.
    [Fact]
    public void Freeing_a_domain_left_aux_attached_by_auxd_disable_tears_it_down()
    {
        using DriverBed f = New("Sm48");
        PciDevice parent = f.AuxParent("0000:00:02.0");
        int didsBefore = f.Driver.Units[0].DomainIdsInUse;
        IDomain a = f.Unmanaged();
        Assert.Equal(Errno.None, f.Iommu.AttachDeviceAux(a, parent));
        Assert.Equal(Errno.None, f.Iommu.AttachDeviceAux(a, parent)); // two users
        uint pasid = (uint)f.Iommu.AuxGetPasid(a, parent);
        Assert.Equal(Errno.None, f.Iommu.Map(a, Iova, PaA, K4, RW));
        Assert.Equal(Errno.None, f.Iommu.SetDevAttr(parent, IommuDevAttr.AuxdDisable));
        f.Iommu.DetachDeviceAux(a, parent); // no-op
        f.AssertDma(parent, pasid, Iova, PaA, "aux detach is a no-op after AUXD_DISABLE (5.15)");

        FreeAndCheckNothingLeft(f, a, parent, pasid, didsBefore);
    }

    // The domain aux-attached to two parents, one of which was since released (its device info and
    // PASID table went with it): free must still release the DID both attachments hold.
    [Fact]
    public void Freeing_a_domain_aux_attached_to_two_parents_releases_the_shared_did_and_pasid()
    {
        using DriverBed f = New("Sm48");
        PciDevice p1 = f.AuxParent("0000:00:02.0");
        PciDevice p2 = f.AuxParent("0000:00:05.0");
        int didsBefore = f.Driver.Units[0].DomainIdsInUse;
        IDomain a = f.Unmanaged();
        Assert.Equal(Errno.None, f.Iommu.AttachDeviceAux(a, p1));
        Assert.Equal(Errno.None, f.Iommu.AttachDeviceAux(a, p2));
        uint pasid = (uint)f.Iommu.AuxGetPasid(a, p1);
        Assert.Equal(Errno.None, f.Iommu.Map(a, Iova, PaA, K4, RW));
        f.AssertDma(p1, pasid, Iova, PaA);
        f.AssertDma(p2, pasid, Iova, PaA);

        f.Iommu.DomainFree(a);
        f.AssertDma(p1, pasid, Iova, 0, "freed");
        f.AssertDma(p2, pasid, Iova, 0, "freed");
        Assert.Equal(0, f.Driver.PasidsInUse);
        Assert.Equal(didsBefore, f.Driver.Units[0].DomainIdsInUse);
        Assert.Equal(0, ((DmarDomain)a).DidOn(0));
    }

    // Frees a, then checks that its PASID reaches nothing, not even the next domain, which gets the freed table
    // frames, and that its PASID and DID are released.
    private static void FreeAndCheckNothingLeft(DriverBed f, IDomain a, PciDevice parent, uint pasid, int didsBefore)
    {
        f.Iommu.DomainFree(a);
        f.AssertDma(parent, pasid, Iova, 0, "the domain was freed");
        IDomain b = f.Unmanaged();
        Assert.Equal(Errno.None, f.Iommu.Map(b, Iova, PaB, K4, RW));
        f.AssertDma(parent, pasid, Iova, 0, "a's PASID must not walk b's tables");
        Assert.Equal(0, f.Driver.PasidsInUse);
        Assert.Equal(didsBefore, f.Driver.Units[0].DomainIdsInUse);
    }
}
