using System.Collections.Concurrent;
using Iommu.Devices;
using Iommu.Domains;
using Iommu.Reliability.Tests.Infrastructure;
using Iommu.VtD.Driver;
using Iommu.VtD.Hardware;
using Xunit.Abstractions;

namespace Iommu.Reliability.Tests.Concurrency;

/// <summary>
/// Threads map and unmap through the DMA API of one device's default domain (strict or lazy) while
/// another moves the platform clock, so flush-queue timers fire in the middle of unmaps and full-queue
/// flushes. No IOVA is ever handed out to two live mappings, every live mapping translates to its own
/// buffer, and at the end nothing is mapped. (That no IOVA is reused before its flush is the isolation
/// property's to check: it knows when each flush happens.)
/// </summary>
public sealed class DmaApiConcurrencyTests(ITestOutputHelper output)
{
    private const ulong K4 = 4096;

    [Theory]
    [InlineData(DomainType.DmaFq)]
    [InlineData(DomainType.Dma)]
    public async Task Concurrent_maps_unmaps_and_timer_flushes_never_share_an_iova(DomainType type)
    {
        int threads = Math.Clamp(Environment.ProcessorCount, 4, 16);
        long opsPerThread = Math.Max(ReliabilityBudget.Ops / 10 / threads, 1000);
        using var platform = new Platform(new PlatformOptions { MemorySize = 16 * Sizes.GiB, TableMemorySize = 64 * Sizes.MiB, DefaultDomainType = type });
        PciBus pci = platform.AddPciBus();
        var unit = new VtdUnit(platform.Memory, VtdConfig.ScalableMode48Bit);
        pci.AddDmaRemapper(unit, includeAll: true);
        pci.SetIommuOps(new IntelIommu(platform, unit)).ThrowIfError();
        PciDevice dev = pci.AddDevice(new PciDeviceSpec("0000:00:03.0") { Acs = true });
        IDomain dom = platform.Iommu.GetDmaDomain(dev)!;
        Assert.Equal(type, dom.Type);

        var live = new ConcurrentDictionary<ulong, ulong>(); // IOVA page → the buffer mapped there
        var errors = new ConcurrentQueue<string>();
        using var stop = new CancellationTokenSource();
        var clock = Task.Run(() =>
        {
            while (!stop.IsCancellationRequested)
            {
                platform.Clock.Advance(TimeSpan.FromMilliseconds(3));
                Thread.Yield();
            }
        });
        var workers = Enumerable.Range(0, threads).Select(t => Task.Run(() =>
        {
            var rng = new Random(t);
            var mine = new List<(ulong Handle, ulong Size, ulong Pa)>();
            for (long i = 0; i < opsPerThread; i++)
            {
                if (mine.Count < 64 && (mine.Count == 0 || rng.Next(3) != 0))
                {
                    // 1–4 pages (sometimes 40: a power-of-two rounding, or 600: a leaf table) of this thread's buffers.
                    ulong pages = rng.Next(20) switch { 0 => 40, 1 => 600, _ => (ulong)rng.Next(1, 5) };
                    ulong pa = (2 * Sizes.GiB) + ((ulong)t * 64 * Sizes.MiB) + ((ulong)rng.Next(0, 4096) * K4) + (ulong)rng.Next(0, 64);
                    ulong size = (pages * K4) - 64;
                    ulong h = platform.Iommu.DmaMapPage(dev, pa, size, DmaDataDirection.Bidirectional);
                    if (h == IommuCore.DmaMappingError)
                    {
                        errors.Enqueue($"dma_map failed: {ErrorDetail.LastMessage}");
                        return;
                    }

                    for (ulong p = h & ~(K4 - 1); p < h + size; p += K4)
                    {
                        if (!live.TryAdd(p, pa))
                        {
                            errors.Enqueue($"IOVA 0x{p:x} handed out while live");
                        }
                    }

                    if (platform.Iommu.IovaToPhys(dom, h) != pa)
                    {
                        errors.Enqueue($"0x{h:x} translates to 0x{platform.Iommu.IovaToPhys(dom, h):x}, not 0x{pa:x}");
                    }

                    mine.Add((h, size, pa));
                }
                else
                {
                    int k = rng.Next(mine.Count);
                    (ulong h, ulong size, _) = mine[k];
                    mine.RemoveAt(k);

                    // Out of the live set before the unmap: once it returns, another thread may get the IOVA.
                    for (ulong p = h & ~(K4 - 1); p < h + size; p += K4)
                    {
                        live.TryRemove(p, out _);
                    }

                    platform.Iommu.DmaUnmapPage(dev, h, size, DmaDataDirection.Bidirectional);
                }
            }

            foreach ((ulong h, ulong size, _) in mine)
            {
                for (ulong p = h & ~(K4 - 1); p < h + size; p += K4)
                {
                    live.TryRemove(p, out _);
                }

                platform.Iommu.DmaUnmapPage(dev, h, size, DmaDataDirection.Bidirectional);
            }
        })).ToArray();
        await Task.WhenAll(workers);
        await stop.CancelAsync();
        await clock;

        Assert.True(errors.IsEmpty, string.Join("\n", errors.Take(10)));
        Assert.Empty(live);
        platform.Clock.Advance(IommuCore.IovaFqTimeout); // the last queued entries go
        Assert.Equal(0UL, platform.Iommu.IovaToPhys(dom, 0xFFFF_F000));
        output.WriteLine($"{type}: {threads} threads × {opsPerThread} ops, clock at {platform.Clock.Now.TotalMilliseconds} ms");
    }
}
