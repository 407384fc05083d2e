using System.Collections.Concurrent;
using System.Globalization;
using Iommu.Devices;
using Iommu.Domains;
using Iommu.Reliability.Tests.Infrastructure;
using Iommu.VtD.Driver;
using Iommu.VtD.Hardware;
using Xunit.Abstractions;

namespace Iommu.Reliability.Tests.Concurrency;

/// <summary>
/// The isolation property under concurrency, checked against an oracle rather than one scripted race. Switcher
/// threads attach and detach devices to and from several UNMANAGED domains (RID attach; in scalable mode also an
/// SIOV parent's aux attach and PASID attach), mapper threads map fresh pages into random domains and unmap them,
/// and DMA threads read through random devices (plain and ATS reads, with the aux and attached PASIDs). Every
/// mapping gets its own physical page, never reused, whose marker names the mapping, so a read that works names
/// exactly the mapping it went through. A global sequence counter stamps the start and end of every operation;
/// such a read by requester X (a RID, or a RID and PASID) that ran in [s, e] may return mapping M of domain D at
/// its IOVA only when M's map started before e, M's unmap (if any) had not returned before s, and X reached D at
/// some moment in [s, e] (the attach had started before e, the detach that ended it had not returned before s).
/// Anything else is a device reaching memory isolation forbids it: a stale IOTLB, device-TLB, context or PASID
/// cache entry, a missed flush, an entry read half old and half new. Faults are always allowed. The DMA threads
/// aim much of their reads at the requester a switcher is moving and the IOVA a mapper is unmapping, and an attach is
/// often undone at once, so reads overlap teardowns and flushes. It catches a skipped IOTLB flush on unmap (every
/// run, both modes), a skipped device-TLB flush (every run, scalable), entries fetched word by word (about one
/// scalable run in five) and the first attach's level drop racing maps (about one scalable run in ten).
/// </summary>
public sealed class ConcurrentIsolationPropertyTests(ITestOutputHelper output)
{
    private const ulong IovaBase = 0x10_0000_0000; // above the 64 GiB of memory: a default-domain read faults
    private const ulong PaBase = 0x2_0000_0000;
    private const ulong Magic = 0x15A0UL << 48;
    private const int Domains = 3;
    private const int Mappers = 2;
    private const int DmaThreads = 2;
    private const int SlotsPerMapper = 8;
    private const long Forever = long.MaxValue;
    private const int AnyPasid = -2; // a failed attach: its PASID is unknown, so it excuses any
    private const int NoPasid = -1;  // requests without PASID

    // One interval in which a requester (device, PASID or none) may have reached a domain.
    private sealed record Reach(int Device, int Pasid, int Domain, long Start, string How)
    {
        public long End { get; set; } = Forever;
    }

    private sealed class Mapping(int domain, ulong iova, long mapStart)
    {
        public int Domain { get; } = domain;

        public ulong Iova { get; } = iova;

        public long MapStart { get; } = mapStart;

        public long UnmapEnd { get; set; } = Forever;
    }

    private readonly record struct Read(int Device, int Pasid, bool Ats, ulong Iova, long Start, long End, ulong Pa, ulong Word0, ulong Word1);

    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public void Concurrent_attach_map_unmap_and_dma_never_reach_a_page_isolation_forbids(bool scalable)
    {
        ulong seed = ReliabilityBudget.Seed(0x150_1A7E + (scalable ? 1UL : 0UL));
        long ops = ReliabilityBudget.Ops;
        long mapBudget = Math.Max(ops / 10, 1000), dmaBudget = Math.Max(ops / 2, 5000), switchBudget = Math.Max(ops / 5, 200);
        output.WriteLine($"seed {seed} (RELIABILITY_SEED replays the random choices; the interleaving is the scheduler's)");
        VtdConfig config = scalable ? VtdConfig.ScalableMode48Bit with { DeviceTlb = true } : VtdConfig.Legacy48Bit;
        using var bed = new FailNthVtdBed(config, scalable);
        var devices = new List<PciDevice>
        {
            bed.Pci.AddDevice(new PciDeviceSpec("0000:00:03.0") { Acs = true }),
            bed.Pci.AddDevice(new PciDeviceSpec("0000:00:04.0") { Acs = true, Ats = true }),
            bed.Pci.AddDevice(new PciDeviceSpec("0000:00:05.0") { Acs = true, Ats = true }),
        };
        int siov = -1;
        uint globalPasid = 0;
        if (scalable)
        {
            devices.Add(bed.Pci.AddDevice(new PciDeviceSpec("0000:00:07.0") { Acs = true, Ats = true, PasidWidth = 20, ScalableIov = true }));
            siov = devices.Count - 1;
            Assert.Equal(Errno.None, bed.Iommu.SetDevAttr(devices[siov], IommuDevAttr.AuxdEnable));
            globalPasid = bed.Iommu.AllocGlobalPasid(devices[siov]);
            Assert.NotEqual(IommuCore.PasidInvalid, globalPasid);
        }

        DmarDomain[] doms = [.. Enumerable.Range(0, Domains).Select(_ => bed.Unmanaged())];

        long maxMappings = Math.Min((50 * mapBudget) + 16, (long)((bed.Platform.Memory.Size - PaBase) / Sizes.Page)); // pages are never reused
        var mappings = new Mapping?[maxMappings];
        long nextMapping = -1;
        long clock = 0;
        long Stamp() => Interlocked.Increment(ref clock);

        var errors = new ConcurrentQueue<string>();
        long maps = 0, switches = 0, dmas = 0, dmaHits = 0;

        // Every thread goes on until each kind has done its budget, so the kinds overlap whatever the scheduler
        // does; a kind past its budget yields to the others. One that never gets a core stops the others at 50
        // times their budget (liveness is not what this checks).
        bool Running(ref long own, long budget)
        {
            long m = Interlocked.Read(ref maps), d = Interlocked.Read(ref dmas), w = Interlocked.Read(ref switches);
            if (!errors.IsEmpty || (m >= mapBudget && d >= dmaBudget && w >= switchBudget)
                || m >= 50 * mapBudget || d >= 50 * dmaBudget || w >= 50 * switchBudget)
            {
                return false;
            }

            if (Interlocked.Read(ref own) >= budget)
            {
                Thread.Yield();
            }

            return true;
        }

        var reaches = new ConcurrentBag<Reach>();

        // Where the races are: the requester a switcher is about to move and the IOVA a mapper is about to unmap.
        // DMA threads aim at them often, so reads overlap teardowns and flushes rather than hitting them by chance.
        long hotRequester = NoPasid + 2; // device << 32 | (PASID + 2)
        long hotIova = (long)IovaBase;
        void Aim(int device, int pasid) => Volatile.Write(ref hotRequester, ((long)device << 32) | (uint)(pasid + 2));
        var reads = new ConcurrentBag<List<Read>>();

        // Switcher t owns the devices i with i % 2 == t, so no two threads attach one device at once.
        void Switcher(int t)
        {
            var rng = new Random((int)(seed + 100 + (ulong)t));
            int[] ridDomain = [.. Enumerable.Repeat(-1, devices.Count)];
            var ridReach = new Reach?[devices.Count];
            var auxReach = new Reach?[Domains];
            Reach? pasidReach = null;
            int[] mine = [.. Enumerable.Range(0, devices.Count).Where(i => i % 2 == t)];

            // After an attach, half the time the next operation undoes it at once: the entry is then torn down while
            // the DMA threads aiming at the device still walk it (its caches are cold), where a torn read of the
            // entry shows.
            (int Dev, int Dom, bool Aux)? undo = null;
            try
            {
                while (Running(ref switches, switchBudget))
                {
                    int dev = undo?.Dev ?? mine[rng.Next(mine.Length)];
                    PciDevice d = devices[dev];
                    int dom = undo?.Dom ?? rng.Next(Domains);
                    bool aux = undo?.Aux ?? rng.Next(3) != 0;
                    undo = null;
                    if (dev == siov)
                    {
                        if (aux)
                        {
                            // Aux attach or detach of one domain: the PASID is the domain's default PASID.
                            if (auxReach[dom] is { } r)
                            {
                                Aim(dev, r.Pasid);
                                bed.Iommu.DetachDeviceAux(doms[dom], d);
                                r.End = Stamp();
                                auxReach[dom] = null;
                            }
                            else
                            {
                                Aim(dev, (int)doms[dom].DefaultPasid is > 0 and var p ? p : (int)globalPasid);
                                long s = Stamp();
                                Errno e = bed.Iommu.AttachDeviceAux(doms[dom], d);
                                if (e == Errno.None)
                                {
                                    int pasid = bed.Iommu.AuxGetPasid(doms[dom], d);
                                    auxReach[dom] = new Reach(dev, pasid, dom, s, $"aux PASID {pasid}");
                                    reaches.Add(auxReach[dom]!);
                                    undo = rng.Next(2) == 0 ? (dev, dom, true) : null;
                                }
                                else
                                {
                                    reaches.Add(new Reach(dev, AnyPasid, dom, s, $"failed aux attach ({e})") { End = Stamp() });
                                }
                            }
                        }
                        else if (pasidReach is { } r)
                        {
                            Aim(dev, (int)globalPasid);
                            bed.Iommu.DetachDevicePasid(doms[r.Domain], d, globalPasid);
                            r.End = Stamp();
                            pasidReach = null;
                        }
                        else
                        {
                            Aim(dev, (int)globalPasid);
                            long s = Stamp();
                            Errno e = bed.Iommu.AttachDevicePasid(doms[dom], d, globalPasid);
                            if (e == Errno.None)
                            {
                                pasidReach = new Reach(dev, (int)globalPasid, dom, s, $"PASID {globalPasid} attach");
                                reaches.Add(pasidReach);
                                undo = rng.Next(2) == 0 ? (dev, dom, false) : null;
                            }
                            else
                            {
                                reaches.Add(new Reach(dev, AnyPasid, dom, s, $"failed PASID attach ({e})") { End = Stamp() });
                            }
                        }
                    }
                    else if (ridDomain[dev] >= 0)
                    {
                        Aim(dev, NoPasid);
                        bed.Iommu.DetachDevice(doms[ridDomain[dev]], d);
                        ridReach[dev]!.End = Stamp();
                        ridDomain[dev] = -1;
                    }
                    else
                    {
                        Aim(dev, NoPasid);
                        long s = Stamp();
                        Errno e = bed.Iommu.AttachDevice(doms[dom], d);
                        if (e == Errno.None)
                        {
                            ridDomain[dev] = dom;
                            ridReach[dev] = new Reach(dev, NoPasid, dom, s, "RID attach");
                            reaches.Add(ridReach[dev]!);
                            undo = rng.Next(2) == 0 ? (dev, dom, false) : null;
                        }
                        else
                        {
                            errors.Enqueue($"switcher {t}: attach of {d.Name} to domain {dom}: {e} {ErrorDetail.LastMessage}");
                            return;
                        }
                    }

                    Interlocked.Increment(ref switches);
                }
            }
            catch (Exception ex)
            {
                errors.Enqueue($"switcher {t}: {ex}");
            }
        }

        // Mapper m owns the IOVA slots m * SlotsPerMapper + k in every domain; the same IOVAs in every domain, so a
        // read through the wrong domain finds a page there.
        void Mapper(int m)
        {
            var rng = new Random((int)(seed + 200 + (ulong)m));
            var slot = new long[Domains, SlotsPerMapper];
            for (int d = 0; d < Domains; d++)
            {
                for (int k = 0; k < SlotsPerMapper; k++)
                {
                    slot[d, k] = -1;
                }
            }

            try
            {
                while (Running(ref maps, mapBudget))
                {
                    Interlocked.Increment(ref maps);
                    int d = rng.Next(Domains);
                    int k = rng.Next(SlotsPerMapper);
                    ulong iova = IovaBase + ((ulong)((m * SlotsPerMapper) + k) * Sizes.Page);
                    if (slot[d, k] >= 0)
                    {
                        long slotId = slot[d, k];
                        Mapping old = mappings[slot[d, k]]!;
                        Volatile.Write(ref hotIova, (long)iova);
                        ulong n = bed.Iommu.Unmap(doms[d], iova, Sizes.Page);
                        old.UnmapEnd = Stamp();
                        slot[d, k] = -1;
                        if (n != Sizes.Page)
                        {
                            errors.Enqueue($"mapper {m}: unmap of 0x{iova:x} in domain {d} returned {n}, not the page mapping {slotId} mapped at {old.MapStart}");
                        }

                        continue;
                    }

                    long id = Interlocked.Increment(ref nextMapping);
                    if (id >= maxMappings)
                    {
                        return;
                    }

                    ulong pa = PaBase + ((ulong)id * Sizes.Page);
                    bed.Platform.Memory.WriteUInt64(pa, Magic | (ulong)id);
                    bed.Platform.Memory.WriteUInt64(pa + 8, ((ulong)d << 56) | iova);
                    var mapping = new Mapping(d, iova, Stamp());
                    mappings[id] = mapping;
                    Errno e = bed.Iommu.Map(doms[d], iova, pa, Sizes.Page, IommuProt.Read | IommuProt.Write);
                    if (e != Errno.None)
                    {
                        errors.Enqueue($"mapper {m}: map of 0x{iova:x} in domain {d}: {e}");
                        return;
                    }

                    slot[d, k] = id;
                }
            }
            catch (Exception ex)
            {
                errors.Enqueue($"mapper {m}: {ex}");
            }
        }

        void Dma(int t)
        {
            var rng = new Random((int)(seed + 300 + (ulong)t));
            var log = new List<Read>();
            reads.Add(log);
            var b = new byte[16];
            try
            {
                while (Running(ref dmas, dmaBudget))
                {
                    int dev = rng.Next(devices.Count);
                    PciDevice d = devices[dev];
                    int pasid = NoPasid;
                    if (dev == siov && rng.Next(4) != 0)
                    {
                        // The PASID attach's PASID, or a domain's aux PASID as it is now (0 when it has none).
                        uint p = rng.Next(3) == 0 ? globalPasid : doms[rng.Next(Domains)].DefaultPasid;
                        pasid = p is > 0 and < (1u << 20) ? (int)p : (int)globalPasid;
                    }

                    if (rng.Next(3) == 0)
                    {
                        long h = Volatile.Read(ref hotRequester);
                        dev = (int)(h >> 32);
                        d = devices[dev];
                        pasid = (int)(uint)h - 2;
                    }

                    ulong iova = rng.Next(2) == 0 ? (ulong)Volatile.Read(ref hotIova) : IovaBase + ((ulong)rng.Next(Mappers * SlotsPerMapper) * Sizes.Page);
                    bool ats = rng.Next(2) == 0;
                    uint? p2 = pasid == NoPasid ? null : (uint)pasid;
                    long s = Stamp();
                    DmaResult r = ats ? d.AtsDmaRead(p2, iova, b) : d.DmaRead(p2, iova, b);
                    long e = Stamp();
                    Interlocked.Increment(ref dmas);
                    if (r.IsOk)
                    {
                        log.Add(new Read(dev, pasid, ats, iova, s, e, r.Address, BitConverter.ToUInt64(b, 0), BitConverter.ToUInt64(b, 8)));
                    }
                }
            }
            catch (Exception ex)
            {
                errors.Enqueue($"dma {t}: {ex}");
            }
        }

        var threads = new List<Thread>();
        threads.AddRange(Enumerable.Range(0, 2).Select(t => new Thread(() => Switcher(t)) { IsBackground = true }));
        threads.AddRange(Enumerable.Range(0, Mappers).Select(m => new Thread(() => Mapper(m)) { IsBackground = true }));
        threads.AddRange(Enumerable.Range(0, DmaThreads).Select(t => new Thread(() => Dma(t)) { IsBackground = true }));
        threads.ForEach(t => t.Start());
        threads.ForEach(t => Assert.True(t.Join(TimeSpan.FromSeconds(120)), "a thread did not finish (deadlock?)"));
        Assert.True(errors.IsEmpty, $"seed {seed}:\n" + string.Join("\n", errors.Take(10)));

        // The oracle, after the run: every thread has joined, so every stamp is final.
        Reach[] allReaches = [.. reaches];
        var violations = new List<string>();
        foreach (Read rd in reads.SelectMany(l => l))
        {
            dmaHits++;
            string? why = Judge(rd);
            if (why is not null)
            {
                violations.Add(why);
            }
        }

        string? Judge(Read rd)
        {
            string who = string.Create(CultureInfo.InvariantCulture, $"{devices[rd.Device].Name}{(rd.Pasid == NoPasid ? string.Empty : $" PASID {rd.Pasid}")} {(rd.Ats ? "ATS " : string.Empty)}read of 0x{rd.Iova:x} in [{rd.Start}, {rd.End}]");
            ulong id = (rd.Pa - PaBase) / Sizes.Page;
            if (rd.Pa < PaBase || id >= (ulong)maxMappings || mappings[id] is not { } mp)
            {
                return $"{who} reached 0x{rd.Pa:x}, no mapping's page";
            }

            if (rd.Pa % Sizes.Page != 0 || rd.Word0 != (Magic | id) || rd.Word1 != (((ulong)mp.Domain << 56) | mp.Iova))
            {
                return $"{who} reached 0x{rd.Pa:x} and read 0x{rd.Word0:x} 0x{rd.Word1:x}, not mapping {id}'s marker";
            }

            string what = $"mapping {id} (domain {mp.Domain} IOVA 0x{mp.Iova:x}, mapped at {mp.MapStart}, unmapped by {(mp.UnmapEnd == Forever ? "never" : mp.UnmapEnd.ToString(CultureInfo.InvariantCulture))})";
            if (mp.Iova != rd.Iova)
            {
                return $"{who} reached {what}, another IOVA";
            }

            if (mp.MapStart > rd.End || mp.UnmapEnd < rd.Start)
            {
                return $"{who} reached {what} outside its lifetime";
            }

            bool reached = allReaches.Any(x => x.Device == rd.Device && x.Domain == mp.Domain && (x.Pasid == rd.Pasid || x.Pasid == AnyPasid)
                && x.Start < rd.End && x.End > rd.Start);
            if (!reached)
            {
                IEnumerable<string> history = allReaches.Where(x => x.Device == rd.Device).OrderBy(x => x.Start)
                    .Where(x => x.End >= rd.Start - 200 && x.Start <= rd.End + 200)
                    .Select(x => $"{x.How} domain {x.Domain} [{x.Start}, {(x.End == Forever ? "-" : x.End.ToString(CultureInfo.InvariantCulture))}]");
                return $"{who} reached {what}, but did not reach domain {mp.Domain} then; its attachments near then: {string.Join("; ", history)}";
            }

            return null;
        }

        output.WriteLine($"{(scalable ? "scalable" : "legacy")}: {nextMapping + 1} mappings, {switches} attach/detach, {dmas} reads ({dmaHits} reached a page), {violations.Count} violations");
        Assert.True(violations.Count == 0, $"seed {seed}: {violations.Count} reads isolation forbids:\n" + string.Join("\n", violations.Take(10)));
    }
}
