using System.Diagnostics;
using Iommu;
using Iommu.Devices;
using Iommu.Mm;
using UacceAccel;
using static Uacce.Tests.TestKit;

namespace Uacce.Tests;

/// <summary>
/// Poll racing PUT_Q: the driver is never asked whether a queue was updated after it put that queue. Before, poll
/// checked the queue's state without the device's mutex and then called the driver, so a PUT_Q between the two had
/// the driver look at hardware it had released (the sample's driver hands that queue pair to the next opener, and the
/// zombie's poll cleared that opener's completion flag).
/// </summary>
public sealed class PollRaceTests
{
    private sealed class CheckingOps : IUacceOps
    {
        private readonly HashSet<UacceQueue> _put = [];

        public int AfterPut;

        public Errno GetQueue(UacceDevice uacce, uint pasid, UacceQueue queue) => Errno.None;

        public void PutQueue(UacceQueue queue)
        {
            lock (_put)
            {
                _put.Add(queue);
            }
        }

        public Errno StartQueue(UacceQueue queue) => Errno.None;

        public void StopQueue(UacceQueue queue)
        {
        }

        public bool IsQUpdated(UacceQueue queue)
        {
            Thread.SpinWait(200); // a driver reads its hardware first: a PUT_Q may land meanwhile
            lock (_put)
            {
                if (_put.Contains(queue))
                {
                    Interlocked.Increment(ref AfterPut);
                }
            }

            return false;
        }
    }

    [Fact]
    public void Poll_never_asks_the_driver_about_a_queue_it_has_put()
    {
        using AccelSystem sys = AccelSystem.Create();
        PciDevice dev = sys.Pci.AddDevice(new PciDeviceSpec("0000:00:06.0") { PasidWidth = 20, Acs = true });
        var ops = new CheckingOps();
        Assert.Equal(Errno.None, sys.Uacce.Alloc(dev, new UacceInterface("check", UacceDeviceFlags.None, ops), out UacceDevice? uacce));
        Assert.Equal(Errno.None, sys.Uacce.Register(uacce));
        using ProcessAddressSpace p = sys.NewProcess("p");

        var clock = Stopwatch.StartNew();
        int rounds = 0;
        while (clock.Elapsed < TimeSpan.FromSeconds(1.5) && Volatile.Read(ref ops.AfterPut) == 0)
        {
            Assert.Equal(Errno.None, sys.Uacce.Open(uacce!.Name, p, out int fd));
            UacceQueue q = Queue(p, fd);
            Assert.Equal(Errno.None, q.Ioctl(UacceCommands.StartQ, default));
            bool put = false;
            using var polling = new ManualResetEventSlim();
            var poller = new Thread(() =>
            {
                polling.Set();
                while (!Volatile.Read(ref put))
                {
                    q.Poll();
                }
            });
            poller.Start();
            Assert.True(polling.Wait(TimeSpan.FromSeconds(30)));
            Thread.SpinWait(rounds % 512);
            Assert.Equal(Errno.None, q.Ioctl(UacceCommands.PutQ, default));
            Volatile.Write(ref put, true);
            Assert.True(poller.Join(TimeSpan.FromSeconds(30)));
            Assert.Equal(Errno.None, p.Close(fd));
            rounds++;
        }

        Assert.True(ops.AfterPut == 0, $"the driver was asked about a put queue (round {rounds})");
    }
}
