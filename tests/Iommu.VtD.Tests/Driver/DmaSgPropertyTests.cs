using Iommu.Devices;
using Iommu.Domains;
using static Iommu.VtD.Tests.Driver.DriverTestKit;

namespace Iommu.VtD.Tests.Driver;

/// <summary>
/// Random scatterlists (offsets, lengths, physically contiguous runs, the device's segment limits and DMA mask)
/// mapped, kept alive together and unmapped in random order, over strict and lazy DMA domains on legacy and
/// scalable units. Checked as a device and its driver observe them, not against a copy of the layout code: the
/// DMA segments carry the buffers' bytes in list order, respect the device's limits, lie below its mask, and are
/// unreachable once unmapped (after the flush queue drains in lazy mode); nothing stays mapped at the end. Identity
/// (dma-direct) devices get each entry at its physical address and refuse lists above their mask. Coherent buffers
/// are allocated and freed among the lists: aligned to their page order, below the coherent mask, zeroed, reaching
/// their pages, and unreachable and given back once freed.
/// </summary>
public sealed class DmaSgPropertyTests
{
    private sealed record Live(Scatterlist[] Sg, int Segments, DmaDataDirection Dir);

    private sealed record Coherent(ulong Cpu, ulong Size, ulong Handle);

    private static void Run(int seed)
    {
        var rng = new Random(seed);
        DomainType type = rng.Next(5) switch { 0 or 1 => DomainType.Dma, 2 or 3 => DomainType.DmaFq, _ => DomainType.Identity };
        bool direct = type == DomainType.Identity;
        string config = rng.Next(3) switch { 0 => "Legacy48", 1 => "Sm48", _ => "Legacy39" };
        using var f = new DriverBed(Config(config), memory: SmallMemory, defaultDomain: type);
        PciDevice dev = f.AddDevice("0000:00:03.0");
        IDomain domain = f.Iommu.GetDmaDomain(dev)!;
        ulong boundary = rng.Next(4) switch { 0 => 0x3FFF, 1 => 0xFFFF, _ => 0xFFFF_FFFF };
        uint maxSeg = rng.Next(4) switch { 0 => 0x1000, 1 => 0x3000, 2 => uint.MaxValue, _ => 0x10000 };
        ulong mask = rng.Next(4) switch { 0 => 0xFFFF_FFFF, 1 => 0xFF_FFFF, _ => ulong.MaxValue }; // any mask: iommu_dma_ops has no dma_supported
        // dma-direct gets its coherent buffers from the frames at the top of 8 GiB: a smaller coherent mask fails there.
        ulong coherentMask = direct ? ulong.MaxValue : rng.Next(3) switch { 0 => 0xFFFF_FFFF, 1 => 0xFF_FFFF, _ => ulong.MaxValue };
        Assert.Equal(Errno.None, f.Iommu.DmaSetSegBoundary(dev, boundary));
        Assert.Equal(Errno.None, f.Iommu.DmaSetMaxSegSize(dev, maxSeg));
        Assert.Equal(Errno.None, f.Iommu.DmaSetMask(dev, mask));
        Assert.Equal(Errno.None, f.Iommu.DmaSetCoherentMask(dev, coherentMask));
        string where = $"seed {seed} ({type}, {config}, boundary 0x{boundary:x}, max segment 0x{maxSeg:x}, mask 0x{mask:x}, coherent mask 0x{coherentMask:x})";
        var coherent = new List<Coherent>();
        var freed = new List<Coherent>();

        var live = new List<Live>();
        var dead = new List<Live>();
        for (int step = 0; step < 24; step++)
        {
            if (rng.Next(4) == 0)
            {
                if (coherent.Count < 3 && (coherent.Count == 0 || rng.Next(2) == 0))
                {
                    coherent.Add(AllocCoherent(f, dev, domain, direct, rng, coherentMask, $"{where} step {step}"));
                }
                else
                {
                    Coherent c = coherent[rng.Next(coherent.Count)];
                    coherent.Remove(c);
                    f.Iommu.DmaFreeCoherent(dev, c.Size, c.Cpu, c.Handle);
                    // Strict or dma-direct: the pages go back at once; lazy: after the flush (CheckFreed), never before it.
                    Assert.True(f.Platform.Frames.IsAllocated(c.Cpu) == (type == DomainType.DmaFq && !direct), $"{where} step {step}: the coherent buffer's frames went back {(type == DomainType.DmaFq && !direct ? "before the flush" : "late")}");
                    freed.Add(c);
                    if (type == DomainType.Dma)
                    {
                        CheckFreed(f, dev, domain, freed, $"{where} step {step}"); // strict: now, before the IOVA is reused
                    }
                }
            }
            else if (direct && (live.Count == 0 || rng.Next(2) == 0))
            {
                Scatterlist[] sg = RandomList(rng, boundary, maxSeg);
                int n = f.Iommu.DmaMapSg(dev, sg, DmaDataDirection.ToDevice);
                bool fits = sg.All(s => s.Phys + s.Length - 1 <= mask);
                Assert.True(fits == (n == sg.Length), $"{where} step {step}: dma-direct map of a list {(fits ? "below" : "above")} the mask returned {n} ({ErrorDetail.LastErrno} {ErrorDetail.LastMessage})");
                if (!fits)
                {
                    Assert.Equal(Errno.EIO, ErrorDetail.LastErrno);
                    Assert.All(sg, s => Assert.Equal((IommuCore.DmaMappingError, 0U), (s.DmaAddress, s.DmaLength)));
                    continue;
                }

                Assert.All(sg, s => Assert.Equal((s.Phys, s.Length), (s.DmaAddress, s.DmaLength)));
                live.Add(new Live(sg, n, DmaDataDirection.ToDevice));
            }
            else if (direct)
            {
                Live l = live[rng.Next(live.Count)];
                live.Remove(l);
                f.Iommu.DmaUnmapSg(dev, l.Sg, l.Dir);
            }
            else if (live.Count < 3 && (live.Count == 0 || rng.Next(2) == 0))
            {
                Scatterlist[] sg = RandomList(rng, boundary, maxSeg);
                foreach (Scatterlist s in sg)
                {
                    f.Platform.Memory.WriteUInt64(s.Phys & ~7UL, s.Phys * 31);
                }

                DmaDataDirection dir = rng.Next(2) == 0 ? DmaDataDirection.Bidirectional : DmaDataDirection.ToDevice;
                int n = f.Iommu.DmaMapSg(dev, sg, dir);
                Assert.True(n > 0, $"{where} step {step}: map failed: {ErrorDetail.LastErrno} {ErrorDetail.LastMessage}");
                CheckSegments(f, dev, domain, sg, n, boundary, maxSeg, mask, $"{where} step {step}");
                live.Add(new Live(sg, n, dir));
            }
            else
            {
                Live l = live[rng.Next(live.Count)];
                live.Remove(l);
                f.Iommu.DmaUnmapSg(dev, l.Sg, l.Dir);
                dead.Add(l);
                if (type == DomainType.Dma || rng.Next(3) == 0)
                {
                    f.Platform.Clock.Advance(IommuCore.IovaFqTimeout); // lazy: the flush; strict: nothing
                    foreach (Live d in dead)
                    {
                        CheckUnreachable(f, dev, domain, d, $"{where} step {step}");
                    }

                    dead.Clear();
                    CheckFreed(f, dev, domain, freed, $"{where} step {step}");
                }
            }

            foreach (Live l in live)
            {
                Assert.Equal(l.Segments, CountSegments(l.Sg));
            }
        }

        foreach (Live l in live)
        {
            f.Iommu.DmaUnmapSg(dev, l.Sg, l.Dir);
            dead.Add(l);
        }

        foreach (Coherent c in coherent)
        {
            f.Iommu.DmaFreeCoherent(dev, c.Size, c.Cpu, c.Handle);
            freed.Add(c);
        }

        f.Platform.Clock.Advance(IommuCore.IovaFqTimeout);
        CheckFreed(f, dev, domain, freed, $"{where} at the end");
        if (direct)
        {
            return;
        }

        foreach (Live d in dead)
        {
            CheckUnreachable(f, dev, domain, d, $"{where} at the end");
        }

        Assert.Empty(Leaves(domain));
    }

    // 1 to 8 pages, or a few bytes: zeroed, aligned to its page order, below the coherent mask (else ENOMEM from the IOVA
    // allocator), and the device reaches the buffer's first and last bytes through the handle.
    private static Coherent AllocCoherent(DriverBed f, PciDevice dev, IDomain domain, bool direct, Random rng, ulong coherentMask, string where)
    {
        ulong size = rng.Next(2) == 0 ? (ulong)rng.Next(1, 64) : (ulong)rng.Next(1, 9) * 4096 - (ulong)rng.Next(0, 2) * 100;
        ulong cpu = f.Iommu.DmaAllocCoherent(dev, size, out ulong handle);
        Assert.True(cpu != 0, $"{where}: coherent alloc of 0x{size:x} failed: {ErrorDetail.LastErrno} {ErrorDetail.LastMessage}");
        ulong align = System.Numerics.BitOperations.RoundUpToPowerOf2((size + 4095) / 4096) * 4096;
        Assert.True(cpu % align == 0 && handle % align == 0, $"{where}: coherent buffer 0x{cpu:x} (DMA 0x{handle:x}) of 0x{size:x} bytes not aligned to 0x{align:x}");
        Assert.True(handle + size - 1 <= coherentMask, $"{where}: coherent DMA address 0x{handle:x} above the coherent mask");
        Assert.True(!direct || handle == cpu, $"{where}: dma-direct handle 0x{handle:x} is not the physical address 0x{cpu:x}");
        Assert.Equal(0UL, f.Platform.Memory.ReadUInt64((cpu + size - 1) & ~7UL));
        f.Platform.Memory.WriteUInt64(cpu, cpu * 17);
        f.Platform.Memory.WriteUInt64((cpu + size - 1) & ~7UL, cpu * 19);
        Span<byte> b = stackalloc byte[8];
        foreach (ulong off in new[] { 0UL, (size - 1) & ~7UL })
        {
            DmaResult r = dev.DmaRead(null, handle + off, b);
            Assert.True(r.IsOk, $"{where}: the device cannot read its coherent buffer at 0x{handle + off:x}: {r}");
            Assert.Equal(f.Platform.Memory.ReadUInt64(cpu + off), BitConverter.ToUInt64(b));
        }

        return new Coherent(cpu, size, handle);
    }

    // Freed coherent buffers, once the flush queue drained: their DMA addresses translate to nothing and fault.
    private static void CheckFreed(DriverBed f, PciDevice dev, IDomain domain, List<Coherent> freed, string where)
    {
        if (domain.Type is not (DomainType.Dma or DomainType.DmaFq))
        {
            freed.Clear();
            return;
        }

        Span<byte> b = stackalloc byte[1];
        foreach (Coherent c in freed)
        {
            Assert.False(f.Platform.Frames.IsAllocated(c.Cpu), $"{where}: the freed coherent buffer's frames were not given back after the flush");
            foreach (ulong iova in new[] { c.Handle, c.Handle + c.Size - 1 })
            {
                Assert.True(f.Iommu.IovaToPhys(domain, iova) == 0, $"{where}: freed coherent DMA address 0x{iova:x} still maps");
                Assert.True(dev.DmaRead(null, iova, b).Status == DmaStatus.Fault, $"{where}: freed coherent DMA address 0x{iova:x} still reachable");
            }
        }

        freed.Clear();
    }

    // 1 to 8 entries: any offset and length up to 6 pages (never longer than the boundary or the max segment size allow), sometimes
    // physically contiguous with the entry before (which the map may join into one piece, and merge into one
    // segment when the entries meet on a granule).
    private static Scatterlist[] RandomList(Random rng, ulong boundary, uint maxSeg)
    {
        var sg = new Scatterlist[rng.Next(1, 9)];
        ulong next = 0;
        for (int i = 0; i < sg.Length; i++)
        {
            ulong off = rng.Next(3) switch { 0 => 0, 1 => (ulong)rng.Next(1, 4096), _ => (ulong)rng.Next(0, 8) * 512 };
            ulong phys = i > 0 && rng.Next(3) == 0 ? next : (0x1_0000_0000UL + ((ulong)rng.Next(0, 0xC_0000) << 12)) + off; // RAM in [4 GiB, 7 GiB): clear of the interrupt window and of the table frames at the top of 8 GiB
            ulong room = Math.Min(boundary + 1 - (phys & 0xFFF), maxSeg); // callers never build longer entries (the block layer does not)
            uint length = (uint)Math.Min(room, rng.Next(3) switch
            {
                0 => (ulong)rng.Next(1, 64),
                1 => (ulong)(4096 - (int)(phys & 0xFFF)) + ((ulong)rng.Next(0, 3) * 4096),
                _ => (ulong)rng.Next(1, 6 * 4096),
            });
            sg[i] = new Scatterlist(phys, length);
            next = phys + length;
        }

        return sg;
    }

    private static int CountSegments(Scatterlist[] sg)
    {
        int n = 0;
        while (n < sg.Length && sg[n].DmaLength != 0)
        {
            n++;
        }

        return n;
    }

    // The segments, read in order, are the entries' bytes in order: every entry's first and last byte and every
    // segment's first and last byte translate (iova_to_phys) to the byte of the buffer at the same stream offset.
    private static void CheckSegments(DriverBed f, PciDevice dev, IDomain domain, Scatterlist[] sg, int n, ulong boundary, uint maxSeg, ulong mask, string where)
    {
        Assert.Equal(n, CountSegments(sg));
        for (int i = n; i < sg.Length; i++)
        {
            Assert.Equal((IommuCore.DmaMappingError, 0U), (sg[i].DmaAddress, sg[i].DmaLength));
        }

        Assert.Equal(sg.Sum(s => (long)s.Length), sg.Take(n).Sum(s => (long)s.DmaLength));
        int seg = 0;
        ulong segPos = 0;
        int entriesInSeg = 0;
        for (int e = 0; e < sg.Length; e++)
        {
            if (segPos == sg[seg].DmaLength)
            {
                seg++;
                segPos = 0;
                entriesInSeg = 0;
            }

            entriesInSeg++;
            Assert.True(segPos + sg[e].Length <= sg[seg].DmaLength, $"{where}: entry {e} does not fit in segment {seg}");
            foreach (ulong k in new[] { 0UL, sg[e].Length - 1UL })
            {
                ulong iova = sg[seg].DmaAddress + segPos + k;
                Assert.True(iova <= mask, $"{where}: IOVA 0x{iova:x} above the mask");
                Assert.True(f.Iommu.IovaToPhys(domain, iova) == sg[e].Phys + k, $"{where}: entry {e} byte {k} at IOVA 0x{iova:x} translates to 0x{f.Iommu.IovaToPhys(domain, iova):x}, not 0x{sg[e].Phys + k:x}");
            }

            if (entriesInSeg > 1)
            {
                Assert.True(sg[seg].DmaLength <= maxSeg, $"{where}: merged segment {seg} of 0x{sg[seg].DmaLength:x} bytes exceeds the max segment size");
            }

            segPos += sg[e].Length;
        }

        for (int s = 0; s < n; s++)
        {
            ulong first = sg[s].DmaAddress, last = first + sg[s].DmaLength - 1;
            Assert.True((first & ~boundary) == (last & ~boundary), $"{where}: segment {s} [0x{first:x}, 0x{last:x}] crosses a boundary");
        }

        // The device itself: the first segment's first bytes are what the buffer holds.
        Span<byte> b = stackalloc byte[8];
        ulong phys0 = sg[0].Phys & ~7UL;
        DmaResult r = dev.DmaRead(null, sg[0].DmaAddress & ~7UL, b);
        Assert.True(r.IsOk, $"{where}: the device cannot read the first segment at 0x{sg[0].DmaAddress:x}: {r}");
        Assert.Equal(f.Platform.Memory.ReadUInt64(phys0), BitConverter.ToUInt64(b));
    }

    private static void CheckUnreachable(DriverBed f, PciDevice dev, IDomain domain, Live l, string where)
    {
        Span<byte> b = stackalloc byte[1];
        for (int s = 0; s < l.Sg.Length && l.Sg[s].DmaLength != 0; s++)
        {
            foreach (ulong iova in new[] { l.Sg[s].DmaAddress, l.Sg[s].DmaAddress + l.Sg[s].DmaLength - 1 })
            {
                Assert.True(f.Iommu.IovaToPhys(domain, iova) == 0, $"{where}: unmapped IOVA 0x{iova:x} still maps");
                Assert.True(dev.DmaRead(null, iova, b).Status == DmaStatus.Fault, $"{where}: unmapped IOVA 0x{iova:x} still reachable");
            }
        }
    }

    [Fact]
    public void Random_lists_carry_their_bytes_in_order_respect_the_device_s_limits_and_are_gone_after_unmap()
    {
        int seeds = int.TryParse(Environment.GetEnvironmentVariable("IOMMU_SG_SEEDS"), out int s) ? s : 300;
        for (int seed = 1; seed <= seeds; seed++)
        {
            Run(seed);
        }
    }
}
