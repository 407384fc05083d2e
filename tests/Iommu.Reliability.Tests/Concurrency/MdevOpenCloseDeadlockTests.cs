using System.Collections.Concurrent;
using System.Diagnostics;
using Iommu.Mm;
using Iommu.Reliability.Tests.Infrastructure;
using Mtty;
using Vfio.Mdev;
using Vfio.Type1;
using Vfio.Type1.Uapi;
using Xunit.Abstractions;

namespace Iommu.Reliability.Tests.Concurrency;

/// <summary>
/// A lock-order inversion between opening an mdev's device fd and its last close. <c>VFIO_GROUP_GET_DEVICE_FD</c>
/// holds the VFIO group's lock while it opens the mdev (the mdev's open gate, the vendor's open_device under it);
/// the last close of the mdev's device file holds the open gate while the vendor's close_device runs, and a vendor
/// that unregisters its DMA-unmap notifier or unpins there (the Mtty sample with DMA does both) needs a container
/// user. With the container user taken under the group's lock, the two waited for each other for ever; 5.15 takes
/// it with an atomic (inc-not-zero), as this model now does. Each round races the two for a time budget, with join
/// timeouts so a hang fails the test instead of stopping it.
/// </summary>
public sealed class MdevOpenCloseDeadlockTests(ITestOutputHelper output)
{
    [Fact]
    public void Get_device_fd_racing_the_last_close_of_the_same_mdev_never_hangs()
    {
        var platform = new Platform(new PlatformOptions { MemorySize = 8 * Sizes.GiB, TableMemorySize = 16 * Sizes.MiB });
        var mdevCore = new MdevCore(platform);
        var vfio = new VfioCore(platform, new VfioType1Options { AllowUnsafeInterrupts = true });
        var mtty = new MttyDriver(platform.Memory, vfio); // a card with DMA: open/close register/unregister its notifier
        Assert.Equal(Errno.None, mtty.Register(mdevCore));
        MdevType type = mdevCore.FindParent(mtty.ParentDevice)!.FindType("mtty-1")!;
        Assert.Equal(Errno.None, mdevCore.Create(type, Guid.NewGuid(), out MdevDevice? m));
        Assert.Equal(Errno.None, vfio.RegisterDevice(m!));
        var pages = HostPageAllocator.ForPlatform(platform);
        var proc = new ProcessAddressSpace(pages, "qemu");
        VfioContainer c = vfio.OpenContainer(proc, out _);
        Assert.Equal(Errno.None, vfio.OpenGroup(proc, m!.IommuGroup!.Id, out VfioGroup? g, out _));
        Assert.Equal(Errno.None, g!.SetContainer(c));
        Assert.Equal(Errno.None, c.SetIommu(VfioUapi.VFIO_TYPE1v2_IOMMU));

        var errors = new ConcurrentQueue<string>();
        var sw = Stopwatch.StartNew();
        long rounds = 0;
        bool hung = false;
        while (sw.Elapsed < TimeSpan.FromSeconds(Math.Clamp(ReliabilityBudget.Ops / 25_000, 3, 120)) && errors.IsEmpty)
        {
            Assert.Equal(Errno.None, g.GetDeviceFd(proc, m.Name, out _, out int fd1)); // first open: open_device
            using var start = new Barrier(2);
            int fd2 = -1;
            Errno opened = Errno.EINVAL;
            var closer = new Thread(() =>
            {
                start.SignalAndWait();
                try
                {
                    _ = proc.Close(fd1); // the last close: close_device -> vfio_unregister_notifier
                }
                catch (Exception ex)
                {
                    errors.Enqueue($"closer: {ex}");
                }
            }) { IsBackground = true };
            var opener = new Thread(() =>
            {
                start.SignalAndWait();
                try
                {
                    opened = g.GetDeviceFd(proc, m.Name, out _, out fd2);
                }
                catch (Exception ex)
                {
                    errors.Enqueue($"opener: {ex}");
                }
            }) { IsBackground = true };
            closer.Start();
            opener.Start();
            bool closerDone = closer.Join(TimeSpan.FromSeconds(10));
            bool openerDone = opener.Join(TimeSpan.FromSeconds(10));
            rounds++;
            if (!closerDone || !openerDone)
            {
                hung = true;
                errors.Enqueue($"round {rounds}: DEADLOCK: closer {(closerDone ? "done" : "hung")}, opener {(openerDone ? "done" : "hung")} (GET_DEVICE_FD holds the group lock and waits for the mdev's open gate; the last close holds the gate and, in the vendor's close_device, waits for the group lock)");
                break;
            }

            if (opened == Errno.None)
            {
                Assert.Equal(Errno.None, proc.Close(fd2));
            }
        }

        output.WriteLine($"{rounds} rounds in {sw.Elapsed.TotalSeconds:F1} s");
        foreach (string e in errors.Take(3))
        {
            output.WriteLine(e);
        }

        if (!hung)
        {
            platform.Dispose(); // not when threads are stuck inside access scopes: Dispose would wait for them forever
        }

        Assert.True(errors.IsEmpty, string.Join("\n", errors.Take(5)));
    }
}
