using System.Collections.Concurrent;
using System.Diagnostics;
using Iommu.Domains;
using Iommu.Mm;
using Iommu.Reliability.Tests.Infrastructure;
using Mtty;
using Vfio.Mdev;
using Vfio.Mdev.Pinning;
using Vfio.Type1;
using Vfio.Type1.Uapi;
using Xunit.Abstractions;

namespace Iommu.Reliability.Tests.Concurrency;

/// <summary>
/// Check-then-act races: a condition checked and then acted on with another thread free to change it
/// in between. Each property failed on the code before its fix.
/// <para>1. <c>ProcessAddressSpace.Exit</c> checks <c>Exited</c> and snapshots the fd table under its lock,
/// closes those fds with the lock dropped, and only then sets <c>Exited</c> under the lock again; an
/// <c>InstallFile</c> in between succeeds and its fd is never closed. And <c>VfioCore.OpenGroup</c> marks the
/// group open (<c>VfioGroup.Open</c>) before <c>InstallFile</c>, which throws once the process has exited, with
/// nothing undone. Either way the group stays "open" for a process that is gone: every later open is
/// -EBUSY, forever. (5.15: a file is installed in the opener's own table and closed by <c>exit_files</c>;
/// nothing can be installed in a table being torn down.)</para>
/// <para>2. <c>vfio_pin_pages</c> (<c>VfioCore.PinPages</c>) looks the group's container and backend up with no
/// lock and no container user, then pins under the backend's lock, which it drops while it waits for an
/// invalidated vaddr. An UNSET_CONTAINER in between succeeds, and the pin then succeeds too, for a device
/// whose group has left the container. 5.15 takes a container user first
/// (<c>vfio_group_add_container_user</c>), so the UNSET_CONTAINER is -EBUSY while the pin is in flight.</para>
/// </summary>
public sealed class CheckThenActRaceTests(ITestOutputHelper output)
{
    private static readonly TimeSpan Budget = TimeSpan.FromSeconds(Math.Clamp(ReliabilityBudget.Ops / 25_000, 3, 120));

    private static (Platform Platform, VfioCore Vfio, MdevDevice[] Mdevs, HostPageAllocator Pages) MdevBed(int count)
    {
        var platform = new Platform(new PlatformOptions { MemorySize = 8 * Sizes.GiB, TableMemorySize = 16 * Sizes.MiB });
        var mdevCore = new MdevCore(platform);
        var mtty = new MttyDriver(platform.Memory);
        Assert.Equal(Errno.None, mtty.Register(mdevCore));
        MdevType type = mdevCore.FindParent(mtty.ParentDevice)!.FindType("mtty-1")!;
        var vfio = new VfioCore(platform, new VfioType1Options { AllowUnsafeInterrupts = true });
        var mdevs = new MdevDevice[count];
        for (int i = 0; i < count; i++)
        {
            Assert.Equal(Errno.None, mdevCore.Create(type, Guid.NewGuid(), out MdevDevice? m));
            Assert.Equal(Errno.None, vfio.RegisterDevice(m!));
            mdevs[i] = m!;
        }

        return (platform, vfio, mdevs, HostPageAllocator.ForPlatform(platform));
    }

    // OpenGroup in a process while that process exits: afterwards the process is gone and its
    // descriptors closed, so the group must open again (0), never -EBUSY.
    [Fact]
    public void Group_open_racing_the_openers_exit_never_leaves_the_group_open()
    {
        const int Padding = 64; // other open files: Exit closes them one by one with its lock dropped
        (Platform platform, VfioCore vfio, MdevDevice[] mdevs, HostPageAllocator pages) = MdevBed(1);
        using Platform owned = platform;
        int groupId = mdevs[0].IommuGroup!.Id;
        var prober = new ProcessAddressSpace(pages, "prober");
        var errors = new ConcurrentQueue<string>();
        var sw = Stopwatch.StartNew();
        long rounds = 0, openedThenClosed = 0, openedLeaked = 0, threwLeaked = 0, threwClean = 0;
        while (sw.Elapsed < Budget && errors.IsEmpty)
        {
            var p = new ProcessAddressSpace(pages, $"p{rounds}");
            for (int i = 0; i < Padding; i++)
            {
                p.InstallFile(new object());
            }

            using var start = new Barrier(2);
            Errno opened = Errno.EINVAL;
            bool threw = false;
            var opener = new Thread(() =>
            {
                start.SignalAndWait();
                try
                {
                    opened = vfio.OpenGroup(p, groupId, out _, out _);
                }
                catch (InvalidOperationException)
                {
                    threw = true; // "p has exited": acceptable only if nothing changed
                }
                catch (Exception ex)
                {
                    errors.Enqueue($"opener: {ex}");
                }
            }) { IsBackground = true };
            var exiter = new Thread(() =>
            {
                start.SignalAndWait();
                try
                {
                    p.Exit();
                }
                catch (Exception ex)
                {
                    errors.Enqueue($"exit: {ex}");
                }
            }) { IsBackground = true };
            opener.Start();
            exiter.Start();
            Assert.True(opener.Join(TimeSpan.FromSeconds(30)) && exiter.Join(TimeSpan.FromSeconds(30)), "a thread hung");
            rounds++;

            Errno again = vfio.OpenGroup(prober, groupId, out VfioGroup? g, out int fd);
            if (again == Errno.None)
            {
                Assert.Equal(Errno.None, prober.Close(fd));
                if (threw)
                {
                    threwClean++;
                }
                else if (opened == Errno.None)
                {
                    openedThenClosed++;
                }

                continue;
            }

            if (threw)
            {
                threwLeaked++;
            }
            else if (opened == Errno.None)
            {
                openedLeaked++;
            }

            errors.Enqueue($"round {rounds}: after {p} exited the group reopens with {again} ({ErrorDetail.LastMessage}); the racing OpenGroup {(threw ? "threw InvalidOperationException" : $"returned {opened}")}, owner now {vfio.GetGroup(mdevs[0].IommuGroup!)?.Owner}");
        }

        output.WriteLine($"{rounds} rounds in {sw.Elapsed.TotalSeconds:F1} s: opened+closed by exit {openedThenClosed}, threw cleanly {threwClean}; LEAKED: opened and never closed {openedLeaked}, threw with the group left open {threwLeaked}");
        foreach (string e in errors.Take(3))
        {
            output.WriteLine(e);
        }

        Assert.True(errors.IsEmpty, string.Join("\n", errors.Take(5)));
    }

    // vfio_pin_pages waiting for an invalidated vaddr while the device's group leaves the container: in
    // 5.15 the pin holds a container user, so UNSET_CONTAINER is -EBUSY; a pin may never succeed for a
    // group that left the container before the pin returned.
    [Fact]
    public void Pin_pages_in_flight_keeps_the_group_in_its_container()
    {
        const ulong Iova = 0x10_0000;
        (Platform platform, VfioCore vfio, MdevDevice[] mdevs, HostPageAllocator pages) = MdevBed(2);
        using Platform owned = platform;
        MdevDevice m1 = mdevs[0], m2 = mdevs[1];
        var proc = new ProcessAddressSpace(pages, "qemu");
        VfioContainer c = vfio.OpenContainer(proc, out _);
        Assert.Equal(Errno.None, vfio.OpenGroup(proc, m1.IommuGroup!.Id, out VfioGroup? g1, out _));
        Assert.Equal(Errno.None, vfio.OpenGroup(proc, m2.IommuGroup!.Id, out VfioGroup? g2, out _));
        Assert.Equal(Errno.None, g1!.SetContainer(c));
        Assert.Equal(Errno.None, g2!.SetContainer(c)); // keeps the backend alive when g1 leaves
        Assert.Equal(Errno.None, c.SetIommu(VfioUapi.VFIO_TYPE1v2_IOMMU));
        ulong va = proc.Mmap(Sizes.Page);
        Assert.Equal(Errno.None, proc.Write(va, new byte[] { 0x5A }));
        Assert.Equal(Errno.None, c.MapDma(new VfioIommuType1DmaMap(32, 3, va, Iova, Sizes.Page)));

        // The vendor driver's DMA-unmap notifier: drop its pins in the range.
        VfioIommuNotifier nb = (action, ev) =>
        {
            _ = vfio.UnpinPages(m1, [ev.Iova >> 12], 1);
            return NotifyResult.Ok;
        };
        Assert.Equal(Errno.None, vfio.RegisterNotifier(m1, VfioNotifyType.Iommu, VfioIommuNotifyEvents.DmaUnmap, nb));

        var errors = new ConcurrentQueue<string>();
        var sw = Stopwatch.StartNew();
        long rounds = 0;
        while (sw.Elapsed < Budget && errors.IsEmpty)
        {
            // Invalidate the mapping's vaddr (live update): a pin of it waits for the new vaddr, with the backend's lock dropped.
            var inv = new VfioIommuType1DmaUnmap(24, VfioUapi.VFIO_DMA_UNMAP_FLAG_VADDR, Iova, Sizes.Page);
            Assert.Equal(Errno.None, c.UnmapDma(ref inv));

            int pinned = int.MinValue;
            var phys = new ulong[1];
            var pinner = new Thread(() =>
            {
                try
                {
                    pinned = vfio.PinPages(m1, [Iova >> 12], 1, IommuProt.Read, phys);
                }
                catch (Exception ex)
                {
                    errors.Enqueue($"pinner: {ex}");
                }
            }) { IsBackground = true };
            pinner.Start();
            while ((pinner.ThreadState & System.Threading.ThreadState.WaitSleepJoin) == 0 && pinner.IsAlive)
            {
                Thread.Yield();
            }

            Thread.Sleep(5); // the pin is parked in its wait for the vaddr

            // The group leaves the container while the pin is in flight (5.15: -EBUSY, a container user is held).
            Errno unset = g1.UnsetContainer();

            // The live update completes: the waiting pin goes on.
            Assert.Equal(Errno.None, c.MapDma(new VfioIommuType1DmaMap(32, VfioUapi.VFIO_DMA_MAP_FLAG_VADDR, va, Iova, Sizes.Page)));
            Assert.True(pinner.Join(TimeSpan.FromSeconds(30)), "the pin hung");
            rounds++;
            if (unset == Errno.None && pinned == 1)
            {
                int unpin = vfio.UnpinPages(m1, [Iova >> 12], 1);
                errors.Enqueue($"round {rounds}: UNSET_CONTAINER returned 0 while vfio_pin_pages was in flight, and the pin then succeeded (pfn 0x{phys[0]:x}) for a device whose group is in no container (g1.Container = {g1.Container?.Id.ToString(System.Globalization.CultureInfo.InvariantCulture) ?? "null"}); the vendor's unpin now returns {unpin}, the page stays pinned in the container ({pages.TotalPins} pins)");
                break;
            }

            // Back to the start: the pin (if any) dropped, g1 in the container again.
            if (pinned == 1)
            {
                Assert.Equal(1, vfio.UnpinPages(m1, [Iova >> 12], 1));
            }

            if (g1.Container is null)
            {
                Assert.Equal(Errno.None, g1.SetContainer(c));
            }
        }

        output.WriteLine($"{rounds} rounds in {sw.Elapsed.TotalSeconds:F1} s; {errors.Count} errors");
        foreach (string e in errors.Take(3))
        {
            output.WriteLine(e);
        }

        Assert.True(errors.IsEmpty, string.Join("\n", errors.Take(5)));
    }
}
