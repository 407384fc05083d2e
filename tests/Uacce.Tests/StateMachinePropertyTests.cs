using CsCheck;
using Iommu;
using Iommu.Mm;
using UacceAccel;
using static Uacce.Tests.TestKit;

namespace Uacce.Tests;

/// <summary>
/// §4 invariant 15 over random sequences of open/START_Q/PUT_Q/mmap/munmap/poll/close/remove from two processes,
/// against a plain model of the 5.15 state machine: every errno as predicted; INIT →(START_Q)→ STARTED →(PUT_Q,
/// release, remove)→ ZOMBIE and nothing leaves ZOMBIE; at most one mapping per region type per queue; every queue holds
/// exactly one SVA bind of its opener until PUT+release or remove, and the opener's PASID reaches its pages exactly
/// while one of its queues holds a bind. Also the raw ioctl entry point under random commands and bytes.
/// </summary>
public sealed class StateMachinePropertyTests
{
    private const int HwQueues = 3;

    private sealed class FileModel(int proc, int fd, UacceQueue q)
    {
        public int Proc { get; } = proc;

        public int Fd { get; } = fd;

        public UacceQueue Q { get; } = q;

        public UacceQueueState State { get; set; } = UacceQueueState.Init;

        public bool[] Mapped { get; } = new bool[2];

        public ulong[] Va { get; } = new ulong[2];

        public bool Released { get; set; }
    }

    [Fact]
    public void Property_the_queue_state_machine_matches_the_model()
    {
        Gen.Select(Gen.Int[0, 9], Gen.Int[0, 1], Gen.Int[0, 7], Gen.Int[0, 2]).Array[1, 40].Sample(ops =>
        {
            using AccelSystem sys = AccelSystem.Create(queues: HwQueues);
            ProcessAddressSpace[] mm = [sys.NewProcess("p0"), sys.NewProcess("p1")];
            ulong[] data = new ulong[2];
            for (int p = 0; p < 2; p++)
            {
                data[p] = mm[p].Mmap(Page);
                Assert.Equal(Errno.None, mm[p].Write(data[p], [(byte)(p + 1)]));
            }

            var files = new List<FileModel>();
            var lastPasid = new uint?[2];
            bool removed = false;
            foreach ((int op, int p, int i, int pg) in ops)
            {
                List<FileModel> live = files.Where(f => !f.Released).ToList();
                FileModel? f = live.Count == 0 ? null : live[i % live.Count];
                switch (op)
                {
                    case 0 or 1:
                    {
                        int busy = live.Count(x => x.State != UacceQueueState.Zombie);
                        Errno want = removed ? Errno.ENODEV : busy >= HwQueues ? Errno.EBUSY : Errno.None;
                        Errno got = sys.Uacce.Open(sys.Accel.Name, mm[p], out int fd);
                        Assert.Equal(want, got);
                        if (got == Errno.None)
                        {
                            UacceQueue q = Queue(mm[p], fd);
                            files.Add(new FileModel(p, fd, q));
                            lastPasid[p] = q.Pasid;
                        }

                        break;
                    }

                    case 2 when f is not null:
                    {
                        Errno want = f.State switch
                        {
                            UacceQueueState.Zombie => Errno.ENXIO,
                            UacceQueueState.Started => Errno.EINVAL,
                            _ => Errno.None,
                        };
                        Assert.Equal(want, f.Q.Ioctl(UacceCommands.StartQ, default));
                        f.State = want == Errno.None ? UacceQueueState.Started : f.State;
                        break;
                    }

                    case 3 when f is not null:
                        Assert.Equal(f.State == UacceQueueState.Zombie ? Errno.ENXIO : Errno.None, f.Q.Ioctl(UacceCommands.PutQ, default));
                        f.State = UacceQueueState.Zombie;
                        break;
                    case 4 when f is not null:
                    {
                        // The caller may be either process holding the fd; here the opener.
                        Errno want = pg >= 2 ? Errno.EINVAL : f.State == UacceQueueState.Zombie ? Errno.ENXIO : f.Mapped[pg] ? Errno.EEXIST : Errno.None;
                        Assert.Equal(want, f.Q.Mmap(mm[f.Proc], (ulong)pg, Page, out ulong va));
                        if (want == Errno.None)
                        {
                            f.Mapped[pg] = true;
                            f.Va[pg] = va;
                        }

                        break;
                    }

                    case 5 when f is not null && pg < 2 && f.Va[pg] != 0:
                        mm[f.Proc].Munmap(f.Va[pg], Page);
                        f.Va[pg] = 0;
                        break;
                    case 6 when f is not null:
                    {
                        int ev = f.Q.Poll();
                        Assert.True(f.State == UacceQueueState.Zombie ? ev == 0 : ev is 0 or (UacceCommands.PollIn | UacceCommands.PollRdNorm));
                        break;
                    }

                    case 7 or 8 when f is not null:
                        Assert.Equal(Errno.None, mm[f.Proc].Close(f.Fd));
                        f.Released = true;
                        f.State = UacceQueueState.Zombie;
                        break;
                    case 9 when i == 0:
                        sys.Uacce.Remove(sys.Accel);
                        removed = true;
                        foreach (FileModel x in live)
                        {
                            x.State = UacceQueueState.Zombie;
                        }

                        break;
                }

                // Invariants after every step.
                Assert.Equal(files.Count(x => !x.Released), sys.Accel.Queues.Count);
                foreach (FileModel x in files)
                {
                    Assert.Equal(x.State, x.Q.State);
                    Assert.Equal(x.Released, x.Q.Released);
                    Assert.Equal(!x.Released && !removed, x.Q.Handle is not null);
                    Assert.Equal(x.Mapped.Count(m => m), x.Q.Regions.Count(r => r is not null));
                }

                int held = files.Count(x => !x.Released && x.State != UacceQueueState.Zombie);
                Assert.Equal(HwQueues - held, sys.Engine.Queues.Count(h => !h.Assigned));
                for (int k = 0; k < 2; k++)
                {
                    FileModel? bound = files.FirstOrDefault(x => x.Proc == k && x.Q.Handle is not null);
                    if (bound is not null)
                    {
                        Assert.True(DmaReaches(sys.Device, bound.Q.Pasid, data[k]));
                    }
                    else if (lastPasid[k] is uint old && !files.Any(x => x.Proc != k && x.Q.Handle is not null && x.Q.Pasid == old))
                    {
                        Assert.False(DmaReaches(sys.Device, old, data[k]));
                    }
                }
            }

            foreach (ProcessAddressSpace m in mm)
            {
                m.Dispose();
            }

            Assert.Empty(sys.Accel.Queues);
        });
    }

    [Fact]
    public void Property_raw_ioctl_bytes_never_throw_and_return_only_documented_errnos()
    {
        Gen<uint> cmd = Gen.Frequency((3, Gen.Const(UacceCommands.StartQ)), (3, Gen.Const(UacceCommands.PutQ)), (1, Gen.UInt), (1, Gen.UInt[0x5700, 0x57FF]));
        Gen.Select(cmd, Gen.Byte.Array[0, 64]).Array[1, 12].Sample(calls =>
        {
            using AccelSystem sys = AccelSystem.Create(queues: 1);
            using ProcessAddressSpace a = sys.NewProcess("a");
            (UacceQueue q, _) = OpenQueue(sys, a);
            foreach ((uint c, byte[] arg) in calls)
            {
                UacceQueueState before = q.State;
                Errno e = q.Ioctl(c, arg);
                Assert.Contains(e, new[] { Errno.None, Errno.EINVAL, Errno.ENXIO });
                Assert.Equal(before == UacceQueueState.Zombie, e == Errno.ENXIO);
                Assert.True(e == Errno.None || q.State == before, "a failed ioctl changed the state");
            }
        }, iter: 200);
    }
}
