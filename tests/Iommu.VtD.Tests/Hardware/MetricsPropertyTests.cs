using Iommu.Devices;
using Iommu.Domains;
using Iommu.Tests.Shared;
using Iommu.VtD.Driver;
using Iommu.VtD.Hardware;
using Iommu.VtD.Tests.Driver;
using Iommu.VtD.Tests.Infrastructure;

namespace Iommu.VtD.Tests.Hardware;

/// <summary>
/// Every counter a user reads (the unit's <see cref="VtdUnit.Statistics"/> and <see cref="VtdUnit.Activity"/>, the
/// <c>Iommu.VtD</c> and <c>Iommu.Core</c> instruments) against a count the test keeps from what it observes: the
/// errno and return of each map and unmap, each DMA's result (bytes moved, fault reason), and the invalidation
/// descriptors and register commands the unit executed.
/// </summary>
public sealed class MetricsPropertyTests
{
    private const ulong Base = 0x10_0000, Page = 4096;
    private const int Slots = 48;

    public static TheoryData<string> Presets => new() { "Legacy48", "Legacy48Reg", "Sm48", "Sm48Cm", "Fl48" };

    [Theory]
    [MemberData(nameof(Presets))]
    public void Random_operation_sequences_keep_every_counter_equal_to_the_observed_count(string preset)
    {
        for (int seed = 1; seed <= 30; seed++)
        {
            try
            {
                RunSequence(preset, seed, steps: 250);
            }
            catch (Exception e) when (e is not OutOfMemoryException)
            {
                throw new InvalidOperationException($"preset {preset}, seed {seed}: {e.Message}", e);
            }
        }
    }

    /// <summary>Invalidations the unit executed, by cache, as the spec names them (a command it did not perform is none).</summary>
    internal sealed class InvalidationCount(VtdConfig config) : IVtdInvalidationObserver
    {
        public long Context, Pasid, Iotlb;

        public void OnDescriptor(ulong q0, ulong q1)
        {
            switch ((int)((q0 & 0xF) | ((q0 >> 5) & 0x70)))
            {
                case 1: Context++; break;
                case 2 or 6: Iotlb++; break;
                case 7: Pasid++; break;
            }
        }

        public void OnContextCommand(ulong ccmd)
        {
            if (((ccmd >> 61) & 3) != 0)
            {
                Context++;
            }
        }

        public void OnIotlbCommand(ulong iotlb, ulong iva)
        {
            int g = (int)((iotlb >> 60) & 3);
            if (g != 0 && !(g == 3 && config.PageSelectiveInvalidation && (int)(iva & 0x3F) > config.MaxAddressMaskValue))
            {
                Iotlb++;
            }
        }

        public void OnGlobalCommand(uint command, ulong rootTable, bool translationEnabled)
        {
        }
    }

    private static VtdConfig Config(string preset)
    {
        VtdConfig c = preset == "Legacy48Reg" ? VtdConfig.Legacy48Bit with { QueuedInvalidation = false } : RandomDriverScenario.Preset(preset);

        // Tiny caches: lookups evict, and a device's entries fight another's for a set.
        return c with
        {
            IotlbCapacity = 8, IotlbAssociativity = 2,
            ContextCacheCapacity = 2, ContextCacheAssociativity = 1,
            PasidCacheCapacity = 2, PasidCacheAssociativity = 1,
        };
    }

    private static void RunSequence(string preset, int seed, int steps)
    {
        var rng = new Random(seed);
        VtdConfig config = Config(preset);
        using var f = new DriverBed(config, new IntelIommuOptions { FirstLevel = FirstLevelPolicy.FirstLevelByDefault }, memory: 8 * Sizes.GiB);
        var inv = new InvalidationCount(config);
        f.Unit.InvalidationObserver = inv;
        using var meters = new MeterReader(f.Platform, IommuCore.MeterName, VtdMetrics.MeterName);

        // What the test saw.
        long mapOps = 0, mapBytes = 0, unmapOps = 0, unmapBytes = 0, lookups = 0;
        var faults = new Dictionary<VtdFaultReason, long>();
        var devices = new PciDevice[3];
        var domains = new IDomain[3];
        var mapped = new HashSet<ulong>[3];
        for (int i = 0; i < 3; i++)
        {
            devices[i] = f.AddDevice($"0000:00:{3 + i:x2}.0");
            domains[i] = f.Iommu.DomainAlloc(f.Pci)!;
            f.Iommu.AttachDevice(domains[i], devices[i]).ThrowIfError();
            mapped[i] = [];
        }

        // Attaching invalidated: start the observed counts from the unit's own.
        VtdActivity start = f.Unit.Activity;
        inv.Context = start.ContextInvalidations;
        inv.Pasid = start.PasidInvalidations;
        inv.Iotlb = start.IotlbInvalidations;
        byte[] buffer = new byte[3 * Page];
        for (int step = 0; step < steps; step++)
        {
            int d = rng.Next(3);
            ulong slot = (ulong)rng.Next(Slots);
            ulong iova = Base + (slot * Page);
            switch (rng.Next(10))
            {
                case 0 or 1 or 2:
                {
                    ulong pages = (ulong)rng.Next(1, 4);
                    if (Enumerable.Range(0, (int)pages).Any(p => mapped[d].Contains(slot + (ulong)p)))
                    {
                        break; // callers never map over a live mapping (the kernel WARNs and reports success)
                    }

                    ulong at = rng.Next(8) == 0 ? iova + 0x200 : iova; // sometimes misaligned: EINVAL
                    IommuProt prot = rng.Next(3) == 0 ? IommuProt.Read : IommuProt.Read | IommuProt.Write;
                    Errno e = f.Iommu.Map(domains[d], at, 0x1_0000_0000 + (slot * Page), pages * Page, prot);
                    if (e == Errno.None)
                    {
                        mapOps++;
                        mapBytes += (long)(pages * Page);
                        for (ulong p = 0; p < pages; p++)
                        {
                            Assert.True(mapped[d].Add(slot + p));
                        }
                    }

                    break;
                }

                case 3 or 4:
                {
                    ulong pages = (ulong)rng.Next(1, 4);
                    ulong ret;
                    if (rng.Next(2) == 0)
                    {
                        ret = f.Iommu.Unmap(domains[d], iova, pages * Page);
                    }
                    else
                    {
                        var gather = default(IommuIotlbGather);
                        gather.Init();
                        ret = f.Iommu.UnmapFast(domains[d], iova, pages * Page, ref gather);
                        f.Iommu.IotlbSync(domains[d], ref gather);
                    }

                    if (ret != 0)
                    {
                        unmapOps++;
                        unmapBytes += (long)ret;
                    }

                    for (ulong p = 0; p < pages; p++)
                    {
                        mapped[d].Remove(slot + p);
                    }

                    break;
                }

                case 5 when rng.Next(4) == 0:
                {
                    // A new domain for the device: the old one's pages stop counting, its totals stay.
                    f.Iommu.DetachDevice(domains[d], devices[d]);
                    f.Iommu.DomainFree(domains[d]);
                    domains[d] = f.Iommu.DomainAlloc(f.Pci)!;
                    f.Iommu.AttachDevice(domains[d], devices[d]).ThrowIfError();
                    mapped[d].Clear();
                    break;
                }

                default:
                {
                    // A DMA of 1 byte to 2 pages and a bit, possibly faulting part-way (a partial transfer).
                    int len = rng.Next(1, (int)(2 * Page) + 64);
                    ulong at = iova + (ulong)rng.Next((int)Page);
                    bool write = rng.Next(2) == 0;
                    Span<byte> span = buffer.AsSpan(0, len);
                    DmaResult r = write ? devices[d].DmaWrite(null, at, span) : devices[d].DmaRead(null, at, span);
                    ulong last = r.IsOk ? at + (ulong)len - 1 : r.Address;
                    lookups += (long)((last / Page) - (at / Page) + 1);
                    Assert.True(r.IsOk || r.Status == DmaStatus.Fault, $"step {step}: {r}");
                    if (r.Status == DmaStatus.Fault)
                    {
                        VtdFaultReason reason = r.FaultReason.ToVtdFaultReason();
                        faults[reason] = faults.GetValueOrDefault(reason) + 1;
                    }

                    break;
                }
            }
        }

        // The unit's own view.
        VtdActivity a = f.Unit.Activity;
        VtdCacheStatistics s = f.Unit.Statistics;
        Assert.Equal(inv.Context, a.ContextInvalidations);
        Assert.Equal(inv.Pasid, a.PasidInvalidations);
        Assert.Equal(inv.Iotlb, a.IotlbInvalidations);
        Assert.Equal(faults.OrderBy(p => p.Key), a.FaultsByReason.OrderBy(p => p.Key));
        Assert.Equal(lookups, s.IotlbHits + s.IotlbMisses);
        Assert.Equal(lookups, s.ContextHits + s.ContextMisses);
        Assert.Equal(config.ScalableMode && preset != "Legacy48" ? lookups : 0, s.PasidHits + s.PasidMisses);
        Assert.InRange(s.IotlbEntries, 0, config.IotlbCapacity);
        Assert.InRange(s.ContextEntries, 0, config.ContextCacheCapacity);
        Assert.InRange(s.PasidEntries, 0, config.PasidCacheCapacity);

        // The instruments say the same.
        meters.Collect();
        Assert.Equal(mapOps, meters["iommu.map.operations"]);
        Assert.Equal(mapBytes, meters["iommu.map.size"]);
        Assert.Equal(unmapOps, meters["iommu.unmap.operations"]);
        Assert.Equal(unmapBytes, meters["iommu.unmap.size"]);
        Assert.Equal(mapped.Sum(m => m.Count), meters["iommu.mapped.pages"]);
        Assert.Equal(s.IotlbHits, meters["iommu.vtd.iotlb.hits"]);
        Assert.Equal(s.IotlbMisses, meters["iommu.vtd.iotlb.misses"]);
        Assert.Equal(s.ContextMisses, meters["iommu.vtd.context.misses"]);
        Assert.Equal(s.PasidMisses, meters["iommu.vtd.pasid.misses"]);
        Assert.Equal(inv.Context, meters["iommu.vtd.invalidations|cache=context"]);
        Assert.Equal(inv.Pasid, meters["iommu.vtd.invalidations|cache=pasid"]);
        Assert.Equal(inv.Iotlb, meters["iommu.vtd.invalidations|cache=iotlb"]);
        foreach ((VtdFaultReason reason, long n) in faults)
        {
            Assert.Equal(n, meters[$"iommu.vtd.faults|reason=0x{(int)reason:x2}"]);
        }

        Assert.Equal(faults.Count, meters.Keys.Count(k => k.StartsWith("iommu.vtd.faults|", StringComparison.Ordinal)));
    }
}

public sealed class InvalidationCountTests
{
    [Fact]
    public void Register_commands_the_unit_did_not_perform_are_not_counted_as_invalidations()
    {
        using var memory = new Iommu.Memory.PhysicalMemory(64 * Sizes.MiB);
        var unit = new VtdUnit(memory, VtdConfig.Legacy48Bit with { QueuedInvalidation = false });
        uint iotlb = VtdConfig.IotlbRegisterOffset;

        // CIRG 0 and IIRG 0 are invalid (CAIG/IAIG read 0), and so is a page-selective request with AM above MAMV.
        unit.Write64(VtdRegister.Ccmd, VtdRegister.CcmdIcc);
        unit.Write64(iotlb + VtdRegister.IvaInPair, 0x1000 | 0x3F);
        unit.Write64(iotlb + VtdRegister.IotlbInPair, VtdRegister.IotlbIvt | (3UL << 60));
        unit.Write64(iotlb + VtdRegister.IotlbInPair, VtdRegister.IotlbIvt);
        Assert.Equal(0, (long)(unit.Read64(VtdRegister.Ccmd) >> 59 & 3));
        Assert.Equal(0, (long)(unit.Read64(iotlb + VtdRegister.IotlbInPair) >> 57 & 3));
        VtdActivity a = unit.Activity;
        Assert.Equal((0L, 0L), (a.ContextInvalidations, a.IotlbInvalidations));

        // Performed ones are: a global context and a domain-selective IOTLB invalidation.
        unit.Write64(VtdRegister.Ccmd, VtdRegister.CcmdIcc | (1UL << 61));
        unit.Write64(iotlb + VtdRegister.IotlbInPair, VtdRegister.IotlbIvt | (2UL << 60));
        a = unit.Activity;
        Assert.Equal((1L, 1L), (a.ContextInvalidations, a.IotlbInvalidations));
    }

    [Fact]
    public void Reset_and_RestoreState_keep_the_counters_and_empty_the_caches()
    {
        using var f = new DriverBed(VtdConfig.ScalableMode48Bit, memory: 8 * Sizes.GiB);
        PciDevice dev = f.AddDevice("0000:00:03.0");
        IDomain dom = f.Iommu.DomainAlloc(f.Pci)!;
        f.Iommu.AttachDevice(dom, dev).ThrowIfError();
        f.Iommu.Map(dom, 0x10_0000, 0x1_0000_0000, Sizes.Page, IommuProt.Read).ThrowIfError();
        Span<byte> buf = stackalloc byte[8];
        Assert.True(dev.DmaRead(null, 0x10_0000, buf).IsOk);
        Assert.Equal(DmaStatus.Fault, dev.DmaRead(null, 0x20_0000, buf).Status);
        VtdUnitState state = f.Unit.SaveState();
        VtdCacheStatistics s = f.Unit.Statistics;
        VtdActivity a = f.Unit.Activity;
        Assert.True(s.IotlbEntries > 0);

        f.Unit.Reset();
        Check();
        f.Unit.RestoreState(state);
        Check();

        void Check()
        {
            VtdCacheStatistics now = f.Unit.Statistics;
            Assert.Equal(s with { ContextEntries = 0, PasidEntries = 0, IotlbEntries = 0 }, now);
            VtdActivity act = f.Unit.Activity;
            Assert.Equal((a.ContextInvalidations, a.PasidInvalidations, a.IotlbInvalidations, a.Faults), (act.ContextInvalidations, act.PasidInvalidations, act.IotlbInvalidations, act.Faults));
        }
    }
}

public sealed class ConcurrentMetricsTests
{
    [Fact]
    public void Totals_equal_the_sum_of_what_each_thread_did()
    {
        const int Threads = 4, Rounds = 400;
        using var f = new DriverBed(VtdConfig.ScalableMode48Bit, memory: 8 * Sizes.GiB);
        using var meters = new MeterReader(f.Platform, IommuCore.MeterName, VtdMetrics.MeterName);
        PciDevice[] devs = [.. Enumerable.Range(0, Threads).Select(i => f.AddDevice($"0000:00:{3 + i:x2}.0"))];
        IDomain shared = f.Iommu.DomainAlloc(f.Pci)!;
        f.Iommu.AttachDevice(shared, devs[0]).ThrowIfError();
        long faultsBefore = f.Unit.Activity.Faults;
        var mapOps = new long[Threads];
        var unmapOps = new long[Threads];
        var faults = new long[Threads];
        Parallel.For(0, Threads, new ParallelOptions { MaxDegreeOfParallelism = Threads }, t =>
        {
            var rng = new Random(t + 1);
            Span<byte> buf = stackalloc byte[8];
            for (int r = 0; r < Rounds; r++)
            {
                // Each thread maps its own pages of the shared domain: one counts as its owner, the others atomically.
                ulong iova = 0x1000_0000 + ((ulong)t << 24) + ((ulong)rng.Next(64) << 12);
                if (f.Iommu.Map(shared, iova, 0x1_0000_0000 + iova, Sizes.Page, IommuProt.Read) == Errno.None)
                {
                    mapOps[t]++;
                }

                if (f.Iommu.Unmap(shared, iova ^ 0x1000, Sizes.Page) != 0)
                {
                    unmapOps[t]++;
                }

                // A fault from each thread's device (not attached but devs[0]: context not present or unmapped).
                if (devs[t].DmaRead(null, 0xdead_0000, buf).Status == DmaStatus.Fault)
                {
                    faults[t]++;
                }
            }
        });

        meters.Collect();
        Assert.Equal(mapOps.Sum(), meters["iommu.map.operations"]);
        Assert.Equal(mapOps.Sum() * (long)Sizes.Page, meters["iommu.map.size"]);
        Assert.Equal(unmapOps.Sum(), meters["iommu.unmap.operations"]);
        Assert.Equal((mapOps.Sum() - unmapOps.Sum()), meters["iommu.mapped.pages"]);
        Assert.Equal(faults.Sum(), f.Unit.Activity.Faults - faultsBefore);
        Assert.Equal(Threads * Rounds, faults.Sum());
    }
}
