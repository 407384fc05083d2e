using Iommu;
using Iommu.Devices;
using Iommu.Mm;
using UacceAccel;
using static Uacce.Tests.TestKit;

namespace Uacce.Tests;

/// <summary>Registration, SVA negotiation, open/ioctl/mmap/poll/release/remove and every errno of §3.2–3.3 (5.15).</summary>
public sealed class LifecycleTests
{
    private sealed class MinimalOps : IUacceOps
    {
        public Errno GetQueue(UacceDevice uacce, uint pasid, UacceQueue queue) => Errno.None;

        public void PutQueue(UacceQueue queue)
        {
        }

        public Errno StartQueue(UacceQueue queue) => Errno.ENOSPC;

        public void StopQueue(UacceQueue queue)
        {
        }

        public bool IsQUpdated(UacceQueue queue) => false;
    }

    [Fact]
    public void Alloc_negotiates_sva_names_by_lowest_free_id_and_register_creates_the_device()
    {
        using AccelSystem sys = AccelSystem.Create();
        Assert.Equal("accel-0", sys.Accel.Name);
        Assert.Equal(UacceDeviceFlags.Sva, sys.Accel.Flags);
        Assert.Equal([sys.Accel], sys.Uacce.Devices);

        // No PRI: enable(IOPF) fails, the device comes up without SVA and nothing stays enabled.
        PciDevice noPri = sys.Pci.AddDevice(new PciDeviceSpec("0000:00:06.0") { PasidWidth = 20, Acs = true });
        Assert.Equal(Errno.None, sys.Uacce.Alloc(noPri, new UacceInterface("plain", UacceDeviceFlags.Sva, new MinimalOps()), out UacceDevice? plain));
        Assert.Equal(UacceDeviceFlags.None, plain!.Flags);
        Assert.Equal("plain-1", plain.Name);
        Assert.Equal(Errno.EINVAL, sys.Platform.Iommu.DevDisableFeature(noPri, IommuDevFeature.Sva)); // SVA never enabled

        // IOPF succeeds but SVA fails (another user enabled it already: -EBUSY): IOPF is disabled again, no SVA,
        // and the other user's SVA stays enabled.
        PciDevice taken = sys.Pci.AddDevice(new PciDeviceSpec("0000:00:07.0") { PasidWidth = 20, Ats = true, Pri = true, Acs = true });
        if (!taken.AtsEnabled)
        {
            Assert.Equal(Errno.None, taken.EnableAts());
        }

        if (!taken.PriEnabled)
        {
            Assert.Equal(Errno.None, taken.EnablePri());
        }

        Assert.Equal(Errno.None, sys.Platform.Iommu.DevEnableFeature(taken, IommuDevFeature.Iopf));
        Assert.Equal(Errno.None, sys.Platform.Iommu.DevEnableFeature(taken, IommuDevFeature.Sva));
        Assert.Equal(Errno.None, sys.Uacce.Alloc(taken, new UacceInterface("off", UacceDeviceFlags.Sva, new MinimalOps()), out UacceDevice? offDev));
        Assert.Equal(UacceDeviceFlags.None, offDev!.Flags);
        Assert.Equal("off-2", offDev.Name);
        Assert.Equal(Errno.None, sys.Platform.Iommu.DevDisableFeature(taken, IommuDevFeature.Sva));

        // Not registered: no character device; opening the object fails, the name is unknown.
        using ProcessAddressSpace p = sys.NewProcess("p");
        Assert.DoesNotContain(plain, sys.Uacce.Devices);
        Assert.Equal(Errno.ENODEV, sys.Uacce.Open(plain, p, out int fd));
        Assert.Equal(-1, fd);
        Assert.Equal(Errno.ENODEV, sys.Uacce.Open("plain-1", p, out _));
        Assert.Equal(Errno.ENODEV, sys.Uacce.Register(null));
        Assert.Equal(Errno.None, sys.Uacce.Register(plain));
        Assert.Equal(Errno.EEXIST, sys.Uacce.Register(plain));

        // Without SVA the queue's PASID is 0 and no bind is taken; a start error leaves the queue INIT.
        Assert.Equal(Errno.None, sys.Uacce.Open("plain-1", p, out fd));
        UacceQueue q = Queue(p, fd);
        Assert.Equal(0u, q.Pasid);
        Assert.Null(q.Handle);
        Assert.Equal(Errno.ENOSPC, q.Ioctl(UacceCommands.StartQ, default));
        Assert.Equal(UacceQueueState.Init, q.State);
        Assert.Equal(Errno.EINVAL, q.Mmap(p, 0, Page, out _)); // the driver has no mmap op
        Assert.Equal(Errno.EINVAL, q.Ioctl(0x1234, [1, 2]));  // nor an ioctl op

        // Remove frees the id: the next alloc takes 1 again.
        sys.Uacce.Remove(plain);
        Assert.Equal(Errno.None, sys.Uacce.Alloc(noPri, new UacceInterface("again", UacceDeviceFlags.None, new MinimalOps()), out UacceDevice? again));
        Assert.Equal("again-1", again!.Name);
        Assert.Equal(Errno.ENODEV, sys.Uacce.Register(plain)); // removed
    }

    [Fact]
    public void Sysfs_attributes_read_as_the_kernel_prints_them()
    {
        using AccelSystem sys = AccelSystem.Create(queues: 3);
        Assert.Equal(["api", "flags", "available_instances", "algorithms", "region_mmio_size", "region_dus_size"], sys.Accel.Attributes);
        string? Read(string a)
        {
            Assert.Equal(Errno.None, sys.Accel.ReadAttribute(a, out string? t));
            return t;
        }

        Assert.Equal("uacce_accel_v1\n", Read("api"));
        Assert.Equal("1\n", Read("flags"));
        Assert.Equal("3\n", Read("available_instances"));
        Assert.Equal("copy\nxor\n", Read("algorithms"));
        Assert.Equal("4096\n", Read("region_mmio_size"));
        using ProcessAddressSpace p = sys.NewProcess("p");
        OpenQueue(sys, p);
        Assert.Equal("2\n", Read("available_instances"));
        sys.Accel.SetRegionPageCount(UacceQueueFileRegionType.Dus, 0);
        Assert.Equal(Errno.ENOENT, sys.Accel.ReadAttribute("region_dus_size", out string? hidden));
        Assert.Null(hidden);
        Assert.Equal(Errno.ENOENT, sys.Accel.ReadAttribute("isolate", out _)); // 6.x only

        PciDevice other = sys.Pci.AddDevice(new PciDeviceSpec("0000:00:06.0"));
        Assert.Equal(Errno.None, sys.Uacce.Alloc(other, new UacceInterface("m", UacceDeviceFlags.None, new MinimalOps()), out UacceDevice? m));
        Assert.Equal(Errno.ENOENT, m!.ReadAttribute("available_instances", out _)); // no sysfs directory before register
        Assert.Equal(Errno.None, sys.Uacce.Register(m));
        Assert.Equal(Errno.ENODEV, m.ReadAttribute("available_instances", out _));
        sys.Uacce.Remove(sys.Accel);
        Assert.Equal(Errno.ENOENT, sys.Accel.ReadAttribute("api", out _));
        Assert.Empty(sys.Accel.Attributes);
    }

    [Fact]
    public void Open_binds_the_opener_and_release_puts_the_queue_and_unbinds()
    {
        using AccelSystem sys = AccelSystem.Create(queues: 2);
        using ProcessAddressSpace a = sys.NewProcess("a");
        using ProcessAddressSpace b = sys.NewProcess("b");
        using ProcessAddressSpace c = sys.NewProcess("c");
        ulong va = a.Mmap(Page);
        Assert.Equal(Errno.None, a.Write(va, [1]));
        (UacceQueue q1, int fd1) = OpenQueue(sys, a);
        (UacceQueue q2, int fd2) = OpenQueue(sys, a); // same mm: same PASID, two binds
        Assert.Equal(q1.Pasid, q2.Pasid);
        Assert.Same(q1.Handle, q2.Handle);
        Assert.Equal(0x41UL, PasidEntryQ0(sys, sys.Device, q1.Pasid)! & 0x1C1); // P, PGTT = 001 (first level)
        Assert.True(DmaReaches(sys.Device, q1.Pasid, va));

        // Every hardware queue is taken: get_queue's -EBUSY; the bind of c is dropped again (its PASID is free).
        Assert.Equal(Errno.EBUSY, sys.Uacce.Open(sys.Accel.Name, c, out int fdc));
        Assert.Equal(-1, fdc);
        Assert.Null(c.GetFile(3));
        uint next = sys.Platform.Iommu.AllocGlobalPasid(sys.Device);
        Assert.Equal(q1.Pasid + 1, next);
        sys.Platform.Iommu.FreeGlobalPasid(next);
        Assert.Equal(2, sys.Accel.Queues.Count);

        // Closing one file keeps the other's bind; closing the last tears the PASID entry down.
        Assert.Equal(Errno.None, q1.Ioctl(UacceCommands.StartQ, default));
        Assert.Equal(Errno.None, a.Close(fd1));
        Assert.True(q1.Released);
        Assert.Equal(UacceQueueState.Zombie, q1.State);
        Assert.Null(q1.Handle);
        Assert.False(sys.Engine.Queues[0].Assigned || sys.Engine.Queues[0].Enabled);
        Assert.True(DmaReaches(sys.Device, q2.Pasid, va));
        Assert.Equal(Errno.None, a.Close(fd2));
        Assert.False(DmaReaches(sys.Device, q2.Pasid, va));
        Assert.Equal(0UL, PasidEntryQ0(sys, sys.Device, q2.Pasid) & 1);
        Assert.Empty(sys.Accel.Queues);

        // b's open now finds a free queue and gets the lowest PASID again.
        (UacceQueue qb, _) = OpenQueue(sys, b);
        Assert.Equal(q1.Pasid, qb.Pasid);
    }

    [Fact]
    public void Ioctl_errnos_follow_the_state_machine()
    {
        using AccelSystem sys = AccelSystem.Create();
        using ProcessAddressSpace a = sys.NewProcess("a");
        (UacceQueue q, _) = OpenQueue(sys, a);
        Assert.Equal(UacceQueueState.Init, q.State);
        Assert.Equal(Errno.EINVAL, q.Ioctl(0x5702, default)); // unknown command, no driver ioctl
        Assert.Equal(Errno.None, q.Ioctl(UacceCommands.StartQ, [9, 9, 9]));
        Assert.Equal(UacceQueueState.Started, q.State);
        Assert.True(sys.Engine.Queues[0].Enabled);
        Assert.Equal(q.Pasid, sys.Engine.Queues[0].Pasid);
        Assert.Equal(Errno.EINVAL, q.Ioctl(UacceCommands.StartQ, default)); // a second START_Q
        Assert.Equal(Errno.None, q.Ioctl(UacceCommands.PutQ, default));
        Assert.Equal(UacceQueueState.Zombie, q.State);
        Assert.False(sys.Engine.Queues[0].Assigned);
        Assert.NotNull(q.Handle); // PUT_Q keeps the bind until release
        foreach (uint cmd in new uint[] { UacceCommands.StartQ, UacceCommands.PutQ, 0x5702, 0 })
        {
            Assert.Equal(Errno.ENXIO, q.Ioctl(cmd, default));
        }

        Assert.Equal(Errno.ENXIO, q.Mmap(a, 0, Page, out _));
        Assert.Equal(0, q.Poll());
    }

    [Fact]
    public void Mmap_errnos_and_the_munmap_quirk()
    {
        using AccelSystem sys = AccelSystem.Create();
        using ProcessAddressSpace a = sys.NewProcess("a");
        (UacceQueue q, _) = OpenQueue(sys, a);
        int areas = a.Areas.Count;
        Assert.Equal(Errno.EINVAL, q.Mmap(a, 2, Page, out ulong v));
        Assert.Equal(0UL, v);
        Assert.Equal(Errno.EINVAL, q.Mmap(a, 0, 0, out _));
        Assert.Equal(Errno.EINVAL, q.Mmap(a, 1, 2 * Page, out _)); // the ring is one page exactly (driver)
        Assert.Equal(Errno.EINVAL, q.Mmap(a, 0, 2 * Page, out _)); // the doorbell is one page (driver)
        Assert.Equal(areas, a.Areas.Count);
        Assert.All(q.Regions, r => Assert.Null(r));

        Assert.Equal(Errno.None, q.Mmap(a, 1, Page, out ulong ring));
        Assert.Equal(Errno.EEXIST, q.Mmap(a, 1, Page, out _));
        Assert.True(a.TryTranslate(ring, out ulong pfn));
        Assert.Equal(sys.Engine.Queues[0].RingPa, pfn * Page);
        Assert.Equal(Errno.None, q.Mmap(a, 0, 100, out ulong bell));
        Assert.True(a.TryTranslate(bell, out pfn));
        Assert.Equal(sys.Engine.Queues[0].DoorbellPa, pfn * Page);

        // 5.15–6.3: munmap frees the region record but leaves the queue's pointer, so mapping again is -EEXIST.
        a.Munmap(ring, Page);
        Assert.Equal(Errno.EEXIST, q.Mmap(a, 1, Page, out _));
        Assert.Equal(Errno.EFAULT, a.Read(ring, new byte[4]));
    }

    [Fact]
    public void Remove_makes_every_queue_a_zombie_unbinds_zaps_mappings_and_disables_sva()
    {
        using AccelSystem sys = AccelSystem.Create();
        using ProcessAddressSpace a = sys.NewProcess("a");
        ulong va = a.Mmap(Page);
        Assert.Equal(Errno.None, a.Write(va, [1]));
        AccelClient c = sys.Open(a);
        uint pasid = c.Queue.Pasid;
        Assert.True(DmaReaches(sys.Device, pasid, va));

        sys.Uacce.Remove(sys.Accel);
        Assert.Equal(UacceQueueState.Zombie, c.Queue.State);
        Assert.Null(c.Queue.Handle);
        Assert.False(sys.Engine.Queues[0].Enabled || sys.Engine.Queues[0].Assigned);
        Assert.False(DmaReaches(sys.Device, pasid, va));
        Assert.Equal(Errno.EFAULT, a.Read(c.RingVa, new byte[4])); // zapped
        Assert.Equal(Errno.ENXIO, c.Queue.Ioctl(UacceCommands.StartQ, default));
        Assert.Equal(0, c.Queue.Poll());
        Assert.Null(sys.Accel.Parent);
        Assert.Empty(sys.Uacce.Devices);
        Assert.Equal(Errno.EINVAL, sys.Platform.Iommu.DevDisableFeature(sys.Device, IommuDevFeature.Sva)); // disabled by remove

        // The device is gone from /dev; a holder of its inode gets -EINVAL (parent == NULL).
        using ProcessAddressSpace b = sys.NewProcess("b");
        Assert.Equal(Errno.ENODEV, sys.Uacce.Open("accel-0", b, out _));
        Assert.Equal(Errno.EINVAL, sys.Uacce.Open(sys.Accel, b, out _));

        // The zombie file still closes; remove again is a no-op.
        Assert.Single(sys.Accel.Queues);
        Assert.Equal(Errno.None, a.Close(c.Fd));
        Assert.Empty(sys.Accel.Queues);
        sys.Uacce.Remove(sys.Accel);
        sys.Uacce.Remove(null);
    }

    [Fact]
    public void A_forked_child_drives_the_parents_pasid_through_the_inherited_fd()
    {
        using AccelSystem sys = AccelSystem.Create();
        using ProcessAddressSpace parent = sys.NewProcess("parent");
        ulong va = parent.Mmap(2 * Page);
        Assert.Equal(Errno.None, parent.Write(va, "parent!!"u8));
        Assert.Equal(Errno.None, sys.Uacce.Open(sys.Accel.Name, parent, out int fd));
        UacceQueue q = Queue(parent, fd);
        Assert.Equal(Errno.None, q.Mmap(parent, 0, Page, out ulong bell));
        Assert.Equal(Errno.None, q.Mmap(parent, 1, Page, out ulong ring));
        var client = new AccelClient(parent, fd, q, bell, ring);
        int slot = client.Submit(new AccelDescriptor(AccelOp.Copy, AccelStatus.Pending, va, va + Page, 8));

        using ProcessAddressSpace child = parent.Fork("child");
        Assert.Same(q, child.GetFile(fd));
        Assert.Equal(Errno.None, child.Write(va, "child!!!"u8)); // the child's own copy of the source page
        Assert.Equal(Errno.None, child.Write(va + Page, new byte[8]));
        Assert.Equal(Errno.None, parent.Write(va + Page, new byte[8])); // break COW on the parent's destination

        // The child starts the queue; the engine runs the parent's descriptor with the parent's PASID.
        Assert.Equal(Errno.None, q.Ioctl(UacceCommands.StartQ, default));
        Assert.Equal(1, sys.Engine.Service());
        Assert.Equal(AccelStatus.Success, client.Read(slot).Status);
        byte[] got = new byte[8];
        Assert.Equal(Errno.None, parent.Read(va + Page, got));
        Assert.Equal("parent!!"u8.ToArray(), got);
        Assert.Equal(Errno.None, child.Read(va + Page, got));
        Assert.Equal(new byte[8], got);

        // The file lives while either descriptor is open.
        Assert.Equal(Errno.None, parent.Close(fd));
        Assert.False(q.Released);
        Assert.NotNull(q.Handle);
        Assert.Equal(Errno.None, child.Close(fd));
        Assert.True(q.Released);
        Assert.Null(q.Handle);
    }

    [Fact]
    public void Exit_tears_the_pasid_down_with_fpd_so_the_queues_dma_is_aborted_silently()
    {
        using AccelSystem sys = AccelSystem.Create();
        ProcessAddressSpace parent = sys.NewProcess("parent");
        ulong va = parent.Mmap(2 * Page);
        Assert.Equal(Errno.None, parent.Write(va, "parent!!"u8));
        Assert.Equal(Errno.None, parent.Write(va + Page, new byte[8]));
        AccelClient c = sys.Open(parent);
        uint pasid = c.Queue.Pasid;
        using ProcessAddressSpace child = parent.Fork("child");
        parent.Exit();
        Assert.False(c.Queue.Released); // the child's descriptor keeps the file
        Assert.NotNull(c.Queue.Handle);
        Assert.Equal(0x2UL, PasidEntryQ0(sys, sys.Device, pasid)); // FPD, not present

        // A descriptor submitted into the ring (device memory) now: the DMA is refused and no fault is recorded.
        AccelQueuePair hw = sys.Engine.Queues[0];
        uint fsts = sys.Unit.Read32(0x34);
        sys.Engine.Memory.Write(hw.RingPa, new AccelDescriptor(AccelOp.Copy, AccelStatus.Pending, va, va + Page, 8).ToBytes());
        sys.Engine.Memory.WriteUInt32(hw.DoorbellPa, 1);
        Assert.Equal(1, sys.Engine.Service());
        byte[] d = new byte[AccelDescriptor.Size];
        sys.Engine.Memory.Read(hw.RingPa, d);
        Assert.Equal(AccelStatus.TranslationFault, AccelDescriptor.FromBytes(d).Status);
        Assert.Equal(fsts, sys.Unit.Read32(0x34)); // no fault recorded (PPF unchanged)

        Assert.Equal(Errno.None, child.Close(c.Fd));
        Assert.True(c.Queue.Released);
        Assert.Null(c.Queue.Handle);
    }
}
