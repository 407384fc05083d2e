using Iommu.Core.Tests.Infrastructure;
using Iommu.Devices;
using Iommu.Domains;
using Iommu.Groups;
using Moq;

namespace Iommu.Core.Tests;

/// <summary>bus_set_iommu, device probe/release, default domains and group membership (spec §1.4).</summary>
public sealed class ProbeAndDefaultDomainTests : IDisposable
{
    private const string Dev0 = "0000:00:02.0";
    private const string Dev1 = "0000:00:03.0";

    private readonly CoreBed _p = new();

    private MockIommu Driver => _p.Driver;

    private IommuCore Core => _p.Core;

    public void Dispose() => _p.Dispose();

    [Fact]
    public void SetIommuOps_a_second_time_is_EBUSY_and_keeps_the_first_driver()
    {
        _p.WithIommu();
        var other = new MockIommu();

        Assert.Equal(Errno.EBUSY, _p.Pci.SetIommuOps(other.Ops));

        Assert.Same(Driver.Ops, _p.Pci.IommuOps);
        Assert.DoesNotContain(other.Mock.Invocations, i => i.Method.Name is not "get_PgsizeBitmap");
    }

    [Fact]
    public void SetIommuOps_probes_devices_already_on_the_bus_into_their_own_groups_with_a_default_domain()
    {
        PciDevice dev0 = _p.AddPci(Dev0);
        PciDevice dev1 = _p.AddPci(Dev1);
        var asked = new List<DomainType>();
        Driver.DomainAllocBehaviour = t =>
        {
            asked.Add(t);
            return new IommuDomain();
        };

        Assert.Equal(Errno.None, _p.Pci.SetIommuOps(Driver.Ops));

        Assert.NotNull(dev0.IommuGroup);
        Assert.NotNull(dev1.IommuGroup);
        Assert.NotSame(dev0.IommuGroup, dev1.IommuGroup);
        Assert.Equal([DomainType.Dma, DomainType.Dma], asked);
        foreach (PciDevice dev in new[] { dev0, dev1 })
        {
            IDomain def = dev.IommuGroup!.DefaultDomain!;
            Assert.Equal(DomainType.Dma, def.Type);
            Assert.Same(Driver.Ops, def.Ops);
            Assert.Equal(MockIommu.Bitmap4K2M1G, def.PgsizeBitmap);
            Assert.Same(def, dev.IommuGroup.Domain);
            Assert.Equal([new DriverCall("attach_dev", Device: dev, Domain: def)], Driver.Calls("attach_dev").Where(c => c.Device == dev));
            Assert.Same(Driver.Ops, dev.IommuOps);
            Assert.True(dev.HasIommu);
        }
    }

    [Fact]
    public void A_hot_added_device_is_probed_grouped_and_attached_to_a_new_default_domain()
    {
        _p.WithIommu();

        PciDevice dev = _p.AddPci(Dev0);

        IommuGroup group = dev.IommuGroup!;
        Assert.Equal([dev], group.Devices);
        IDomain def = group.DefaultDomain!;
        Assert.Same(def, group.Domain);
        Assert.Equal(
            ["add_device", "device_group", "attach_dev"],
            Driver.OpNames());
        Assert.Equal(new DriverCall("attach_dev", Device: dev, Domain: def), Driver.Calls("attach_dev").Single());
    }

    [Fact]
    public void A_device_joining_a_group_shares_its_default_domain()
    {
        _p.UseSharedGroupFor(Dev0, Dev1);
        _p.WithIommu();
        PciDevice dev0 = _p.AddPci(Dev0);
        IDomain def = dev0.IommuGroup!.DefaultDomain!;
        Driver.ClearLog();

        PciDevice dev1 = _p.AddPci(Dev1);

        Assert.Same(dev0.IommuGroup, dev1.IommuGroup);
        Assert.Same(def, dev1.IommuGroup!.DefaultDomain);
        Assert.Same(def, Core.GetDomainForDev(dev1));
        Assert.Equal([dev0, dev1], dev0.IommuGroup.Devices);
        Driver.Mock.Verify(o => o.DomainAlloc(It.IsAny<DomainType>()), Times.Never);
        Assert.All(Driver.Calls("attach_dev"), c => Assert.Equal(new DriverCall("attach_dev", Device: dev1, Domain: def), c));
        Assert.NotEmpty(Driver.Calls("attach_dev"));
    }

    [Fact]
    public void The_default_domain_falls_back_to_DMA_when_the_driver_refuses_the_configured_type()
    {
        using var p = new CoreBed(defaultDomainType: DomainType.Identity);
        p.Driver.DomainAllocBehaviour = t => t == DomainType.Identity ? null : new IommuDomain();
        p.WithIommu();

        PciDevice dev = p.AddPci(Dev0);

        Assert.Equal(DomainType.Dma, dev.IommuGroup!.DefaultDomain!.Type);
    }

    [Fact]
    public void The_default_domain_has_the_configured_type_when_the_driver_supports_it()
    {
        using var p = new CoreBed(defaultDomainType: DomainType.Identity);
        p.WithIommu();

        PciDevice dev = p.AddPci(Dev0);

        Assert.Equal(DomainType.Identity, dev.IommuGroup!.DefaultDomain!.Type);
        Assert.Same(dev.IommuGroup.DefaultDomain, dev.IommuGroup.Domain);
    }

    [Fact]
    public void A_group_stays_without_domain_when_the_driver_allocates_none()
    {
        Driver.DomainAllocBehaviour = _ => null;
        _p.WithIommu();

        PciDevice dev = _p.AddPci(Dev0);

        Assert.NotNull(dev.IommuGroup);
        Assert.Null(dev.IommuGroup!.DefaultDomain);
        Assert.Null(Core.GetDomainForDev(dev));
        Assert.Empty(Driver.Calls("attach_dev"));
    }

    [Fact]
    public void A_device_the_driver_does_not_handle_is_skipped_silently_at_bus_set_iommu()
    {
        PciDevice skipped = _p.AddPci(Dev0);
        PciDevice handled = _p.AddPci(Dev1);
        Driver.AddDeviceBehaviour = d => d == skipped ? Errno.ENODEV : Errno.None;

        Assert.Equal(Errno.None, _p.Pci.SetIommuOps(Driver.Ops));

        Assert.Null(skipped.IommuGroup);
        Assert.False(skipped.HasIommu);
        Assert.Null(skipped.IommuOps);
        Assert.NotNull(handled.IommuGroup);
        Assert.DoesNotContain(Driver.Log, c => c.Device == skipped && c.Op != "add_device");
    }

    [Fact]
    public void A_hot_added_device_the_driver_does_not_handle_is_left_without_group()
    {
        Driver.AddDeviceBehaviour = _ => Errno.ENODEV;
        _p.WithIommu();

        PciDevice dev = _p.AddPci(Dev0);

        Assert.Null(dev.IommuGroup);
        Assert.False(dev.HasIommu);
        Assert.Empty(Driver.Calls("device_group"));
        Assert.Empty(Core.Groups);
    }

    [Fact]
    public void A_device_group_error_fails_the_probe_and_releases_the_device()
    {
        Bus bus = _p.Platform.AddBus("platform");
        Assert.Equal(Errno.None, bus.SetIommuOps(Driver.Ops));
        Driver.DeviceGroupBehaviour = (Device _, out IommuGroup? g) =>
        {
            g = null;
            return Errno.ENOMEM;
        };
        var dev = new Device("plat0");

        Assert.Equal(Errno.ENOMEM, bus.AddDevice(dev));

        Assert.Null(dev.IommuGroup);
        Assert.False(dev.HasIommu);
        Assert.Null(dev.IommuOps);
        Assert.Equal(["add_device", "device_group", "remove_device"], Driver.OpNames());
        Assert.Empty(Core.Groups);
    }

    [Fact]
    public void A_device_group_error_during_bus_set_iommu_fails_it_and_releases_every_device()
    {
        PciDevice dev0 = _p.AddPci(Dev0);
        PciDevice dev1 = _p.AddPci(Dev1);
        Driver.DeviceGroupBehaviour = (Device d, out IommuGroup? g) =>
        {
            if (d == dev1)
            {
                g = null;
                return Errno.EIO;
            }

            return Core.GenericDeviceGroup(d, out g);
        };

        Assert.Equal(Errno.EIO, _p.Pci.SetIommuOps(Driver.Ops));

        Assert.Null(_p.Pci.IommuOps);
        Assert.Null(dev0.IommuGroup);
        Assert.Null(dev1.IommuGroup);
        Assert.False(dev0.HasIommu);
        Assert.Contains(new DriverCall("remove_device", Device: dev0), Driver.Log);
        Assert.Contains(new DriverCall("remove_device", Device: dev1), Driver.Log);
        Assert.Empty(Core.Groups);
    }

    [Fact]
    public void A_failing_default_domain_attach_fails_the_probe_and_releases_the_device()
    {
        Bus bus = _p.Platform.AddBus("platform");
        Assert.Equal(Errno.None, bus.SetIommuOps(Driver.Ops));
        Driver.AttachBehaviour = (_, _) => Errno.EFAULT;
        var dev = new Device("plat0");

        Assert.Equal(Errno.EFAULT, bus.AddDevice(dev));

        Assert.Null(dev.IommuGroup);
        Assert.False(dev.HasIommu);
        Assert.Contains(new DriverCall("remove_device", Device: dev), Driver.Log);
    }

    [Fact]
    public void Group_notifiers_see_ADD_DEVICE_and_DEL_DEVICE()
    {
        _p.UseSharedGroupFor(Dev0, Dev1);
        _p.WithIommu();
        PciDevice dev0 = _p.AddPci(Dev0);
        IommuGroup group = dev0.IommuGroup!;
        var events = new List<(IommuGroupNotification, Device)>();
        bool memberAtDel = false, driverReleasedFirst = false;
        Assert.Equal(Errno.None, group.RegisterNotifier((a, d) =>
        {
            events.Add((a, d));
            if (a == IommuGroupNotification.DelDevice)
            {
                memberAtDel = group.Devices.Contains(d); // DEL_DEVICE is a pre-notification
                driverReleasedFirst = Driver.OpNames().Contains("remove_device"); // release_device, then group removal
            }
        }));

        PciDevice dev1 = _p.AddPci(Dev1);
        _p.Pci.RemoveDevice(dev1);

        Assert.Equal([(IommuGroupNotification.AddDevice, (Device)dev1), (IommuGroupNotification.DelDevice, dev1)], events);
        Assert.True(memberAtDel);
        Assert.True(driverReleasedFirst);
        Assert.Equal([dev0], group.Devices);
        Assert.Null(dev1.IommuGroup);
    }

    [Fact]
    public void Releasing_the_last_device_releases_the_group_and_frees_its_default_domain()
    {
        _p.WithIommu();
        PciDevice dev = _p.AddPci(Dev0);
        IommuGroup group = dev.IommuGroup!;
        IDomain def = group.DefaultDomain!;
        bool dataReleased = false;
        group.SetIommuData("owner", _ => dataReleased = true);

        _p.Pci.RemoveDevice(dev);

        Assert.True(group.IsReleased);
        Assert.True(dataReleased);
        Assert.Contains(new DriverCall("remove_device", Device: dev), Driver.Log);
        Driver.Mock.Verify(o => o.DomainFree(def), Times.Once);
        Assert.Null(dev.IommuGroup);
        Assert.False(dev.HasIommu);
        Assert.Empty(Core.Groups);
    }

    [Fact]
    public void A_group_reference_keeps_the_group_alive_after_its_last_device_leaves()
    {
        _p.WithIommu();
        PciDevice dev = _p.AddPci(Dev0);
        IommuGroup group = Core.GroupGet(dev)!;

        _p.Pci.RemoveDevice(dev);

        Assert.False(group.IsReleased);
        Core.GroupPut(group);
        Assert.True(group.IsReleased);
    }

    [Fact]
    public void GroupAddDevice_attaches_to_the_current_domain_and_rolls_back_when_that_fails()
    {
        IommuGroup group = Core.GroupAlloc();
        var a = new Device("a");
        var b = new Device("b");
        Assert.Equal(Errno.None, Core.GroupAddDevice(group, a));
        IommuDomain d = Driver.NewDomain();
        Assert.Equal(Errno.None, Core.AttachGroup(d, group));
        var events = new List<IommuGroupNotification>();
        group.RegisterNotifier((e, _) => events.Add(e));
        Driver.AttachBehaviour = (_, dev) => dev == b ? Errno.ENOSPC : Errno.None;
        Driver.ClearLog();

        Assert.Equal(Errno.ENOSPC, Core.GroupAddDevice(group, b));

        Assert.Equal([new DriverCall("attach_dev", Device: b, Domain: d)], Driver.Calls("attach_dev"));
        Assert.Equal([a], group.Devices);
        Assert.Null(b.IommuGroup);
        Assert.Empty(events);

        var c = new Device("c");
        Assert.Equal(Errno.None, Core.GroupAddDevice(group, c));
        Assert.Equal(new DriverCall("attach_dev", Device: c, Domain: d), Driver.Calls("attach_dev")[^1]);
        Assert.Equal([IommuGroupNotification.AddDevice], events);
    }

    [Fact]
    public void GroupAlloc_hands_out_the_lowest_free_id()
    {
        IommuGroup g0 = Core.GroupAlloc();
        IommuGroup g1 = Core.GroupAlloc();
        IommuGroup g2 = Core.GroupAlloc();
        Assert.Equal((0, 1, 2), (g0.Id, g1.Id, g2.Id));

        Core.GroupPut(g1);

        Assert.Equal(1, Core.GroupAlloc().Id);
        Assert.Equal(3, Core.GroupAlloc().Id);
        Assert.Same(g2, Core.GroupGetById(2));
        Assert.Null(Core.GroupGetById(7));
    }
}
