using Iommu;
using Iommu.Mm;
using UacceAccel;
using static Uacce.Tests.TestKit;

namespace Uacce.Tests;

/// <summary>Conformance audit against 5.15.85 uacce.c (spec pasid-sva.md §3): one test per defect found, plus the checks that held.</summary>
public sealed class UacceConformanceAuditTests
{
    private sealed class PlainOps : IUacceOps
    {
        public Errno GetQueue(UacceDevice uacce, uint pasid, UacceQueue queue) => Errno.None;

        public void PutQueue(UacceQueue queue)
        {
        }

        public Errno StartQueue(UacceQueue queue) => Errno.None;

        public void StopQueue(UacceQueue queue)
        {
        }

        public bool IsQUpdated(UacceQueue queue) => false;
    }

    // uacce_fops_release runs on the last fput, and every mapping of the file holds a reference (mmap_region's
    // get_file(vma->vm_file)): a process cannot keep a mapping of a queue the driver has put and handed to another
    // opener. The model released the queue at the last close with the mappings still live.
    [Fact]
    public void A_mapping_kept_after_close_never_reaches_the_queue_the_driver_hands_to_the_next_opener()
    {
        using AccelSystem sys = AccelSystem.Create(queues: 1);
        using ProcessAddressSpace attacker = sys.NewProcess("attacker");
        using ProcessAddressSpace victim = sys.NewProcess("victim");
        AccelClient a = sys.Open(attacker);
        Assert.Equal(Errno.None, attacker.Close(a.Fd));

        ulong v = victim.Mmap(2 * Page);
        Assert.Equal(Errno.None, victim.Write(v, "secret!!"u8));
        Assert.Equal(Errno.None, victim.Write(v + Page, new byte[8]));
        AccelClient b = sys.Open(victim); // the only hardware queue: the one the attacker had
        Assert.Same(sys.Engine.Queues[0], b.Queue.Private);

        // The attacker writes a descriptor through its old mappings: it must not land in the victim's ring.
        try
        {
            a.Submit(new AccelDescriptor(AccelOp.Copy, AccelStatus.Pending, v, v + Page, 8));
        }
        catch (IommuException)
        {
            // the stale mapping is gone: what the fix does
        }

        _ = sys.Engine.Service();
        byte[] got = new byte[8];
        Assert.Equal(Errno.None, victim.Read(v + Page, got));
        Assert.Equal(new byte[8], got);
        Assert.Equal(Errno.EFAULT, attacker.Write(a.RingVa, new byte[8]));
        Assert.Equal(Errno.EFAULT, attacker.Write(a.DoorbellVa, new byte[8]));
    }

    // uacce_fops_mmap sets VM_DONTCOPY | VM_WIPEONFORK: a forked child has no mapping of the parent's regions
    // (pasid-sva.md §3.4). The model's fork copied them, so the child kept the doorbell and ring after the queue was
    // released (parent exit) and reassigned.
    [Fact]
    public void Fork_does_not_copy_the_queue_regions()
    {
        using AccelSystem sys = AccelSystem.Create(queues: 1);
        using ProcessAddressSpace parent = sys.NewProcess("parent");
        AccelClient p = sys.Open(parent);
        using ProcessAddressSpace child = parent.Fork("child");
        Assert.Equal(Errno.EFAULT, child.Write(p.RingVa, new byte[8]));
        Assert.Equal(Errno.EFAULT, child.Write(p.DoorbellVa, new byte[8]));
        Assert.Equal(Errno.None, parent.Write(p.RingVa, new byte[8])); // the parent keeps them

        // The child holds the fd only; once both close, nothing of the queue is mapped anywhere.
        Assert.Equal(Errno.None, parent.Close(p.Fd));
        Assert.Equal(Errno.None, child.Close(p.Fd));
        Assert.True(p.Queue.Released);
        using ProcessAddressSpace next = sys.NewProcess("next");
        AccelClient n = sys.Open(next);
        Assert.Same(sys.Engine.Queues[0], n.Queue.Private);
        Assert.Equal(Errno.EFAULT, child.Write(p.RingVa, new byte[8]));
    }

    // do_mmap: PAGE_ALIGN(len) == 0 and len > TASK_SIZE (get_unmapped_area) are -ENOMEM, before f_op->mmap; only len == 0 is -EINVAL.
    [Fact]
    public void Mmap_longer_than_the_user_address_space_is_enomem_before_any_uacce_check()
    {
        using AccelSystem sys = AccelSystem.Create();
        using ProcessAddressSpace p = sys.NewProcess("p");
        (UacceQueue q, _) = OpenQueue(sys, p);
        Assert.Equal(Errno.EINVAL, q.Mmap(p, 0, 0, out _));
        Assert.Equal(Errno.ENOMEM, q.Mmap(p, 0, 0x7FFF_FFFF_F000UL + 1, out _));
        Assert.Equal(Errno.ENOMEM, q.Mmap(p, 5, ulong.MaxValue, out _)); // before the pgoff check
        Assert.Equal(Errno.EINVAL, q.Mmap(p, 5, Page, out _));
        Assert.All(q.Regions, Assert.Null);
    }

    // The sysfs directory is created by uacce_register (cdev_device_add -> device_add), and is_visible runs then:
    // before register nothing is readable (-ENOENT).
    [Fact]
    public void Sysfs_exists_only_from_register()
    {
        using AccelSystem sys = AccelSystem.Create();
        Iommu.Devices.PciDevice other = sys.Pci.AddDevice(new Iommu.Devices.PciDeviceSpec("0000:00:06.0"));
        Assert.Equal(Errno.None, sys.Uacce.Alloc(other, new UacceInterface("m", UacceDeviceFlags.None, new PlainOps()), out UacceDevice? m));
        m!.Api = "v1";
        Assert.Empty(m.Attributes);
        Assert.Equal(Errno.ENOENT, m.ReadAttribute("api", out string? t));
        Assert.Null(t);
        Assert.Equal(Errno.None, sys.Uacce.Register(m));
        Assert.Equal(Errno.None, m.ReadAttribute("api", out t));
        Assert.Equal("v1\n", t);
    }

    // uacce_alloc names the device "%s-%d" with dev_set_name, and kobject_set_name_vargs replaces every '/' of a
    // device name with '!' (a name is one sysfs and /dev component): a driver whose name holds '/' gets a device,
    // and /dev and sysfs show the '!' form. The model refused such a name with ArgumentException.
    [Fact]
    public void A_slash_in_the_interface_name_becomes_an_exclamation_mark_as_kobject_names_do()
    {
        using AccelSystem sys = AccelSystem.Create();
        using ProcessAddressSpace p = sys.NewProcess("p");
        Iommu.Devices.PciDevice other = sys.Pci.AddDevice(new Iommu.Devices.PciDeviceSpec("0000:00:06.0"));
        Assert.Equal(Errno.None, sys.Uacce.Alloc(other, new UacceInterface("hisi/zip", UacceDeviceFlags.None, new PlainOps()), out UacceDevice? d));
        Assert.Equal($"hisi!zip-{d!.DevId}", d.Name);
        Assert.Equal(Errno.None, sys.Uacce.Register(d));
        Assert.Equal(Errno.None, sys.Uacce.Open($"hisi!zip-{d.DevId}", p, out int fd));
        Assert.Equal(Errno.None, p.Close(fd));
        Assert.Equal(Errno.ENODEV, sys.Uacce.Open($"hisi/zip-{d.DevId}", p, out _));
    }

    // Checks that held (no fix): DMA reaches the opener's pages through its PASID and faults after release and after remove;
    // the state machine and errnos of §3.3 on a removed device.
    [Fact]
    public void Dma_reaches_the_openers_pages_only_while_the_queue_holds_its_bind()
    {
        using AccelSystem sys = AccelSystem.Create();
        using ProcessAddressSpace p = sys.NewProcess("p");
        ulong va = p.Mmap(Page);
        Assert.Equal(Errno.None, p.Write(va, "abcdefgh"u8));
        (UacceQueue q, int fd) = OpenQueue(sys, p);
        uint pasid = q.Pasid;
        Assert.True(DmaReaches(sys.Device, pasid, va));
        Assert.Equal(Errno.None, q.Ioctl(UacceCommands.PutQ, default));
        Assert.Equal(UacceQueueState.Zombie, q.State);
        Assert.True(DmaReaches(sys.Device, pasid, va)); // PUT_Q keeps the bind until release (5.15)
        Assert.Equal(Errno.ENXIO, q.Ioctl(UacceCommands.StartQ, default));
        Assert.Equal(Errno.ENXIO, q.Mmap(p, 0, Page, out _));
        Assert.Equal(Errno.None, p.Close(fd));
        Assert.False(DmaReaches(sys.Device, pasid, va));

        (UacceQueue q2, int fd2) = OpenQueue(sys, p);
        Assert.True(DmaReaches(sys.Device, q2.Pasid, va));
        Assert.Equal(Errno.None, q2.Ioctl(UacceCommands.StartQ, default));
        sys.Uacce.Remove(sys.Accel);
        sys.Uacce.Remove(sys.Accel);
        Assert.False(DmaReaches(sys.Device, q2.Pasid, va));
        Assert.Equal(UacceQueueState.Zombie, q2.State);
        Assert.Equal(Errno.ENXIO, q2.Ioctl(UacceCommands.PutQ, default));
        Assert.Equal(Errno.ENXIO, q2.Ioctl(0x1234, default));
        Assert.Equal(0, q2.Poll());
        Assert.Equal(Errno.ENODEV, sys.Uacce.Open(sys.Accel.Name, p, out _));
        Assert.Equal(Errno.EINVAL, sys.Uacce.Open(sys.Accel, p, out _));
        Assert.Equal(Errno.ENODEV, sys.Uacce.Register(sys.Accel));
        Assert.Equal(Errno.None, p.Close(fd2));
        Assert.True(q2.Released);
    }
    // Check that held: release, remove and every fop racing in any order give only documented errnos, never throw,
    // and leave no bind, no queue and no mapping behind.
    [Fact]
    public void Release_remove_and_fops_racing_never_throw_and_leave_nothing_behind()
    {
        for (int round = 0; round < 20; round++)
        {
            using AccelSystem sys = AccelSystem.Create(queues: 4);
            var procs = new List<ProcessAddressSpace>();
            var clients = new List<AccelClient>();
            for (int i = 0; i < 4; i++)
            {
                ProcessAddressSpace p = sys.NewProcess($"p{i}");
                procs.Add(p);
                clients.Add(sys.Open(p));
            }

            Errno[] allowed = [Errno.None, Errno.ENXIO, Errno.EINVAL, Errno.EEXIST, Errno.EBADF];
            var errors = new System.Collections.Concurrent.ConcurrentBag<string>();
            var threads = new List<Thread>();
            foreach (AccelClient c in clients)
            {
                threads.Add(new Thread(() =>
                {
                    try
                    {
                        Errno[] r =
                        [
                            c.Queue.Ioctl(UacceCommands.PutQ, default),
                            c.Queue.Mmap(c.Mm, 0, Page, out _),
                            c.Queue.Ioctl(UacceCommands.StartQ, default),
                            c.Mm.Close(c.Fd),
                        ];
                        _ = c.Queue.Poll();
                        foreach (Errno e in r)
                        {
                            if (Array.IndexOf(allowed, e) < 0)
                            {
                                errors.Add(e.ToString());
                            }
                        }
                    }
                    catch (Exception ex)
                    {
                        errors.Add(ex.ToString());
                    }
                }));
            }

            threads.Add(new Thread(() =>
            {
                try
                {
                    sys.Uacce.Remove(sys.Accel);
                }
                catch (Exception ex)
                {
                    errors.Add(ex.ToString());
                }
            }));
            threads.ForEach(t => t.Start());
            threads.ForEach(t => t.Join());
            Assert.Empty(errors);
            Assert.Empty(sys.Accel.Queues);
            foreach (AccelClient c in clients)
            {
                Assert.True(c.Queue.Released);
                Assert.Null(c.Queue.Handle);
                Assert.Equal(Errno.EFAULT, c.Mm.Write(c.RingVa, new byte[8]));
                Assert.False(DmaReaches(sys.Device, c.Queue.Pasid, c.RingVa));
            }

            Assert.All(sys.Engine.Queues, hw => Assert.False(hw.Assigned));
            procs.ForEach(p => p.Dispose());
        }
    }
}
