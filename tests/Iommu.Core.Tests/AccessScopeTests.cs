using Iommu.Devices;
using Iommu.Memory;

namespace Iommu.Core.Tests;

/// <summary>Issue 14: the semantics of <see cref="PhysicalMemory.EnterAccess"/> and Dispose racing it.</summary>
public sealed class AccessScopeTests
{
    [Fact]
    public void Dispose_waits_for_a_scope_open_on_another_thread_and_the_memory_stays_usable_inside_it()
    {
        var mem = new PhysicalMemory(64 * Sizes.MiB);
        mem.WriteUInt64(0x1000, 0x1234);
        using var entered = new ManualResetEventSlim();
        using var leave = new ManualResetEventSlim();
        ulong readInside = 0;
        var holder = new Thread(() =>
        {
            using (mem.EnterAccess())
            {
                entered.Set();
                leave.Wait();
                using (mem.EnterAccess()) // a nested scope of a call in flight still opens
                {
                    readInside = mem.ReadUInt64(0x1000); // and the memory is intact until the scope ends
                }
            }
        });
        holder.Start();
        entered.Wait();

        var disposer = new Thread(mem.Dispose);
        disposer.Start();
        Assert.False(disposer.Join(200), "Dispose returned while another thread held an access scope");
        Assert.True(mem.IsDisposed);
        Assert.Throws<ObjectDisposedException>(() => mem.EnterAccess()); // this thread holds no scope: refused at once
        leave.Set();
        holder.Join();
        Assert.True(disposer.Join(10_000));
        Assert.Equal(0x1234UL, readInside);
        Assert.Throws<ObjectDisposedException>(() => mem.ReadUInt64(0x1000));
    }

    [Fact]
    public void A_scope_open_when_dispose_starts_keeps_the_native_memory_allocated()
    {
        using var platform = new Platform(new PlatformOptions { MemorySize = 1 * Sizes.GiB, TableMemorySize = 16 * Sizes.MiB });
        ContiguousRegion region = platform.Frames.Region;
        using var entered = new ManualResetEventSlim();
        using var leave = new ManualResetEventSlim();
        ulong seen = 0;
        var holder = new Thread(() =>
        {
            using (platform.Memory.EnterAccess())
            {
                ref ulong entry = ref region.Entry(region.Start); // a reference into the native block
                entry = 0xfeed;
                entered.Set();
                leave.Wait();
                seen = entry; // still valid after Dispose started: it has not freed the block yet
            }
        });
        holder.Start();
        entered.Wait();
        var disposer = new Thread(platform.Dispose);
        disposer.Start();
        Assert.False(disposer.Join(200));
        leave.Set();
        holder.Join();
        Assert.True(disposer.Join(10_000));
        Assert.Equal(0xfeedUL, seen);
        Assert.Throws<ObjectDisposedException>(() => region.Entry(region.Start));
    }

    [Fact]
    public void Dispose_from_inside_a_scope_on_the_same_thread_throws_instead_of_waiting_forever()
    {
        using var platform = new Platform(new PlatformOptions { MemorySize = 1 * Sizes.GiB, TableMemorySize = 16 * Sizes.MiB });
        PciBus pci = platform.AddPciBus();
        using (platform.Memory.EnterAccess())
        {
            Assert.Throws<InvalidOperationException>(platform.Dispose);
            Assert.Throws<InvalidOperationException>(platform.Memory.Dispose);
            Assert.False(platform.IsDisposed);
        }

        platform.Dispose();
        Assert.Throws<ObjectDisposedException>(() => pci.AddDevice(new PciDeviceSpec("0000:00:01.0")));
    }

    [Fact]
    public void Scopes_nest_and_scopes_of_two_memories_on_one_thread_are_independent()
    {
        var a = new PhysicalMemory(64 * Sizes.MiB);
        var b = new PhysicalMemory(64 * Sizes.MiB);
        using (a.EnterAccess())
        {
            using (a.EnterAccess())
            using (b.EnterAccess())
            {
            }

            b.Dispose(); // no scope of b is open any more: returns at once
            Assert.Throws<ObjectDisposedException>(() => b.EnterAccess());
            Assert.Throws<InvalidOperationException>(a.Dispose); // a's outer scope is still open on this thread
        }

        a.Dispose();
        Assert.True(a.IsDisposed);
    }
}
