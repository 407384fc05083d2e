using Iommu.Core.Tests.Infrastructure;
using Iommu.Devices;
using Iommu.Domains;
using Moq;

namespace Iommu.Core.Tests;

/// <summary>
/// Seed device attributes (spec §1.12), merged per-device feature calls and the aux-domain API
/// (§1.11), and iommu_domain_get_attr (§1.10, seed AUXD_ID).
/// </summary>
public sealed class DevAttrAndAuxTests : IDisposable
{
    private const string Dev0 = "0000:00:02.0";

    private readonly CoreBed _p = new();

    private MockIommu Driver => _p.Driver;

    private IommuCore Core => _p.Core;

    public void Dispose() => _p.Dispose();

    private void DriverAttrs(bool capability, bool enabled, Errno getResult = Errno.None, Errno setResult = Errno.None)
    {
        Driver.DevFeatureMock.Setup(o => o.GetDevAttr(It.IsAny<Device>(), It.IsAny<IommuDevAttr>(), out It.Ref<bool>.IsAny))
            .Returns(new GetDevAttrFn((Device _, IommuDevAttr attr, out bool value) =>
            {
                value = attr == IommuDevAttr.AuxdCapability ? capability : enabled;
                return getResult;
            }));
        Driver.DevFeatureMock.Setup(o => o.SetDevAttr(It.IsAny<Device>(), It.IsAny<IommuDevAttr>())).Returns(setResult);
    }

    // ---- seed: iommu_get_dev_attr / iommu_set_dev_attr -------------------------------------------

    [Fact]
    public void GetDevAttr_without_bus_ops_is_ENODEV_and_false()
    {
        PciDevice dev = _p.AddPci(Dev0);

        Assert.Equal(Errno.ENODEV, Core.GetDevAttr(dev, IommuDevAttr.AuxdCapability, out bool value));
        Assert.False(value);
        Assert.Equal(Errno.ENODEV, Core.SetDevAttr(dev, IommuDevAttr.AuxdEnable));
    }

    [Fact]
    public void DevAttr_without_the_driver_callbacks_is_ENODEV()
    {
        Driver.Optional &= ~OptionalOps.DevFeature;
        _p.WithIommu();
        PciDevice dev = _p.AddPci(Dev0);

        Assert.Equal(Errno.ENODEV, Core.GetDevAttr(dev, IommuDevAttr.AuxdEnabled, out _));
        Assert.Equal(Errno.ENODEV, Core.SetDevAttr(dev, IommuDevAttr.AuxdDisable));
    }

    [Theory]
    [InlineData(IommuDevAttr.AuxdEnable)]
    [InlineData(IommuDevAttr.AuxdDisable)]
    public void GetDevAttr_of_a_set_attribute_is_EINVAL_without_asking_the_driver(IommuDevAttr attr)
    {
        _p.WithIommu();
        PciDevice dev = _p.AddPci(Dev0);
        DriverAttrs(true, true);

        Assert.Equal(Errno.EINVAL, Core.GetDevAttr(dev, attr, out bool value));
        Assert.False(value);
        Driver.DevFeatureMock.Verify(o => o.GetDevAttr(It.IsAny<Device>(), It.IsAny<IommuDevAttr>(), out It.Ref<bool>.IsAny), Times.Never);
    }

    [Theory]
    [InlineData(IommuDevAttr.AuxdCapability)]
    [InlineData(IommuDevAttr.AuxdEnabled)]
    public void SetDevAttr_of_a_get_attribute_is_EINVAL_without_asking_the_driver(IommuDevAttr attr)
    {
        _p.WithIommu();
        PciDevice dev = _p.AddPci(Dev0);
        DriverAttrs(true, true);

        Assert.Equal(Errno.EINVAL, Core.SetDevAttr(dev, attr));
        Driver.DevFeatureMock.Verify(o => o.SetDevAttr(It.IsAny<Device>(), It.IsAny<IommuDevAttr>()), Times.Never);
    }

    [Fact]
    public void GetDevAttr_returns_the_driver_value()
    {
        _p.WithIommu();
        PciDevice dev = _p.AddPci(Dev0);
        DriverAttrs(capability: true, enabled: false);

        Assert.Equal(Errno.None, Core.GetDevAttr(dev, IommuDevAttr.AuxdCapability, out bool cap));
        Assert.Equal(Errno.None, Core.GetDevAttr(dev, IommuDevAttr.AuxdEnabled, out bool en));
        Assert.True(cap);
        Assert.False(en);
    }

    [Fact]
    public void DevAttr_passes_the_driver_errno_through()
    {
        _p.WithIommu();
        PciDevice dev = _p.AddPci(Dev0);
        DriverAttrs(true, true, getResult: Errno.EOPNOTSUPP, setResult: Errno.EIO);

        Assert.Equal(Errno.EOPNOTSUPP, Core.GetDevAttr(dev, IommuDevAttr.AuxdCapability, out _));
        Assert.Equal(Errno.EIO, Core.SetDevAttr(dev, IommuDevAttr.AuxdEnable));
        Driver.DevFeatureMock.Verify(o => o.SetDevAttr(dev, IommuDevAttr.AuxdEnable), Times.Once);
    }

    // ---- merged: iommu_dev_{has_feature,feature_enabled,enable_feature,disable_feature} ----------

    [Fact]
    public void Feature_calls_on_a_device_no_iommu_driver_probed_give_the_no_driver_results()
    {
        PciDevice dev = _p.AddPci(Dev0);

        Assert.False(Core.DevHasFeature(dev, IommuDevFeature.Aux));
        Assert.False(Core.DevFeatureEnabled(dev, IommuDevFeature.Aux));
        Assert.Equal(Errno.ENODEV, Core.DevEnableFeature(dev, IommuDevFeature.Aux));
        Assert.Equal(Errno.EBUSY, Core.DevDisableFeature(dev, IommuDevFeature.Aux));
    }

    [Fact]
    public void Feature_calls_when_the_driver_skipped_the_device_give_the_no_driver_results()
    {
        Driver.AddDeviceBehaviour = _ => Errno.ENODEV;
        _p.WithIommu();
        PciDevice dev = _p.AddPci(Dev0);
        DriverAttrs(true, true);

        Assert.False(Core.DevHasFeature(dev, IommuDevFeature.Aux));
        Assert.False(Core.DevFeatureEnabled(dev, IommuDevFeature.Aux));
        Assert.Equal(Errno.ENODEV, Core.DevEnableFeature(dev, IommuDevFeature.Aux));
        Assert.Equal(Errno.EBUSY, Core.DevDisableFeature(dev, IommuDevFeature.Aux));
    }

    [Fact]
    public void DevHasFeature_and_DevFeatureEnabled_ask_the_matching_attribute()
    {
        _p.WithIommu();
        PciDevice dev = _p.AddPci(Dev0);
        DriverAttrs(capability: true, enabled: false);

        Assert.True(Core.DevHasFeature(dev, IommuDevFeature.Aux));
        Assert.False(Core.DevFeatureEnabled(dev, IommuDevFeature.Aux));

        DriverAttrs(capability: false, enabled: true);

        Assert.False(Core.DevHasFeature(dev, IommuDevFeature.Aux));
        Assert.True(Core.DevFeatureEnabled(dev, IommuDevFeature.Aux));
    }

    [Fact]
    public void DevEnable_and_DevDisable_feature_map_to_AUXD_ENABLE_and_AUXD_DISABLE_and_pass_the_errno_through()
    {
        _p.WithIommu();
        PciDevice dev = _p.AddPci(Dev0);
        Driver.DevFeatureMock.Setup(o => o.SetDevAttr(dev, IommuDevAttr.AuxdEnable)).Returns(Errno.None);
        Driver.DevFeatureMock.Setup(o => o.SetDevAttr(dev, IommuDevAttr.AuxdDisable)).Returns(Errno.EBUSY);

        Assert.Equal(Errno.None, Core.DevEnableFeature(dev, IommuDevFeature.Aux));
        Assert.Equal(Errno.EBUSY, Core.DevDisableFeature(dev, IommuDevFeature.Aux));

        Driver.DevFeatureMock.Verify(o => o.SetDevAttr(dev, IommuDevAttr.AuxdEnable), Times.Once);
        Driver.DevFeatureMock.Verify(o => o.SetDevAttr(dev, IommuDevAttr.AuxdDisable), Times.Once);
    }

    // ---- aux attach / detach / get_pasid ---------------------------------------------------------

    [Fact]
    public void AuxAttach_bypasses_the_group_and_calls_aux_attach_dev_only()
    {
        _p.WithIommu();
        PciDevice dev = _p.AddPci(Dev0);
        IDomain def = dev.IommuGroup!.Domain!;
        IDomain d = Core.DomainAlloc(_p.Pci)!;
        Driver.AuxMock.Setup(o => o.AuxAttachDev(d, dev)).Returns(Errno.None);
        Driver.ClearLog();

        Assert.Equal(Errno.None, Core.AuxAttachDevice(d, dev));

        Driver.AuxMock.Verify(o => o.AuxAttachDev(d, dev), Times.Once);
        Assert.Empty(Driver.Calls("attach_dev"));
        Assert.Same(def, dev.IommuGroup.Domain);
        Assert.Same(def, Core.GetDomainForDev(dev));
    }

    [Fact]
    public void Seed_AttachDeviceAux_works_on_a_device_of_a_multi_device_group()
    {
        _p.UseSharedGroupFor(Dev0, "0000:00:02.1");
        _p.WithIommu();
        PciDevice dev = _p.AddPci(Dev0);
        _p.AddPci("0000:00:02.1");
        IDomain def = dev.IommuGroup!.Domain!;
        IDomain d = Core.DomainAlloc(_p.Pci)!;
        Driver.AuxMock.Setup(o => o.AuxAttachDev(d, dev)).Returns(Errno.None);

        Assert.Equal(Errno.None, Core.AttachDeviceAux(d, dev));

        Assert.Same(def, dev.IommuGroup.Domain);
    }

    [Fact]
    public void The_same_domain_can_be_attached_normally_to_one_device_and_aux_to_another()
    {
        _p.WithIommu();
        PciDevice dev0 = _p.AddPci(Dev0);
        PciDevice dev1 = _p.AddPci("0000:00:03.0");
        IDomain d = Core.DomainAlloc(_p.Pci)!;
        Driver.AuxMock.Setup(o => o.AuxAttachDev(d, dev1)).Returns(Errno.None);

        Assert.Equal(Errno.None, Core.AttachDevice(d, dev0));
        Assert.Equal(Errno.None, Core.AuxAttachDevice(d, dev1));

        Assert.Same(d, Core.GetDomainForDev(dev0));
        Assert.NotSame(d, Core.GetDomainForDev(dev1));
    }

    [Fact]
    public void AuxAttach_passes_the_driver_errno_through()
    {
        _p.WithIommu();
        PciDevice dev = _p.AddPci(Dev0);
        IDomain d = Core.DomainAlloc(_p.Pci)!;
        Driver.AuxMock.Setup(o => o.AuxAttachDev(d, dev)).Returns(Errno.EINVAL);

        Assert.Equal(Errno.EINVAL, Core.AuxAttachDevice(d, dev));
        Assert.Equal(Errno.EINVAL, Core.AttachDeviceAux(d, dev));
    }

    [Fact]
    public void AuxAttach_without_aux_callbacks_is_ENODEV_and_AuxDetach_is_a_no_op()
    {
        Driver.Optional &= ~OptionalOps.Aux;
        _p.WithIommu();
        PciDevice dev = _p.AddPci(Dev0);
        IDomain d = Core.DomainAlloc(_p.Pci)!;

        Assert.Equal(Errno.ENODEV, Core.AuxAttachDevice(d, dev));
        Assert.Equal(Errno.ENODEV, Core.AttachDeviceAux(d, dev));
        Core.AuxDetachDevice(d, dev);
        Core.DetachDeviceAux(d, dev);
        // The ops object has no IIommuAuxOps, so the core cannot call aux_attach_dev/aux_detach_dev.
    }

    [Fact]
    public void AuxDetach_calls_aux_detach_dev_and_leaves_the_group_alone()
    {
        _p.WithIommu();
        PciDevice dev = _p.AddPci(Dev0);
        IDomain def = dev.IommuGroup!.Domain!;
        IDomain d = Core.DomainAlloc(_p.Pci)!;
        Driver.ClearLog();

        Core.AuxDetachDevice(d, dev);
        Core.DetachDeviceAux(d, dev);

        Driver.AuxMock.Verify(o => o.AuxDetachDev(d, dev), Times.Exactly(2));
        Assert.Empty(Driver.Calls("detach_dev"));
        Assert.Empty(Driver.Calls("attach_dev"));
        Assert.Same(def, dev.IommuGroup.Domain);
    }

    [Fact]
    public void AuxGetPasid_returns_the_driver_pasid_or_its_negative_errno()
    {
        _p.WithIommu();
        PciDevice dev = _p.AddPci(Dev0);
        IDomain d = Core.DomainAlloc(_p.Pci)!;
        Driver.AuxMock.Setup(o => o.AuxGetPasid(d, dev)).Returns(42);

        Assert.Equal(42, Core.AuxGetPasid(d, dev));

        Driver.AuxMock.Setup(o => o.AuxGetPasid(d, dev)).Returns(-(int)Errno.EINVAL);
        Assert.Equal(-22, Core.AuxGetPasid(d, dev));
    }

    [Fact]
    public void AuxGetPasid_without_the_callback_is_minus_ENODEV()
    {
        Driver.Optional &= ~OptionalOps.Aux;
        _p.WithIommu();
        PciDevice dev = _p.AddPci(Dev0);
        IDomain d = Core.DomainAlloc(_p.Pci)!;

        Assert.Equal(-19, Core.AuxGetPasid(d, dev));
    }

    // ---- iommu_domain_get_attr -------------------------------------------------------------------

    [Fact]
    public void DomainGetAttr_GEOMETRY_is_answered_by_the_core()
    {
        IommuDomain d = Driver.NewDomain();
        d.Geometry = new IommuDomainGeometry(0x1000, (1UL << 39) - 1, true);

        Assert.Equal(Errno.None, Core.DomainGetAttr(d, DomainAttr.Geometry, out IommuDomainGeometry g));

        Assert.Equal(new IommuDomainGeometry(0x1000, (1UL << 39) - 1, true), g);
        Driver.DomainAttrMock.Verify(o => o.DomainGetAttr(It.IsAny<IDomain>(), It.IsAny<DomainAttr>(), out It.Ref<ulong>.IsAny), Times.Never);
    }

    [Theory]
    [InlineData(MockIommu.Bitmap4K2M1G, true)]
    [InlineData(0UL, false)]
    public void DomainGetAttr_PAGING_is_whether_the_domain_has_page_sizes(ulong bitmap, bool expected)
    {
        Driver.Optional &= ~OptionalOps.DomainAttr; // answered by the core even without the driver op
        IommuDomain d = Driver.NewDomain(pgsizeBitmap: bitmap);

        Assert.Equal(Errno.None, Core.DomainGetAttr(d, DomainAttr.Paging, out bool paging));
        Assert.Equal(expected, paging);
    }

    [Fact]
    public void DomainGetAttr_AUXD_ID_comes_from_the_driver()
    {
        IommuDomain d = Driver.NewDomain();
        Driver.DomainAttrMock.Setup(o => o.DomainGetAttr(d, DomainAttr.AuxdId, out It.Ref<ulong>.IsAny))
            .Returns(new DomainGetAttrFn((IDomain _, DomainAttr _, out ulong v) =>
            {
                v = 7;
                return Errno.None;
            }));

        Assert.Equal(Errno.None, Core.DomainGetAttr(d, DomainAttr.AuxdId, out uint id));
        Assert.Equal(7u, id);
    }

    [Fact]
    public void DomainGetAttr_AUXD_ID_passes_the_driver_errno_through()
    {
        IommuDomain d = Driver.NewDomain();
        Driver.DomainAttrMock.Setup(o => o.DomainGetAttr(d, DomainAttr.AuxdId, out It.Ref<ulong>.IsAny))
            .Returns(new DomainGetAttrFn((IDomain _, DomainAttr _, out ulong v) =>
            {
                v = 0;
                return Errno.EINVAL;
            }));

        Assert.Equal(Errno.EINVAL, Core.DomainGetAttr(d, DomainAttr.AuxdId, out uint id));
        Assert.Equal(0u, id);
    }

    [Fact]
    public void DomainGetAttr_of_a_driver_attribute_without_domain_get_attr_is_EINVAL()
    {
        Driver.Optional &= ~OptionalOps.DomainAttr;
        IommuDomain d = Driver.NewDomain();

        Assert.Equal(Errno.EINVAL, Core.DomainGetAttr(d, DomainAttr.AuxdId, out uint _));
        Assert.Equal(Errno.EINVAL, Core.DomainGetAttr(d, DomainAttr.Nesting, out bool nesting));
        Assert.False(nesting);
    }
}
