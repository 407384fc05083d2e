using Iommu;
using Iommu.Devices;
using Iommu.Domains;
using Iommu.Mm;
using Iommu.VtD.Driver;
using Iommu.VtD.Hardware;
using SiovAccel;
using Vfio.Mdev.Tests.Infrastructure;
using Vfio.Type1;
using Vfio.Type1.Uapi;

namespace Vfio.Mdev.Tests;

/// <summary>Conformance audit against Linux 5.15 (mdev_core.c, mdev_sysfs.c, vfio.c): one test per defect found.</summary>
public sealed class MdevConformanceAuditTests
{
    // mdev_register_device: the duplicate-parent check (-EEXIST) runs before parent_create_sysfs_files,
    // which is where a nameless type group is refused (-EINVAL).
    [Fact]
    public void Registering_a_registered_parent_again_is_EEXIST_even_with_a_nameless_group()
    {
        using var bed = new MdevBed();
        bed.Register(bed.ParentA, "a");

        Assert.Equal(Errno.EEXIST, bed.Mdev.RegisterDevice(bed.ParentA, new FakeVendor("ok", null)));
        Assert.Equal(Errno.EEXIST, bed.Mdev.RegisterDevice(bed.ParentA, new FakeVendor("x", "x")));
        Assert.Equal("fake-a", Assert.Single(bed.Mdev.FindParent(bed.ParentA)!.SupportedTypes).Name);
    }

    // 5.15 checks only ops->supported_type_groups != NULL; an array holding just its NULL terminator
    // registers a parent with an empty mdev_supported_types/. A group name "" is not NULL: the type
    // directory is "<driver>-".
    [Fact]
    public void An_empty_group_list_or_an_empty_group_name_registers_as_in_5_15()
    {
        using var bed = new MdevBed();
        Assert.Equal(Errno.None, bed.Mdev.RegisterDevice(bed.ParentA, new FakeVendor { Groups = [] }));
        Assert.Empty(bed.Mdev.FindParent(bed.ParentA)!.SupportedTypes);

        Assert.Equal(Errno.None, bed.Mdev.RegisterDevice(bed.ParentB, new FakeVendor("ok", "")));
        Assert.Equal(["fake-ok", "fake-"], bed.Mdev.FindParent(bed.ParentB)!.SupportedTypes.Select(t => t.Name));
        bed.Create(bed.ParentB, "fake-");
    }

    // remove_store: device_remove_file_self() removes the 'remove' attribute before mdev_device_remove
    // runs, so once a removal is under way a write to that attribute sees a removed kernfs node
    // (-ENODEV) or, when it raced in, device_remove_file_self() false (count). Never -EAGAIN: that
    // value of mdev_device_remove is unreachable from sysfs.
    [Fact]
    public void Writing_remove_while_a_removal_is_in_progress_is_ENODEV_not_EAGAIN()
    {
        using var bed = new MdevBed();
        FakeVendor v = bed.Register(bed.ParentA, "a");
        MdevDevice m = bed.Create(bed.ParentA, "fake-a");
        Assert.Equal(Errno.None, m.Open(out MdevDeviceFile? f));
        using var requested = new ManualResetEventSlim();
        v.OnRequest = (_, _) => requested.Set();
        var first = new Background(() => bed.Mdev.Remove(m, "1"));
        Errno second, zero;
        try
        {
            Assert.True(requested.Wait(TimeSpan.FromSeconds(10)));
            second = bed.Mdev.Remove(m, "1\n");
            zero = bed.Mdev.Remove(m, "0"); // kstrtoul first, then val == 0: nothing
        }
        finally
        {
            f!.Dispose();
        }

        Assert.Equal(Errno.ENODEV, second);
        Assert.Equal(Errno.None, zero);
        Assert.Equal(Errno.None, first.Join(TimeSpan.FromSeconds(10)));
        Assert.Equal(Errno.ENODEV, bed.Mdev.Remove(m, "1"));
    }

    // vfio_unregister_group_dev (5.15): when the device leaving is the group's last one, removal waits
    // until the group has left its container (wait_event(group->container_q, !group->container)),
    // so type1 detaches the mdev's aux domain from the parent while the mdev is still in the group
    // and its IOMMU device still set. Otherwise the parent keeps the container's domain under the
    // mdev's PASID after the mdev is gone.
    [Fact]
    public void Removing_an_aux_mdev_waits_for_its_group_to_leave_the_container_and_the_pasid_is_then_dead()
    {
        using var platform = new Platform(new PlatformOptions { MemorySize = 8 * Sizes.GiB, TableMemorySize = 64 * Sizes.MiB });
        PciBus pci = platform.AddPciBus();
        var unit = new VtdUnit(platform.Memory, VtdConfig.ScalableMode48Bit);
        pci.AddDmaRemapper(unit, includeAll: true);
        var intel = new IntelIommu(platform, unit);
        Assert.Equal(Errno.None, pci.SetIommuOps(intel));
        PciDevice parent = pci.AddDevice(new PciDeviceSpec("0000:00:04.0") { PasidWidth = 20, ScalableIov = true, DeviceId = 0x0b25 });
        var mdevCore = new MdevCore(platform);
        Assert.Equal(Errno.None, mdevCore.RegisterDevice(parent, new SiovAccelDriver(platform.Iommu, parent, adiCount: 2)));
        Assert.Equal(Errno.None, mdevCore.Create(parent, "siov_accel-wq", Guid.NewGuid(), out MdevDevice? m));
        Assert.Equal(Errno.None, mdevCore.Create(parent, "siov_accel-wq", Guid.NewGuid(), out _)); // keeps AUX enabled on the parent

        var vfio = new VfioCore(platform, new VfioType1Options { AllowUnsafeInterrupts = true });
        var qemu = new ProcessAddressSpace(HostPageAllocator.ForPlatform(platform), "qemu");
        VfioContainer container = vfio.OpenContainer(qemu, out _);
        Assert.Equal(Errno.None, vfio.RegisterDevice(m!));
        Assert.Equal(Errno.None, vfio.OpenGroup(qemu, m!.IommuGroup!.Id, out VfioGroup? group, out _));
        Assert.Equal(Errno.None, group!.SetContainer(container));
        Assert.Equal(Errno.None, container.SetIommu(VfioUapi.VFIO_TYPE1v2_IOMMU));
        ulong ram = qemu.Mmap(Sizes.MiB);
        Assert.Equal(Errno.None, container.MapDma(new VfioIommuType1DmaMap(32,
            VfioUapi.VFIO_DMA_MAP_FLAG_READ | VfioUapi.VFIO_DMA_MAP_FLAG_WRITE, ram, 0x10_0000, Sizes.MiB)));
        IDomain domain = m.GetIommuDomain()!;
        uint pasid = (uint)platform.Iommu.AuxGetPasid(domain, parent);
        Assert.True(parent.DmaRead(pasid, 0x10_0000, new byte[8]).IsOk);

        var remove = new Background(() => mdevCore.Remove(m));
        Errno? early = remove.Join(TimeSpan.FromMilliseconds(500)); // 5.15: still waiting for the group to leave its container
        Assert.Equal(Errno.None, group.UnsetContainer());
        Assert.Equal(Errno.None, remove.Join(TimeSpan.FromSeconds(10)));
        Assert.False(parent.DmaRead(pasid, 0x10_0000, new byte[8]).IsOk);
        Assert.Null(early);
        Assert.Null(m.GetIommuDomain());
    }

    private sealed class Background
    {
        private readonly Thread _thread;
        private Errno _result;

        public Background(Func<Errno> work)
        {
            _thread = new Thread(() => _result = work()) { IsBackground = true };
            _thread.Start();
        }

        public Errno? Join(TimeSpan timeout) => _thread.Join(timeout) ? _result : null;
    }
}
