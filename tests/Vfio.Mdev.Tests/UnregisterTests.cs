using System.Collections.Concurrent;
using Iommu;
using Iommu.Groups;
using Vfio.Mdev.Tests.Infrastructure;

namespace Vfio.Mdev.Tests;

public sealed class UnregisterTests
{
    [Fact]
    public void Unregister_removes_every_live_child_and_the_type_directories()
    {
        using var bed = new MdevBed();
        FakeVendor va = bed.Register(bed.ParentA, "a", "b");
        FakeVendor vb = bed.Register(bed.ParentB, "a");
        MdevDevice a1 = bed.Create(bed.ParentA, "fake-a");
        MdevDevice a2 = bed.Create(bed.ParentA, "fake-b");
        MdevDevice b1 = bed.Create(bed.ParentB, "fake-a");
        IommuGroup[] groups = [a1.IommuGroup!, a2.IommuGroup!];
        MdevType typeA = a1.Type;

        bed.Mdev.UnregisterDevice(bed.ParentA);

        Assert.Empty(va.Live);
        Assert.Equal(2, va.Calls.Count(c => c.StartsWith("remove", StringComparison.Ordinal)));
        Assert.Equal([b1], bed.Mdev.Devices);
        Assert.Equal([b1], bed.Mdev.Bus.Devices);
        Assert.All(groups, g => Assert.True(g.IsReleased));
        Assert.Null(bed.Mdev.FindParent(bed.ParentA));
        Assert.Equal(Errno.ENOENT, typeA.ReadAttribute("available_instances", out _));
        Assert.Equal(Errno.ENOENT, bed.Mdev.Create(bed.ParentA, "fake-a", Guid.NewGuid(), out _));
        Assert.Equal(Errno.ENODEV, bed.Mdev.Create(typeA, Guid.NewGuid(), out _)); // a stale type handle
        Assert.Equal(Errno.ENODEV, bed.Mdev.Remove(a1));
        Assert.Single(vb.Live);
    }

    [Fact]
    public void Vendor_remove_errors_do_not_stop_unregistration()
    {
        using var bed = new MdevBed();
        FakeVendor v = bed.Register(bed.ParentA, "a");
        v.OnRemove = _ => Errno.EIO;
        bed.Create(bed.ParentA, "fake-a");
        bed.Create(bed.ParentA, "fake-a");
        bed.Mdev.UnregisterDevice(bed.ParentA);
        Assert.Empty(bed.Mdev.Devices);
        Assert.Empty(v.Live);
    }

    [Fact]
    public void Create_and_remove_while_unregistration_is_in_progress_fail_with_ENODEV()
    {
        using var bed = new MdevBed();
        FakeVendor v = bed.Register(bed.ParentA, "a");
        MdevDevice first = bed.Create(bed.ParentA, "fake-a");
        MdevDevice second = bed.Create(bed.ParentA, "fake-a");
        MdevType type = first.Type;
        Errno createDuring = Errno.None, removeDuring = Errno.None, removeAgain = Errno.None;
        Errno createByName = Errno.None;
        bool parentListedDuring = true;
        int removes = 0;
        v.OnRemove = removing =>
        {
            if (Interlocked.Increment(ref removes) == 1)
            {
                // Unregistration holds unreg_sem for write: other threads' trylocks fail.
                Task.Run(() =>
                {
                    createDuring = bed.Mdev.Create(type, Guid.NewGuid(), out _);
                    createByName = bed.Mdev.Create(bed.ParentA, "fake-a", Guid.NewGuid(), out _);
                    removeDuring = bed.Mdev.Remove(second);
                    removeAgain = bed.Mdev.Remove(second);
                    parentListedDuring = bed.Mdev.Parents.Count != 0;
                }).Wait();
            }

            return Errno.None;
        };

        bed.Mdev.UnregisterDevice(bed.ParentA);

        Assert.Equal(Errno.ENODEV, createDuring);
        Assert.Equal(Errno.ENODEV, createByName); // the type directory still exists until the end
        Assert.Equal(Errno.ENODEV, removeDuring);
        Assert.Equal(Errno.EAGAIN, removeAgain); // 5.15: the failed remove already cleared "active"
        Assert.False(parentListedDuring);
        Assert.Equal(2, removes); // both children removed by the unregistration itself
        Assert.Empty(bed.Mdev.Devices);
        Assert.Empty(v.Live);
    }

    [Fact]
    public void Register_while_unregistration_is_in_progress_is_EEXIST()
    {
        using var bed = new MdevBed();
        FakeVendor v = bed.Register(bed.ParentA, "a");
        bed.Create(bed.ParentA, "fake-a");
        Errno during = Errno.None;
        v.OnRemove = _ =>
        {
            during = bed.Mdev.RegisterDevice(bed.ParentA, new FakeVendor("z"));
            return Errno.None;
        };
        bed.Mdev.UnregisterDevice(bed.ParentA);
        Assert.Equal(Errno.EEXIST, during);
        Assert.Null(bed.Mdev.FindParent(bed.ParentA));
    }

    [Fact]
    public async Task Concurrent_creates_and_removes_racing_with_unregister_leave_no_child_behind()
    {
        using var bed = new MdevBed();
        FakeVendor v = bed.Register(bed.ParentA, "a");
        MdevType type = bed.Mdev.FindParent(bed.ParentA)!.SupportedTypes[0];
        var results = new ConcurrentBag<Errno>();
        using var go = new ManualResetEventSlim();
        var workers = Enumerable.Range(0, 8).Select(_ => Task.Run(() =>
        {
            go.Wait();
            for (int i = 0; i < 200; i++)
            {
                Errno c = bed.Mdev.Create(type, Guid.NewGuid(), out MdevDevice? m);
                results.Add(c);
                if (m is not null && i % 2 == 0)
                {
                    results.Add(bed.Mdev.Remove(m));
                }
            }
        })).ToArray();

        go.Set();
        while (v.Calls.Count < 100)
        {
            Thread.Yield();
        }

        bed.Mdev.UnregisterDevice(bed.ParentA);
        await Task.WhenAll(workers);

        Assert.All(results, r => Assert.Contains(r, new[] { Errno.None, Errno.ENODEV }));
        Assert.Contains(Errno.None, results);
        Assert.Contains(Errno.ENODEV, results);
        Assert.Empty(bed.Mdev.Devices);
        Assert.Empty(bed.Mdev.Bus.Devices);
        Assert.Empty(v.Live);
        lock (v.Calls)
        {
            Assert.Equal(v.Calls.Count(c => c.StartsWith("create", StringComparison.Ordinal)), v.Calls.Count(c => c.StartsWith("remove", StringComparison.Ordinal)));
        }
    }
}
