using Iommu.Devices;
using Iommu.Domains;
using Iommu.VtD.Driver;
using Iommu.VtD.Hardware;
using static Iommu.VtD.Tests.Driver.DriverTestKit;

namespace Iommu.VtD.Tests.Driver;

public sealed class AttachDetachTests
{
    [Theory]
    [MemberData(nameof(Configs), MemberType = typeof(DriverTestKit))]
    public void Rmrr_locked_device_refuses_unmanaged_domains_but_takes_dma_domains(string config)
    {
        using DriverBed f = New(config);
        PciDevice dev = f.AddDevice("0000:00:03.0", rmrr: true);
        IDomain def = f.Iommu.GetDmaDomain(dev)!;
        Assert.Equal(Errno.None, f.Iommu.Map(def, 0x1000, 0x7000, K4, RW));
        f.AssertDma(dev, null, 0x1000, 0x7000);

        IDomain un = f.Unmanaged();
        Assert.Equal(Errno.None, f.Iommu.Map(un, 0x1000, 0x9000, K4, RW));
        Assert.Equal(Errno.EPERM, f.Iommu.AttachDevice(un, dev));
        f.AssertDma(dev, null, 0x1000, 0x7000, "the refused attach must leave the default domain in place");
        Assert.Equal(0, ((DmarDomain)un).DidOn(0));

        IDomain dma = f.Iommu.DomainAllocType(f.Pci, DomainType.Dma)!;
        Assert.Equal(Errno.None, f.Driver.AttachDev(dma, dev));
        Assert.Equal(Errno.None, f.Iommu.Map(dma, 0x1000, 0xB000, K4, RW));
        f.AssertDma(dev, null, 0x1000, 0xB000);
    }

    [Fact]
    public void Aux_enabled_device_refuses_normal_unmanaged_attach_but_takes_a_dma_domain()
    {
        using DriverBed f = New("Sm48");
        PciDevice parent = f.AuxParent("0000:00:02.0");
        IDomain un = f.Unmanaged();
        Assert.Equal(Errno.EPERM, f.Iommu.AttachDevice(un, parent));
        Assert.Equal(Errno.None, f.Iommu.GetDevAttr(parent, IommuDevAttr.AuxdEnabled, out bool on));
        Assert.True(on, "a refused attach must not disturb the aux state");

        IDomain dma = f.Iommu.DomainAllocType(f.Pci, DomainType.Dma)!;
        Assert.Equal(Errno.None, f.Driver.AttachDev(dma, parent));
        Assert.Equal(Errno.None, f.Iommu.Map(dma, 0x4000, 0x8000, K4, RW));
        f.AssertDma(parent, null, 0x4000, 0x8000);
        // §2.7: the device info (and its auxd_enabled bit) is replaced by the new attach.
        Assert.Equal(Errno.None, f.Iommu.GetDevAttr(parent, IommuDevAttr.AuxdEnabled, out on));
        Assert.False(on);
    }

    [Theory]
    [MemberData(nameof(Configs), MemberType = typeof(DriverTestKit))]
    public void Detach_returns_the_device_to_its_default_domain_at_once(string config)
    {
        using DriverBed f = New(config);
        PciDevice dev = f.AddDevice("0000:00:03.0");
        IDomain def = f.Iommu.GetDmaDomain(dev)!;
        Assert.Equal(Errno.None, f.Iommu.Map(def, 0x10_0000, 0x20_0000, K4, RW));
        IDomain un = f.Unmanaged();
        Assert.Equal(Errno.None, f.Iommu.Map(un, 0x10_0000, 0x30_0000, K4, RW));
        Assert.Equal(Errno.None, f.Iommu.Map(un, 0x40_0000, 0x50_0000, K4, RW));
        f.AssertDma(dev, null, 0x10_0000, 0x20_0000);

        Assert.Equal(Errno.None, f.Iommu.AttachDevice(un, dev));
        f.AssertDma(dev, null, 0x10_0000, 0x30_0000, "after attach (context was warm with the default domain)");
        f.AssertDma(dev, null, 0x40_0000, 0x50_0000);

        f.Iommu.DetachDevice(un, dev);
        f.AssertDma(dev, null, 0x10_0000, 0x20_0000, "after detach");
        f.AssertDma(dev, null, 0x40_0000, 0, "after detach the unmanaged domain's pages are gone");
        Assert.Equal(0, ((DmarDomain)un).DidOn(0));

        // And again: re-attach works and sees the same pages.
        Assert.Equal(Errno.None, f.Iommu.AttachDevice(un, dev));
        f.AssertDma(dev, null, 0x40_0000, 0x50_0000, "after re-attach");
    }

    [Theory]
    [MemberData(nameof(Configs), MemberType = typeof(DriverTestKit))]
    public void One_domain_on_two_devices_uses_one_did_and_both_translate(string config)
    {
        using DriverBed f = New(config);
        PciDevice d1 = f.AddDevice("0000:00:03.0"), d2 = f.AddDevice("0000:00:04.0");
        IDomain un = f.Unmanaged();
        int before = f.Driver.Units[0].DomainIdsInUse;
        Assert.Equal(Errno.None, f.Iommu.AttachDevice(un, d1));
        Assert.Equal(Errno.None, f.Iommu.AttachDevice(un, d2));
        Assert.Equal(before - 1, f.Driver.Units[0].DomainIdsInUse); // two default DIDs freed, one taken
        Assert.Equal(Errno.None, f.Iommu.Map(un, 0x10_0000, 0x30_0000, M2, RW));
        f.AssertDma(d1, null, 0x10_0008, 0x30_0008);
        f.AssertDma(d2, null, 0x10_0008, 0x30_0008);
        Assert.Equal(M2, f.Iommu.Unmap(un, 0x10_0000, M2));
        f.AssertDma(d1, null, 0x10_0008, 0);
        f.AssertDma(d2, null, 0x10_0008, 0);
    }

    [Fact]
    public void Legacy_did_exhaustion_is_ebusy_on_normal_attach_and_dids_recycle_lowest_first()
    {
        using var f = new DriverBed(VtdConfig.Legacy48Bit with { DomainIdEncoding = 0 }, memory: SmallMemory);
        IntelIommuUnit unit = f.Driver.Units[0];
        Assert.Equal(16, unit.NumDomains);
        Assert.Equal(1, unit.DomainIdsInUse); // DID 0
        var devs = new List<PciDevice>();
        for (int i = 1; i <= 15; i++)
        {
            devs.Add(f.AddDevice($"0000:00:{i:x2}.0"));
        }

        Assert.Equal(16, unit.DomainIdsInUse);
        PciDevice x = devs[0], y = devs[1];
        IDomain shared = f.Unmanaged();
        Assert.Equal(Errno.None, f.Iommu.AttachDevice(shared, x)); // x's default DID goes, shared takes it
        Assert.Equal(Errno.None, f.Iommu.AttachDevice(shared, y)); // y's default DID goes
        Assert.Equal(15, unit.DomainIdsInUse);
        PciDevice z = f.AddDevice("0000:01:00.0");               // takes the last DID
        Assert.Equal(16, unit.DomainIdsInUse);

        IDomain e = f.Unmanaged();
        Assert.Equal(Errno.None, f.Iommu.Map(e, 0x1000, 0x2000, K4, RW));
        Assert.Equal(Errno.EBUSY, f.Iommu.AttachDevice(e, x));
        Assert.Equal(0, ((DmarDomain)e).DidOn(0));
        // §2.7 step 3: x was detached from its old domain before the failure.
        f.AssertDma(x, null, 0x1000, 0);
        Assert.Equal(Errno.None, f.Iommu.Map(shared, 0x1000, 0x3000, K4, RW));
        f.AssertDma(y, null, 0x1000, 0x3000);

        // Free two DIDs (devices 5 and 9 attach to `shared`): the next allocation takes the lower.
        ushort did5 = ((DmarDomain)f.Iommu.GetDmaDomain(devs[4])!).DidOn(0);
        ushort did9 = ((DmarDomain)f.Iommu.GetDmaDomain(devs[8])!).DidOn(0);
        Assert.Equal(Errno.None, f.Iommu.AttachDevice(shared, devs[8]));
        Assert.Equal(Errno.None, f.Iommu.AttachDevice(shared, devs[4]));
        IDomain g = f.Unmanaged();
        Assert.Equal(Errno.None, f.Iommu.Map(g, 0x1000, 0x4000, K4, RW));
        // x holds no DID since the failed attach; attach through the driver (the core still names `shared`).
        Assert.Equal(Errno.None, f.Driver.AttachDev(g, x));
        Assert.Equal(Math.Min(did5, did9), ((DmarDomain)g).DidOn(0));
        f.AssertDma(x, null, 0x1000, 0x4000);
        f.AssertDma(z, null, 0x1000, 0);
    }

    [Fact]
    public void Scalable_did_exhaustion_is_ebusy_on_normal_attach()
    {
        using var f = new DriverBed(VtdConfig.ScalableMode48Bit with { DomainIdEncoding = 0 }, memory: SmallMemory);
        IntelIommuUnit unit = f.Driver.Units[0];
        Assert.Equal(2, unit.DomainIdsInUse); // DIDs 0 and 1 reserved
        PciDevice parent = f.AuxParent("0000:00:02.0");
        PciDevice x = f.AddDevice("0000:00:03.0");
        IDomain d = f.Unmanaged();
        Assert.Equal(Errno.None, f.Iommu.AttachDevice(d, x));
        Assert.Equal(Errno.None, f.Iommu.AttachDeviceAux(d, parent));
        var aux = new List<IDomain>();
        while (unit.DomainIdsInUse < 16)
        {
            IDomain a = f.Unmanaged();
            Assert.Equal(Errno.None, f.Iommu.AttachDeviceAux(a, parent));
            aux.Add(a);
        }

        Assert.Equal(12, aux.Count);
        Assert.All(aux, a => Assert.True(((DmarDomain)a).DidOn(0) >= 2));
        IDomain e = f.Unmanaged();
        Assert.Equal(Errno.EBUSY, f.Iommu.AttachDevice(e, x));
        Assert.Equal(16, unit.DomainIdsInUse);

        ushort freed = ((DmarDomain)aux[5]).DidOn(0);
        f.Iommu.DetachDeviceAux(aux[5], parent);
        Assert.Equal(Errno.None, f.Iommu.Map(e, 0x1000, 0x2000, K4, RW));
        Assert.Equal(Errno.None, f.Driver.AttachDev(e, x));
        Assert.Equal(freed, ((DmarDomain)e).DidOn(0));
        f.AssertDma(x, null, 0x1000, 0x2000);
    }
}
