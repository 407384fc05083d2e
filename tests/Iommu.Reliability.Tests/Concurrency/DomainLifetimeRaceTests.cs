using System.Collections.Concurrent;
using Iommu.Devices;
using Iommu.Domains;
using Iommu.Reliability.Tests.Infrastructure;
using Iommu.VtD.Driver;
using Iommu.VtD.Hardware;
using Xunit.Abstractions;

namespace Iommu.Reliability.Tests.Concurrency;

/// <summary>
/// Races of the DMA API, the flush queue and domain lifetime. iommu_domain_free used to free the tables while a map,
/// unmap or DMA API call on another thread was still walking them: a late map then wrote into a frame the next domain
/// already owned (a domain nobody mapped translated to another user's page), or read garbage from a reused frame.
/// The free now waits for the calls already using the domain, and calls that start later throw.
/// </summary>
public sealed class DomainLifetimeRaceTests(ITestOutputHelper output)
{
    private const ulong K4 = 4096;

    private static (Platform Platform, PciBus Pci, IntelIommu Driver) NewPlatform(DomainType type, VtdConfig? config = null)
    {
        var platform = new Platform(new PlatformOptions { MemorySize = 16 * Sizes.GiB, TableMemorySize = 64 * Sizes.MiB, DefaultDomainType = type });
        PciBus pci = platform.AddPciBus();
        var unit = new VtdUnit(platform.Memory, config ?? VtdConfig.ScalableMode48Bit);
        pci.AddDmaRemapper(unit, includeAll: true);
        var driver = new IntelIommu(platform, unit);
        pci.SetIommuOps(driver).ThrowIfError();
        return (platform, pci, driver);
    }

    // Threads that each map a fresh page with a marker, DMA through the new address and unmap it, rounds
    // times. Without faultsAllowed every DMA must work and read the marker; with it (a device switching
    // domains under the threads) a DMA may fault, alternates with the ATS path, and only a DMA that
    // works must read the marker. Every failure goes to errors; each thread calls finished at its end.
    private static List<Thread> DmaWorkers(Platform platform, PciDevice dev, int threads, long rounds, ConcurrentQueue<string> errors, Action finished, bool faultsAllowed) =>
        Enumerable.Range(0, threads).Select(t => new Thread(() =>
        {
            var b = new byte[8];
            try
            {
                for (long i = 0; i < rounds && errors.IsEmpty; i++)
                {
                    ulong pa = (2 * Sizes.GiB) + ((ulong)t * 64 * Sizes.MiB) + (((ulong)i % 4096) * K4);
                    ulong marker = ((ulong)t << 48) | (ulong)i;
                    platform.Memory.WriteUInt64(pa, marker);
                    ulong h = platform.Iommu.DmaMapPage(dev, pa, K4, DmaDataDirection.Bidirectional);
                    if (h == IommuCore.DmaMappingError)
                    {
                        errors.Enqueue($"dma_map failed: {ErrorDetail.LastMessage}");
                        return;
                    }

                    DmaResult r = faultsAllowed && (i & 1) != 0 ? dev.AtsDmaRead(null, h, b) : dev.DmaRead(null, h, b);
                    if ((!faultsAllowed && !r.IsOk) || (r.IsOk && BitConverter.ToUInt64(b) != marker))
                    {
                        errors.Enqueue($"thread {t} round {i}: DMA at 0x{h:x} (mapped to 0x{pa:x}) went to {r.Status} 0x{r.Address:x}, read 0x{BitConverter.ToUInt64(b):x}, not 0x{marker:x}");
                    }

                    platform.Iommu.DmaUnmapPage(dev, h, K4, DmaDataDirection.Bidirectional);
                }
            }
            catch (Exception ex)
            {
                errors.Enqueue($"thread {t}: {ex}");
            }
            finally
            {
                finished();
            }
        }) { IsBackground = true }).ToList();

    // Threads map a fresh page, DMA through the new address (which must reach the new page: an IOVA handed
    // out before its old translation was flushed reaches the old one), and unmap; the clock moves meanwhile.
    [Theory]
    [InlineData(DomainType.DmaFq)]
    [InlineData(DomainType.Dma)]
    public void A_reused_iova_always_reaches_its_new_page(DomainType type)
    {
        int threads = 4;
        long rounds = Math.Max(ReliabilityBudget.Ops / 4 / threads, 2000);
        (Platform platform, PciBus pci, _) = NewPlatform(type);
        using Platform _p = platform;
        PciDevice dev = pci.AddDevice(new PciDeviceSpec("0000:00:03.0") { Acs = true });
        var errors = new ConcurrentQueue<string>();
        int done = 0;
        var clock = new Thread(() =>
        {
            while (Volatile.Read(ref done) < threads && errors.IsEmpty)
            {
                platform.Clock.Advance(TimeSpan.FromMilliseconds(1));
                Thread.Yield();
            }
        }) { IsBackground = true };
        List<Thread> workers = DmaWorkers(platform, dev, threads, rounds, errors, () => Interlocked.Increment(ref done), faultsAllowed: false);
        workers.ForEach(w => w.Start());
        clock.Start();
        workers.ForEach(w => Assert.True(w.Join(TimeSpan.FromSeconds(120)), "a worker did not finish (deadlock?)"));
        Assert.True(clock.Join(TimeSpan.FromSeconds(30)), "the clock thread did not finish (deadlock?)");
        Assert.True(errors.IsEmpty, string.Join("\n", errors.Take(10)));
        output.WriteLine($"{type}: {threads} × {rounds}");
    }

    // An UNMANAGED domain freed while another thread maps and unmaps in it: every call either works or
    // throws ObjectDisposedException, and afterwards no frame is leaked or freed twice.
    [Fact]
    public void Map_and_unmap_racing_domain_free_end_cleanly_and_leak_nothing()
    {
        (Platform platform, PciBus pci, _) = NewPlatform(DomainType.Dma);
        using Platform _p = platform;
        long baseline = platform.Frames.LiveFrames;
        var errors = new ConcurrentQueue<string>();
        int rounds = 3000;
        for (int round = 0; round < rounds && errors.IsEmpty; round++)
        {
            IDomain dom = platform.Iommu.DomainAlloc(pci)!;
            using var go = new Barrier(2);
            var mapper = new Thread(() =>
            {
                go.SignalAndWait();
                try
                {
                    for (int i = 0; i < 64; i++)
                    {
                        ulong iova = 0x4000_0000UL + ((ulong)i * 2 * Sizes.MiB);
                        platform.Iommu.Map(dom, iova, 0x1_0000_0000UL + ((ulong)i * K4), K4, IommuProt.Read | IommuProt.Write);
                        platform.Iommu.Unmap(dom, iova, K4);
                    }
                }
                catch (ObjectDisposedException)
                {
                }
                catch (Exception ex)
                {
                    errors.Enqueue($"round {round} mapper: {ex.GetType().Name}: {ex.Message}");
                }
            }) { IsBackground = true };
            mapper.Start();
            go.SignalAndWait();
            Thread.SpinWait(round % 2000);
            try
            {
                platform.Iommu.DomainFree(dom);
            }
            catch (Exception ex)
            {
                errors.Enqueue($"round {round} free: {ex.GetType().Name}: {ex.Message}");
            }

            Assert.True(mapper.Join(TimeSpan.FromSeconds(30)), "mapper hung");
        }

        Assert.True(errors.IsEmpty, string.Join("\n", errors.Take(10)));
        Assert.Equal(baseline, platform.Frames.LiveFrames);
    }

    // dma_unmap_page racing the release of the (only) device of a DMA_FQ group: each call either works or
    // throws one of the documented exceptions, and afterwards no frame is leaked or freed twice.
    [Theory]
    [InlineData(DomainType.DmaFq)]
    [InlineData(DomainType.Dma)]
    public void Dma_map_unmap_racing_device_release_end_cleanly(DomainType type)
    {
        (Platform platform, PciBus pci, _) = NewPlatform(type);
        using Platform _p = platform;
        var errors = new ConcurrentQueue<string>();
        int rounds = 1500;
        for (int round = 0; round < rounds && errors.IsEmpty; round++)
        {
            PciDevice dev = pci.AddDevice(new PciDeviceSpec($"0000:00:{3 + (round % 20):x2}.0") { Acs = true });
            using var go = new Barrier(2);
            var mapper = new Thread(() =>
            {
                go.SignalAndWait();
                try
                {
                    for (int i = 0; i < 64; i++)
                    {
                        ulong h = platform.Iommu.DmaMapPage(dev, 0x1_0000_0000UL + ((ulong)i * 3 * Sizes.MiB), 3 * Sizes.MiB, DmaDataDirection.Bidirectional);
                        if (h != IommuCore.DmaMappingError)
                        {
                            platform.Iommu.DmaUnmapPage(dev, h, 3 * Sizes.MiB, DmaDataDirection.Bidirectional);
                        }
                    }
                }
                catch (Exception ex) when (ex is ObjectDisposedException or ArgumentException)
                {
                }
                catch (Exception ex)
                {
                    errors.Enqueue($"round {round} mapper: {ex}");
                }
            }) { IsBackground = true };
            mapper.Start();
            go.SignalAndWait();
            Thread.SpinWait(round % 3000);
            try
            {
                pci.RemoveDevice(dev);
            }
            catch (Exception ex)
            {
                errors.Enqueue($"round {round} remove: {ex}");
            }

            Assert.True(mapper.Join(TimeSpan.FromSeconds(30)), "mapper hung");
        }

        Assert.True(errors.IsEmpty, string.Join("\n", errors.Take(10)));
        output.WriteLine($"live frames at the end: {platform.Frames.LiveFrames}");
    }

    // The same race, seen from the next domain: a map that was walking the freed domain's tables when
    // DomainFree released them must not write into those frames once a new domain owns them. A leaf in
    // the new (never mapped) domain is a translation nobody made: its device could reach another
    // user's page.
    [Fact]
    public void A_map_racing_domain_free_never_writes_into_the_next_domain_s_tables()
    {
        (Platform platform, PciBus pci, _) = NewPlatform(DomainType.Dma);
        using Platform _p = platform;
        var errors = new ConcurrentQueue<string>();
        int rounds = 4000;
        for (int round = 0; round < rounds && errors.IsEmpty; round++)
        {
            IDomain dom = platform.Iommu.DomainAlloc(pci)!;
            using var go = new Barrier(2);
            var mapper = new Thread(() =>
            {
                go.SignalAndWait();
                try
                {
                    for (int i = 0; i < 256; i++)
                    {
                        // A new 1 GiB region each time: every map installs tables under the root.
                        platform.Iommu.Map(dom, (ulong)(i + 1) * Sizes.GiB, 0x1_0000_0000UL + ((ulong)i * K4), K4, IommuProt.Read | IommuProt.Write);
                    }
                }
                catch (Exception)
                {
                    // Any exception is fine here: what is checked is the next domain.
                }
            }) { IsBackground = true };
            mapper.Start();
            go.SignalAndWait();
            Thread.SpinWait(round % 4000);
            platform.Iommu.DomainFree(dom);
            var next = (DmarDomain)platform.Iommu.DomainAlloc(pci)!;
            Assert.True(mapper.Join(TimeSpan.FromSeconds(30)), "mapper hung");
            var leaves = new List<string>();
            next.PageTable.ForEachLeaf((iova, pa, size, pte) => leaves.Add($"0x{iova:x} -> 0x{pa:x}"));
            if (leaves.Count != 0)
            {
                errors.Enqueue($"round {round}: a domain nobody mapped has {leaves.Count} leaves: {string.Join(", ", leaves.Take(4))}");
            }

            platform.Iommu.DomainFree(next);
        }

        Assert.True(errors.IsEmpty, string.Join("\n", errors.Take(10)));
    }

    // The DMA API keeps using the default domain while another thread moves the group to an UNMANAGED
    // domain and back (the default domain loses and regains its DID) and the clock fires flush-queue
    // timers; an ATS device's device-TLB is flushed under the flush queue's lock. A DMA through a fresh
    // mapping reaches its page or faults (group elsewhere), never an old page; nothing deadlocks.
    [Theory]
    [InlineData(DomainType.DmaFq)]
    [InlineData(DomainType.Dma)]
    public void Dma_api_racing_default_domain_detach_and_reattach_never_reaches_an_old_page(DomainType type)
    {
        int threads = 2;
        long rounds = Math.Max(ReliabilityBudget.Ops / 4 / threads, 2000);
        (Platform platform, PciBus pci, _) = NewPlatform(type, VtdConfig.ScalableMode48Bit with { DeviceTlb = true });
        using Platform _p = platform;
        PciDevice dev = pci.AddDevice(new PciDeviceSpec("0000:00:03.0") { Acs = true, Ats = true });
        IDomain other = platform.Iommu.DomainAlloc(pci)!;
        var errors = new ConcurrentQueue<string>();
        int done = 0;
        long switches = 0;
        var helpers = new List<Thread>
        {
            new(() =>
            {
                while (Volatile.Read(ref done) < threads && errors.IsEmpty)
                {
                    platform.Clock.Advance(TimeSpan.FromMilliseconds(1));
                    Thread.Yield();
                }
            }) { IsBackground = true },
            new(() =>
            {
                try
                {
                    while (Volatile.Read(ref done) < threads && errors.IsEmpty)
                    {
                        Errno e = platform.Iommu.AttachDevice(other, dev);
                        if (e != Errno.None)
                        {
                            errors.Enqueue($"attach: {e}");
                            return;
                        }

                        Thread.Yield();
                        platform.Iommu.DetachDevice(other, dev);
                        switches++;
                        Thread.Yield();
                    }
                }
                catch (Exception ex)
                {
                    errors.Enqueue($"switcher: {ex}");
                }
            }) { IsBackground = true },
        };
        List<Thread> workers = DmaWorkers(platform, dev, threads, rounds, errors, () => Interlocked.Increment(ref done), faultsAllowed: true);
        workers.ForEach(w => w.Start());
        helpers.ForEach(h => h.Start());
        workers.ForEach(w => Assert.True(w.Join(TimeSpan.FromSeconds(120)), "a worker did not finish (deadlock?)"));
        helpers.ForEach(h => Assert.True(h.Join(TimeSpan.FromSeconds(30)), "a helper did not finish (deadlock?)"));
        Assert.True(errors.IsEmpty, string.Join("\n", errors.Take(10)));
        output.WriteLine($"{type}: {threads} × {rounds}, {switches} switches");
    }
}
