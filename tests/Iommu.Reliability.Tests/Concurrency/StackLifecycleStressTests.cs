using System.Buffers.Binary;
using System.Collections.Concurrent;
using System.Diagnostics;
using System.Globalization;
using Iommu.Devices;
using Iommu.Domains;
using Iommu.Memory;
using Iommu.Mm;
using Iommu.Reliability.Tests.Infrastructure;
using Iommu.VtD.Driver;
using Iommu.VtD.Hardware;
using SiovAccel;
using Uacce;
using Vfio.Mdev;
using Vfio.Type1;
using Vfio.Type1.Uapi;
using Xunit.Abstractions;

namespace Iommu.Reliability.Tests.Concurrency;

/// <summary>
/// A randomised lifecycle stress over the whole stack. Each worker thread owns a guest (a process with a type1
/// container and mdevs of a Scalable-IOV parent it creates, joins, maps for, DMAs through and removes), a uacce
/// client (process, queue open, region mmap, START_Q, DMA with the queue's PASID, release, process exit), an SVA
/// client (bind, DMA at the process's addresses, munmap, process exit, unbind) and a hot-plug device (UNMANAGED
/// domain alloc, map, attach, PASID attach, detach, free, hot-remove and re-add on the PCI bus), and picks random
/// operations among them; any worker may also unregister and re-register the uacce parent and snoop with random
/// PASIDs and addresses others used. Every page any owner can map carries its owner's tag, and a global stamp
/// brackets each operation, so a DMA read that works must return the tag of an owner its requester (a RID, or a
/// RID and PASID) reached at some moment during the read. Checks: no call throws an exception its documentation
/// does not name, every thread finishes, no read breaks isolation, and after an ordered teardown table frames,
/// DIDs, PASIDs, host pages and locked_vm are back to their baseline (table frames less the PASID table pages that
/// PASIDs above 63 added to devices that stay present: 5.15 frees those only with the device's PASID table). A second case disposes the platform while the
/// workers still run: each call then ends with <see cref="ObjectDisposedException"/> at worst, and nothing hangs.
/// RELIABILITY_OPS scales both; STRESS_TRACE set prints progress and each worker's current operation while waiting.
/// </summary>
public sealed class StackLifecycleStressTests(ITestOutputHelper output)
{
    private const int Workers = 4;
    private const ulong Page = 4096;
    private const ulong BufPages = 8;
    private const ulong Magic = 0x7A6UL << 52;
    private const long Forever = long.MaxValue;
    private const int NoPasid = -1;
    private const string ParentBdf = "0000:00:04.0";
    private const string AccelBdf = "0000:00:05.0";
    private const string SvaBdf = "0000:00:06.0";

    [Fact]
    public void Random_lifecycle_operations_on_every_layer_keep_isolation_and_return_to_baseline()
    {
        long ops = Math.Max(ReliabilityBudget.Ops / 5, 400);
        ulong seed = ReliabilityBudget.Seed(0x5_7ACC);
        output.WriteLine($"seed {seed}, {ops} operations per worker");
        using var world = new World(seed);
        Baseline before = world.Measure();
        long tablesBefore = world.PasidTablePages();
        world.Run(ops, disposeAfter: null);
        world.Teardown();
        Baseline after = world.Measure();
        long tablesAfter = world.PasidTablePages();
        output.WriteLine($"PASID table pages {tablesBefore} -> {tablesAfter}");
        output.WriteLine(world.Summary());
        Assert.True(world.Errors.IsEmpty, string.Join("\n", world.Errors.Take(20)));
        output.WriteLine($"before {before}, after {after}");
        Assert.Equal(before, after with { Frames = after.Frames - (tablesAfter - tablesBefore) });
    }

    [Fact]
    public void Dispose_while_workers_run_every_layer_ends_each_call_cleanly()
    {
        ulong seed = ReliabilityBudget.Seed(0x5_7ACD);
        int rounds = (int)Math.Clamp(ReliabilityBudget.Ops / 20_000, 4, 100);
        var rng = new Random((int)seed);
        for (int round = 0; round < rounds; round++)
        {
            var world = new World(seed + (ulong)round);
            world.Run(long.MaxValue, disposeAfter: TimeSpan.FromMilliseconds(rng.Next(5, 150)));
            output.WriteLine($"round {round}: {world.Summary()}");
            Assert.True(world.Errors.IsEmpty, string.Join("\n", world.Errors.Take(20)));
        }
    }

    private readonly record struct Baseline(long Frames, int Dids, int Pasids, int HostPages, int MdevDevices, int Groups);

    private sealed record Reach(string Device, int Pasid, long Owner, long Start)
    {
        public long End { get; set; } = Forever;
    }

    private readonly record struct DmaRead(string Device, int Pasid, ulong Address, long Start, long End, ulong Word, string What);

    /// <summary>A process whose pages all carry its owner tag.</summary>
    private sealed class Proc
    {
        public Proc(HostPageAllocator pages, long owner)
        {
            Owner = owner;
            Mm = new ProcessAddressSpace(pages, $"p{owner}");
            Buf = Mm.Mmap(BufPages * Page);
            for (ulong i = 0; i < BufPages; i++)
            {
                Fill(i);
            }
        }

        public long Owner { get; }

        public ProcessAddressSpace Mm { get; }

        public ulong Buf { get; }

        public void Fill(ulong page)
        {
            var b = new byte[Page];
            for (int o = 0; o < b.Length; o += 8)
            {
                BinaryPrimitives.WriteUInt64LittleEndian(b.AsSpan(o), Tag(Owner));
            }

            Mm.Write(Buf + (page * Page), b).ThrowIfError();
        }
    }

    private static ulong Tag(long owner) => Magic | (ulong)owner;

    private sealed class Guest
    {
        public Proc? Proc { get; set; }

        public VfioContainer? Container { get; set; }

        public List<MdevDevice> Mdevs { get; } = [];

        public MdevDevice? Joined { get; set; }

        public VfioGroup? Group { get; set; }

        public VfioDeviceFile? File { get; set; }

        public Reach? Reach { get; set; }

        public uint Pasid { get; set; }

        public List<ulong> Iovas { get; } = [];
    }

    private sealed class UacceClient
    {
        public Proc? Proc { get; set; }

        public UacceQueue? Queue { get; set; }

        public int Fd { get; set; } = -1;

        public Reach? Reach { get; set; }
    }

    private sealed class SvaClient
    {
        public Proc? Proc { get; set; }

        public IommuSva? Handle { get; set; }

        public Reach? Reach { get; set; }

        public uint Pasid { get; set; }
    }

    private sealed class HotDev
    {
        public required string Bdf { get; init; }

        public PciDevice? Dev { get; set; }

        public IDomain? Domain { get; set; }

        public long Owner { get; set; }

        public List<ulong> Pfns { get; } = [];

        public Reach? RidReach { get; set; }

        public Reach? PasidReach { get; set; }

        public uint GlobalPasid { get; set; }
    }

    /// <summary>The uacce driver: one page per queue backs both regions.</summary>
    private sealed class QueueOps(HostPageAllocator pages) : IUacceOps, IUacceMmapOps
    {
        public Errno GetQueue(UacceDevice uacce, uint pasid, UacceQueue queue)
        {
            Errno e = pages.Allocate(1, 1, out ulong pfn);
            if (e == Errno.None)
            {
                queue.Private = pfn;
            }

            return e;
        }

        public void PutQueue(UacceQueue queue)
        {
            if (queue.Private is ulong pfn)
            {
                queue.Private = null;
                pages.Put(pfn);
            }
        }

        public Errno StartQueue(UacceQueue queue) => Errno.None;

        public void StopQueue(UacceQueue queue)
        {
        }

        public bool IsQUpdated(UacceQueue queue) => false;

        public Errno Mmap(UacceQueue queue, UacceVmArea vma)
        {
            if (queue.Private is not ulong pfn || vma.Length > Page)
            {
                return Errno.EINVAL;
            }

            vma.RemapPfnRange(pfn * Page);
            return Errno.None;
        }
    }

    private sealed class World : IDisposable
    {
        private readonly ulong _seed;
        private readonly PciBus _pci;
        private readonly IntelIommu _driver;
        private readonly PciDevice _parent;
        private readonly PciDevice _accel;
        private readonly PciDevice _svaDev;
        private readonly MdevCore _mdev;
        private readonly MdevType _type;
        private readonly VfioCore _vfio;
        private readonly UacceCore _uacce;
        private readonly HostPageAllocator _pages;
        private readonly QueueOps _queueOps;
        private readonly Lock _uacceLock = new();
        private readonly ConcurrentBag<Reach> _reaches = [];
        private readonly ConcurrentBag<List<DmaRead>> _reads = [];
        private readonly ConcurrentDictionary<string, long> _counts = new(StringComparer.Ordinal);
        private readonly string?[] _current = new string?[Workers];
        private readonly long[] _recent = new long[64]; // (pasid + 1) << 48 | address, for snooping
        private readonly Guest[] _guests = new Guest[Workers];
        private readonly UacceClient[] _uclients = new UacceClient[Workers];
        private readonly SvaClient[] _sclients = new SvaClient[Workers];
        private readonly HotDev[] _hot = new HotDev[Workers];
        private UacceDevice? _accelDev;
        private long _clock;
        private long _owners;
        private volatile bool _disposed;
        private readonly VtdUnit _unit;

        public World(ulong seed)
        {
            _seed = seed;
            Platform = new Platform(new PlatformOptions { MemorySize = 8 * Sizes.GiB, TableMemorySize = 64 * Sizes.MiB });
            _pci = Platform.AddPciBus();
            var unit = _unit = new VtdUnit(Platform.Memory, VtdConfig.ScalableModeFirstLevel48Bit with { DeviceTlb = true, PageRequests = true, PageRequestDrain = true });
            _pci.AddDmaRemapper(unit, includeAll: true);
            _driver = new IntelIommu(Platform, unit);
            _pci.SetIommuOps(_driver).ThrowIfError();
            _pages = HostPageAllocator.ForPlatform(Platform, 4 * Sizes.GiB, 256 * Sizes.MiB);

            _parent = _pci.AddDevice(new PciDeviceSpec(ParentBdf) { PasidWidth = 16, ScalableIov = true, Acs = true });
            _mdev = new MdevCore(Platform);
            _mdev.RegisterDevice(_parent, new SiovAccelDriver(Platform.Iommu, _parent, adiCount: 2 * Workers)).ThrowIfError();
            _type = _mdev.FindParent(_parent)!.FindType("siov_accel-wq")!;
            _vfio = new VfioCore(Platform, new VfioType1Options { AllowUnsafeInterrupts = true });

            _accel = _pci.AddDevice(new PciDeviceSpec(AccelBdf) { PasidWidth = 20, Ats = true, Pri = true, Acs = true });
            _uacce = new UacceCore(Platform);
            _queueOps = new QueueOps(_pages);
            _accelDev = NewAccel();

            _svaDev = _pci.AddDevice(new PciDeviceSpec(SvaBdf) { PasidWidth = 20, Ats = true, Pri = true, Acs = true });
            Platform.Iommu.DevEnableFeature(_svaDev, IommuDevFeature.Iopf).ThrowIfError();
            Platform.Iommu.DevEnableFeature(_svaDev, IommuDevFeature.Sva).ThrowIfError();

            for (int w = 0; w < Workers; w++)
            {
                _guests[w] = new Guest();
                _uclients[w] = new UacceClient();
                _sclients[w] = new SvaClient();
                _hot[w] = new HotDev { Bdf = string.Create(CultureInfo.InvariantCulture, $"0000:00:{8 + w:x2}.0") };
                _hot[w].Dev = AddHot(_hot[w].Bdf);
            }
        }

        public Platform Platform { get; }

        public ConcurrentQueue<string> Errors { get; } = new();

        public void Dispose()
        {
            if (!_disposed)
            {
                Platform.Dispose();
            }
        }

        public Baseline Measure() => new(
            Platform.Frames.LiveFrames,
            _driver.Units.Sum(u => u.DomainIdsInUse),
            _driver.PasidsInUse,
            _pages.AllocatedPages,
            _mdev.Devices.Count,
            Platform.Iommu.Groups.Count);

        // The PASID table pages hanging off every present PASID directory entry of bus 0's scalable context entries,
        // read from the tables the unit walks. The driver allocates one per 64 PASIDs on demand and frees them only
        // with the device's PASID table at release (5.15 intel_pasid_get_entry, intel_pasid_free_table).
        public long PasidTablePages()
        {
            PhysicalMemory m = Platform.Memory;
            ulong root = _unit.Read64(VtdRegister.Rtaddr) & VtdFormat.PointerMask;
            long pages = 0;
            for (int half = 0; half < 2; half++)
            {
                ulong rootHalf = m.ReadUInt64(root + ((ulong)half * 8));
                if ((rootHalf & 1) == 0)
                {
                    continue;
                }

                ulong table = rootHalf & VtdFormat.PointerMask;
                for (ulong i = 0; i < 128; i++)
                {
                    ulong lo = m.ReadUInt64(table + (i * VtdFormat.ScalableContextEntrySize));
                    if ((lo & 1) == 0)
                    {
                        continue;
                    }

                    ulong dir = lo & VtdFormat.PointerMask;
                    ulong entries = 1UL << (int)(((lo >> VtdFormat.ScalableContextPdtsShift) & 7) + 7);
                    for (ulong e = 0; e < entries; e++)
                    {
                        pages += (long)(m.ReadUInt64(dir + (e * 8)) & 1);
                    }
                }
            }

            return pages;
        }

        public string Summary() => string.Join(", ", _counts.OrderBy(kv => kv.Key, StringComparer.Ordinal).Select(kv => $"{kv.Key}: {kv.Value}"));

        /// <summary>Runs the workers for <paramref name="ops"/> operations each; with <paramref name="disposeAfter"/>, disposes the platform then while they run.</summary>
        public void Run(long ops, TimeSpan? disposeAfter)
        {
            using var go = new ManualResetEventSlim();
            var threads = new Thread[Workers];
            for (int w = 0; w < Workers; w++)
            {
                int id = w;
                threads[w] = new Thread(() => Worker(id, ops, go)) { IsBackground = true, Name = $"stress-{id}" };
                threads[w].Start();
            }

            go.Set();
            Trace($"run started, {ops} ops");
            if (disposeAfter is { } d)
            {
                Thread.Sleep(d);
                _disposed = true;
                Platform.Dispose();
            }

            var deadline = Stopwatch.StartNew();
            for (int w = 0; w < Workers; w++)
            {
                while (!threads[w].Join(TimeSpan.FromSeconds(5)))
                {
                    Trace($"waiting for worker {w}: {string.Join(" | ", _current.Select((c, i) => $"{i}: {c}"))}");
                    if (deadline.Elapsed > TimeSpan.FromSeconds(120))
                    {
                        Errors.Enqueue($"worker {w} did not finish (hang); last operations: {string.Join(" | ", _current.Select((c, i) => $"{i}: {c}"))}");
                        return;
                    }
                }
            }

            Trace("workers joined");
            if (disposeAfter is null)
            {
                CheckReads();
                Trace("reads checked");
            }
        }

        /// <summary>Undoes everything in order: guests leave and exit, clients release, domains are freed, removed devices come back.</summary>
        public void Teardown()
        {
            for (int w = 0; w < Workers; w++)
            {
                Guest g = _guests[w];
                LeaveGuest(g);
                foreach (MdevDevice m in g.Mdevs)
                {
                    Expect(_mdev.Remove(m), "teardown mdev remove");
                }

                g.Mdevs.Clear();
                CheckLockedVm(g);
                ExitGuest(g);
                CloseUacce(_uclients[w]);
                ExitProc(_uclients[w].Proc);
                _uclients[w].Proc = null;
                Unbind(_sclients[w]);
                ExitProc(_sclients[w].Proc);
                _sclients[w].Proc = null;
                HotDev h = _hot[w];
                DetachAll(h);
                FreeDomain(h);

                // Remove and re-add: the PASID table pages a global PASID above 63 added (allocated on demand,
                // freed with the table at release, as 5.15's intel_pasid_get_entry and intel_pasid_free_table do)
                // go, so the frame count can return to the baseline.
                if (h.Dev is not null)
                {
                    _pci.RemoveDevice(h.Dev);
                }

                h.Dev = AddHot(h.Bdf);
            }

            if (_accelDev is null)
            {
                _accelDev = NewAccel();
            }
        }

        private static void Expect(Errno e, string what)
        {
            if (e != Errno.None)
            {
                throw new InvalidOperationException($"{what}: {e} ({ErrorDetail.LastMessage})");
            }
        }

        private UacceDevice NewAccel()
        {
            _uacce.Alloc(_accel, new UacceInterface("accel", UacceDeviceFlags.Sva, _queueOps), out UacceDevice? dev).ThrowIfError();
            dev!.SetRegionPageCount(UacceQueueFileRegionType.Mmio, 1);
            dev.SetRegionPageCount(UacceQueueFileRegionType.Dus, 1);
            _uacce.Register(dev).ThrowIfError();
            return dev;
        }

        private PciDevice AddHot(string bdf) => _pci.AddDevice(new PciDeviceSpec(bdf) { PasidWidth = 20, Ats = true, Acs = true });

        private static void Trace(string what)
        {
            if (Environment.GetEnvironmentVariable("STRESS_TRACE") is not null)
            {
                Console.Error.WriteLine($"{DateTime.Now:HH:mm:ss.fff} {what}");
            }
        }

        private long Stamp() => Interlocked.Increment(ref _clock);

        private void Count(string what, Errno e) => _counts.AddOrUpdate($"{what} {e}", 1, (_, v) => v + 1);

        private void Count(string what) => _counts.AddOrUpdate(what, 1, (_, v) => v + 1);

        private Reach Open(string device, int pasid, long owner, long start)
        {
            var r = new Reach(device, pasid, owner, start);
            _reaches.Add(r);
            return r;
        }

        private void Close(Reach? r)
        {
            if (r is not null && r.End == Forever)
            {
                r.End = Stamp();
            }
        }

        private void Remember(uint? pasid, ulong address)
        {
            long v = ((long)(pasid is { } p ? p + 1 : 0) << 48) | (long)address;
            Volatile.Write(ref _recent[(int)(Stamp() & 63)], v);
        }

        private Proc NewProc() => new(_pages, Interlocked.Increment(ref _owners));

        private void Worker(int id, long ops, ManualResetEventSlim go)
        {
            var rng = new Random((int)_seed ^ (id * 7919));
            var reads = new List<DmaRead>();
            _reads.Add(reads);
            bool sawDisposed = false;
            go.Wait();
            for (long i = 0; i < ops && Errors.IsEmpty; i++)
            {
                int op = rng.Next(100);
                try
                {
                    Step(id, op, rng, reads);
                    if (sawDisposed && _disposed)
                    {
                        // An operation may still succeed without reaching the platform (bookkeeping only); not an error.
                        Count("ok after dispose");
                    }
                }
                catch (ObjectDisposedException) when (_disposed)
                {
                    sawDisposed = true;
                    Count("ObjectDisposedException");
                    if (rng.Next(8) == 0)
                    {
                        return;
                    }
                }
                catch (InvalidOperationException ex) when (_disposed && ex.Message.Contains("exited", StringComparison.Ordinal))
                {
                    Count("mm exited after dispose");
                }
                catch (Exception ex)
                {
                    Errors.Enqueue($"worker {id} op {op} ({_current[id]}): {ex}");
                    return;
                }

                if (sawDisposed && i > 50)
                {
                    return;
                }
            }
        }

        private static readonly string Skip = Environment.GetEnvironmentVariable("STRESS_SKIP") ?? string.Empty;

        private void Step(int id, int op, Random rng, List<DmaRead> reads)
        {
            string kind = op switch { < 30 => "guest", < 50 => "uacce", < 65 => "sva", < 90 => "hot", < 92 => "replace", _ => "snoop" };
            if (Skip.Contains(kind, StringComparison.Ordinal))
            {
                return;
            }

            switch (op)
            {
                case < 30:
                    GuestOp(id, _guests[id], rng, reads);
                    break;
                case < 50:
                    UacceOp(id, _uclients[id], rng, reads);
                    break;
                case < 65:
                    SvaOp(id, _sclients[id], rng, reads);
                    break;
                case < 90:
                    HotOp(id, _hot[id], rng, reads);
                    break;
                case < 92:
                    _current[id] = "uacce remove/register";
                    ReplaceAccel();
                    break;
                default:
                    Snoop(id, rng, reads);
                    break;
            }
        }

        private void Read(PciDevice dev, string bdf, uint? pasid, ulong address, bool ats, List<DmaRead> reads, string what)
        {
            Span<byte> b = stackalloc byte[8];
            long s = Stamp();
            DmaResult r;
            try
            {
                r = ats ? dev.AtsDmaRead(pasid, address, b) : dev.DmaRead(pasid, address, b);
            }
            catch (InvalidOperationException ex) when (dev.Bus is null && ex.Message.EndsWith("is on no bus.", StringComparison.Ordinal))
            {
                // DMA by a device another thread hot-removed: the documented InvalidOperationException.
                Count("dma by a removed device threw InvalidOperationException");
                return;
            }

            long e = Stamp();
            Count($"dma {(r.IsOk ? "ok" : "fault")}");
            if (r.IsOk)
            {
                reads.Add(new DmaRead(bdf, pasid is { } p ? (int)p : NoPasid, address, s, e, BinaryPrimitives.ReadUInt64LittleEndian(b), what));
            }
        }

        // ---- VFIO guest: mdev create/remove, group open/close, container set/unset, MAP/UNMAP_DMA, ADI DMA, exit.
        private void GuestOp(int id, Guest g, Random rng, List<DmaRead> reads)
        {
            if (g.Proc is null)
            {
                _current[id] = "guest new process";
                g.Proc = NewProc();
                g.Container = _vfio.OpenContainer(g.Proc.Mm, out _);
                return;
            }

            switch (rng.Next(9))
            {
                case 0 when g.Mdevs.Count < 2:
                {
                    _current[id] = "mdev create";
                    Errno e = _mdev.Create(_type, Guid.NewGuid(), out MdevDevice? m);
                    Count("mdev create", e);
                    if (e == Errno.None)
                    {
                        Expect(_vfio.RegisterDevice(m!), "vfio register");
                        g.Mdevs.Add(m!);
                    }

                    break;
                }

                case 1 when g.Mdevs.Exists(x => x != g.Joined):
                {
                    // Not the one whose device fd this thread holds: removing it would wait for that fd to be
                    // closed (vfio_unregister_group_dev), which only this thread could do.
                    MdevDevice m = g.Mdevs.Find(x => x != g.Joined)!;
                    _current[id] = "mdev remove";
                    Errno e = _mdev.Remove(m);
                    Count("mdev remove", e);
                    if (e == Errno.None)
                    {
                        g.Mdevs.Remove(m);
                        if (g.Joined == m)
                        {
                            Errors.Enqueue("an mdev with an open device fd was removed");
                        }
                    }

                    break;
                }

                case 2 when g.Joined is null && g.Mdevs.Count > 0:
                {
                    MdevDevice m = g.Mdevs[rng.Next(g.Mdevs.Count)];
                    _current[id] = "guest join";
                    long s = Stamp();
                    Errno e = _vfio.OpenGroup(g.Proc.Mm, m.IommuGroup!.Id, out VfioGroup? group, out _);
                    Count("group open", e);
                    if (e != Errno.None)
                    {
                        break;
                    }

                    e = group!.SetContainer(g.Container!);
                    Count("set container", e);
                    if (e == Errno.None && g.Container!.Backend is null)
                    {
                        e = g.Container.SetIommu(VfioUapi.VFIO_TYPE1v2_IOMMU);
                        Count("set iommu", e);
                    }

                    VfioDeviceFile? file = null;
                    if (e == Errno.None)
                    {
                        e = group.GetDeviceFd(g.Proc.Mm, m.Name, out file, out _);
                        Count("get device fd", e);
                    }

                    if (e != Errno.None)
                    {
                        group.UnsetContainer();
                        group.Close();
                        break;
                    }

                    int pasid = m.GetIommuDomain() is { } d ? Platform.Iommu.AuxGetPasid(d, _parent) : -1;
                    if (pasid <= 0)
                    {
                        Errors.Enqueue($"joined mdev has no aux PASID ({pasid})");
                        break;
                    }

                    g.Joined = m;
                    g.Group = group;
                    g.File = file;
                    g.Pasid = (uint)pasid;
                    g.Reach = Open(ParentBdf, pasid, g.Proc.Owner, s);
                    break;
                }

                case 3:
                    _current[id] = "guest leave";
                    LeaveGuest(g);
                    break;
                case 4 when g.Container!.Backend is not null:
                {
                    ulong page = (ulong)rng.Next((int)BufPages);
                    ulong iova = 0x10_0000 + ((ulong)rng.Next(16) * Page);
                    _current[id] = "MAP_DMA";
                    Errno e = g.Container.MapDma(new VfioIommuType1DmaMap(32, VfioUapi.VFIO_DMA_MAP_FLAG_READ | VfioUapi.VFIO_DMA_MAP_FLAG_WRITE, g.Proc.Buf + (page * Page), iova, Page));
                    Count("map dma", e);
                    if (e == Errno.None)
                    {
                        g.Iovas.Add(iova);
                    }

                    break;
                }

                case 5 when g.Iovas.Count > 0:
                {
                    ulong iova = g.Iovas[rng.Next(g.Iovas.Count)];
                    var unmap = new VfioIommuType1DmaUnmap(24, 0, iova, Page);
                    _current[id] = "UNMAP_DMA";
                    Errno e = g.Container!.UnmapDma(ref unmap);
                    Count("unmap dma", e);
                    g.Iovas.Remove(iova);
                    break;
                }

                case 6:
                case 7:
                {
                    uint pasid = g.Joined is not null ? g.Pasid : (uint)rng.Next(1, 40);
                    ulong iova = g.Iovas.Count > 0 && rng.Next(4) != 0 ? g.Iovas[rng.Next(g.Iovas.Count)] : 0x10_0000 + ((ulong)rng.Next(16) * Page);
                    _current[id] = "ADI DMA";
                    Remember(pasid, iova);
                    Read(_parent, ParentBdf, pasid, iova, ats: false, reads, "adi");
                    break;
                }

                case 8 when rng.Next(3) == 0:
                    // The process exits with whatever it holds: exit closes every fd (device, group, container).
                    _current[id] = "guest exit";
                    ExitGuest(g);
                    break;
                default:
                    break;
            }
        }

        private void LeaveGuest(Guest g)
        {
            if (g.Joined is null)
            {
                return;
            }

            Errno e = g.File!.Close();
            Count("device close", e);
            e = g.Group!.UnsetContainer();
            Count("unset container", e);
            e = g.Group.Close();
            Count("group close", e);
            Close(g.Reach);
            g.Joined = null;
            g.Group = null;
            g.File = null;
            g.Reach = null;
            if (g.Container!.Backend is null)
            {
                g.Iovas.Clear();
            }
        }

        private void CheckLockedVm(Guest g)
        {
            if (g.Proc is not null && g.Container!.Backend is null && g.Proc.Mm.LockedVm != 0)
            {
                Errors.Enqueue($"guest p{g.Proc.Owner}: locked_vm {g.Proc.Mm.LockedVm} with no backend left");
            }
        }

        private void ExitGuest(Guest g)
        {
            if (g.Proc is null)
            {
                return;
            }

            g.Proc.Mm.Exit();
            Close(g.Reach);
            g.Joined = null;
            g.Group = null;
            g.File = null;
            g.Reach = null;
            g.Iovas.Clear();
            g.Proc = null;
            g.Container = null;
            Count("guest exit");
        }

        // ---- uacce: open, mmap, START_Q, DMA with the queue's PASID, release, process exit, munmap.
        private void UacceOp(int id, UacceClient c, Random rng, List<DmaRead> reads)
        {
            if (c.Proc is null)
            {
                _current[id] = "uacce new process";
                c.Proc = NewProc();
                return;
            }

            switch (rng.Next(7))
            {
                case 0 when c.Queue is null:
                {
                    UacceDevice? dev = Volatile.Read(ref _accelDev);
                    if (dev is null)
                    {
                        break;
                    }

                    _current[id] = "uacce open";
                    long s = Stamp();
                    Errno e = _uacce.Open(dev, c.Proc.Mm, out int fd);
                    Count("uacce open", e);
                    if (e == Errno.None)
                    {
                        c.Fd = fd;
                        c.Queue = (UacceQueue)c.Proc.Mm.GetFile(fd)!;
                        c.Reach = Open(AccelBdf, (int)c.Queue.Pasid, c.Proc.Owner, s);
                    }

                    break;
                }

                case 1 when c.Queue is not null:
                {
                    _current[id] = "uacce mmap";
                    Errno e = c.Queue.Mmap(c.Proc.Mm, (ulong)(rng.Next(2) == 0 ? UacceQueueFileRegionType.Mmio : UacceQueueFileRegionType.Dus), Page, out _);
                    Count("uacce mmap", e);
                    break;
                }

                case 2 when c.Queue is not null:
                    _current[id] = "uacce start/put";
                    Count("uacce ioctl", c.Queue.Ioctl(rng.Next(3) == 0 ? UacceCommands.PutQ : UacceCommands.StartQ, default));
                    break;
                case 3:
                case 4:
                {
                    uint pasid = c.Queue?.Pasid ?? (uint)rng.Next(1, 40);
                    ulong va = c.Proc.Buf + ((ulong)rng.Next((int)BufPages) * Page) + ((ulong)rng.Next(512) * 8);
                    _current[id] = "uacce DMA";
                    Remember(pasid, va);
                    Read(_accel, AccelBdf, pasid, va, ats: rng.Next(2) == 0, reads, "uacce");
                    break;
                }

                case 5:
                    _current[id] = "uacce release";
                    CloseUacce(c);
                    break;
                default:
                    if (rng.Next(2) == 0)
                    {
                        // munmap a page and map a fresh one at once: the freed page goes to another owner.
                        _current[id] = "uacce munmap";
                        ulong page = (ulong)rng.Next((int)BufPages);
                        c.Proc.Mm.Munmap(c.Proc.Buf + (page * Page), Page);
                        Count("munmap");
                    }
                    else
                    {
                        _current[id] = "uacce process exit";
                        c.Proc.Mm.Exit(); // closes the queue fd: release unbinds
                        Close(c.Reach);
                        c.Reach = null;
                        c.Queue = null;
                        c.Proc = null;
                        Count("uacce process exit");
                    }

                    break;
            }
        }

        private void CloseUacce(UacceClient c)
        {
            if (c.Queue is null)
            {
                return;
            }

            Count("uacce close", c.Proc!.Mm.Close(c.Fd));
            Close(c.Reach);
            c.Reach = null;
            c.Queue = null;
        }

        private void ReplaceAccel()
        {
            lock (_uacceLock)
            {
                UacceDevice? dev = Volatile.Read(ref _accelDev);
                Volatile.Write(ref _accelDev, null);
                _uacce.Remove(dev);

                // Every queue of the removed device lost its bind: their reaches end here.
                foreach (Reach r in _reaches)
                {
                    if (r.Device == AccelBdf)
                    {
                        Close(r);
                    }
                }

                Count("uacce remove");
                Volatile.Write(ref _accelDev, NewAccel());
            }
        }

        // ---- SVA: bind, DMA at the process's addresses, munmap, process exit while bound, unbind.
        private void SvaOp(int id, SvaClient c, Random rng, List<DmaRead> reads)
        {
            if (c.Proc is null)
            {
                if (c.Handle is not null)
                {
                    Unbind(c);
                }

                _current[id] = "sva new process";
                c.Proc = NewProc();
                return;
            }

            switch (rng.Next(6))
            {
                case 0 when c.Handle is null && !c.Proc.Mm.Exited:
                {
                    _current[id] = "sva bind";
                    long s = Stamp();
                    Errno e = Platform.Iommu.SvaBindDevice(_svaDev, c.Proc.Mm, null, out IommuSva? h);
                    Count("sva bind", e);
                    if (e == Errno.None)
                    {
                        c.Handle = h;
                        c.Pasid = Platform.Iommu.SvaGetPasid(h!);
                        c.Reach = Open(SvaBdf, (int)c.Pasid, c.Proc.Owner, s);
                    }

                    break;
                }

                case 1:
                case 2:
                {
                    uint pasid = c.Handle is not null ? c.Pasid : (uint)rng.Next(1, 40);
                    ulong va = c.Proc.Buf + ((ulong)rng.Next((int)BufPages) * Page);
                    _current[id] = "sva DMA";
                    Remember(pasid, va);
                    Read(_svaDev, SvaBdf, pasid, va, ats: rng.Next(2) == 0, reads, "sva");
                    break;
                }

                case 3 when !c.Proc.Mm.Exited:
                {
                    _current[id] = "sva munmap";
                    ulong page = (ulong)rng.Next((int)BufPages);
                    c.Proc.Mm.Munmap(c.Proc.Buf + (page * Page), Page);
                    Count("munmap");
                    break;
                }

                case 4:
                    _current[id] = "sva unbind";
                    Unbind(c);
                    break;
                default:
                    _current[id] = "sva process exit";
                    c.Proc.Mm.Exit(); // still bound: the bind stays until unbind, the PASID entry is torn down
                    Count("sva process exit");
                    if (rng.Next(2) == 0)
                    {
                        Unbind(c);
                        c.Proc = null;
                    }

                    break;
            }
        }

        private void Unbind(SvaClient c)
        {
            if (c.Handle is null)
            {
                return;
            }

            Platform.Iommu.SvaUnbindDevice(c.Handle);
            Close(c.Reach);
            c.Reach = null;
            c.Handle = null;
        }

        // ---- core: domain alloc/free, map, attach/detach, PASID attach/detach, hot-remove/re-add.
        private void HotOp(int id, HotDev h, Random rng, List<DmaRead> reads)
        {
            IommuCore iommu = Platform.Iommu;
            switch (rng.Next(10))
            {
                case 0 when h.Domain is null:
                {
                    _current[id] = "domain alloc";
                    h.Domain = iommu.DomainAlloc(_pci);
                    Count(h.Domain is null ? "domain alloc null" : "domain alloc");
                    if (h.Domain is null)
                    {
                        break;
                    }

                    h.Owner = Interlocked.Increment(ref _owners);
                    for (int i = 0; i < 4; i++)
                    {
                        Expect(_pages.Allocate(1, 1, out ulong pfn), "page alloc");
                        var b = new byte[Page];
                        for (int o = 0; o < b.Length; o += 8)
                        {
                            BinaryPrimitives.WriteUInt64LittleEndian(b.AsSpan(o), Tag(h.Owner));
                        }

                        Platform.Memory.Write(pfn * Page, b);
                        h.Pfns.Add(pfn);
                    }

                    break;
                }

                case 1 when h.Domain is not null:
                {
                    int i = rng.Next(h.Pfns.Count);
                    _current[id] = "iommu map";
                    Count("iommu map", iommu.Map(h.Domain, 0x20_0000 + ((ulong)i * Page), h.Pfns[i] * Page, Page, IommuProt.Read | IommuProt.Write));
                    break;
                }

                case 2 when h.Domain is not null:
                    _current[id] = "iommu unmap";
                    Count($"iommu unmap {(iommu.Unmap(h.Domain, 0x20_0000 + ((ulong)rng.Next(4) * Page), Page) == 0 ? "none" : "page")}");
                    break;
                case 3 when h.Domain is not null && h.Dev is not null && h.RidReach is null && h.PasidReach is null:
                {
                    _current[id] = "attach device";
                    long s = Stamp();
                    Errno e = iommu.AttachDevice(h.Domain, h.Dev);
                    Count("attach device", e);
                    if (e == Errno.None)
                    {
                        h.RidReach = Open(h.Bdf, NoPasid, h.Owner, s);
                    }

                    break;
                }

                case 4 when h.Domain is not null && h.Dev is not null && h.PasidReach is null && h.RidReach is null:
                {
                    _current[id] = "attach device pasid";
                    if (h.GlobalPasid == 0)
                    {
                        h.GlobalPasid = iommu.AllocGlobalPasid(h.Dev);
                        if (h.GlobalPasid == IommuCore.PasidInvalid)
                        {
                            h.GlobalPasid = 0;
                            Count("global pasid alloc failed");
                            break;
                        }
                    }

                    long s = Stamp();
                    Errno e = iommu.AttachDevicePasid(h.Domain, h.Dev, h.GlobalPasid);
                    Count("attach device pasid", e);
                    if (e == Errno.None)
                    {
                        h.PasidReach = Open(h.Bdf, (int)h.GlobalPasid, h.Owner, s);
                    }

                    break;
                }

                case 5:
                    _current[id] = "detach";
                    DetachAll(h);
                    break;
                case 6 when h.Domain is not null && h.RidReach is null && h.PasidReach is null:
                    _current[id] = "domain free";
                    FreeDomain(h);
                    break;
                case 7 when rng.Next(3) == 0:
                    if (h.Dev is not null)
                    {
                        // Hot-remove with whatever is attached: device_del releases it from its group.
                        _current[id] = "hot remove";
                        _pci.RemoveDevice(h.Dev);
                        Close(h.RidReach);
                        Close(h.PasidReach);
                        h.RidReach = null;
                        h.PasidReach = null;
                        h.Dev = null;
                        Count("hot remove");
                    }
                    else
                    {
                        _current[id] = "hot add";
                        h.Dev = AddHot(h.Bdf);
                        Count("hot add");
                    }

                    break;
                default:
                    if (h.Dev is not null)
                    {
                        ulong iova = 0x20_0000 + ((ulong)rng.Next(4) * Page) + ((ulong)rng.Next(512) * 8);
                        uint? pasid = h.PasidReach is not null && rng.Next(2) == 0 ? h.GlobalPasid : null;
                        _current[id] = "core DMA";
                        Remember(pasid, iova);
                        Read(h.Dev, h.Bdf, pasid, iova, ats: rng.Next(2) == 0, reads, "core");
                    }

                    break;
            }
        }

        private void DetachAll(HotDev h)
        {
            if (h.Domain is null || h.Dev is null)
            {
                return;
            }

            if (h.RidReach is not null)
            {
                Platform.Iommu.DetachDevice(h.Domain, h.Dev);
                Close(h.RidReach);
                h.RidReach = null;
            }

            if (h.PasidReach is not null)
            {
                Platform.Iommu.DetachDevicePasid(h.Domain, h.Dev, h.GlobalPasid);
                Close(h.PasidReach);
                h.PasidReach = null;
            }
        }

        private void FreeDomain(HotDev h)
        {
            if (h.GlobalPasid != 0)
            {
                Platform.Iommu.FreeGlobalPasid(h.GlobalPasid);
                h.GlobalPasid = 0;
            }

            if (h.Domain is null)
            {
                return;
            }

            Platform.Iommu.DomainFree(h.Domain);
            h.Domain = null;
            foreach (ulong pfn in h.Pfns)
            {
                _pages.Put(pfn);
            }

            h.Pfns.Clear();
        }

        private void Snoop(int id, Random rng, List<DmaRead> reads)
        {
            long v = Volatile.Read(ref _recent[rng.Next(_recent.Length)]);
            uint? pasid = (v >> 48) is > 0 and var p ? (uint)(p - 1) : null;
            ulong address = (ulong)v & ((1UL << 48) - 1);
            int which = rng.Next(3 + Workers);
            (PciDevice? dev, string bdf) = which switch
            {
                0 => (_parent, ParentBdf),
                1 => (_accel, AccelBdf),
                2 => (_svaDev, SvaBdf),
                _ => (_hot[which - 3].Dev, _hot[which - 3].Bdf),
            };
            if (dev is null)
            {
                return;
            }

            _current[id] = "snoop";
            Read(dev, bdf, pasid, address, ats: rng.Next(2) == 0, reads, "snoop");
        }

        private static void ExitProc(Proc? p) => p?.Mm.Exit();

        /// <summary>Every read that worked returned the tag of an owner its requester reached during the read.</summary>
        private void CheckReads()
        {
            var byRequester = _reaches.GroupBy(r => (r.Device, r.Pasid)).ToDictionary(g => g.Key, g => g.ToList());
            long checkedReads = 0;
            foreach (DmaRead r in _reads.SelectMany(l => l))
            {
                checkedReads++;
                string what = string.Create(CultureInfo.InvariantCulture, $"{r.What} read {r.Device} PASID {r.Pasid} at 0x{r.Address:x} in [{r.Start}, {r.End}] returned 0x{r.Word:x}");
                if ((r.Word & ~((1UL << 52) - 1)) != Magic)
                {
                    Errors.Enqueue($"{what}: not a page any owner mapped");
                    continue;
                }

                long owner = (long)(r.Word & ((1UL << 52) - 1));
                if (!byRequester.TryGetValue((r.Device, r.Pasid), out List<Reach>? list) || !list.Exists(x => x.Owner == owner && x.Start < r.End && x.End > r.Start))
                {
                    Errors.Enqueue($"{what}: owner {owner} was not reachable by that requester during the read");
                }
            }

            Count("reads checked", Errno.None);
            _counts["reads checked None"] = checkedReads;
        }
    }
}
