using System.Numerics;
using Iommu.Devices;
using Iommu.Domains;
using static Iommu.VtD.Tests.Driver.DriverTestKit;

namespace Iommu.VtD.Tests.Driver;

/// <summary>
/// Random dma_map_page / dma_unmap_page sequences on a PCI device behind VT-d, over a strict DMA and a
/// lazy DMA_FQ default domain, checked by the device's own DMA through the hardware model: every live
/// handle reads the bytes of its buffer (from its offset, across page boundaries) and writes land in
/// it; every unmapped page no live mapping covers faults at once in a strict domain and after the flush
/// queue has drained in a lazy one; live handles never share a page, sit below 4 GiB (the PCI SAC
/// rule of iommu_dma_alloc_iova), outside the interrupt window, aligned to their rounded-up size; and
/// once everything is unmapped and drained, no IOVA range is left in the tree but the reserved ones
/// and those parked in the range caches, and no leaf is left in the page table.
/// </summary>
public sealed class DmaApiPropertyTests
{
    private const ulong BufBase = 0x1_0000_0000;   // above 4 GiB, so handles never equal addresses
    private const ulong Slot = 0x4_0000;           // 256 KiB of physical buffer per mapping

    private sealed record Mapping(int Slot, ulong Phys, ulong Size, ulong Handle, DmaDataDirection Dir);

    private static (int TreeRanges, int Cached) Allocator(IDomain dom)
    {
        Iommu.Dma.IovaDomain iovad = ((IommuDomain)dom).IovaCookie!;
        return (iovad.TreeRanges, iovad.CachedRanges);
    }

    private static void Run(DomainType type, int seed, int steps)
    {
        var rng = new Random(seed);
        using var f = new DriverBed(Config("Sm48"), memory: SmallMemory, defaultDomain: type);
        PciDevice dev = f.AddDevice("0000:00:03.0");
        IDomain dom = f.Iommu.GetDmaDomain(dev)!;
        bool strict = type == DomainType.Dma;
        var live = new List<Mapping>();
        var dead = new List<Mapping>();      // unmapped, maybe still in the flush queue
        var freeSlots = new Stack<int>(Enumerable.Range(0, 400).Reverse());
        int baseline = -1;
        // Odd seeds of the lazy domain never move the clock until the end, so that only a full queue
        // (IOVA_FQ_SIZE - 1 entries waiting) can flush it.
        bool clockStill = !strict && seed % 2 == 1;
        long flushesBefore = f.Unit.Activity.IotlbInvalidations;
        string Where(int step) => $"{type} seed {seed} step {step}";

        for (int step = 0; step < steps; step++)
        {
            int op = rng.Next(100);
            if ((op < 55 || live.Count == 0) && freeSlots.Count > 0)
            {
                int slot = freeSlots.Pop();
                ulong offset = (ulong)rng.Next(0, 4096);
                ulong size = rng.Next(4) switch
                {
                    0 => (ulong)rng.Next(1, 64),
                    1 => (ulong)rng.Next(64, 3 * 4096),
                    2 => (ulong)rng.Next(3 * 4096, 40 * 4096),
                    _ => (ulong)rng.Next(1, 200 * 1024),
                };
                ulong phys = BufBase + ((ulong)slot * Slot) + offset;
                var dir = (DmaDataDirection)rng.Next(0, 3);
                var pattern = new byte[size];
                rng.NextBytes(pattern);
                Assert.True(f.Platform.Memory.TryWrite(phys, pattern));
                ulong h = f.Iommu.DmaMapPage(dev, phys, size, dir);
                Assert.True(h != IommuCore.DmaMappingError, $"{Where(step)}: map of 0x{size:x} failed: {ErrorDetail.LastErrno}");
                if (baseline < 0)
                {
                    baseline = Allocator(dom).TreeRanges - 1;
                }

                ulong pages = ((size + offset + 4095) >> 12);
                ulong align = BitOperations.RoundUpToPowerOf2(pages) << 12;
                Assert.True((h & 0xfff) == offset, $"{Where(step)}: handle 0x{h:x} lost the offset 0x{offset:x}");
                Assert.True((h - offset) % align == 0, $"{Where(step)}: handle 0x{h:x} not aligned to 0x{align:x}");
                Assert.True(h - offset + (pages << 12) <= 1UL << 32, $"{Where(step)}: PCI handle 0x{h:x} above 4 GiB while the 32-bit space has room");
                Assert.True(h - offset + (pages << 12) <= 0xFEE0_0000 || h - offset > 0xFEEF_FFFF, $"{Where(step)}: 0x{h:x} in the interrupt window");
                var m = new Mapping(slot, phys, size, h, dir);
                foreach (Mapping o in live)
                {
                    Assert.False(Pages(m).Overlaps(Pages(o)), $"{Where(step)}: 0x{h:x}+0x{size:x} shares a page with live 0x{o.Handle:x}+0x{o.Size:x}");
                }

                live.Add(m);
                CheckLive(f, dev, m, rng, Where(step));
            }
            else if (op < 92 && live.Count > 0)
            {
                int i = rng.Next(live.Count);
                Mapping m = live[i];
                live[i] = live[^1];
                live.RemoveAt(live.Count - 1);
                f.Iommu.DmaUnmapPage(dev, m.Handle, m.Size, m.Dir);
                freeSlots.Push(m.Slot);
                dead.Add(m);
                if (strict)
                {
                    CheckDead(f, dev, m, live, Where(step));
                }
            }
            else if (op < 96 && !clockStill)
            {
                f.Platform.Clock.Advance(TimeSpan.FromMilliseconds(rng.Next(1, 12)));
            }
            else if (live.Count > 0)
            {
                CheckLive(f, dev, live[rng.Next(live.Count)], rng, Where(step));
            }

            if (!strict && !clockStill && step % 50 == 0)
            {
                // Drain: after the timer's flush no unmapped page may be reachable.
                f.Platform.Clock.Advance(IommuCore.IovaFqTimeout);
                foreach (Mapping d in dead)
                {
                    CheckDead(f, dev, d, live, Where(step) + " after the flush queue drained");
                }

                dead.Clear();
            }
            else if (strict)
            {
                dead.Clear();
            }
        }

        if (clockStill)
        {
            Assert.True(f.Unit.Activity.IotlbInvalidations > flushesBefore, $"{type} seed {seed}: the queue never filled up; the run does not reach the full-queue flush");
        }

        foreach (Mapping m in live)
        {
            CheckLive(f, dev, m, rng, "final");
            f.Iommu.DmaUnmapPage(dev, m.Handle, m.Size, m.Dir);
            dead.Add(m);
        }

        live.Clear();
        f.Platform.Clock.Advance(IommuCore.IovaFqTimeout);
        foreach (Mapping d in dead)
        {
            CheckDead(f, dev, d, live, $"{type} seed {seed} at the end");
        }

        (int tree, int cached) = Allocator(dom);
        Assert.True(tree - cached == baseline, $"{type} seed {seed}: {tree} ranges in the tree, {cached} cached, {baseline} reserved: {tree - cached - baseline} leaked");
        Assert.Empty(Leaves(dom));
    }

    private static (ulong Lo, ulong Hi) Pages(Mapping m) => ((m.Handle >> 12), (m.Handle + m.Size - 1) >> 12);

    private static void CheckLive(DriverBed f, PciDevice dev, Mapping m, Random rng, string where)
    {
        // The device reads the whole buffer from its handle (every direction may read on Intel: every
        // leaf has the read bit) and gets the bytes in memory.
        var want = new byte[m.Size];
        f.Platform.Memory.Read(m.Phys, want);
        var got = new byte[m.Size];
        DmaResult r = dev.DmaRead(null, m.Handle, got);
        Assert.True(r.IsOk, $"{where}: DMA read of live 0x{m.Handle:x}+0x{m.Size:x} failed: {r}");
        Assert.True(want.AsSpan().SequenceEqual(got), $"{where}: DMA read of 0x{m.Handle:x}+0x{m.Size:x} returned other bytes than its buffer at 0x{m.Phys:x}");

        // A write at a random place lands in the buffer, unless the mapping is TO_DEVICE (read-only).
        if (m.Size >= 8)
        {
            ulong at = (ulong)rng.Next(0, (int)(m.Size - 7));
            ulong tag = (ulong)rng.NextInt64();
            DmaResult w = f.Write(dev, null, m.Handle + at, tag);
            if (m.Dir == DmaDataDirection.ToDevice)
            {
                Assert.True(w.Status == DmaStatus.Fault, $"{where}: write to TO_DEVICE 0x{m.Handle + at:x} did not fault: {w}");
            }
            else
            {
                var landed = new byte[8];
                f.Platform.Memory.Read(m.Phys + at, landed);
                Assert.True(w.IsOk && BitConverter.ToUInt64(landed) == tag, $"{where}: write to 0x{m.Handle + at:x} did not land at 0x{m.Phys + at:x}: {w}");
            }
        }
    }

    private static void CheckDead(DriverBed f, PciDevice dev, Mapping d, List<Mapping> live, string where)
    {
        (ulong lo, ulong hi) = Pages(d);
        Span<byte> b = stackalloc byte[1];
        for (ulong p = lo; p <= hi; p++)
        {
            if (live.Any(m => Pages(m).Lo <= p && p <= Pages(m).Hi))
            {
                continue; // handed out again already
            }

            DmaResult r = dev.DmaRead(null, p << 12, b);
            Assert.True(r.Status == DmaStatus.Fault, $"{where}: unmapped page 0x{p << 12:x} of 0x{d.Handle:x}+0x{d.Size:x} is still reachable: {r}");
        }
    }

    /// <summary>Strict DMA domain: unmapped pages fault as soon as the unmap returns.</summary>
    [Fact]
    public void Strict_domain_random_maps_and_unmaps_reach_the_right_bytes_fault_after_unmap_and_leak_nothing()
    {
        for (int seed = 1; seed <= 6; seed++)
        {
            Run(DomainType.Dma, seed, 900);
        }
    }

    /// <summary>Lazy DMA_FQ domain: unmapped pages fault once the flush queue has drained.</summary>
    [Fact]
    public void Flush_queue_domain_random_maps_and_unmaps_reach_the_right_bytes_fault_after_the_drain_and_leak_nothing()
    {
        for (int seed = 101; seed <= 106; seed++)
        {
            Run(DomainType.DmaFq, seed, 900);
        }
    }
}

internal static class PageRangeExtensions
{
    public static bool Overlaps(this (ulong Lo, ulong Hi) a, (ulong Lo, ulong Hi) b) => a.Lo <= b.Hi && b.Lo <= a.Hi;
}
