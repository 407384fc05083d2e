using CsCheck;
using Iommu;
using Iommu.Devices;
using Iommu.Domains;
using Iommu.Tests.Shared;
using Microsoft.Extensions.DependencyInjection;
using Vfio.Mdev;
using Vfio.Mdev.Pinning;
using Vfio.Type1.Tests.Infrastructure;
using Vfio.Type1.Uapi;

namespace Vfio.Type1.Tests;

/// <summary>
/// The <c>Vfio.Type1</c> instruments (<c>vfio.type1.pinned.pages</c> by container and source,
/// <c>vfio.type1.dma.available</c>) and the core's map/unmap counters, read after every step of random type1 use
/// and compared with counts the test derives from its reference models (docs/metrics.md).
/// </summary>
public sealed class Type1MetricsPropertyTests
{
    private const ulong P = Sizes.Page;
    private const string Pinned = "vfio.type1.pinned.pages", Avail = "vfio.type1.dma.available";

    // The semantics property's generator and 5.15 model (MAP of touched, never-written and read-only memory,
    // failing MAPs under RLIMIT_MEMLOCK and dma_entry_limit, UNMAP holes/ALL, groups joining and leaving),
    // with the metrics checked after every step.
    [Fact]
    public void Semantics_property_steps_keep_the_type1_and_core_counters_equal_to_the_5_15_model()
    {
        Gen.Select(Gen.Int[4, 40], Gen.Bool, Type1SemanticsPropertyTests.OpGen.Array[1, 50])
            .Sample((limitPages, smallEntryLimit, ops) => Type1SemanticsPropertyTests.Run(limitPages, smallEntryLimit, ops, bed => new ModelObserver(bed)), iter: 60);
    }

    /// <summary>After each step: pinned pages, dma_avail and the core's live/mapped/unmapped bytes against <see cref="Type1Model"/>.</summary>
    private sealed class ModelObserver : IType1StepObserver
    {
        private readonly Type1Bed _bed;
        private readonly MeterReader _meters;
        private readonly long _pages0;
        private long _map, _unmap, _mapOps, _unmapOps, _pages;
        private int _domains;

        public ModelObserver(Type1Bed bed)
        {
            _bed = bed;
            _meters = new MeterReader(bed.Platform, VfioCore.MeterName, IommuCore.MeterName);
            _meters.Collect();
            (_map, _unmap, _mapOps, _unmapOps, _pages0) = Core(_meters);
            _pages = _pages0;
        }

        public void After(VfioContainer c, Type1Model model, string where)
        {
            _meters.Collect();
            string key = $"|container={c.Id}";
            if (!model.Backend)
            {
                // No backend (before SET_IOMMU, or the last group left): the container is not measured at all.
                Assert.False(_meters.Keys.Any(k => Measures(k, c.Id)), $"{where}: container {c.Id} still measured: {string.Join(", ", _meters.Keys)}");
            }
            else
            {
                // Every group here is an IOMMU-backed PCI group: MAP_DMA pins each page but the zero page.
                long pinned = model.Dmas.Sum(d => d.ZeroPage.LongCount(z => !z));
                Assert.True(pinned == _meters[$"{Pinned}{key}|source=map_dma"], $"{where}: pinned map_dma: model {pinned}, instrument {_meters[$"{Pinned}{key}|source=map_dma"]}");
                Assert.True(_meters[$"{Pinned}{key}|source=vfio_pin_pages"] == 0, $"{where}: pinned vfio_pin_pages");
                Assert.True(model.DmaAvail == _meters[$"{Avail}{key}"], $"{where}: dma.available: model {model.DmaAvail}, instrument {_meters[$"{Avail}{key}"]}");
            }

            // The core sees type1's iommu_map/iommu_unmap: each mapping lives once in every domain of the container.
            int domains = c.Backend?.Domains.Count ?? 0;
            ulong bytes = model.Dmas.Aggregate(0UL, (s, d) => s + d.Size);
            (long map, long unmap, long mapOps, long unmapOps, long pages) = Core(_meters);
            Assert.True(pages - _pages0 == domains * (long)(bytes / P), $"{where}: iommu.mapped.pages {pages - _pages0}, {domains} domain(s) x {bytes / P} pages");
            Assert.True((map > _map) == (mapOps > _mapOps) && (unmap > _unmap) == (unmapOps > _unmapOps), $"{where}: operations and bytes disagree");
            if (domains >= _domains)
            {
                // No domain was freed (a freed domain drops its pages without iommu_unmap): bytes mapped minus
                // bytes unmapped is the change of the live pages, so a failed MAP that mapped and unwound leaves no trace.
                Assert.True((map - _map) - (unmap - _unmap) == (pages - _pages) * (long)P, $"{where}: map.size +{map - _map}, unmap.size +{unmap - _unmap}, mapped.pages +{pages - _pages}");
            }
            else if (domains > 0)
            {
                // A group left and took a domain that was not the last: 5.15 frees it without iommu_unmap.
                Assert.True(unmap == _unmap && unmapOps == _unmapOps, $"{where}: a non-last domain was freed with iommu_unmap (unmap.size +{unmap - _unmap})");
            }

            (_map, _unmap, _mapOps, _unmapOps, _pages, _domains) = (map, unmap, mapOps, unmapOps, pages, domains);
        }

        public void Dispose() => _meters.Dispose();
    }

    private const ulong Space = 0x4000_0000;
    private const int Slots = 32, BufferPages = 24, ReadOnlyFrom = 12, UnwrittenFrom = 16;
    private const uint EntryLimit = 6;

    // (kind, container, a, b, c)
    private static readonly Gen<(int Kind, int Box, int A, int B, int C)> MixedOpGen =
        Gen.Select(Gen.Int[0, 11], Gen.Int[0, 1], Gen.Int[0, Slots - 1], Gen.Int[0, 7], Gen.Int[0, BufferPages - 1]);

    // Two containers at once, each with an mtty mdev (external domain, vendor pins through vfio_pin_pages and an
    // unpinning DMA_UNMAP notifier) and a PCI group (IOMMU-backed: replay on join, unmap_unpin_reaccount on leave),
    // over MAP (touched, never-written and read-only memory), UNMAP (exact, ranges that may bisect, ALL), UNMAP and
    // MAP with VADDR, pins and unpins, groups joining and leaving; then one container dissolves and the platform is
    // disposed. A reference keeps the mappings, which pages are the zero page, the vendor pins and the bytes
    // type1 mapped into and unmapped from its domains.
    [Fact]
    public void Mdev_pins_pci_replay_and_two_containers_keep_the_counters_equal_to_the_reference()
    {
        MixedOpGen.Array[1, 60].Sample(RunMixed, iter: 300);
    }

    // A PCI group joining an mdev-only container whose replay runs out of RLIMIT_MEMLOCK half way: the attach
    // fails (5.15 vfio_iommu_replay unwinds what it pinned and mapped) and no counter keeps a trace of it.
    [Fact]
    public void Failed_replay_on_attach_leaves_no_trace_in_the_counters()
    {
        using var bed = new Type1Bed();
        using var meters = new MeterReader(bed.Platform, VfioCore.MeterName, IommuCore.MeterName);
        PciDevice d = bed.AddDevice("0000:00:03.0");
        MdevDevice m = bed.AddMttyMdev();
        (VfioContainer c, _) = bed.Std(m);
        ulong buf = bed.Buffer(8 * P);
        bed.Proc.CapIpcLock = false; // MAP_DMA samples CAP_IPC_LOCK (dma->lock_cap); the replay checks the limit
        bed.Proc.RlimitMemlock = 6 * P; // the first mapping fits, the second does not
        Assert.Equal(Errno.None, c.MapDma(Type1Bed.Map(buf, Space, 4 * P)));
        Assert.Equal(Errno.None, c.MapDma(Type1Bed.Map(buf + (4 * P), Space + (8 * P), 4 * P)));
        meters.Collect();
        (long map0, long unmap0, long mapOps0, long unmapOps0, long pages0) = Core(meters);
        long avail0 = meters[$"{Avail}|container={c.Id}"];

        bed.Vfio.OpenGroup(bed.Proc, d.IommuGroup!.Id, out VfioGroup? g, out _).ThrowIfError();
        Assert.Equal(Errno.ENOMEM, g!.SetContainer(c));

        meters.Collect();
        Assert.Equal(0, meters[$"{Pinned}|container={c.Id}|source=map_dma"]);
        Assert.Equal(avail0, meters[$"{Avail}|container={c.Id}"]);
        (long map, long unmap, long mapOps, long unmapOps, long pages) = Core(meters);
        Assert.Equal(pages0, pages);
        Assert.True(map - map0 >= 4 * (long)P, "the replay mapped the first mapping before it failed");
        Assert.Equal(map - map0, unmap - unmap0); // and unmapped whatever it mapped
        Assert.Equal(mapOps > mapOps0, unmapOps > unmapOps0);
        Assert.Equal(0, bed.Proc.LockedVm);
    }

    // 5.15 vfio_iommu_type1_detach_group frees a domain that is not the container's last without unmapping it
    // (iommu_domain_free only; unmap_unpin runs for the last one): no iommu_unmap call, so the core's unmap
    // counters do not move and iommu.mapped.pages drops by the freed domain's pages.
    [Fact]
    public void A_non_last_domain_is_freed_without_iommu_unmap()
    {
        using var bed = new Type1Bed(secondUnit: Iommu.VtD.Hardware.VtdConfig.Legacy48Bit);
        using var meters = new MeterReader(bed.Platform, VfioCore.MeterName, IommuCore.MeterName);
        PciDevice wide = bed.AddDevice("0000:05:00.0");   // the 48-bit unit
        PciDevice narrow = bed.AddDevice("0000:00:03.0"); // the 39-bit unit: a domain of its own (DomainReuseRefusedTests)
        (VfioContainer c, _) = bed.Std(wide);
        ulong buf = bed.Buffer(2 * P, seed: 0x40);
        Assert.Equal(Errno.None, c.MapDma(Type1Bed.Map(buf, Space, 2 * P)));
        bed.Vfio.OpenGroup(bed.Proc, narrow.IommuGroup!.Id, out VfioGroup? g, out _).ThrowIfError();
        Assert.Equal(Errno.None, g!.SetContainer(c));
        Assert.Equal(2, c.Backend!.Domains.Count);
        meters.Collect();
        (_, long unmap0, _, long unmapOps0, long pages0) = Core(meters);

        Assert.Equal(Errno.None, g.UnsetContainer());

        meters.Collect();
        (_, long unmap, _, long unmapOps, long pages) = Core(meters);
        Assert.Equal(unmapOps0, unmapOps);
        Assert.Equal(unmap0, unmap);
        Assert.Equal(pages0 - 2, pages);
        Assert.Equal(2, meters[$"{Pinned}|container={c.Id}|source=map_dma"]);
        var b = new byte[1];
        Assert.True(wide.DmaRead(null, Space + P, b).IsOk);
        Assert.Equal(0x41, b[0]);
        c.Backend!.Audit();
    }

    private sealed class Box
    {
        public required VfioContainer C { get; init; }

        public required VfioGroup PciGroup { get; init; }

        public required MdevDevice Mdev { get; init; }

        public required VfioGroup MdevGroup { get; init; }

        public VfioIommuNotifier? Notifier { get; set; }

        public bool PciIn { get; set; }

        public bool MdevIn { get; set; }

        public bool Backend => PciIn || MdevIn;

        public List<Mapping> Maps { get; } = [];

        // Vendor pins by IOVA pfn: references and whether the pfn is reserved (the zero page).
        public SortedDictionary<ulong, (int Refs, bool Reserved)> Pins { get; } = [];
    }

    // A mapping of buffer pages or of the PFNMAP window; Zero is per page whether MAP_DMA's pin is reserved
    // (the zero page, a PFNMAP pfn: not counted), null while no IOMMU domain pins it.
    private sealed record Mapping(ulong Iova, int Pages, int BufferPage, uint Prot, ulong Vaddr, bool Pfnmap)
    {
        public bool[]? Zero { get; set; }

        public ulong Size => (ulong)Pages * P;
    }

    private static void RunMixed((int Kind, int Box, int A, int B, int C)[] ops)
    {
        using var services = new ServiceCollection().AddMetrics().BuildServiceProvider();
        var bed = new Type1Bed(options: new VfioType1Options { AllowUnsafeInterrupts = true, DmaEntryLimit = EntryLimit }, meterFactory: services.GetRequiredService<System.Diagnostics.Metrics.IMeterFactory>());
        try
        {
            RunMixed(bed, ops);
        }
        finally
        {
            bed.Dispose();
        }
    }

    private static void RunMixed(Type1Bed bed, (int Kind, int Box, int A, int B, int C)[] ops)
    {
        using var meters = new MeterReader(bed.Platform, VfioCore.MeterName, IommuCore.MeterName);
        meters.Collect();
        (long map0, long unmap0, _, _, long pages0) = Core(meters);
        ulong buffer = bed.Proc.Mmap(BufferPages * P);
        for (int i = 0; i < UnwrittenFrom; i++)
        {
            bed.Proc.Write(buffer + ((ulong)i * P), Enumerable.Repeat((byte)(0x10 + i), (int)P).ToArray()).ThrowIfError();
        }

        bed.Proc.Mprotect(buffer + (ReadOnlyFrom * P), (UnwrittenFrom - ReadOnlyFrom) * P, Iommu.Mm.VmProt.Read);
        ulong bar = bed.Proc.Mmap(4 * P, Iommu.Mm.VmProt.ReadWrite, Iommu.Mm.VmaKind.PfnMap, physicalBase: 0x8_0000_0000);
        bool[] materialized = [.. Enumerable.Range(0, BufferPages).Select(i => i < UnwrittenFrom)];
        long mappedBytes = 0, unmappedBytes = 0; // what type1 passed to iommu_map / iommu_unmap
        var boxes = new Box[2];
        for (int i = 0; i < 2; i++)
        {
            PciDevice d = bed.AddDevice($"0000:00:{3 + i:x2}.0");
            MdevDevice m = bed.AddMttyMdev();
            bed.Vfio.OpenGroup(bed.Proc, d.IommuGroup!.Id, out VfioGroup? pg, out _).ThrowIfError();
            bed.Vfio.OpenGroup(bed.Proc, m.IommuGroup!.Id, out VfioGroup? mg, out _).ThrowIfError();
            boxes[i] = new Box { C = bed.Vfio.OpenContainer(bed.Proc, out _), PciGroup = pg!, Mdev = m, MdevGroup = mg! };
        }

        int step = 0;
        foreach ((int kind, int bi, int a, int b, int cc) in ops)
        {
            step++;
            Box x = boxes[bi];
            string what = $"step {step} container {x.C.Id}: ";
            if (kind <= 2)
            {
                // MAP: 1..4 pages of the buffer (WRITE only outside the read-only pages: a failing WRITE pin would
                // fault pages in) or, now and then, of the PFNMAP window.
                int pages = 1 + (b % 4);
                bool pfnmap = cc % 6 == 5;
                int bp = pfnmap ? a % (4 - pages + 1) : cc % (BufferPages - pages + 1);
                uint prot = (b & 4) != 0 && (pfnmap || bp + pages <= ReadOnlyFrom || bp >= UnwrittenFrom) ? 3u : 1u;
                ulong iova = Space + ((ulong)a * P);
                ulong vaddr = (pfnmap ? bar : buffer) + ((ulong)bp * P);
                what += $"MAP prot {prot} iova 0x{iova:x} pages {pages} {(pfnmap ? "PFNMAP" : "buffer")} page {bp}";
                Errno expected = !x.Backend ? Errno.EINVAL
                    : x.Maps.Any(m => iova < m.Iova + m.Size && m.Iova < iova + ((ulong)pages * P)) ? Errno.EEXIST
                    : x.Maps.Count == EntryLimit ? Errno.ENOSPC : Errno.None;
                Errno e = x.C.MapDma(Type1Bed.Map(vaddr, iova, (ulong)pages * P, prot));
                Assert.True(expected == e, $"{what}: expected {expected}, got {e}");
                if (e == Errno.None)
                {
                    var m = new Mapping(iova, pages, bp, prot, vaddr, pfnmap);
                    x.Maps.Add(m);
                    if (x.PciIn)
                    {
                        Pin(m);
                        mappedBytes += (long)m.Size;
                    }
                }
            }
            else if (kind <= 4)
            {
                // UNMAP: one mapping exactly, a slot range (which may bisect: EINVAL), or ALL.
                (ulong iova, ulong size, uint flags) = (b % 3) switch
                {
                    0 when x.Maps.Count > 0 => (x.Maps[a % x.Maps.Count].Iova, x.Maps[a % x.Maps.Count].Size, 0u),
                    1 => (0UL, 0UL, VfioUapi.VFIO_DMA_UNMAP_FLAG_ALL),
                    _ => (Space + ((ulong)a * P), (ulong)(1 + cc) * P, 0u),
                };
                what += $"UNMAP flags {flags} iova 0x{iova:x} size 0x{size:x}";
                bool all = flags != 0;
                ulong last = all ? ulong.MaxValue : iova + size - 1;
                bool bisects = !all && x.Maps.Any(m => (m.Iova < iova && iova < m.Iova + m.Size) || (m.Iova <= last && last < m.Iova + m.Size - 1));
                Errno expected = !x.Backend || bisects ? Errno.EINVAL : Errno.None;
                var unmap = new VfioIommuType1DmaUnmap(VfioIommuType1DmaUnmap.StructSize, flags, iova, size);
                Errno e = x.C.UnmapDma(ref unmap);
                Assert.True(expected == e, $"{what}: expected {expected}, got {e}");
                if (e == Errno.None)
                {
                    List<Mapping> removed = [.. x.Maps.Where(m => m.Iova >= iova && m.Iova <= last)];
                    Assert.True(unmap.Size == removed.Aggregate(0UL, (s, m) => s + m.Size), $"{what}: unmapped 0x{unmap.Size:x}");
                    foreach (Mapping m in removed)
                    {
                        // The notifier had the vendor unpin every page of it.
                        Assert.DoesNotContain(x.Pins.Keys, k => k >= m.Iova >> 12 && k < (m.Iova + m.Size) >> 12);
                        x.Maps.Remove(m);
                        unmappedBytes += x.PciIn ? (long)m.Size : 0;
                    }
                }
            }
            else if (kind == 5)
            {
                // UNMAP(VADDR) then MAP(VADDR) of one mapping: its pins (MAP_DMA's and the vendor's) stay.
                if (x.Maps.Count == 0)
                {
                    continue;
                }

                Mapping m = x.Maps[a % x.Maps.Count];
                what += $"UNMAP+MAP VADDR 0x{m.Iova:x}";
                var unmap = new VfioIommuType1DmaUnmap(VfioIommuType1DmaUnmap.StructSize, VfioUapi.VFIO_DMA_UNMAP_FLAG_VADDR, m.Iova, m.Size);
                Assert.Equal(Errno.None, x.C.UnmapDma(ref unmap));
                Check(bed, meters, boxes, pages0, map0 + mappedBytes, unmap0 + unmappedBytes, $"{what} (vaddr invalid)");
                Assert.Equal(Errno.None, x.C.MapDma(Type1Bed.Map(m.Vaddr, m.Iova, m.Size, VfioUapi.VFIO_DMA_MAP_FLAG_VADDR)));
            }
            else if (kind <= 7)
            {
                // Vendor pin of 1..3 IOVA pages from inside a mapping (past its end included: all or nothing).
                if (!x.MdevIn || x.Maps.Count == 0)
                {
                    continue;
                }

                Mapping m = x.Maps[a % x.Maps.Count];
                ulong first = (m.Iova >> 12) + (ulong)(b % m.Pages);
                ulong[] pfns = [.. Enumerable.Range(0, 1 + (cc % 3)).Select(k => first + (ulong)k)];
                what += $"PIN 0x{first << 12:x} x{pfns.Length} {((cc & 4) != 0 ? "RW" : "R")}";
                Mapping?[] owners = [.. pfns.Select(f => x.Maps.FirstOrDefault(o => f >= o.Iova >> 12 && f < (o.Iova + o.Size) >> 12))];
                // A WRITE request on a READ mapping is EPERM (unwound, like a pin outside every mapping).
                IommuProt prot = (cc & 4) != 0 ? IommuProt.Read | IommuProt.Write : IommuProt.Read;
                int r = bed.Vfio.PinPages(x.Mdev, pfns, pfns.Length, prot, new ulong[pfns.Length]);
                int bad = Array.FindIndex(owners, o => o is null || ((prot & IommuProt.Write) != 0 && (o.Prot & 2) == 0));
                if (bad >= 0)
                {
                    Assert.True(r < 0, $"{what}: outside every mapping or not writable, got {r}");

                    // The pages before the bad one were pinned, then unpinned by pin_unwind: a WRITE mapping's
                    // FOLL_WRITE pin has faulted its page in for good.
                    for (int k = 0; k < bad; k++)
                    {
                        Mapping o = owners[k]!;
                        if (!o.Pfnmap && (o.Prot & 2) != 0 && !x.Pins.ContainsKey(pfns[k]))
                        {
                            materialized[o.BufferPage + (int)(pfns[k] - (o.Iova >> 12))] = true;
                        }
                    }
                }
                else
                {
                    Assert.True(r == pfns.Length, $"{what}: got {r}");
                    for (int k = 0; k < pfns.Length; k++)
                    {
                        if (x.Pins.TryGetValue(pfns[k], out (int Refs, bool Reserved) pin))
                        {
                            x.Pins[pfns[k]] = (pin.Refs + 1, pin.Reserved);
                            continue;
                        }

                        // vfio_pin_page_external pins with the mapping's prot: a WRITE mapping breaks COW, a READ
                        // one of a never-written page pins the zero page (reserved: not counted).
                        Mapping o = owners[k]!;
                        int page = o.BufferPage + (int)(pfns[k] - (o.Iova >> 12));
                        bool reserved = o.Pfnmap || ((o.Prot & 2) == 0 && !materialized[page]);
                        if (!o.Pfnmap)
                        {
                            materialized[page] |= (o.Prot & 2) != 0;
                        }

                        x.Pins[pfns[k]] = (1, reserved);
                    }
                }
            }
            else if (kind == 8)
            {
                // Vendor unpin of up to three pinned pages, one reference each.
                if (x.Pins.Count == 0)
                {
                    continue;
                }

                ulong[] pfns = [.. x.Pins.Keys.Skip(a % x.Pins.Count).Take(1 + (cc % 3))];
                what += $"UNPIN 0x{pfns[0] << 12:x} x{pfns.Length}";
                Assert.Equal(pfns.Length, bed.Vfio.UnpinPages(x.Mdev, pfns, pfns.Length));
                foreach (ulong f in pfns)
                {
                    Drop(x, f);
                }
            }
            else if (kind <= 10)
            {
                // The PCI group joins (replay pins and maps every mapping) or leaves (everything is unmapped and
                // unpinned; with the mdev left in, the mappings stay: vfio_iommu_unmap_unpin_reaccount).
                if (x.PciIn)
                {
                    what += "PCI leaves";
                    Assert.Equal(Errno.None, x.PciGroup.UnsetContainer());
                    x.PciIn = false;
                    unmappedBytes += x.Maps.Sum(m => (long)m.Size);
                    x.Maps.ForEach(m => m.Zero = null);
                    if (!x.Backend)
                    {
                        x.Maps.Clear();
                    }
                }
                else
                {
                    what += "PCI joins";
                    Join(x, x.PciGroup);
                    x.PciIn = true;
                    // vfio_iommu_replay walks the rb-tree: IOVA order decides which mapping's WRITE pin faults a page in first.
                    x.Maps.OrderBy(m => m.Iova).ToList().ForEach(Pin);
                    mappedBytes += x.Maps.Sum(m => (long)m.Size);
                }
            }
            else
            {
                // The mdev group joins (registers its notifier) or leaves (the vendor unpins everything first).
                if (x.MdevIn)
                {
                    what += "mdev leaves";
                    Leave(bed, x);
                }
                else
                {
                    what += "mdev joins";
                    Join(x, x.MdevGroup);
                    x.MdevIn = true;
                    Box owner = x;
                    x.Notifier = (_, ev) =>
                    {
                        // What a vendor does: drop every pin it holds in the range.
                        foreach (ulong f in owner.Pins.Keys.Where(f => f >= ev.Iova >> 12 && f < (ev.Iova + ev.Size) >> 12).ToList())
                        {
                            for (int n = owner.Pins[f].Refs; n > 0; n--)
                            {
                                Assert.Equal(1, bed.Vfio.UnpinPages(owner.Mdev, [f], 1));
                            }

                            owner.Pins.Remove(f);
                        }

                        return NotifyResult.Ok;
                    };
                    Assert.Equal(Errno.None, bed.Vfio.RegisterNotifier(x.Mdev, VfioNotifyType.Iommu, VfioIommuNotifyEvents.DmaUnmap, x.Notifier));
                }
            }

            Check(bed, meters, boxes, pages0, map0 + mappedBytes, unmap0 + unmappedBytes, what);
        }

        // The first container dissolves: it is no longer measured, the second one still is.
        Box gone = boxes[0];
        if (gone.MdevIn)
        {
            Leave(bed, gone);
        }

        if (gone.PciIn)
        {
            Assert.Equal(Errno.None, gone.PciGroup.UnsetContainer());
            gone.PciIn = false;
            unmappedBytes += gone.Maps.Sum(m => (long)m.Size);
            gone.Maps.Clear();
        }

        Check(bed, meters, boxes, pages0, map0 + mappedBytes, unmap0 + unmappedBytes, "container 1 dissolved");

        // After Platform.Dispose the factory's meters live on but the instruments report nothing.
        bed.Dispose();
        meters.Collect();
        Assert.False(meters.Keys.Any(k => k.StartsWith("vfio.", StringComparison.Ordinal) || k.StartsWith("iommu.", StringComparison.Ordinal)), $"after Dispose: {string.Join(", ", meters.Keys)}");

        void Pin(Mapping m)
        {
            m.Zero = new bool[m.Pages];
            for (int k = 0; k < m.Pages; k++)
            {
                if (m.Pfnmap)
                {
                    m.Zero[k] = true;
                    continue;
                }

                m.Zero[k] = (m.Prot & 2) == 0 && !materialized[m.BufferPage + k];
                materialized[m.BufferPage + k] |= (m.Prot & 2) != 0;
            }
        }

        void Join(Box x, VfioGroup g)
        {
            Assert.Equal(Errno.None, g.SetContainer(x.C));
            if (!x.Backend)
            {
                Assert.Equal(Errno.None, x.C.SetIommu(VfioUapi.VFIO_TYPE1v2_IOMMU));
            }
        }
    }

    private static void Leave(Type1Bed bed, Box x)
    {
        foreach ((ulong f, (int refs, _)) in x.Pins.ToList())
        {
            for (int n = refs; n > 0; n--)
            {
                Assert.Equal(1, bed.Vfio.UnpinPages(x.Mdev, [f], 1));
            }
        }

        x.Pins.Clear();
        Assert.Equal(Errno.None, bed.Vfio.UnregisterNotifier(x.Mdev, VfioNotifyType.Iommu, x.Notifier!));
        Assert.Equal(Errno.None, x.MdevGroup.UnsetContainer());
        x.MdevIn = false;
        if (!x.Backend)
        {
            x.Maps.Clear();
        }
    }

    // The reference's mappings and pins next to type1's, for a failure message.
    private static string Describe(Box x) =>
        $"reference [{string.Join(", ", x.Maps.OrderBy(m => m.Iova).Select(m => $"0x{m.Iova:x}+{m.Pages} buf {m.BufferPage} prot {m.Prot} zero {(m.Pfnmap ? "pfnmap " : "")}{(m.Zero is null ? "-" : string.Concat(m.Zero.Select(z => z ? 'Z' : '.')))}"))}] "
        + $"pins [{string.Join(", ", x.Pins.Select(p => $"0x{p.Key << 12:x}x{p.Value.Refs}{(p.Value.Reserved ? "Z" : "")}"))}]; "
        + $"type1 [{string.Join(", ", x.C.Backend!.Mappings.Select(d => $"0x{d.Iova:x}+{d.Size / P} runs {string.Join("/", d.Runs.Select(r => $"{r.Pages}{(r.Reserved ? "Z" : "")}"))}"))}]";

    private static void Drop(Box x, ulong pfn)
    {
        (int refs, bool reserved) = x.Pins[pfn];
        if (refs == 1)
        {
            x.Pins.Remove(pfn);
        }
        else
        {
            x.Pins[pfn] = (refs - 1, reserved);
        }
    }

    private static void Check(Type1Bed bed, MeterReader meters, Box[] boxes, long pages0, long mapped, long unmapped, string where)
    {
        meters.Collect();
        long live = 0;
        foreach (Box x in boxes)
        {
            string key = $"|container={x.C.Id}";
            Assert.True(x.Backend == (x.C.Backend is not null), $"{where}: container {x.C.Id} backend");
            if (!x.Backend)
            {
                Assert.False(meters.Keys.Any(k => Measures(k, x.C.Id)), $"{where}: container {x.C.Id} still measured");
                continue;
            }

            // MAP_DMA pins only for an IOMMU-backed domain; the vendor's pins count once per pinned IOVA (not per reference).
            long mapDma = x.Maps.Sum(m => m.Zero?.LongCount(z => !z) ?? 0);
            long external = x.Pins.Values.LongCount(p => !p.Reserved);
            Assert.True(mapDma == meters[$"{Pinned}{key}|source=map_dma"], $"{where}: container {x.C.Id} map_dma: expected {mapDma}, instrument {meters[$"{Pinned}{key}|source=map_dma"]}; {Describe(x)}");
            Assert.True(external == meters[$"{Pinned}{key}|source=vfio_pin_pages"], $"{where}: container {x.C.Id} vfio_pin_pages: expected {external}, instrument {meters[$"{Pinned}{key}|source=vfio_pin_pages"]}");
            Assert.True(EntryLimit - x.Maps.Count == meters[$"{Avail}{key}"], $"{where}: container {x.C.Id} dma.available: expected {EntryLimit - x.Maps.Count}, instrument {meters[$"{Avail}{key}"]}");
            live += x.PciIn ? x.Maps.Sum(m => m.Pages) : 0;
            x.C.Backend!.Audit();
        }

        (long map, long unmap, _, _, long pages) = Core(meters);
        Assert.True(mapped == map && unmapped == unmap, $"{where}: iommu.map.size {map} (type1 mapped {mapped}), iommu.unmap.size {unmap} (type1 unmapped {unmapped})");
        Assert.True(live == pages - pages0, $"{where}: iommu.mapped.pages +{pages - pages0}, type1 has {live} pages in its domains");
    }

    // docs/metrics.md: type1's counters are exact under any concurrency. Threads MAP, vendor-pin, unpin and UNMAP
    // (the notifier unpinning what is left) on containers of their own and, in a second phase, on one shared
    // container, while another thread keeps collecting; every total equals the sum of what each thread did.
    [Fact]
    public async Task Concurrent_map_pin_unmap_totals_equal_the_sum_of_each_threads_work()
    {
        const int Threads = 4, Rounds = 60, Window = 8;
        using var bed = new Type1Bed();
        using var meters = new MeterReader(bed.Platform, VfioCore.MeterName, IommuCore.MeterName);
        meters.Collect();
        (long map0, long unmap0, _, _, long pages0) = Core(meters);
        ulong buffer = bed.Buffer(16 * P); // every page written: no zero page, so every pin counts

        // Threads 0..3 own containers 0..3 (and open them: SET_IOMMU publishes concurrently); threads 4..7 share
        // container 4, each in its own IOVA window.
        PciDevice[] devs = [.. Enumerable.Range(0, Threads + 1).Select(i => bed.AddDevice($"0000:00:{3 + i:x2}.0"))];
        MdevDevice[] mdevs = [.. Enumerable.Range(0, Threads + 1).Select(_ => bed.AddMttyMdev())];
        var boxes = new (VfioContainer C, MdevDevice M, Dictionary<ulong, int> Pins)[Threads + 1];
        void Open(int i)
        {
            MdevDevice m = mdevs[i];
            (VfioContainer c, _) = bed.Std(devs[i]);
            bed.Vfio.OpenGroup(bed.Proc, m.IommuGroup!.Id, out VfioGroup? mg, out _).ThrowIfError();
            mg!.SetContainer(c).ThrowIfError();
            var pins = new Dictionary<ulong, int>();
            boxes[i] = (c, m, pins);
            Assert.Equal(Errno.None, bed.Vfio.RegisterNotifier(m, VfioNotifyType.Iommu, VfioIommuNotifyEvents.DmaUnmap, (_, ev) =>
            {
                // The vendor drops its pins in the range; only the thread that owns the window pins or unmaps in it.
                List<(ulong F, int Refs)> mine;
                lock (pins)
                {
                    mine = [.. pins.Where(p => p.Key >= ev.Iova >> 12 && p.Key < (ev.Iova + ev.Size) >> 12).Select(p => (p.Key, p.Value))];
                    mine.ForEach(p => pins.Remove(p.F));
                }

                foreach ((ulong f, int refs) in mine)
                {
                    for (int n = 0; n < refs; n++)
                    {
                        Assert.Equal(1, bed.Vfio.UnpinPages(m, [f], 1));
                    }
                }

                return NotifyResult.Ok;
            }));
        }

        Open(Threads);

        // What each thread leaves behind and what it passed through iommu_map/iommu_unmap.
        var left = new (int Container, long Mapped, long External, int Maps, long MapBytes, long UnmapBytes)[2 * Threads];
        void Work(int t, int box, ulong window)
        {
            (VfioContainer c, MdevDevice m, Dictionary<ulong, int> pins) = boxes[box];
            var rng = new Random(t);
            var live = new Dictionary<ulong, int>(); // iova -> pages
            long mapBytes = 0, unmapBytes = 0;
            for (int r = 0; r < Rounds; r++)
            {
                ulong iova = window + ((ulong)rng.Next(Window) * 4 * P);
                if (live.Remove(iova, out int had))
                {
                    var unmap = new VfioIommuType1DmaUnmap(VfioIommuType1DmaUnmap.StructSize, 0, iova, (ulong)had * P);
                    Assert.Equal(Errno.None, c.UnmapDma(ref unmap));
                    unmapBytes += had * (long)P;
                    continue;
                }

                int n = 1 + rng.Next(4);
                Assert.Equal(Errno.None, c.MapDma(Type1Bed.Map(buffer + ((ulong)rng.Next(16 - n) * P), iova, (ulong)n * P)));
                live[iova] = n;
                mapBytes += n * (long)P;
                ulong f = (iova >> 12) + (ulong)rng.Next(n);
                Assert.Equal(1, bed.Vfio.PinPages(m, [f], 1, IommuProt.Read | IommuProt.Write, new ulong[1]));
                lock (pins)
                {
                    pins[f] = pins.GetValueOrDefault(f) + 1;
                }

                if (rng.Next(3) == 0)
                {
                    Assert.Equal(1, bed.Vfio.UnpinPages(m, [f], 1));
                    lock (pins)
                    {
                        if (--pins[f] == 0)
                        {
                            pins.Remove(f);
                        }
                    }
                }
            }

            long external;
            lock (pins)
            {
                external = pins.Keys.LongCount(k => k >= window >> 12 && k < (window >> 12) + (Window * 4));
            }

            left[t] = (box, live.Values.Sum(), external, live.Count, mapBytes, unmapBytes);
        }

        // Phase 1: a container each. Phase 2: all on the shared one.
        for (int phase = 0; phase < 2; phase++)
        {
            using var done = new CancellationTokenSource();
            // Tasks, not threads: a failed assertion comes back to the test instead of killing the host.
            Task collector = Task.Factory.StartNew(() =>
            {
                using var reader = new MeterReader(bed.Platform, VfioCore.MeterName, IommuCore.MeterName);
                while (!done.IsCancellationRequested)
                {
                    reader.Collect(); // reading while the paths run: must not throw or block them
                }
            }, TaskCreationOptions.LongRunning);
            int p = phase;
            Task[] workers = [.. Enumerable.Range(0, Threads).Select(i => Task.Factory.StartNew(
                () =>
                {
                    if (p == 0)
                    {
                        Open(i);
                    }

                    Work((p * Threads) + i, p == 0 ? i : Threads, Space + ((ulong)((p * Threads) + i) * Window * 4 * P));
                },
                TaskCreationOptions.LongRunning))];
            try
            {
                await Task.WhenAll(workers);
            }
            finally
            {
                done.Cancel();
                await collector;
            }
        }

        meters.Collect();
        for (int b = 0; b <= Threads; b++)
        {
            var mine = left.Where(l => l.Container == b).ToList();
            string key = $"|container={boxes[b].C.Id}";
            Assert.Equal(mine.Sum(l => l.Mapped), meters[$"{Pinned}{key}|source=map_dma"]);
            Assert.Equal(mine.Sum(l => l.External), meters[$"{Pinned}{key}|source=vfio_pin_pages"]);
            Assert.Equal(boxes[b].C.Backend!.DmaEntryLimit - mine.Sum(l => l.Maps), meters[$"{Avail}{key}"]);
        }

        (long map, long unmap, _, _, long pages) = Core(meters);
        Assert.Equal(left.Sum(l => l.MapBytes), map - map0);
        Assert.Equal(left.Sum(l => l.UnmapBytes), unmap - unmap0);
        Assert.Equal(left.Sum(l => l.Mapped), pages - pages0);
    }

    private static bool Measures(string key, int container) => key.Split('|').Contains($"container={container}");

    private static (long Map, long Unmap, long MapOps, long UnmapOps, long Pages) Core(MeterReader m) =>
        (m["iommu.map.size"], m["iommu.unmap.size"], m["iommu.map.operations"], m["iommu.unmap.operations"], m["iommu.mapped.pages"]);
}
