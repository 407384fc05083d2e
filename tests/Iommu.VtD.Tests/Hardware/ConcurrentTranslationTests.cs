using System.Buffers.Binary;
using System.Collections.Concurrent;
using System.Diagnostics;
using System.Globalization;
using CsCheck;
using Iommu.Devices;
using Iommu.VtD.Hardware;
using Iommu.VtD.Tests.Hardware.Infrastructure;

namespace Iommu.VtD.Tests.Hardware;

/// <summary>
/// Translation from many threads (issue 15: readers never block readers; register writes,
/// invalidation and fault recording serialise). What a device observes must stay what one thread
/// would observe: every result is a translation that was valid, and once software has seen an
/// invalidation complete (the wait descriptor's status write), no translation that starts afterwards
/// returns an output address the invalidation removed. The remapping race asks through every entry a
/// device's request takes: <c>Translate</c>, the scoped <c>Transfer</c>, and the unscoped 16–64 B reads
/// and writes served inline from the unit's memo (<c>VtdUnit.Read/Write</c>, <c>PciDevice.DmaRead/DmaWrite</c>):
/// a write that lands in a removed page would reach memory the domain no longer maps.
/// </summary>
public sealed class ConcurrentTranslationTests
{
    public enum Flush
    {
        /// <summary>The writer publishes the new mapping without invalidating (the control case).</summary>
        None,

        /// <summary>IOTLB descriptor, page-selective, the changed page.</summary>
        Page,

        /// <summary>IOTLB descriptor, domain-selective.</summary>
        Domain,

        /// <summary>IOTLB descriptor, global.</summary>
        Global,

        /// <summary>PASID-based IOTLB descriptor, all of the (DID, PASID) (scalable mode).</summary>
        PasidAll,
    }

    /// <summary>How a reader of the remapping race asks.</summary>
    private enum Kind
    {
        /// <summary><c>VtdUnit.Translate</c> of 8 bytes at a random offset.</summary>
        Translate,

        /// <summary><c>VtdUnit.Transfer</c>: 8 bytes, the scoped path.</summary>
        Transfer,

        /// <summary><c>VtdUnit.Read</c>: 16–64 bytes, the unscoped path (the memo's inline move).</summary>
        UnitRead,

        /// <summary><c>PciDevice.DmaRead</c>: 16–64 bytes through the device's cached route and the memo.</summary>
        DeviceRead,

        /// <summary><c>VtdUnit.Write</c>: 16–64 bytes at <c>WriteAt</c> in the page, the unscoped path.</summary>
        UnitWrite,

        /// <summary><c>PciDevice.DmaWrite</c>: 16–64 bytes at <c>WriteAt</c> in the page, through the device's route and the memo.</summary>
        DeviceWrite,
    }

    public static TheoryData<bool, Flush> Flushes => new()
    {
        { false, Flush.Page }, { false, Flush.Domain }, { false, Flush.Global },
        { true, Flush.Page }, { true, Flush.Domain }, { true, Flush.Global }, { true, Flush.PasidAll },
    };

    // A writer remaps one of four pages per generation (a new output page, never reused), invalidates
    // through the queue, waits for the wait descriptor's status write and only then publishes the
    // generation. Readers read the published generation before each request (Translate, Transfer, or a
    // 16-64 B VtdUnit.Read or PciDevice.DmaRead) and check
    // the outcome against what that generation still allows: the page's version at that generation or
    // a later one (a walk may already see the next PTE before its invalidation). The writer moves on
    // only when a reader has finished a request that started at the current generation, so every
    // generation is observed. A second device in another domain, never remapped, is read as well.
    [Theory]
    [MemberData(nameof(Flushes))]
    public void Translation_started_after_an_invalidation_completed_never_returns_the_page_it_removed(bool scalable, Flush flush)
    {
        using var race = new RemapRace(scalable);
        RaceResult r = race.Run(flush, minimum: 16, generations: 1500, budget: TimeSpan.FromMilliseconds(250));
        Assert.Empty(r.Errors);
        Assert.True(r.ViolationCount == 0, $"{r.ViolationCount} stale or wrong results in {r.Reads} requests over {r.Generations} generations, first: {string.Join(" | ", r.Violations)}");
    }

    // Every entry in one IOTLB set (1 × 8 ways): a page-selective invalidation walks ways that hold the
    // other pages and the other domain's, which it skips without taking them while readers fill the
    // same set; no reader that starts after the wait completed gets the removed page.
    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public void Page_selective_invalidation_of_a_shared_full_set_never_leaves_the_removed_page(bool scalable)
    {
        using var race = new RemapRace(scalable, oneSet: true);
        RaceResult r = race.Run(Flush.Page, minimum: 16, generations: 1500, budget: TimeSpan.FromMilliseconds(250));
        Assert.Empty(r.Errors);
        Assert.True(r.ViolationCount == 0, $"{r.ViolationCount} stale or wrong results in {r.Reads} requests over {r.Generations} generations, first: {string.Join(" | ", r.Violations)}");
    }

    // The same check catches a writer that publishes a new mapping without invalidating: the IOTLB
    // still holds the old page, so readers that start after the publication see it (and so does the
    // final check on the test thread, which makes this deterministic).
    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public void Readers_see_the_removed_page_when_the_writer_does_not_invalidate(bool scalable)
    {
        using var race = new RemapRace(scalable);
        RaceResult r = race.Run(Flush.None, minimum: 8, generations: 8, budget: TimeSpan.Zero);
        Assert.Empty(r.Errors);
        Assert.NotEmpty(r.Violations);
    }

    // One thread, random requests (Translate or an 8-byte Transfer) of two devices in two domains:
    // every result is right, every request is one context, one IOTLB (and in scalable mode one
    // PASID-cache) lookup, and only the first request of a device or of a (domain, page) misses.
    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public void Two_devices_in_two_domains_on_one_thread_count_one_lookup_per_request(bool scalable)
    {
        Gen.Select(Gen.Int[0, 1], Gen.Int[0, TwoDomains.Pages - 1], Gen.Bool).Array[1, 400].Sample(requests =>
        {
            using var bed = new TwoDomains(scalable, VtdConfig.Legacy48Bit);
            foreach ((int device, int page, bool transfer) in requests)
            {
                bed.Request(device, page, transfer, out string? wrong);
                Assert.Null(wrong);
            }

            VtdCacheStatistics s = bed.Unit.Statistics;
            long n = requests.Length;
            Assert.Equal(n, s.ContextHits + s.ContextMisses);
            Assert.Equal(n, s.IotlbHits + s.IotlbMisses);
            Assert.Equal(scalable ? n : 0, s.PasidHits + s.PasidMisses);
            Assert.Equal(requests.Select(q => q.Item1).Distinct().Count(), s.ContextMisses);
            Assert.Equal(scalable ? requests.Select(q => q.Item1).Distinct().Count() : 0, s.PasidMisses);
            Assert.Equal(requests.Select(q => (q.Item1, q.Item2)).Distinct().Count(), s.IotlbMisses);
        }, iter: 25);
    }

    // Several threads, random requests of the two devices, with the default caches and with caches
    // so small (IOTLB 2 sets × 2 ways, one context and one PASID entry) that fills evict all the time:
    // no exception, and every result is the device's own page.
    [Theory]
    [InlineData(false, false)]
    [InlineData(false, true)]
    [InlineData(true, false)]
    [InlineData(true, true)]
    public void Two_devices_in_two_domains_on_several_threads_get_their_own_pages(bool scalable, bool tinyCaches)
    {
        VtdConfig shape = tinyCaches
            ? VtdConfig.Legacy48Bit with
            {
                IotlbCapacity = 4, IotlbAssociativity = 2, ContextCacheCapacity = 1, PasidCacheCapacity = 1,
            }
            : VtdConfig.Legacy48Bit;
        using var bed = new TwoDomains(scalable, shape);
        int threads = Math.Max(4, Environment.ProcessorCount);
        const int requests = 10_000;
        var wrong = new ConcurrentQueue<string>();
        var errors = new ConcurrentQueue<Exception>();
        using var start = new Barrier(threads);
        Thread[] workers = [.. Enumerable.Range(0, threads).Select(t => new Thread(() =>
        {
            try
            {
                var rng = new Random(t);
                start.SignalAndWait();
                for (int i = 0; i < requests && wrong.IsEmpty; i++)
                {
                    bed.Request(rng.Next(2), rng.Next(TwoDomains.Pages), rng.Next(2) == 0, out string? w);
                    if (w != null)
                    {
                        wrong.Enqueue(w);
                    }
                }
            }
            catch (Exception e)
            {
                errors.Enqueue(e);
            }
        }) { IsBackground = true })];
        foreach (Thread w in workers)
        {
            w.Start();
        }

        foreach (Thread w in workers)
        {
            Assert.True(w.Join(TimeSpan.FromSeconds(30)), "a translating thread did not finish");
        }

        Assert.Empty(errors);
        Assert.Empty(wrong);
    }

    /// <summary>Two devices, each alone in its domain, with 16 pages at the same IOVAs mapped to different, stamped output pages.</summary>
    private sealed class TwoDomains : IDisposable
    {
        public const int Pages = 16;
        private const ulong IovaBase = 0x7_0000;
        private static readonly ushort[] s_rids = [0x0100, 0x0208];
        private static readonly ushort[] s_dids = [1, 2];
        private static readonly ulong[] s_outputs = [0x2000_0000, 0x2800_0000];
        private readonly VtdBench _bench;
        private readonly uint? _pasid;

        public TwoDomains(bool scalable, VtdConfig shape)
        {
            VtdConfig config = (scalable ? VtdConfig.ScalableMode48Bit : VtdConfig.Legacy48Bit) with
            {
                IotlbCapacity = shape.IotlbCapacity,
                IotlbAssociativity = shape.IotlbAssociativity,
                ContextCacheCapacity = shape.ContextCacheCapacity,
                ContextCacheAssociativity = shape.ContextCacheAssociativity,
                PasidCacheCapacity = shape.PasidCacheCapacity,
                PasidCacheAssociativity = shape.PasidCacheAssociativity,
            };
            _bench = new VtdBench(config);
            _pasid = scalable ? 7u : null;
            for (int d = 0; d < 2; d++)
            {
                ulong sl = scalable
                    ? _bench.SetupScalableDevice(s_rids[d], 7, 2, s_dids[d]).SlRoot
                    : _bench.SetupLegacyDevice(s_rids[d], 2, s_dids[d]);
                for (int p = 0; p < Pages; p++)
                {
                    _bench.Map(sl, 4, Iova(p), Output(d, p));
                    _bench.Memory.WriteUInt64(Output(d, p), Stamp(d, p));
                }
            }

            _bench.Enable(scalable);
        }

        public VtdUnit Unit => _bench.Unit;

        /// <summary>One request of 8 bytes at offset 0x40 of the page; <paramref name="wrong"/> says what was wrong with its result.</summary>
        public void Request(int device, int page, bool transfer, out string? wrong)
        {
            ulong iova = Iova(page) + 0x40;
            ulong expected = Output(device, page) + 0x40;
            if (transfer)
            {
                Span<byte> buffer = stackalloc byte[8];
                DmaResult r = Unit.Transfer(s_rids[device], _pasid, iova - 0x40, buffer, DmaAccess.Read);
                ulong data = BinaryPrimitives.ReadUInt64LittleEndian(buffer);
                wrong = r.IsOk && r.Transferred == 8 && r.Address == expected - 0x40 && data == Stamp(device, page)
                    ? null
                    : Describe($"device {device} page {page}: Transfer gave {r} and data 0x{data:X}");
            }
            else
            {
                VtdTranslation t = Unit.Translate(s_rids[device], _pasid, iova, 8, DmaAccess.Read);
                wrong = t.Status == VtdTranslationStatus.Translated && t.PhysicalAddress == expected
                    ? null
                    : Describe($"device {device} page {page}: Translate gave {t}");
            }
        }

        public void Dispose() => _bench.Dispose();

        private static ulong Iova(int page) => IovaBase + ((ulong)page << 12);

        private static ulong Output(int device, int page) => s_outputs[device] + ((ulong)page << 12);

        private static ulong Stamp(int device, int page) => 0xD0_0000_0000UL | ((ulong)device << 16) | (uint)page;
    }

    private static string Describe(FormattableString text) => text.ToString(CultureInfo.InvariantCulture);

    /// <summary>What <see cref="RemapRace.Run"/> saw.</summary>
    private sealed record RaceResult(int Generations, long Reads, int ViolationCount, IReadOnlyList<string> Violations, IReadOnlyList<Exception> Errors);

    /// <summary>
    /// One unit, queued invalidation on. Device <see cref="Rid"/> (domain <see cref="Did"/>, PASID 5 in
    /// scalable mode) has <see cref="Pages"/> pages; version v of page i is the output page
    /// <see cref="Output"/>(i, v), whose first 8 bytes hold <see cref="Stamp"/>(i, v). Device
    /// <see cref="OtherRid"/> (domain <see cref="OtherDid"/>) maps the same IOVAs to fixed pages.
    /// </summary>
    private sealed class RemapRace : IDisposable
    {
        private const int Pages = 4;
        private const int MaxGenerations = 1500;
        private const ushort Rid = 0x0300;
        private const ushort Did = 0x31;
        private const ushort OtherRid = 0x0408;
        private const ushort OtherDid = 0x32;
        private const uint ScalablePasid = 5;
        private const ulong IovaBase = 0x40_0000;
        private const ulong DataBase = 0x2000_0000;
        private const ulong OtherBase = 0x1800_0000;
        private const ulong WriteAt = 0x800; // where in a page the writes go

        private readonly Platform _platform;
        private readonly VtdBench _bench;
        private readonly PciDevice _device, _otherDevice; // Rid and OtherRid on the platform's PCI bus, behind the bench's unit
        private readonly uint? _pasid;
        private readonly ulong[] _leaf = new ulong[Pages];
        private readonly ulong _status;

        public RemapRace(bool scalable, bool oneSet = false)
        {
            VtdConfig config = scalable ? VtdConfig.ScalableMode48Bit : VtdConfig.Legacy48Bit;
            _platform = new Platform(new PlatformOptions { MemorySize = VtdBench.MemorySize });
            _bench = new VtdBench(oneSet ? config with { IotlbCapacity = 8, IotlbAssociativity = 8 } : config, _platform.Memory);
            PciBus pci = _platform.AddPciBus();
            pci.AddDmaRemapper(_bench.Unit, includeAll: true);
            _device = pci.AddDevice(new PciDeviceSpec("0000:03:00.0"));
            _otherDevice = pci.AddDevice(new PciDeviceSpec("0000:04:01.0"));
            Assert.Equal((Rid, OtherRid), (_device.DmaRequesterId, _otherDevice.DmaRequesterId));
            _pasid = scalable ? ScalablePasid : null;
            ulong sl = scalable ? _bench.SetupScalableDevice(Rid, ScalablePasid, 2, Did).SlRoot : _bench.SetupLegacyDevice(Rid, 2, Did);
            ulong otherSl = scalable ? _bench.SetupScalableDevice(OtherRid, ScalablePasid, 2, OtherDid).SlRoot : _bench.SetupLegacyDevice(OtherRid, 2, OtherDid);
            for (int i = 0; i < Pages; i++)
            {
                _bench.Map(sl, 4, Iova(i), Output(i, 0));
                _leaf[i] = _bench.EntryAddress(sl, 4, Iova(i), 1);
                _bench.Map(otherSl, 4, Iova(i), OtherOutput(i));
                _bench.Memory.WriteUInt64(OtherOutput(i), OtherStamp(i));
                for (int v = 0; v <= MaxGenerations; v++)
                {
                    _bench.Memory.WriteUInt64(Output(i, v), Stamp(i, v));
                }
            }

            _status = _bench.AllocFrame();
            _bench.Enable(scalable);
            _bench.EnableQueue(wide: scalable);
        }

        public void Dispose()
        {
            _bench.Dispose();
            _platform.Dispose();
        }

        /// <summary>
        /// Runs at least <paramref name="minimum"/> generations, then more up to <paramref name="generations"/>
        /// while <paramref name="budget"/> lasts (the budget bounds the run time, it is not checked).
        /// </summary>
        public RaceResult Run(Flush flush, int minimum, int generations, TimeSpan budget)
        {
            Assert.InRange(generations, minimum, MaxGenerations);
            int readers = Math.Clamp(Environment.ProcessorCount, 2, 4);
            int published = 0;
            bool done = false;
            long reads = 0;
            int violationCount = 0;
            int[] seen = new int[readers]; // the generation at which reader r's last finished request started
            var violations = new ConcurrentQueue<string>();
            var errors = new ConcurrentQueue<Exception>();

            // Warm the caches: every page's version 0 is in the IOTLB, so a missing invalidation shows.
            for (int i = 0; i < Pages; i++)
            {
                Assert.Null(Check(i, Kind.Translate, 0, generations, 0));
                Assert.Null(CheckOther(i, Kind.Translate, 0));
            }

            using var start = new Barrier(readers + 1);
            Thread[] threads = [.. Enumerable.Range(0, readers).Select(r => new Thread(() =>
            {
                try
                {
                    var rng = new Random(r);
                    start.SignalAndWait();
                    for (long n = 0; !Volatile.Read(ref done); n++)
                    {
                        int g = Volatile.Read(ref published);
                        int page = rng.Next(Pages);
                        var kind = (Kind)(n % 6);
                        string? wrong = rng.Next(8) == 0
                            ? CheckOther(page, kind, (ulong)rng.Next(512) * 8)
                            : Check(page, kind, g, generations, (ulong)rng.Next(512) * 8);
                        if (wrong != null && Interlocked.Increment(ref violationCount) <= 5)
                        {
                            violations.Enqueue(wrong);
                        }

                        Volatile.Write(ref seen[r], g);
                        Interlocked.Increment(ref reads);
                    }
                }
                catch (Exception e)
                {
                    errors.Enqueue(e);
                    Volatile.Write(ref done, true);
                }
            }) { IsBackground = true })];
            foreach (Thread t in threads)
            {
                t.Start();
            }

            start.SignalAndWait();
            var clock = Stopwatch.StartNew();
            int completed = 0;
            try
            {
                for (int n = 1; n <= generations && (n <= minimum || clock.Elapsed < budget) && errors.IsEmpty; n++)
                {
                    int i = n % Pages;
                    _bench.Memory.WriteUInt64(_leaf[i], Output(i, VersionAt(n, i)) | 3); // R|W
                    Invalidate(flush, i);
                    _bench.Submit(5 | (1UL << 5) | ((ulong)(uint)n << 32), _status); // wait, SW: STDATA = n
                    SpinUntil(() => _bench.Memory.ReadUInt32(_status) == (uint)n, "the wait descriptor's status write");
                    Volatile.Write(ref published, n);
                    completed = n;
                    SpinUntil(() => AnyAtLeast(seen, n) || !errors.IsEmpty, "a reader to finish a request started after the publication");
                }
            }
            finally
            {
                Volatile.Write(ref done, true);
                foreach (Thread t in threads)
                {
                    Assert.True(t.Join(TimeSpan.FromSeconds(30)), "a reader did not finish");
                }
            }

            Assert.Equal(0u, _bench.Fsts); // no queue error

            // Once the readers are done, every page on this thread: the last published versions only.
            for (int i = 0; i < Pages; i++)
            {
                foreach (Kind kind in Enum.GetValues<Kind>())
                {
                    string? wrong = Check(i, kind, completed, completed, 0x18);
                    if (wrong != null && Interlocked.Increment(ref violationCount) <= 5)
                    {
                        violations.Enqueue(wrong);
                    }
                }
            }
            return new RaceResult(completed, Interlocked.Read(ref reads), violationCount, [.. violations], [.. errors]);
        }

        private void Invalidate(Flush flush, int page)
        {
            switch (flush)
            {
                case Flush.Page:
                    _bench.Submit(2 | (3UL << 4) | ((ulong)Did << 16), Iova(page));
                    break;
                case Flush.Domain:
                    _bench.Submit(2 | (2UL << 4) | ((ulong)Did << 16));
                    break;
                case Flush.Global:
                    _bench.Submit(2 | (1UL << 4));
                    break;
                case Flush.PasidAll:
                    Assert.NotNull(_pasid);
                    _bench.Submit(6 | (2UL << 4) | ((ulong)Did << 16) | ((ulong)_pasid.Value << 32));
                    break;
                default:
                    break;
            }
        }

        // Page `page` of the remapped device, read by a request that started when generation g was
        // published: its version is at least the one generation g gave it (older ones were removed by a
        // completed invalidation) and at most the last one the writer will write. A read gets the page's
        // first 8 bytes, its stamp (8 bytes scoped; 16-64 B, from the offset's bits, unscoped).
        private string? Check(int page, Kind kind, int g, int generations, ulong offset)
        {
            int min = VersionAt(g, page);
            int max = VersionAt(generations, page);
            if (kind is Kind.UnitWrite or Kind.DeviceWrite)
            {
                // Where the write went is the result's address: a version the generation still allows.
                int length = SmallLength(offset);
                DmaResult w = Write(kind, _device, Rid, page, length, (byte)(0xA0 | page));
                return w.IsOk && w.Transferred == (ulong)length && IsVersion(w.Address - WriteAt, page, min, max)
                    ? null
                    : Describe($"generation {g}, page {page} (versions {min}–{max} allowed): {kind} of {length} B gave {w}");
            }

            if (kind != Kind.Translate)
            {
                Span<byte> buffer = stackalloc byte[64];
                buffer = buffer[..(kind == Kind.Transfer ? 8 : SmallLength(offset))];
                DmaResult r = Read(kind, _device, Rid, page, buffer);
                ulong data = BinaryPrimitives.ReadUInt64LittleEndian(buffer);
                int v = (int)(uint)data;
                return r.IsOk && r.Transferred == (ulong)buffer.Length && data == Stamp(page, v) && r.Address == Output(page, v) && v >= min && v <= max
                    ? null
                    : Describe($"generation {g}, page {page} (versions {min}–{max} allowed): {kind} of {buffer.Length} B gave {r}, data 0x{data:X}");
            }

            VtdTranslation t = _bench.Unit.Translate(Rid, _pasid, Iova(page) + offset, 8, DmaAccess.Read);
            bool ok = t.Status == VtdTranslationStatus.Translated && IsVersion(t.PhysicalAddress - offset, page, min, max);
            return ok ? null : Describe($"generation {g}, page {page} (versions {min}–{max} allowed): Translate of +0x{offset:X} gave {t}");
        }

        private string? CheckOther(int page, Kind kind, ulong offset)
        {
            if (kind is Kind.UnitWrite or Kind.DeviceWrite)
            {
                int length = SmallLength(offset);
                DmaResult w = Write(kind, _otherDevice, OtherRid, page, length, (byte)(0xB0 | page));
                return w.IsOk && w.Address == OtherOutput(page) + WriteAt
                    ? null
                    : Describe($"other device, page {page}: {kind} of {length} B gave {w}");
            }

            if (kind != Kind.Translate)
            {
                Span<byte> buffer = stackalloc byte[64];
                buffer = buffer[..(kind == Kind.Transfer ? 8 : SmallLength(offset))];
                DmaResult r = Read(kind, _otherDevice, OtherRid, page, buffer);
                ulong data = BinaryPrimitives.ReadUInt64LittleEndian(buffer);
                return r.IsOk && r.Address == OtherOutput(page) && data == OtherStamp(page)
                    ? null
                    : Describe($"other device, page {page}: {kind} of {buffer.Length} B gave {r}, data 0x{data:X}");
            }

            VtdTranslation t = _bench.Unit.Translate(OtherRid, _pasid, Iova(page) + offset, 8, DmaAccess.Read);
            return t.Status == VtdTranslationStatus.Translated && t.PhysicalAddress == OtherOutput(page) + offset
                ? null
                : Describe($"other device, page {page}: Translate of +0x{offset:X} gave {t}");
        }

        // A write of `length` bytes of `fill` at WriteAt of the page (clear of the stamp the reads check)
        // through the entry `kind` names.
        private DmaResult Write(Kind kind, PciDevice device, ushort rid, int page, int length, byte fill)
        {
            Span<byte> data = stackalloc byte[64];
            data = data[..length];
            data.Fill(fill);
            return kind == Kind.UnitWrite
                ? _bench.Unit.Write(rid, _pasid, Iova(page) + WriteAt, data)
                : device.DmaWrite(_pasid, Iova(page) + WriteAt, data);
        }

        // The unscoped reads' and writes' length, 16-64 B, from the request's offset bits.
        private static int SmallLength(ulong offset) => 16 + (int)(offset / 8 % 49);

        // Whether `address` is the first byte of a version of `page` from min to max.
        private static bool IsVersion(ulong address, int page, int min, int max)
        {
            ulong index = (address - DataBase) >> 12;
            return ((address - DataBase) & 0xFFF) == 0
                && index / (MaxGenerations + 1) == (ulong)page
                && index % (MaxGenerations + 1) >= (ulong)min
                && index % (MaxGenerations + 1) <= (ulong)max;
        }

        // A read of the page's first bytes through the entry `kind` names.
        private DmaResult Read(Kind kind, PciDevice device, ushort rid, int page, Span<byte> buffer) => kind switch
        {
            Kind.Transfer => _bench.Unit.Transfer(rid, _pasid, Iova(page), buffer, DmaAccess.Read),
            Kind.UnitRead => _bench.Unit.Read(rid, _pasid, Iova(page), buffer),
            _ => device.DmaRead(_pasid, Iova(page), buffer),
        };

        // Generation n (n ≥ 1) remaps page n mod Pages; the version of page i after generation g is the
        // number of generations 1..g that remapped it.
        private static int VersionAt(int g, int page) => (g / Pages) + (page != 0 && g % Pages >= page ? 1 : 0);

        private static ulong Iova(int page) => IovaBase + ((ulong)page << 12);

        private static ulong Output(int page, int version) => DataBase + ((((ulong)page * (MaxGenerations + 1)) + (ulong)version) << 12);

        private static ulong Stamp(int page, int version) => 0x5EED_0000_0000_0000UL | ((ulong)page << 32) | (uint)version;

        private static ulong OtherOutput(int page) => OtherBase + ((ulong)page << 12);

        private static ulong OtherStamp(int page) => 0x07E4_0000_0000_0000UL | (uint)page;

        private static bool AnyAtLeast(int[] seen, int n)
        {
            for (int r = 0; r < seen.Length; r++)
            {
                if (Volatile.Read(ref seen[r]) >= n)
                {
                    return true;
                }
            }

            return false;
        }

        private static void SpinUntil(Func<bool> condition, string what)
        {
            if (!SpinWait.SpinUntil(condition, TimeSpan.FromSeconds(10)))
            {
                Assert.Fail($"Waited 10 s for {what}.");
            }
        }
    }
}
