using System.Diagnostics;
using Iommu.VtD.Tests.Hardware.Infrastructure;

namespace Iommu.VtD.Tests.Hardware;

/// <summary>
/// Which thread an interrupt message fires on (docs/embedding-vtd.md, "Interrupts and threads"): the thread whose call
/// raised it. Software writes registers inside its own locks (the driver rings the invalidation queue's doorbell under
/// its queue lock), so a register write that raised nothing must never send an event another thread's call raised:
/// before, the unit kept a raised event in a unit-wide flag and the next thread through a register write sent it,
/// running the page request handler inside whatever that thread held.
/// </summary>
public sealed class EventThreadTests
{
    [Fact]
    public void A_register_write_that_raises_nothing_never_sends_a_page_request_event_a_device_raised()
    {
        using var rig = new AtsRig();
        rig.Unmask();
        int writer = 0, onWriter = 0, events = 0;
        rig.Unit.PageRequestEvent += (_, _) =>
        {
            if (Environment.CurrentManagedThreadId == Volatile.Read(ref writer))
            {
                Interlocked.Increment(ref onWriter);
            }

            // Consume the queue and clear PPR, so the device's next request raises the event again.
            Interlocked.Increment(ref events);
            rig.Pqh = rig.Pqt;
            rig.Unit.Write32(0xDC, 1);
        };

        bool stop = false;
        var device = new Thread(() =>
        {
            for (ulong i = 0; !Volatile.Read(ref stop); i++)
            {
                rig.Unit.PageRequest(rig.Dev, new Devices.PageRequestMessage(0x2A, (i & 0xFF) << 12, true, false, false, false, 1, LastInGroup: true));
            }
        });
        var writes = new Thread(() =>
        {
            Volatile.Write(ref writer, Environment.CurrentManagedThreadId);
            while (!Volatile.Read(ref stop))
            {
                rig.Unit.Write32(0x3C, 0x4021); // FEDATA: raises nothing
            }
        });

        device.Start();
        writes.Start();
        var clock = Stopwatch.StartNew();
        while (clock.Elapsed < TimeSpan.FromSeconds(1.5) && Volatile.Read(ref onWriter) == 0)
        {
            Thread.Sleep(10);
        }

        Volatile.Write(ref stop, true);
        Assert.True(device.Join(TimeSpan.FromSeconds(30)) && writes.Join(TimeSpan.FromSeconds(30)));
        Assert.Equal(0, onWriter);
        Assert.True(events > 100, $"only {events} page request events: the test exercised nothing");
    }

    [Fact]
    public void A_register_write_that_raises_an_event_sends_it_on_its_own_thread()
    {
        using var rig = new AtsRig();
        rig.Unit.Write32(0xE0, 0x8000_0000); // masked: the request sets IP, no message
        int fired = 0;
        rig.Unit.PageRequestEvent += (_, _) => fired = Environment.CurrentManagedThreadId;
        Assert.True(rig.Request(0x2A, 0x1000, last: true));
        Assert.Equal(0, fired);

        rig.Unmask(); // clearing IM with IP set sends the message: this thread's write raised it
        Assert.Equal(Environment.CurrentManagedThreadId, fired);
    }
}
