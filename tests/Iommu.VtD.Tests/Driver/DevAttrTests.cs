using Iommu.Devices;
using Iommu.Domains;
using Iommu.VtD.Driver;
using Iommu.VtD.Hardware;
using static Iommu.VtD.Tests.Driver.DriverTestKit;

namespace Iommu.VtD.Tests.Driver;

public sealed class DevAttrTests
{
    private static bool Capability(DriverBed f, PciDevice dev)
    {
        Assert.Equal(Errno.None, f.Iommu.GetDevAttr(dev, IommuDevAttr.AuxdCapability, out bool v));
        return v;
    }

    private static bool Enabled(DriverBed f, PciDevice dev)
    {
        Assert.Equal(Errno.None, f.Iommu.GetDevAttr(dev, IommuDevAttr.AuxdEnabled, out bool v));
        return v;
    }

    [Fact]
    public void Aux_capability_needs_scalable_mode_pasid_and_the_siov_dvsec()
    {
        using (DriverBed f = New("Sm48"))
        {
            Assert.True(Capability(f, f.AddDevice("0000:00:02.0", pasidWidth: 20, siov: true)));
            Assert.False(Capability(f, f.AddDevice("0000:00:03.0", pasidWidth: 20, siov: false)));
            Assert.False(Capability(f, f.AddDevice("0000:00:04.0", pasidWidth: 0, siov: true)));
        }

        using (DriverBed f = New("Legacy48"))
        {
            Assert.False(Capability(f, f.AddDevice("0000:00:02.0", pasidWidth: 20, siov: true)));
        }

        using (var f = new DriverBed(VtdConfig.ScalableMode48Bit, new IntelIommuOptions { ScalableMode = false }, SmallMemory))
        {
            Assert.False(Capability(f, f.AddDevice("0000:00:02.0", pasidWidth: 20, siov: true)));
        }

        using (var f = new DriverBed(VtdConfig.ScalableMode48Bit with { PasidSupport = false }, memory: SmallMemory))
        {
            Assert.False(Capability(f, f.AddDevice("0000:00:02.0", pasidWidth: 20, siov: true)));
        }
    }

    [Theory]
    [InlineData("Legacy39")]
    [InlineData("Legacy48")]
    [InlineData("Sm48NoQi")]
    public void Aux_enable_without_scalable_mode_is_einval(string config)
    {
        using DriverBed f = New(config);
        PciDevice dev = f.AddDevice("0000:00:02.0", pasidWidth: 20, siov: true);
        Assert.Equal(Errno.EINVAL, f.Iommu.SetDevAttr(dev, IommuDevAttr.AuxdEnable));
        Assert.False(Enabled(f, dev));
        Assert.Equal(Errno.EPERM, f.Iommu.AttachDeviceAux(f.Unmanaged(), dev));
    }

    [Fact]
    public void Aux_enable_in_scalable_mode_without_pasid_support_on_the_unit_is_einval()
    {
        using var f = new DriverBed(VtdConfig.ScalableMode48Bit with { PasidSupport = false }, memory: SmallMemory);
        PciDevice dev = f.AddDevice("0000:00:02.0", pasidWidth: 20, siov: true);
        Assert.Equal(Errno.EINVAL, f.Iommu.SetDevAttr(dev, IommuDevAttr.AuxdEnable));
    }

    [Fact]
    public void Aux_enable_on_a_device_without_pasid_capability_is_enodev()
    {
        using DriverBed f = New("Sm48");
        PciDevice dev = f.AddDevice("0000:00:02.0", pasidWidth: 0, siov: true);
        Assert.Equal(Errno.ENODEV, f.Iommu.SetDevAttr(dev, IommuDevAttr.AuxdEnable));
        Assert.False(Enabled(f, dev));
    }

    [Fact]
    public void Aux_enabled_follows_enable_and_disable_and_enabling_twice_is_harmless()
    {
        using DriverBed f = New("Sm48");
        PciDevice dev = f.AddDevice("0000:00:02.0", pasidWidth: 20, siov: true);
        Assert.False(Enabled(f, dev));
        Assert.Equal(Errno.None, f.Iommu.SetDevAttr(dev, IommuDevAttr.AuxdEnable));
        Assert.True(Enabled(f, dev));
        Assert.True(dev.PasidEnabled);
        Assert.Equal(Errno.None, f.Iommu.SetDevAttr(dev, IommuDevAttr.AuxdEnable));
        Assert.True(Enabled(f, dev));
        IDomain a = f.Unmanaged();
        Assert.Equal(Errno.None, f.Iommu.AttachDeviceAux(a, dev));
        Assert.Equal(Errno.None, f.Iommu.Map(a, 0x1000, 0x2000, K4, RW));
        f.AssertDma(dev, (uint)f.Iommu.AuxGetPasid(a, dev), 0x1000, 0x2000);
        Assert.Equal(Errno.None, f.Iommu.SetDevAttr(dev, IommuDevAttr.AuxdDisable)); // 0 even with aux domains attached
        Assert.False(Enabled(f, dev));
    }

    [Fact]
    public void Aux_attach_without_aux_enabled_is_eperm()
    {
        using DriverBed f = New("Sm48");
        PciDevice dev = f.AddDevice("0000:00:02.0", pasidWidth: 20, siov: true);
        IDomain a = f.Unmanaged();
        Assert.Equal(Errno.EPERM, f.Iommu.AttachDeviceAux(a, dev));
        Assert.Equal(0, f.Driver.PasidsInUse);
        Assert.Equal(0, ((DmarDomain)a).DidOn(0));
    }

    [Fact]
    public void Auxd_id_and_aux_get_pasid_are_einval_before_the_first_aux_attach()
    {
        using DriverBed f = New("Sm48");
        PciDevice dev = f.AuxParent("0000:00:02.0");
        IDomain a = f.Unmanaged();
        Assert.Equal(Errno.EINVAL, f.Iommu.DomainGetAttr(a, DomainAttr.AuxdId, out uint id));
        Assert.Equal(0u, id);
        Assert.Equal(-22, f.Iommu.AuxGetPasid(a, dev));
        Assert.Equal(Errno.None, f.Iommu.AttachDeviceAux(a, dev));
        Assert.Equal(Errno.None, f.Iommu.DomainGetAttr(a, DomainAttr.AuxdId, out id));
        Assert.Equal(1u, id);
        Assert.Equal(1, f.Iommu.AuxGetPasid(a, dev));
    }

    [Fact]
    public void Other_domain_attributes_are_einval()
    {
        using DriverBed f = New("Sm48");
        IDomain a = f.Unmanaged();
        Assert.Equal(Errno.EINVAL, f.Iommu.DomainGetAttr(a, DomainAttr.Nesting, out bool _));
        Assert.Equal(Errno.None, f.Iommu.DomainGetAttr(a, DomainAttr.Paging, out bool paging));
        Assert.True(paging);
    }
}
