using Iommu.Core.Tests.Infrastructure;
using Iommu.Devices;
using Iommu.Domains;
using Iommu.Groups;
using Moq;

namespace Iommu.Core.Tests;

/// <summary>Domain allocation (spec §1.5) and attach/detach of devices and groups (§1.6).</summary>
public sealed class AttachDetachTests : IDisposable
{
    private const string Dev0 = "0000:00:02.0";
    private const string Dev1 = "0000:00:03.0";

    private readonly CoreBed _p = new();

    private MockIommu Driver => _p.Driver;

    private IommuCore Core => _p.Core;

    public void Dispose() => _p.Dispose();

    [Fact]
    public void DomainAlloc_without_bus_ops_is_null_and_never_asks_a_driver()
    {
        Assert.Null(Core.DomainAlloc(_p.Pci));
        Assert.Empty(Driver.Mock.Invocations);
    }

    [Fact]
    public void DomainAlloc_is_null_when_the_driver_returns_null()
    {
        _p.WithIommu();
        Driver.DomainAllocBehaviour = _ => null;

        Assert.Null(Core.DomainAlloc(_p.Pci));
    }

    [Fact]
    public void DomainAlloc_asks_for_UNMANAGED_and_the_core_fills_ops_type_and_pgsize_bitmap()
    {
        _p.WithIommu();
        var fresh = new IommuDomain { Type = DomainType.Blocked, PgsizeBitmap = 0 };
        DomainType? asked = null;
        Driver.DomainAllocBehaviour = t =>
        {
            asked = t;
            return fresh;
        };

        IDomain? d = Core.DomainAlloc(_p.Pci);

        Assert.Same(fresh, d);
        Assert.Equal(DomainType.Unmanaged, asked);
        Assert.Equal(DomainType.Unmanaged, d!.Type);
        Assert.Same(Driver.Ops, d.Ops);
        Assert.Equal(MockIommu.Bitmap4K2M1G, d.PgsizeBitmap);
    }

    [Fact]
    public void AttachDevice_of_a_device_without_group_is_ENODEV()
    {
        PciDevice dev = _p.AddPci(Dev0); // the bus has no IOMMU ops: no group
        IommuDomain d = Driver.NewDomain();

        Assert.Equal(Errno.ENODEV, Core.AttachDevice(d, dev));
        Assert.Empty(Driver.Calls("attach_dev"));
    }

    [Fact]
    public void AttachDevice_switches_the_group_from_its_default_domain_to_the_new_one()
    {
        _p.WithIommu();
        PciDevice dev = _p.AddPci(Dev0);
        IDomain def = dev.IommuGroup!.DefaultDomain!;
        IDomain d = Core.DomainAlloc(_p.Pci)!;
        Driver.ClearLog();

        Assert.Equal(Errno.None, Core.AttachDevice(d, dev));

        Assert.Equal([new DriverCall("attach_dev", Device: dev, Domain: d)], Driver.Calls("attach_dev"));
        Assert.Same(d, dev.IommuGroup!.Domain);
        Assert.Same(d, Core.GetDomainForDev(dev));
        Assert.Same(def, dev.IommuGroup.DefaultDomain);
    }

    [Fact]
    public void AttachDevice_of_the_same_non_default_domain_twice_is_EBUSY()
    {
        _p.WithIommu();
        PciDevice dev = _p.AddPci(Dev0);
        IDomain d = Core.DomainAlloc(_p.Pci)!;
        Assert.Equal(Errno.None, Core.AttachDevice(d, dev));
        Driver.ClearLog();

        Assert.Equal(Errno.EBUSY, Core.AttachDevice(d, dev));

        Assert.Empty(Driver.Calls("attach_dev"));
        Assert.Same(d, Core.GetDomainForDev(dev));
    }

    [Fact]
    public void AttachDevice_of_another_domain_while_a_non_default_one_is_attached_is_EBUSY()
    {
        _p.WithIommu();
        PciDevice dev = _p.AddPci(Dev0);
        IDomain d1 = Core.DomainAlloc(_p.Pci)!;
        IDomain d2 = Core.DomainAlloc(_p.Pci)!;
        Assert.Equal(Errno.None, Core.AttachDevice(d1, dev));
        Driver.ClearLog();

        Assert.Equal(Errno.EBUSY, Core.AttachDevice(d2, dev));
        Assert.Equal(Errno.EBUSY, Core.AttachGroup(d2, dev.IommuGroup!));

        Assert.Empty(Driver.Calls("attach_dev"));
        Assert.Same(d1, Core.GetDomainForDev(dev));
    }

    [Fact]
    public void AttachDevice_in_a_multi_device_group_is_EINVAL()
    {
        _p.UseSharedGroupFor(Dev0, Dev1);
        _p.WithIommu();
        PciDevice dev0 = _p.AddPci(Dev0);
        PciDevice dev1 = _p.AddPci(Dev1);
        Assert.Same(dev0.IommuGroup, dev1.IommuGroup);
        IDomain def = dev0.IommuGroup!.Domain!;
        IDomain d = Core.DomainAlloc(_p.Pci)!;
        Driver.ClearLog();

        Assert.Equal(Errno.EINVAL, Core.AttachDevice(d, dev0));

        Assert.Empty(Driver.Calls("attach_dev"));
        Assert.Same(def, dev0.IommuGroup.Domain);
    }

    [Fact]
    public void AttachGroup_attaches_every_device_of_a_multi_device_group()
    {
        _p.UseSharedGroupFor(Dev0, Dev1);
        _p.WithIommu();
        PciDevice dev0 = _p.AddPci(Dev0);
        PciDevice dev1 = _p.AddPci(Dev1);
        IommuGroup group = dev0.IommuGroup!;
        IDomain d = Core.DomainAlloc(_p.Pci)!;
        Driver.ClearLog();

        Assert.Equal(Errno.None, Core.AttachGroup(d, group));

        Assert.Equal(
            [new DriverCall("attach_dev", Device: dev0, Domain: d), new DriverCall("attach_dev", Device: dev1, Domain: d)],
            Driver.Calls("attach_dev"));
        Assert.Same(d, group.Domain);
        Assert.Same(d, Core.GetDomainForDev(dev1));
    }

    [Fact]
    public void Attach_when_the_driver_has_no_attach_dev_is_ENODEV()
    {
        _p.WithIommu();
        PciDevice dev = _p.AddPci(Dev0);
        IDomain def = dev.IommuGroup!.Domain!;
        IDomain d = new MockIommu(OptionalOps.All & ~OptionalOps.Attach).NewDomain();
        Driver.ClearLog();

        Assert.Equal(Errno.ENODEV, Core.AttachDevice(d, dev));
        Assert.Equal(Errno.ENODEV, Core.AttachGroup(d, dev.IommuGroup));

        Assert.Same(def, dev.IommuGroup.Domain);
    }

    [Fact]
    public void Attach_returns_the_first_driver_failure_without_rolling_back_earlier_devices()
    {
        IommuGroup group = Core.GroupAlloc();
        var devs = new[] { new Device("a"), new Device("b"), new Device("c") };
        foreach (Device dv in devs)
        {
            Assert.Equal(Errno.None, Core.GroupAddDevice(group, dv));
        }

        IommuDomain d = Driver.NewDomain();
        Driver.AttachBehaviour = (_, dev) => dev.Name == "b" ? Errno.EIO : Errno.None;

        Assert.Equal(Errno.EIO, Core.AttachGroup(d, group));

        Assert.Equal(["a", "b"], Driver.Calls("attach_dev").Select(c => c.Device!.Name));
        Assert.Empty(Driver.Calls("detach_dev"));
        Assert.Null(group.Domain);
    }

    [Fact]
    public void AttachDevice_returns_the_driver_errno()
    {
        _p.WithIommu();
        PciDevice dev = _p.AddPci(Dev0);
        IDomain def = dev.IommuGroup!.Domain!;
        IDomain d = Core.DomainAlloc(_p.Pci)!;
        Driver.AttachBehaviour = (dom, _) => ReferenceEquals(dom, d) ? Errno.EFAULT : Errno.None;

        Assert.Equal(Errno.EFAULT, Core.AttachDevice(d, dev));
        Assert.Same(def, Core.GetDomainForDev(dev));
    }

    [Fact]
    public void Group_without_default_domain_accepts_a_new_domain_while_another_is_attached()
    {
        // __iommu_attach_group only refuses when a default domain exists (mdev groups have none).
        IommuGroup group = Core.GroupAlloc();
        var dev = new Device("mdev0");
        Assert.Equal(Errno.None, Core.GroupAddDevice(group, dev));
        IommuDomain d1 = Driver.NewDomain();
        IommuDomain d2 = Driver.NewDomain();

        Assert.Equal(Errno.None, Core.AttachDevice(d1, dev));
        Assert.Equal(Errno.None, Core.AttachDevice(d2, dev));

        Assert.Same(d2, group.Domain);
    }

    [Fact]
    public void DetachDevice_goes_back_to_the_default_domain()
    {
        _p.WithIommu();
        PciDevice dev = _p.AddPci(Dev0);
        IDomain def = dev.IommuGroup!.DefaultDomain!;
        IDomain d = Core.DomainAlloc(_p.Pci)!;
        Assert.Equal(Errno.None, Core.AttachDevice(d, dev));
        Driver.ClearLog();

        Core.DetachDevice(d, dev);

        Assert.Equal([new DriverCall("attach_dev", Device: dev, Domain: def)], Driver.Calls("attach_dev"));
        Assert.Empty(Driver.Calls("detach_dev"));
        Assert.Same(def, Core.GetDomainForDev(dev));

        // And the group is free for another domain again.
        Assert.Equal(Errno.None, Core.AttachDevice(d, dev));
    }

    [Fact]
    public void DetachGroup_reattaches_every_device_to_the_default_domain()
    {
        _p.UseSharedGroupFor(Dev0, Dev1);
        _p.WithIommu();
        PciDevice dev0 = _p.AddPci(Dev0);
        PciDevice dev1 = _p.AddPci(Dev1);
        IommuGroup group = dev0.IommuGroup!;
        IDomain def = group.DefaultDomain!;
        IDomain d = Core.DomainAlloc(_p.Pci)!;
        Assert.Equal(Errno.None, Core.AttachGroup(d, group));
        Driver.ClearLog();

        Core.DetachGroup(d, group);

        Assert.Equal(
            [new DriverCall("attach_dev", Device: dev0, Domain: def), new DriverCall("attach_dev", Device: dev1, Domain: def)],
            Driver.Calls("attach_dev"));
        Assert.Same(def, group.Domain);
    }

    [Fact]
    public void DetachGroup_when_the_group_is_on_its_default_domain_does_nothing()
    {
        _p.WithIommu();
        PciDevice dev = _p.AddPci(Dev0);
        IDomain def = dev.IommuGroup!.DefaultDomain!;
        Driver.ClearLog();

        Core.DetachGroup(Driver.NewDomain(), dev.IommuGroup);

        Assert.Empty(Driver.Log);
        Assert.Same(def, dev.IommuGroup.Domain);
    }

    [Fact]
    public void DetachGroup_without_default_domain_calls_detach_dev_for_each_device_and_clears_the_domain()
    {
        IommuGroup group = Core.GroupAlloc();
        var a = new Device("a");
        var b = new Device("b");
        Assert.Equal(Errno.None, Core.GroupAddDevice(group, a));
        Assert.Equal(Errno.None, Core.GroupAddDevice(group, b));
        IommuDomain d = Driver.NewDomain();
        Assert.Equal(Errno.None, Core.AttachGroup(d, group));
        Driver.ClearLog();

        Core.DetachGroup(d, group);

        Assert.Equal(
            [new DriverCall("detach_dev", Device: a, Domain: d), new DriverCall("detach_dev", Device: b, Domain: d)],
            Driver.Calls("detach_dev"));
        Assert.Null(group.Domain);
        Assert.Null(Core.GetDomainForDev(a));
    }

    [Fact]
    public void DetachGroup_does_not_check_that_the_domain_is_the_attached_one()
    {
        IommuGroup group = Core.GroupAlloc();
        var a = new Device("a");
        Assert.Equal(Errno.None, Core.GroupAddDevice(group, a));
        IommuDomain attached = Driver.NewDomain();
        IommuDomain other = Driver.NewDomain();
        Assert.Equal(Errno.None, Core.AttachGroup(attached, group));
        Driver.ClearLog();

        Core.DetachGroup(other, group);

        Assert.Equal([new DriverCall("detach_dev", Device: a, Domain: other)], Driver.Calls("detach_dev"));
        Assert.Null(group.Domain);
    }

    [Fact]
    public void DetachDevice_in_a_multi_device_group_is_ignored()
    {
        IommuGroup group = Core.GroupAlloc();
        var a = new Device("a");
        var b = new Device("b");
        Assert.Equal(Errno.None, Core.GroupAddDevice(group, a));
        Assert.Equal(Errno.None, Core.GroupAddDevice(group, b));
        IommuDomain d = Driver.NewDomain();
        Assert.Equal(Errno.None, Core.AttachGroup(d, group));
        Driver.ClearLog();

        Core.DetachDevice(d, a);

        Assert.Empty(Driver.Log);
        Assert.Same(d, group.Domain);
    }

    [Fact]
    public void DetachDevice_of_a_device_without_group_is_a_no_op()
    {
        var lone = new Device("lone");

        Core.DetachDevice(Driver.NewDomain(), lone);

        Assert.Empty(Driver.Log);
        Assert.Null(Core.GetDomainForDev(lone));
    }

    [Fact]
    public void GetDomainForDev_follows_attach_and_detach()
    {
        _p.WithIommu();
        PciDevice dev = _p.AddPci(Dev0);
        IDomain def = dev.IommuGroup!.DefaultDomain!;
        IDomain d = Core.DomainAlloc(_p.Pci)!;

        Assert.Same(def, Core.GetDomainForDev(dev));
        Core.AttachDevice(d, dev);
        Assert.Same(d, Core.GetDomainForDev(dev));
        Core.DetachDevice(d, dev);
        Assert.Same(def, Core.GetDomainForDev(dev));
    }

    [Fact]
    public void Detach_whose_reattach_to_the_default_domain_fails_leaves_the_group_on_its_domain()
    {
        _p.WithIommu();
        PciDevice dev = _p.AddPci(Dev0);
        IDomain def = dev.IommuGroup!.DefaultDomain!;
        IDomain d = Core.DomainAlloc(_p.Pci)!;
        Assert.Equal(Errno.None, Core.AttachDevice(d, dev));
        Driver.AttachBehaviour = (dom, _) => ReferenceEquals(dom, def) ? Errno.EIO : Errno.None;

        Core.DetachDevice(d, dev);

        Assert.Same(d, Core.GetDomainForDev(dev));
    }

    [Fact]
    public void Capable_asks_the_driver_only_when_it_has_the_callback()
    {
        Assert.False(Core.Capable(_p.Pci, IommuCap.CacheCoherency));
        _p.WithIommu();
        Driver.CapableMock.Setup(o => o.Capable(IommuCap.CacheCoherency)).Returns(true);
        Assert.True(Core.Capable(_p.Pci, IommuCap.CacheCoherency));

        using var without = new CoreBed(OptionalOps.All & ~OptionalOps.Capable).WithIommu();
        Assert.False(without.Core.Capable(without.Pci, IommuCap.CacheCoherency));
    }
}
