using System.Diagnostics;
using Iommu.Devices;
using Iommu.Domains;
using Iommu.Reliability.Tests.Infrastructure;
using Iommu.VtD.Driver;
using Iommu.VtD.Hardware;
using Xunit.Abstractions;

namespace Iommu.Reliability.Tests.Concurrency;

/// <summary>
/// Mapper threads map and unmap disjoint 2 MiB slots of one domain (4 KiB runs, or a 2 MiB superpage,
/// alternating between two physical blocks per slot, so unmaps free leaf tables and maps allocate
/// them again) while reader threads DMA through the VT-d unit. Every page that can be mapped carries
/// its own physical address as data. A read must fault or land on a page that the slot's mapper could
/// have mapped at that IOVA, with that page's data; when the slot did not change during the read it
/// must match the slot's published state exactly (no stale IOTLB entry after an unmap returned, no
/// miss after a map returned). At the end the tables, iova_to_phys and the hardware agree with the model.
/// </summary>
public sealed class MapUnmapTranslateConcurrencyTests(ITestOutputHelper output)
{
    private const ulong Magic = 0x7A11_0000_0000_0000;
    private const ulong IovaBase = 0x20_0000_0000;
    private const ulong PaBase = 0x4_0000_0000;
    private const int SlotsPerMapper = 48;
    private const int MaxSmallPages = 8;

    private sealed class Slot
    {
        public long Seq;            // odd while the owner is changing the mapping
        public volatile int Pages;  // 0 unmapped, 1..8 small 4K pages, 512 superpage
        public volatile int Version;
    }

    private static ulong SlotIova(int slot) => IovaBase + ((ulong)slot * 2 * Sizes.MiB);

    private static ulong SlotPa(int slot, int version) => PaBase + ((ulong)((slot * 2) + version) * 2 * Sizes.MiB);

    /// <summary>Scalable and legacy mode, and a unit with caching mode (not-present entries are cached, so every map must flush).</summary>
    public static TheoryData<string> Configs => ["Sm48", "Legacy48", "Sm48-CachingMode"];

    [Theory]
    [MemberData(nameof(Configs))]
    public void Readers_see_old_or_new_mappings_only_and_the_final_tables_equal_the_model(string config)
    {
        int threads = Math.Max(Environment.ProcessorCount, 4);
        int mappers = threads / 2, readers = threads - mappers;
        long totalOps = Math.Max(ReliabilityBudget.Ops / 5, 4 * mappers);
        ulong seed = ReliabilityBudget.Seed(0xC0FFEE);

        VtdConfig vtd = config switch
        {
            "Legacy48" => VtdConfig.Legacy48Bit,
            "Sm48-CachingMode" => VtdConfig.ScalableMode48Bit with { CachingMode = true },
            _ => VtdConfig.ScalableMode48Bit,
        };
        using var bed = new FailNthVtdBed(vtd, scalable: vtd.ScalableMode);
        PciDevice dev = bed.AddDevice("0000:00:03.0");
        long baseline = bed.Platform.Frames.LiveFrames;
        DmarDomain dom = bed.Unmanaged();
        Assert.Equal(Errno.None, bed.Iommu.AttachDevice(dom, dev));
        Assert.True(dom.IommuSuperpage >= 1, "the unit has 2 MiB pages");

        int slotCount = mappers * SlotsPerMapper;
        var slots = new Slot[slotCount];
        for (int s = 0; s < slotCount; s++)
        {
            slots[s] = new Slot();
            for (int v = 0; v < 2; v++)
            {
                for (int p = 0; p < MaxSmallPages; p++)
                {
                    ulong pa = SlotPa(s, v) + ((ulong)p * Sizes.Page);
                    bed.Platform.Memory.WriteUInt64(pa, pa ^ Magic);
                }
            }
        }

        var errors = new System.Collections.Concurrent.ConcurrentQueue<string>();
        long reads = 0, hits = 0, stableChecks = 0;
        int mappersDone = 0;
        var sw = Stopwatch.StartNew();

        void Mapper(int m)
        {
            var rng = new Random((int)(seed + (ulong)m));
            long ops = totalOps / mappers;
            for (long i = 0; i < ops; i++)
            {
                int s = (m * SlotsPerMapper) + rng.Next(SlotsPerMapper);
                Slot slot = slots[s];
                ulong iova = SlotIova(s);
                Interlocked.Increment(ref slot.Seq);
                if (slot.Pages == 0)
                {
                    int version = 1 - slot.Version;
                    int pages = rng.Next(4) == 0 ? 512 : 1 + rng.Next(MaxSmallPages);
                    Errno e = bed.Iommu.Map(dom, iova, SlotPa(s, version), (ulong)pages * Sizes.Page, IommuProt.Read | IommuProt.Write);
                    if (e != Errno.None)
                    {
                        errors.Enqueue($"map slot {s}: {e}");
                    }

                    slot.Version = version;
                    slot.Pages = pages;
                }
                else
                {
                    ulong size = (ulong)slot.Pages * Sizes.Page;
                    ulong n = bed.Iommu.Unmap(dom, iova, 2 * Sizes.MiB);
                    if (n < size)
                    {
                        errors.Enqueue($"unmap slot {s}: {n} bytes, mapped {size}");
                    }

                    slot.Pages = 0;
                }

                Interlocked.Increment(ref slot.Seq);
            }

            Interlocked.Increment(ref mappersDone);
        }

        void Reader(int r)
        {
            var rng = new Random((int)(seed + 1000 + (ulong)r));
            Span<byte> b = stackalloc byte[8];
            long myReads = 0;
            while (Volatile.Read(ref mappersDone) < mappers || myReads < 1000)
            {
                int s = rng.Next(slotCount);
                int p = rng.Next(MaxSmallPages + 1);
                Slot slot = slots[s];
                ulong iova = SlotIova(s) + ((ulong)p * Sizes.Page);
                long seq1 = Volatile.Read(ref slot.Seq);
                int pages = slot.Pages, version = slot.Version;
                DmaResult res = dev.DmaRead(null, iova, b);
                long seq2 = Volatile.Read(ref slot.Seq);
                myReads++;
                bool ok = res.IsOk;
                if (ok)
                {
                    Interlocked.Increment(ref hits);
                    ulong pa = res.Address;
                    bool candidate = pa == SlotPa(s, 0) + ((ulong)p * Sizes.Page) || pa == SlotPa(s, 1) + ((ulong)p * Sizes.Page);
                    if (!candidate)
                    {
                        errors.Enqueue($"slot {s} page {p}: DMA reached 0x{pa:x}, which the slot never maps there");
                    }
                    else if (p < MaxSmallPages && BitConverter.ToUInt64(b) != (pa ^ Magic))
                    {
                        errors.Enqueue($"slot {s} page {p}: data 0x{BitConverter.ToUInt64(b):x} is not page 0x{pa:x}'s");
                    }
                }
                else if (res.Status != DmaStatus.Fault)
                {
                    errors.Enqueue($"slot {s} page {p}: {res.Status}");
                }

                if (seq1 == seq2 && (seq1 & 1) == 0)
                {
                    // Nothing changed during the read: it must match the published state exactly.
                    Interlocked.Increment(ref stableChecks);
                    bool mapped = pages != 0 && p < pages;
                    if (mapped != ok || (ok && res.Address != SlotPa(s, version) + ((ulong)p * Sizes.Page)))
                    {
                        errors.Enqueue($"slot {s} page {p} (stable, {pages} pages v{version}): DMA {(ok ? $"0x{res.Address:x}" : "faulted")}");
                    }
                }

                if (errors.Count > 20)
                {
                    break;
                }
            }

            Interlocked.Add(ref reads, myReads);
        }

        var all = new List<Thread>();
        for (int m = 0; m < mappers; m++)
        {
            int id = m;
            all.Add(new Thread(() => Mapper(id)) { IsBackground = true, Name = $"mapper{id}" });
        }

        for (int r = 0; r < readers; r++)
        {
            int id = r;
            all.Add(new Thread(() => Reader(id)) { IsBackground = true, Name = $"reader{id}" });
        }

        all.ForEach(t => t.Start());
        all.ForEach(t => Assert.True(t.Join(TimeSpan.FromSeconds(60)), $"{t.Name} did not finish"));
        sw.Stop();
        Assert.True(errors.IsEmpty, string.Join("\n", errors.Take(20)));
        output.WriteLine($"{config}: {threads} threads ({mappers} mappers, {readers} readers): {totalOps} map/unmap ops, {reads} DMA reads ({hits} translated, {stableChecks} checked exactly) in {sw.ElapsedMilliseconds} ms");

        // Final state: the tables, iova_to_phys and the hardware walk equal the model.
        var expectedLeaves = new SortedDictionary<ulong, (ulong Pa, ulong Size)>();
        for (int s = 0; s < slotCount; s++)
        {
            Slot slot = slots[s];
            ulong iova = SlotIova(s);
            ulong pa = SlotPa(s, slot.Version);
            if (slot.Pages == 512)
            {
                expectedLeaves[iova] = (pa, 2 * Sizes.MiB);
            }
            else
            {
                for (int p = 0; p < slot.Pages; p++)
                {
                    expectedLeaves[iova + ((ulong)p * Sizes.Page)] = (pa + ((ulong)p * Sizes.Page), Sizes.Page);
                }
            }

            for (int p = 0; p <= MaxSmallPages; p++)
            {
                ulong want = slot.Pages != 0 && p < slot.Pages ? pa + ((ulong)p * Sizes.Page) : 0;
                Assert.Equal(want, bed.Iommu.IovaToPhys(dom, iova + ((ulong)p * Sizes.Page)));
                DmaResult res = dev.DmaRead(null, iova + ((ulong)p * Sizes.Page), new byte[8]);
                Assert.Equal(want != 0, res.IsOk);
                if (want != 0)
                {
                    Assert.Equal(want, res.Address);
                }
            }
        }

        var actualLeaves = new SortedDictionary<ulong, (ulong Pa, ulong Size)>();
        dom.PageTable.ForEachLeaf((iova, pa, size, _) => actualLeaves[iova] = (pa, size));
        Assert.Equal(expectedLeaves, actualLeaves);

        for (int s = 0; s < slotCount; s++)
        {
            bed.Iommu.Unmap(dom, SlotIova(s), 2 * Sizes.MiB);
        }

        bed.Iommu.DetachDevice(dom, dev);
        bed.Iommu.DomainFree(dom);
        Assert.Equal(baseline, bed.Platform.Frames.LiveFrames);
    }
}
