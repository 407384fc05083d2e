using System.Collections.Concurrent;
using Iommu.Devices;
using Iommu.Domains;
using Iommu.Groups;
using static Iommu.VtD.Tests.Driver.DriverTestKit;

namespace Iommu.VtD.Tests.Driver;

/// <summary>
/// dma_map_page / dma_map_sg / dma_alloc_coherent and their unmaps and frees on two threads (one device of a two-device
/// group each) racing a third that moves the group to unmanaged domains and back and frees them, hot-removes and
/// re-adds a device, or disposes the platform. Seeds are fixed; nothing depends on timing but which interleaving runs.
/// Oracle: no exception but the documented ones; in a strict domain no DMA reaches a page after its unmap returned;
/// a live mapping translates to its page whenever its device is in its group; after the teardown no IOVA is live
/// and every frame (page tables, coherent pages) is back.
/// </summary>
public sealed class DmaLifetimeStressTests
{
    public enum Racer
    {
        AttachDetachFree,
        HotRemove,
        Dispose,
    }

    private sealed record Item(int Kind, ulong Handle, ulong Size, ulong Pa, Scatterlist[]? Sg);

    [Theory]
    [InlineData(Racer.AttachDetachFree, DomainType.Dma)]
    [InlineData(Racer.AttachDetachFree, DomainType.DmaFq)]
    [InlineData(Racer.HotRemove, DomainType.Dma)]
    [InlineData(Racer.HotRemove, DomainType.DmaFq)]
    [InlineData(Racer.Dispose, DomainType.Dma)]
    [InlineData(Racer.Dispose, DomainType.DmaFq)]
    public void Dma_api_racing_group_and_platform_lifetime_leaks_nothing_and_reaches_no_unmapped_page(Racer racer, DomainType type)
    {
        int rounds = racer == Racer.Dispose ? 40 : 4;
        int iterations = racer == Racer.Dispose ? 300 : 2500;
        for (int round = 0; round < rounds; round++)
        {
            Run(racer, type, seed: round, iterations);
        }
    }

    private static void Run(Racer racer, DomainType type, int seed, int iterations)
    {
        var f = new DriverBed(Config("Sm48"), memory: SmallMemory, defaultDomain: type);
        bool disposed = false;
        try
        {
            var specs = new[] { new PciDeviceSpec("0000:00:03.0") { Multifunction = true }, new PciDeviceSpec("0000:00:03.1") { Multifunction = true } };
            PciDevice[] devs = [f.Pci.AddDevice(specs[0]), f.Pci.AddDevice(specs[1])];
            foreach (PciDevice d in devs)
            {
                f.Pci.RemoveDevice(d); // warm up the unit's root and context tables, which stay
            }

            long baseline = f.Platform.Frames.LiveFrames;
            foreach (PciDevice d in devs)
            {
                Assert.Equal(Errno.None, f.Pci.AddDevice(d));
            }

            Assert.Same(devs[0].IommuGroup, devs[1].IommuGroup);
            var errors = new ConcurrentQueue<string>();
            int done = 0;
            bool strict = type == DomainType.Dma;
            var workers = Enumerable.Range(0, 2).Select(t => new Thread(() =>
            {
                try
                {
                    Work(f, devs[t], devs[1 - t], t, seed, iterations, strict, racer, errors);
                }
                catch (ObjectDisposedException) when (racer == Racer.Dispose)
                {
                }
                catch (Exception ex)
                {
                    errors.Enqueue($"worker {t}: {ex}");
                }
                finally
                {
                    Interlocked.Increment(ref done);
                }
            }) { IsBackground = true }).ToList();
            var rng = new Random(seed + 1000);
            var racerThread = new Thread(() =>
            {
                try
                {
                    Race(f, devs, racer, rng, () => Volatile.Read(ref done) == 2, () => disposed = true);
                }
                catch (Exception ex)
                {
                    errors.Enqueue($"racer: {ex}");
                }
            }) { IsBackground = true };
            workers.ForEach(w => w.Start());
            racerThread.Start();
            workers.ForEach(w => Assert.True(w.Join(TimeSpan.FromSeconds(120)), "a worker hung"));
            Assert.True(racerThread.Join(TimeSpan.FromSeconds(60)), "the racer hung");
            Assert.True(errors.IsEmpty, $"{racer} {type} seed {seed}:\n" + string.Join("\n", errors.Take(6)));
            if (racer == Racer.Dispose)
            {
                Assert.True(disposed);
                return;
            }

            f.Platform.Clock.Advance(IommuCore.IovaFqTimeout); // the flush queue empties
            foreach (PciDevice d in devs)
            {
                if (d.IommuGroup?.DefaultDomain is IommuDomain { IovaCookie: { } iovad })
                {
                    Assert.Empty(iovad.LiveRangeList());
                    Assert.Null(iovad.ValidateTree());
                }
            }

            foreach (PciDevice d in devs)
            {
                f.Pci.RemoveDevice(d); // the group goes, its default domain with it
            }

            Assert.Equal(baseline, f.Platform.Frames.LiveFrames);
        }
        finally
        {
            f.Dispose();
        }
    }

    // The racer: until the workers are done, one of the lifetime events, over and over.
    private static void Race(DriverBed f, PciDevice[] devs, Racer racer, Random rng, Func<bool> finished, Action disposing)
    {
        IommuCore iommu = f.Iommu;
        if (racer == Racer.Dispose)
        {
            Thread.SpinWait(rng.Next(400_000));
            disposing();
            f.Platform.Dispose();
            return;
        }

        while (!finished())
        {
            switch (racer)
            {
                case Racer.AttachDetachFree:
                {
                    IDomain other = iommu.DomainAlloc(f.Pci)!;
                    IommuGroup group = devs[0].IommuGroup!;
                    Assert.Equal(Errno.None, iommu.AttachGroup(other, group));
                    Thread.SpinWait(rng.Next(2000));
                    iommu.DetachGroup(other, group);
                    iommu.DomainFree(other);
                    break;
                }

                case Racer.HotRemove:
                {
                    PciDevice d = devs[rng.Next(2)];
                    f.Pci.RemoveDevice(d);
                    Thread.SpinWait(rng.Next(2000));
                    Assert.Equal(Errno.None, f.Pci.AddDevice(d));
                    break;
                }

                case Racer.Dispose:
                    return;
            }

            f.Platform.Clock.Advance(TimeSpan.FromMilliseconds(3));
        }
    }

    // Maps, unmaps, allocates and frees through dev, at most 24 live at once, all undone at the end.
    private static void Work(DriverBed f, PciDevice dev, PciDevice peer, int t, int seed, int iterations, bool strict, Racer racer, ConcurrentQueue<string> errors)
    {
        IommuCore iommu = f.Iommu;
        var rng = new Random((seed * 31) + t);
        var live = new List<Item>();
        var freeSlots = new Stack<int>(Enumerable.Range(0, 64));
        var slotOf = new Dictionary<Item, int>();
        var buf = new byte[8];
        for (int i = 0; i < iterations && errors.IsEmpty; i++)
        {
            if (live.Count < 24 && (live.Count == 0 || rng.Next(2) == 0))
            {
                int slot = freeSlots.Pop();
                ulong pa = (2 * Sizes.GiB) + ((ulong)t * 256 * Sizes.MiB) + ((ulong)slot * 64 * K4);
                Item? item = rng.Next(3) switch
                {
                    0 => MapPage(iommu, dev, pa, (ulong)rng.Next(1, 4) * K4),
                    1 => MapSg(iommu, dev, pa),
                    _ => AllocCoherent(iommu, dev, (ulong)rng.Next(1, 4) * K4),
                };
                if (item is null)
                {
                    errors.Enqueue($"worker {t} iteration {i}: a map failed: {ErrorDetail.LastMessage}");
                    return;
                }

                slotOf[item] = slot;
                live.Add(item);
                CheckTranslation(f, dev, item, errors, $"worker {t} iteration {i} after its map");
            }
            else
            {
                int k = rng.Next(live.Count);
                Item item = live[k];
                live.RemoveAt(k);
                Undo(iommu, dev, item);
                freeSlots.Push(slotOf[item]);
                slotOf.Remove(item);
                if (strict && item.Kind != 2 && item.Handle != item.Pa)
                {
                    // Strict: once the unmap returned, no device of the group reaches the page through that IOVA.
                    // (A handle equal to the page is a dma-direct map made while the device was out of its group.)
                    DmaResult r;
                    try
                    {
                        r = peer.DmaRead(null, item.Handle & ~(K4 - 1), buf);
                    }
                    catch (InvalidOperationException) when (racer == Racer.HotRemove)
                    {
                        continue; // the peer is hot-removed meanwhile: a removed function issues no DMA (documented)
                    }

                    if (r.IsOk && r.Address >> 12 == item.Pa >> 12)
                    {
                        errors.Enqueue($"worker {t} iteration {i}: {peer.Name} reached 0x{r.Address:x} through 0x{item.Handle:x} after its unmap");
                    }
                }
            }

            if (i % 97 == 0)
            {
                foreach (Item it in live)
                {
                    CheckTranslation(f, dev, it, errors, $"worker {t} iteration {i}");
                }
            }
        }

        foreach (Item item in live)
        {
            Undo(iommu, dev, item);
        }

    }

    private static Item? MapPage(IommuCore iommu, PciDevice dev, ulong pa, ulong size)
    {
        ulong h = iommu.DmaMapPage(dev, pa, size, DmaDataDirection.Bidirectional);
        return h == IommuCore.DmaMappingError ? null : new Item(0, h, size, pa, null);
    }

    private static Item? MapSg(IommuCore iommu, PciDevice dev, ulong pa)
    {
        Scatterlist[] sg = [new(pa, 0x1000), new(pa + 0x2000, 0x800), new(pa + 0x4000, 0x1000)];
        return iommu.DmaMapSg(dev, sg, DmaDataDirection.FromDevice) == 0 ? null : new Item(1, sg[0].DmaAddress, 0, pa, sg);
    }

    private static Item? AllocCoherent(IommuCore iommu, PciDevice dev, ulong size)
    {
        ulong cpu = iommu.DmaAllocCoherent(dev, size, out ulong h);
        return cpu == 0 ? null : new Item(2, h, size, cpu, null);
    }

    private static void Undo(IommuCore iommu, PciDevice dev, Item item)
    {
        try
        {
            UndoCore(iommu, dev, item);
        }
        catch (ArgumentException) when (item.Kind != 2 && item.Handle == item.Pa)
        {
            // Mapped by dma-direct while the device was out of its group (the handle is the page), unmapped after it
            // came back: no mapping of it starts there in its DMA domain (documented).
        }
    }

    private static void UndoCore(IommuCore iommu, PciDevice dev, Item item)
    {
        switch (item.Kind)
        {
            case 0:
                iommu.DmaUnmapPage(dev, item.Handle, item.Size, DmaDataDirection.Bidirectional);
                break;
            case 1:
                iommu.DmaUnmapSg(dev, item.Sg, DmaDataDirection.FromDevice);
                break;
            default:
                iommu.DmaFreeCoherent(dev, item.Size, item.Pa, item.Handle);
                break;
        }
    }

    // A live IOMMU mapping translates to its page in the device's DMA domain, when the device is (still) in the group
    // whose domain it was made in. Checked through iova_to_phys; a domain being freed meanwhile is skipped.
    private static void CheckTranslation(DriverBed f, PciDevice dev, Item item, ConcurrentQueue<string> errors, string where)
    {
        if (item.Handle == item.Pa || f.Iommu.GetDmaDomain(dev) is not IommuDomain { IovaCookie: { } iovad } dom || !iovad.IsLiveFor(item.Handle >> iovad.Shift, dev))
        {
            return;
        }

        try
        {
            ulong got = f.Iommu.IovaToPhys(dom, item.Handle);
            if (got != item.Pa + (item.Handle & (K4 - 1)) && got != 0)
            {
                errors.Enqueue($"{where}: 0x{item.Handle:x} translates to 0x{got:x}, not 0x{item.Pa:x}");
            }
        }
        catch (ObjectDisposedException)
        {
        }
    }
}
