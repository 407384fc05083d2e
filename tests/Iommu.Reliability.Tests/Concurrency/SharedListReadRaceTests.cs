using System.Collections.Concurrent;
using System.Diagnostics;
using System.Reflection;
using Iommu.Devices;
using Iommu.Domains;
using Iommu.Groups;
using Iommu.Mm;
using Iommu.VtD.Driver;
using Iommu.VtD.Hardware;
using Iommu.Reliability.Tests.Infrastructure;
using Xunit.Abstractions;

namespace Iommu.Reliability.Tests.Concurrency;

/// <summary>
/// The class of the unmap/attach defect (a device list walked without the lock its writers hold):
/// a table shared across groups or domains, read on one path while another thread's path changes it
/// under its lock. Before the fixes, <c>iommu_sva_bind_device</c> looked the mm's PASID up in the
/// core's mm → PASID table after releasing that table's lock, while binds and unbinds of other groups
/// (other group mutexes) added and removed entries (KeyNotFoundException, a leaked PASID reference);
/// and an attach walked a nest parent's list of nested domains under the device-domain lock while
/// nested domains were allocated and freed under the list's own lock (NullReferenceException, or an
/// attached child skipped). Each property runs for a time budget (RELIABILITY_OPS scales it).
/// </summary>
public sealed class SharedListReadRaceTests(ITestOutputHelper output)
{
    private static readonly TimeSpan Budget = TimeSpan.FromSeconds(Math.Clamp(ReliabilityBudget.Ops / 25_000, 3, 120));

    // iommu_sva_bind_device on one group while other groups bind and unbind other mms: the core's
    // mm -> PASID table changes under its lock meanwhile.

    // A driver with no locks of its own (as an SMMU-like driver may be): every bind is a new handle.
    private sealed class LockFreeSvaDriver(IommuCore core) : IIommuOps, IIommuSvaOps
    {
        public ulong PgsizeBitmap => 0x1000;

        public IDomain? DomainAlloc(DomainType type) => null;

        public void DomainFree(IDomain domain)
        {
        }

        public ulong IovaToPhys(IDomain domain, ulong iova) => 0;

        public Errno AddDevice(Device device) => Errno.None;

        public void RemoveDevice(Device device)
        {
        }

        public Errno DeviceGroup(Device device, out IommuGroup? group) => core.GenericDeviceGroup(device, out group);

        public Errno SvaEnableFeature(Device device, IommuDevFeature feature) => Errno.None;

        public Errno SvaDisableFeature(Device device, IommuDevFeature feature) => Errno.None;

        public Errno SvaBind(Device device, ProcessAddressSpace mm, uint pasid, object? drvdata, out IommuSva? handle)
        {
            handle = new Handle(device, mm, pasid);
            return Errno.None;
        }

        public bool SvaUnbind(IommuSva handle) => true;

        public uint SvaGetPasid(IommuSva handle) => ((Handle)handle).Pasid;
    }

    private sealed class Handle(Device device, ProcessAddressSpace mm, uint pasid) : IommuSva(device, mm)
    {
        public uint Pasid { get; } = pasid;
    }

    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public void Sva_binds_on_one_group_race_binds_and_unbinds_on_other_groups(bool intelDriver)
    {
        using var platform = new Platform(new PlatformOptions { MemorySize = 8 * Sizes.GiB, TableMemorySize = 256 * Sizes.MiB });
        PciBus pci = platform.AddPciBus();
        if (intelDriver)
        {
            var unit = new VtdUnit(platform.Memory, VtdConfig.ScalableModeFirstLevel48Bit);
            pci.AddDmaRemapper(unit, includeAll: true);
            pci.SetIommuOps(new IntelIommu(platform, new IntelIommuOptions { FirstLevel = FirstLevelPolicy.AllWhenEveryUnitHasFlts }, unit)).ThrowIfError();
        }
        else
        {
            pci.SetIommuOps(new LockFreeSvaDriver(platform.Iommu)).ThrowIfError();
        }

        HostPageAllocator pages = HostPageAllocator.ForPlatform(platform);
        IommuCore iommu = platform.Iommu;
        const int writers = 2;
        PciDevice[] devs = [.. Enumerable.Range(0, writers + 2).Select(i => pci.AddDevice(new PciDeviceSpec($"0000:00:{i + 2:x2}.0") { PasidWidth = 20, Acs = true }))];
        PciDevice readerDev = devs[0], fillerDev = devs[1];

        // The reader's mm stays bound for the whole run (its entry is never removed).
        var readerMm = new ProcessAddressSpace(pages, "reader");
        Assert.Equal(Errno.None, iommu.SvaBindDevice(readerDev, readerMm, null, out IommuSva? held));
        uint readerPasid = iommu.SvaGetPasid(held!);

        // Grow the dictionary once (binds then unbinds 200 mms: it never shrinks), so it does not resize
        // during the run; then pick writer mms whose hash falls in the reader's bucket, so each writer's
        // Add/Remove changes the chain the reader's unlocked lookup walks. (Only makes the window likely;
        // any two keys in one bucket race the same way.)
        var fillers = new List<IommuSva>();
        for (int i = 0; i < 200; i++)
        {
            var mm = new ProcessAddressSpace(pages, $"filler{i}");
            Assert.Equal(Errno.None, iommu.SvaBindDevice(fillerDev, mm, null, out IommuSva? h));
            fillers.Add(h!);
        }

        foreach (IommuSva h in fillers)
        {
            iommu.SvaUnbindDevice(h);
            h.Mm.Exit();
        }

        // Reflection only to read the table's bucket count (1 when the runtime's Dictionary has no such
        // field: then any mms do, and the race is only less likely to be caught).
        object? dict = typeof(IommuCore).GetField("_mmPasids", BindingFlags.NonPublic | BindingFlags.Instance)?.GetValue(iommu);
        int buckets = (dict?.GetType().GetField("_buckets", BindingFlags.NonPublic | BindingFlags.Instance)?.GetValue(dict) as Array)?.Length ?? 1;
        static uint Hash(ProcessAddressSpace mm) => (uint)EqualityComparer<ProcessAddressSpace>.Default.GetHashCode(mm);
        uint readerBucket = Hash(readerMm) % (uint)buckets;
        var colliding = new List<ProcessAddressSpace>();
        for (int i = 0; i < 40 * buckets && colliding.Count < 16; i++)
        {
            var mm = new ProcessAddressSpace(pages, $"w{i}");
            if (Hash(mm) % (uint)buckets == readerBucket)
            {
                colliding.Add(mm);
            }
            else
            {
                mm.Exit();
            }
        }

        output.WriteLine($"{buckets} buckets; {colliding.Count} writer mms share the reader's bucket");
        Assert.True(colliding.Count >= writers * 2);

        var errors = new ConcurrentQueue<string>();
        var sw = Stopwatch.StartNew();
        long reads = 0, churn = 0;
        bool Going() => sw.Elapsed < Budget && errors.IsEmpty;

        void Reader()
        {
            try
            {
                while (Going())
                {
                    Errno e = iommu.SvaBindDevice(readerDev, readerMm, null, out IommuSva? h);
                    if (e != Errno.None)
                    {
                        errors.Enqueue($"reader: bind {e}: {ErrorDetail.LastMessage}");
                        return;
                    }

                    uint got = iommu.SvaGetPasid(h!);
                    if (got != readerPasid)
                    {
                        errors.Enqueue($"reader: bind of {readerMm} got PASID {got}, its PASID is {readerPasid}");
                    }

                    iommu.SvaUnbindDevice(h!); // one unbind per bind (the Intel driver hands the held handle back, Users++)
                    Interlocked.Increment(ref reads);
                }
            }
            catch (Exception ex)
            {
                errors.Enqueue($"reader: {ex}");
            }
        }

        void Writer(int w)
        {
            PciDevice dev = devs[2 + w];
            ProcessAddressSpace[] mms = [.. colliding.Where((_, i) => i % writers == w)];
            var handles = new IommuSva?[mms.Length];
            var rng = new Random(w + 17);
            try
            {
                while (Going())
                {
                    int k = rng.Next(mms.Length);
                    if (handles[k] is null)
                    {
                        Errno e = iommu.SvaBindDevice(dev, mms[k], null, out handles[k]);
                        if (e != Errno.None)
                        {
                            errors.Enqueue($"writer {w}: bind {e}: {ErrorDetail.LastMessage}");
                            return;
                        }
                    }
                    else
                    {
                        iommu.SvaUnbindDevice(handles[k]!);
                        handles[k] = null;
                    }

                    Interlocked.Increment(ref churn);
                }
            }
            catch (Exception ex)
            {
                errors.Enqueue($"writer {w}: {ex}");
            }
        }

        var threads = new List<Thread> { new(Reader) { IsBackground = true } };
        for (int w = 0; w < writers; w++)
        {
            int id = w;
            threads.Add(new Thread(() => Writer(id)) { IsBackground = true });
        }

        threads.ForEach(t => t.Start());
        threads.ForEach(t => t.Join(Budget * 2));
        output.WriteLine($"intel={intelDriver}: {reads} reader binds, {churn} writer binds/unbinds in {sw.Elapsed.TotalSeconds:F1} s; {errors.Count} errors");
        foreach (string e in errors.Take(3))
        {
            output.WriteLine(e);
        }

        Assert.True(errors.IsEmpty, string.Join("\n", errors.Take(5)));
    }

    // An attach that checks a nest parent's children (CheckLevelsInUse) while nested domains of that
    // parent are allocated and freed: the children list changes under its own lock meanwhile.
    [Fact]
    public void Attach_to_a_nest_parent_races_nested_domain_alloc_and_free()
    {
        using var platform = new Platform(new PlatformOptions { MemorySize = 8 * Sizes.GiB, TableMemorySize = 256 * Sizes.MiB });
        PciBus pci = platform.AddPciBus();
        var narrow = new VtdUnit(platform.Memory, VtdConfig.ScalableModeFirstLevel48Bit);  // agaw 2
        var wide = new VtdUnit(platform.Memory, VtdConfig.ScalableModeFirstLevel57Bit);    // agaw 3
        pci.AddDmaRemapper(wide, includeAll: false, PciAddress.Parse("0000:00:03.0", null));
        pci.AddDmaRemapper(narrow, includeAll: true);
        var driver = new IntelIommu(platform, new IntelIommuOptions(), narrow, wide); // unit 0 narrow, unit 1 wide
        pci.SetIommuOps(driver).ThrowIfError();
        IommuCore iommu = platform.Iommu;
        PciDevice onWide = pci.AddDevice(new PciDeviceSpec("0000:00:03.0") { PasidWidth = 20, Acs = true });
        PciDevice onNarrow = pci.AddDevice(new PciDeviceSpec("0000:00:04.0") { PasidWidth = 20, Acs = true });

        Assert.Equal(Errno.None, driver.DomainAllocNestParent(pci, out DmarDomain? parent));
        Assert.Equal(Errno.None, iommu.AttachDevice(parent!, onWide)); // in use, 5 levels, on the wide unit
        var s1 = new IommuHwptVtdS1(IommuVtdS1.None, 0x1000, 48);
        for (int i = 0; i < 32; i++)
        {
            Assert.Equal(Errno.None, driver.DomainAllocNested(parent!, s1, out _)); // a longer list to walk
        }

        var errors = new ConcurrentQueue<string>();
        var sw = Stopwatch.StartNew();
        long attaches = 0, churn = 0;
        bool Going() => sw.Elapsed < Budget && errors.IsEmpty;

        // iommu_attach_device of the narrow unit's device: refused with -EINVAL every time
        // (CheckLevelsInUse walks the nested children for unit 0, then finds the parent in use on unit 1).
        var attacher = new Thread(() =>
        {
            try
            {
                while (Going())
                {
                    Errno e = iommu.AttachDevice(parent!, onNarrow);
                    if (e != Errno.EINVAL)
                    {
                        errors.Enqueue($"attach of the narrow device returned {e}, not EINVAL");
                    }

                    Interlocked.Increment(ref attaches);
                }
            }
            catch (Exception ex)
            {
                errors.Enqueue($"attacher: {ex}");
            }
        }) { IsBackground = true };

        // iommufd-like: nested domains allocated and freed on the same parent.
        var churner = new Thread(() =>
        {
            try
            {
                while (Going())
                {
                    if (driver.DomainAllocNested(parent!, s1, out DmarDomain? n) != Errno.None)
                    {
                        errors.Enqueue("DomainAllocNested failed");
                        return;
                    }

                    driver.DomainFree(n!);
                    Interlocked.Increment(ref churn);
                }
            }
            catch (Exception ex)
            {
                errors.Enqueue($"churner: {ex}");
            }
        }) { IsBackground = true };

        attacher.Start();
        churner.Start();
        attacher.Join(Budget * 2);
        churner.Join(Budget * 2);
        output.WriteLine($"{attaches} refused attaches, {churn} nested alloc/free in {sw.Elapsed.TotalSeconds:F1} s; {errors.Count} errors");
        foreach (string e in errors.Take(3))
        {
            output.WriteLine(e);
        }

        Assert.True(errors.IsEmpty, string.Join("\n", errors.Take(5)));
    }
}
