using Iommu;
using Iommu.Groups;
using Vfio.Mdev.Tests.Infrastructure;

namespace Vfio.Mdev.Tests;

public sealed class CreateRemoveTests
{
    [Fact]
    public void Created_mdev_is_a_child_of_its_parent_on_the_mdev_bus_alone_in_a_fresh_group()
    {
        using var bed = new MdevBed();
        bed.Register(bed.ParentA, "a");
        int groupsBefore = bed.Platform.Iommu.Groups.Count;
        MdevDevice m1 = bed.Create(bed.ParentA, "fake-a");
        MdevDevice m2 = bed.Create(bed.ParentA, "fake-a");

        Assert.Same(bed.Mdev.Bus, m1.Bus);
        Assert.Equal([m1, m2], bed.Mdev.Bus.Devices);
        Assert.Same(bed.ParentA, m1.ParentDevice);
        Assert.Equal([m1, m2], bed.Mdev.FindParent(bed.ParentA)!.Children);
        Assert.Equal([m1, m2], m1.Type.Devices);
        Assert.NotNull(m1.IommuGroup);
        Assert.NotSame(m1.IommuGroup, m2.IommuGroup);
        Assert.Equal([m1], m1.IommuGroup!.Devices);
        Assert.Null(m1.IommuGroup.Domain);
        Assert.False(m1.HasIommu); // no IOMMU driver behind the mdev bus
        Assert.Null(bed.Mdev.Bus.IommuOps);
        Assert.Equal(groupsBefore + 2, bed.Platform.Iommu.Groups.Count);
        Assert.True(m1.Active);
    }

    [Fact]
    public void An_mdev_has_no_dma_mask_so_the_dma_api_refuses_it_with_eio()
    {
        // mdev_device_create leaves the mdev's struct device without dma_mask: dma_map_page_attrs and dma_map_sg_attrs
        // WARN and fail, dma_set_mask returns -EIO; the parent device is the one a vendor driver maps for.
        using var bed = new MdevBed();
        bed.Register(bed.ParentA, "a");
        MdevDevice m = bed.Create(bed.ParentA, "fake-a");
        Assert.Null(m.DmaMask);
        Assert.Equal(0UL, m.CoherentDmaMask);
        Assert.Equal(IommuCore.DmaMappingError, bed.Platform.Iommu.DmaMapPage(m, 0x1000, 16, DmaDataDirection.ToDevice));
        Assert.Equal(Errno.EIO, ErrorDetail.LastErrno);
        Assert.Equal(0, bed.Platform.Iommu.DmaMapSg(m, new Scatterlist[] { new(0x1000, 16) }, DmaDataDirection.ToDevice));
        Assert.Equal(Errno.EIO, ErrorDetail.LastErrno);
        Assert.Equal(Errno.EIO, bed.Platform.Iommu.DmaSetMask(m, ulong.MaxValue));
        Assert.Equal(0UL, bed.Platform.Iommu.DmaAllocCoherent(m, 4096, out _));
        Assert.Equal(ulong.MaxValue, bed.ParentA.DmaMask);
    }

    [Fact]
    public void Accessors_mirror_the_kernel_helpers()
    {
        using var bed = new MdevBed();
        bed.Register(bed.ParentA, "a", "b");
        MdevDevice m = bed.Create(bed.ParentA, "fake-b");
        IMdevDevice i = m;

        Assert.Same(m, MdevDevice.FromDevice(m));
        Assert.Null(MdevDevice.FromDevice(bed.ParentA));
        Assert.Null(MdevDevice.FromDevice(null));
        Assert.Same(m, i.Device);
        Assert.Same(m, m.GetDevice());
        Assert.Same(bed.ParentA, i.ParentDevice);
        Assert.Equal(1, i.TypeGroupId);
        Assert.Null(m.GetDrvdata());
        object data = new();
        m.SetDrvdata(data);
        Assert.Same(data, m.GetDrvdata());
        Assert.Null(m.DriverData); // mdev driver_data is not the device's drvdata
    }

    [Fact]
    public void Vendor_create_runs_before_the_group_exists_and_can_set_the_iommu_device()
    {
        using var bed = new MdevBed();
        FakeVendor v = bed.Register(bed.ParentA, "a");
        bool sawGroup = true;
        v.OnCreate = mdev =>
        {
            sawGroup = mdev.Device.IommuGroup is not null || mdev.Device.Bus is not null;
            mdev.SetIommuDevice(bed.ParentA);
            return Errno.None;
        };
        MdevDevice m = bed.Create(bed.ParentA, "fake-a");

        Assert.False(sawGroup);
        Assert.Same(bed.ParentA, m.GetIommuDevice());
    }

    [Fact]
    public void Iommu_hooks_default_to_null_and_store_what_is_set()
    {
        using var bed = new MdevBed();
        bed.Register(bed.ParentA, "a");
        MdevDevice m = bed.Create(bed.ParentA, "fake-a");
        Assert.Null(m.GetIommuDevice());
        Assert.Null(m.GetIommuDomain());

        var domain = new Moq.Mock<Iommu.Domains.IDomain>().Object;
        m.SetIommuDomain(domain);
        Assert.Same(domain, m.GetIommuDomain());
        m.SetIommuDomain(null);
        Assert.Null(m.GetIommuDomain());
    }

    [Fact]
    public void Same_uuid_is_EEXIST_under_the_same_and_under_another_parent()
    {
        using var bed = new MdevBed();
        FakeVendor a = bed.Register(bed.ParentA, "a");
        FakeVendor b = bed.Register(bed.ParentB, "a");
        var uuid = Guid.NewGuid();
        bed.Create(bed.ParentA, "fake-a", uuid);

        Assert.Equal(Errno.EEXIST, bed.Mdev.Create(bed.ParentA, "fake-a", uuid, out MdevDevice? m1));
        Assert.Equal(Errno.EEXIST, bed.Mdev.Create(bed.ParentB, "fake-a", uuid, out MdevDevice? m2));
        Assert.Null(m1);
        Assert.Null(m2);
        Assert.Single(a.Calls);
        Assert.Empty(b.Calls);
        Assert.Contains(uuid.ToString(), ErrorDetail.LastMessage, StringComparison.Ordinal);
    }

    [Theory]
    [InlineData(Errno.ENOSPC)]
    [InlineData(Errno.ENOMEM)]
    [InlineData(Errno.EPERM)]
    public void Vendor_create_error_is_returned_unchanged_and_frees_the_uuid(Errno vendorError)
    {
        using var bed = new MdevBed();
        FakeVendor v = bed.Register(bed.ParentA, "a");
        v.OnCreate = _ => vendorError;
        var uuid = Guid.NewGuid();
        int groups = bed.Platform.Iommu.Groups.Count;

        Assert.Equal(vendorError, bed.Mdev.Create(bed.ParentA, "fake-a", uuid, out MdevDevice? m));
        Assert.Null(m);
        Assert.Empty(bed.Mdev.Devices);
        Assert.Empty(bed.Mdev.Bus.Devices);
        Assert.Equal(groups, bed.Platform.Iommu.Groups.Count);
        Assert.DoesNotContain(v.Calls, c => c.StartsWith("remove", StringComparison.Ordinal));

        v.OnCreate = _ => Errno.None;
        Assert.Equal(Errno.None, bed.Mdev.Create(bed.ParentA, "fake-a", uuid, out _));
    }

    [Fact]
    public void Unknown_type_or_parent_is_ENOENT()
    {
        using var bed = new MdevBed();
        FakeVendor v = bed.Register(bed.ParentA, "a");
        Assert.Equal(Errno.ENOENT, bed.Mdev.Create(bed.ParentA, "fake-b", Guid.NewGuid(), out _));
        Assert.Equal(Errno.ENOENT, bed.Mdev.Create(bed.ParentB, "fake-a", Guid.NewGuid(), out _));
        Assert.Equal(Errno.ENOENT, bed.Mdev.Create(bed.ParentB, "fake-a", "83b8f4f2-509f-382f-3c1e-e6bfe0fa1001", out _));
        Assert.Empty(v.Calls);
    }

    [Fact]
    public void Remove_takes_the_device_off_the_bus_releases_its_group_and_calls_the_vendor()
    {
        using var bed = new MdevBed();
        FakeVendor v = bed.Register(bed.ParentA, "a");
        MdevDevice m = bed.Create(bed.ParentA, "fake-a");
        IommuGroup group = m.IommuGroup!;

        Assert.Equal(Errno.None, bed.Mdev.Remove(m));

        Assert.Equal($"remove({m.Uuid})", v.Calls[^1]);
        Assert.Null(m.Bus);
        Assert.Null(m.IommuGroup);
        Assert.True(group.IsReleased);
        Assert.Null(bed.Platform.Iommu.GroupGetById(group.Id));
        Assert.Empty(bed.Mdev.Devices);
        Assert.Empty(m.Type.Devices);
        Assert.Empty(bed.Mdev.FindParent(bed.ParentA)!.Children);
        Assert.False(m.Active);
        Assert.Null(bed.Mdev.FindDevice(m.Uuid));
    }

    [Fact]
    public void Removing_a_removed_device_is_ENODEV()
    {
        using var bed = new MdevBed();
        bed.Register(bed.ParentA, "a");
        MdevDevice m = bed.Create(bed.ParentA, "fake-a");
        Assert.Equal(Errno.None, bed.Mdev.Remove(m));
        Assert.Equal(Errno.ENODEV, bed.Mdev.Remove(m));
        Assert.Equal(Errno.ENODEV, bed.Mdev.Remove(m, "1"));
    }

    [Fact]
    public void Removing_a_device_whose_removal_is_in_progress_is_EAGAIN()
    {
        using var bed = new MdevBed();
        FakeVendor v = bed.Register(bed.ParentA, "a");
        MdevDevice m = bed.Create(bed.ParentA, "fake-a");
        Errno nested = Errno.None;
        v.OnRemove = _ =>
        {
            nested = bed.Mdev.Remove(m); // a second "echo 1 > remove" while the first is running
            return Errno.None;
        };

        Assert.Equal(Errno.None, bed.Mdev.Remove(m));
        Assert.Equal(Errno.EAGAIN, nested);
    }

    [Fact]
    public void Vendor_remove_error_is_only_logged()
    {
        using var bed = new MdevBed();
        FakeVendor v = bed.Register(bed.ParentA, "a");
        v.OnRemove = _ => Errno.EBUSY;
        MdevDevice m = bed.Create(bed.ParentA, "fake-a");
        Assert.Equal(Errno.None, bed.Mdev.Remove(m));
        Assert.Empty(bed.Mdev.Devices);
        Assert.Null(m.Bus);
    }

    [Theory]
    [InlineData("1")]
    [InlineData("1\n")]
    [InlineData("0x1")]
    [InlineData("+7")]
    [InlineData("010")]
    public void Remove_store_removes_for_any_non_zero_number(string text)
    {
        using var bed = new MdevBed();
        bed.Register(bed.ParentA, "a");
        MdevDevice m = bed.Create(bed.ParentA, "fake-a");
        Assert.Equal(Errno.None, bed.Mdev.Remove(m, text));
        Assert.Empty(bed.Mdev.Devices);
    }

    [Theory]
    [InlineData("0")]
    [InlineData("0\n")]
    [InlineData("0x0")]
    public void Remove_store_with_zero_does_nothing(string text)
    {
        using var bed = new MdevBed();
        bed.Register(bed.ParentA, "a");
        MdevDevice m = bed.Create(bed.ParentA, "fake-a");
        Assert.Equal(Errno.None, bed.Mdev.Remove(m, text));
        Assert.Equal([m], bed.Mdev.Devices);
    }

    [Theory]
    [InlineData("")]
    [InlineData("yes")]
    [InlineData("1 ")]
    [InlineData("0x")]
    [InlineData("08")]
    [InlineData("-1")]
    [InlineData("99999999999999999999999")]
    public void Remove_store_with_non_numeric_text_is_EINVAL(string text)
    {
        using var bed = new MdevBed();
        bed.Register(bed.ParentA, "a");
        MdevDevice m = bed.Create(bed.ParentA, "fake-a");
        Assert.Equal(Errno.EINVAL, bed.Mdev.Remove(m, text));
        Assert.Equal([m], bed.Mdev.Devices);
    }

    [Fact]
    public void Available_instances_is_whatever_the_vendor_reports()
    {
        using var bed = new MdevBed();
        bed.Register(bed.ParentA, "a");
        MdevType t = bed.Mdev.FindParent(bed.ParentA)!.SupportedTypes[0];
        MdevDevice m = bed.Create(bed.ParentA, "fake-a");
        Assert.Equal("41\n", MdevBed.Attr(t, "available_instances"));
        bed.Mdev.Remove(m);
        Assert.Equal("42\n", MdevBed.Attr(t, "available_instances"));
    }

    [Fact]
    public void A_second_mdev_core_of_a_platform_is_an_independent_core_on_its_own_bus()
    {
        using var bed = new MdevBed();
        var second = new MdevCore(bed.Platform);
        var third = new MdevCore(bed.Platform);
        Assert.Equal("mdev", bed.Mdev.Bus.Name);
        Assert.Equal("mdev1", second.Bus.Name);
        Assert.Equal("mdev2", third.Bus.Name);

        // Each has its own parents and UUID namespace: the same UUID in both, on different buses.
        Guid uuid = Guid.NewGuid();
        bed.Register(bed.ParentA, "a");
        Assert.Equal(Errno.None, second.RegisterDevice(bed.ParentB, new FakeVendor(["a"])));
        MdevDevice m1 = bed.Create(bed.ParentA, "fake-a", uuid);
        Assert.Equal(Errno.None, second.Create(bed.ParentB, "fake-a", uuid, out MdevDevice? m2));
        Assert.Same(bed.Mdev.Bus, m1.Bus);
        Assert.Same(second.Bus, m2!.Bus);
        Assert.Equal([m1], bed.Mdev.Devices);
        Assert.Equal([m2], second.Devices);
        Assert.Null(third.FindParent(bed.ParentA));
        Assert.NotSame(m1.IommuGroup, m2.IommuGroup);
    }
}
