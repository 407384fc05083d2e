using Iommu;
using Vfio.Mdev.Tests.Infrastructure;

namespace Vfio.Mdev.Tests;

public sealed class RegistrationTests
{
    [Fact]
    public void Null_ops_is_EINVAL()
    {
        using var bed = new MdevBed();
        Assert.Equal(Errno.EINVAL, bed.Mdev.RegisterDevice(bed.ParentA, null));
        Assert.Contains(bed.ParentA.Name, ErrorDetail.LastMessage, StringComparison.Ordinal);
        Assert.Empty(bed.Mdev.Parents);
    }

    [Fact]
    public void Missing_supported_type_groups_is_EINVAL()
    {
        using var bed = new MdevBed();
        Assert.Equal(Errno.EINVAL, bed.Mdev.RegisterDevice(bed.ParentA, new FakeVendor { NullGroups = true }));
        Assert.Null(bed.Mdev.FindParent(bed.ParentA));
    }

    [Fact]
    public void Only_create_and_remove_are_mandatory()
    {
        using var bed = new MdevBed();
        var v = new MinimalFakeVendor();
        Assert.Equal(Errno.None, bed.Mdev.RegisterDevice(bed.ParentA, v));
    }

    [Theory]
    [InlineData(null)]
    public void Unnamed_type_group_is_EINVAL(string? name)
    {
        using var bed = new MdevBed();
        Assert.Equal(Errno.EINVAL, bed.Mdev.RegisterDevice(bed.ParentA, new FakeVendor("ok", name)));
        Assert.Contains("group 1", ErrorDetail.LastMessage, StringComparison.Ordinal);
        Assert.Null(bed.Mdev.FindParent(bed.ParentA));
    }

    [Fact]
    public void Registering_twice_is_EEXIST_and_keeps_the_first_ops()
    {
        using var bed = new MdevBed();
        FakeVendor first = bed.Register(bed.ParentA, "a");
        Assert.Equal(Errno.EEXIST, bed.Mdev.RegisterDevice(bed.ParentA, new FakeVendor("b")));
        Assert.Same(first, bed.Mdev.FindParent(bed.ParentA)!.Ops);
        Assert.Equal(["fake-a"], bed.Mdev.FindParent(bed.ParentA)!.SupportedTypes.Select(t => t.Name));
    }

    [Fact]
    public void Types_are_named_driver_dash_group_and_listed_per_parent()
    {
        using var bed = new MdevBed();
        bed.Register(bed.ParentA, "1", "2");
        var other = new FakeVendor("x") { DriverName = "other" };
        Assert.Equal(Errno.None, bed.Mdev.RegisterDevice(bed.ParentB, other));

        Assert.Equal(["fake-1", "fake-2"], bed.Mdev.FindParent(bed.ParentA)!.SupportedTypes.Select(t => t.Name));
        Assert.Equal(["other-x"], bed.Mdev.FindParent(bed.ParentB)!.SupportedTypes.Select(t => t.Name));
        Assert.Equal([bed.ParentA, bed.ParentB], bed.Mdev.Parents.Select(p => (Iommu.Devices.Device)p.Device));
        Assert.Equal(1, bed.Mdev.FindParent(bed.ParentA)!.FindType("fake-2")!.TypeGroupId);
        Assert.Same(bed.ParentA, bed.Mdev.FindParent(bed.ParentA)!.FindType("fake-2")!.ParentDevice);
    }

    [Fact]
    public void Type_directory_has_the_conventional_attributes_create_and_devices()
    {
        using var bed = new MdevBed();
        bed.Register(bed.ParentA, "a");
        MdevType t = bed.Mdev.FindParent(bed.ParentA)!.SupportedTypes[0];

        Assert.Equal(["available_instances", "create", "description", "device_api", "devices", "name"], t.ListDirectory());
        Assert.Equal("Fake a\n", MdevBed.Attr(t, "name"));
        Assert.Equal("42\n", MdevBed.Attr(t, "available_instances"));
        Assert.Equal("vfio-pci\n", MdevBed.Attr(t, "device_api"));
        Assert.Equal("a fake type\n", MdevBed.Attr(t, "description"));
        Assert.Equal(Errno.EACCES, t.ReadAttribute("create", out _));
        Assert.Equal(Errno.ENOENT, t.ReadAttribute("bogus", out _));
    }

    [Fact]
    public void Unregistering_an_unknown_parent_is_a_no_op_and_re_registering_works()
    {
        using var bed = new MdevBed();
        bed.Mdev.UnregisterDevice(bed.ParentA);
        bed.Register(bed.ParentA, "a");
        bed.Mdev.UnregisterDevice(bed.ParentA);
        Assert.Empty(bed.Mdev.Parents);
        bed.Register(bed.ParentA, "b");
        Assert.Equal(["fake-b"], bed.Mdev.FindParent(bed.ParentA)!.SupportedTypes.Select(t => t.Name));
    }

    [Fact]
    public void Each_platform_has_its_own_mdev_core_and_bus()
    {
        using var one = new MdevBed();
        using var two = new MdevBed();
        one.Register(one.ParentA, "a");
        two.Register(two.ParentA, "a");
        var uuid = Guid.NewGuid();
        MdevDevice m1 = one.Create(one.ParentA, "fake-a", uuid);
        MdevDevice m2 = two.Create(two.ParentA, "fake-a", uuid);

        Assert.NotSame(one.Mdev.Bus, two.Mdev.Bus);
        Assert.Same(one.Mdev.Bus, m1.Bus);
        Assert.Same(two.Mdev.Bus, m2.Bus);
        Assert.Equal("mdev", one.Mdev.Bus.Name);
        Assert.Equal("mdev", two.Mdev.Bus.Name);
    }
}
