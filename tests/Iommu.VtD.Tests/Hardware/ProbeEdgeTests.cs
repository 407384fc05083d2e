using System.Buffers.Binary;
using System.Diagnostics;
using System.Globalization;
using System.Runtime.InteropServices;
using CsCheck;
using Iommu.Devices;
using Iommu.Memory;
using Iommu.Tests.Shared;
using Iommu.VtD.Diagnostics;
using Iommu.VtD.Hardware;
using Iommu.VtD.Tests.Hardware.Infrastructure;
using static Iommu.VtD.Tests.Hardware.Infrastructure.FirstStageRig;

namespace Iommu.VtD.Tests.Hardware;

/// <summary>
/// Probes two areas: (A) the diagnostics (decoder, image exporter, JSON, probe, DOT) over tables a guest
/// wrote, where any byte is possible (random entries, cycles, pointers outside memory or into holes of
/// caller-owned memory), and over images a caller builds or loads: nothing may throw an exception the
/// member's XML docs do not name, and everything must end in bounded time; (B) first-level and nested
/// translation edge cases against the VT-d rules quoted from docs/spec (vtd-hw.md, pasid-sva.md).
/// </summary>
public sealed class ProbeEdgeTests
{
    private static readonly TimeSpan Budget = TimeSpan.FromSeconds(5);

    // ------------------------------------------------------------------------------------------------
    // Part A: helpers
    // ------------------------------------------------------------------------------------------------

    /// <summary>
    /// Runs one public entry point ("Type.Member", then an optional note): only the exception types its XML docs
    /// list (&lt;exception cref&gt;, any overload, read by <see cref="DocumentedExceptions"/> from the shipped XML docs) may
    /// escape, and it must finish within the budget.
    /// </summary>
    private static T? Call<T>(string member, Func<T> action)
    {
        var sw = Stopwatch.StartNew();
        try
        {
            T r = action();
            Assert.True(sw.Elapsed < Budget, $"{member} took {sw.Elapsed}");
            return r;
        }
        catch (Exception e) when (e is not Xunit.Sdk.XunitException)
        {
            Assert.True(Documented(member, e), $"{member} threw undocumented {e.GetType().Name}: {e.Message}\n{e.StackTrace}");
            return default;
        }
    }

    // "VtdImage.Probe (relocated)", "VtdImage..ctor (HAW 64)", "VtdImageDot.ToDot(all PASIDs)" → the member's documented types.
    private static bool Documented(string member, Exception e) =>
        DocumentedExceptions.Allows("Iommu.VtD.Diagnostics." + member.Split(' ', '(')[0].Replace("..ctor", ".#ctor", StringComparison.Ordinal), e);

    private static void Gcmd(VtdUnit unit, uint bit)
    {
        uint sts = unit.Read32(0x1C);
        unit.Write32(0x18, (sts & 0x96FF_FFFF) | bit);
    }

    private static void Enable(VtdUnit unit, ulong rtaddr)
    {
        unit.Write64(0x20, rtaddr);
        Gcmd(unit, 1u << 30); // SRTP
        Gcmd(unit, 1u << 31); // TE
    }

    private static readonly VtdConfig[] Configs =
    [
        VtdConfig.Legacy48Bit,
        VtdConfig.ScalableModeFirstLevel48Bit,
        VtdConfig.ScalableModeFirstLevel57Bit,
        VtdConfig.ScalableModeFirstLevel48Bit with { ExecuteRequests = true, FirstLevel1GiBPages = false },
    ];

    private const ulong PoolBase = 0x0010_0000;
    private const int PoolFrames = 16;
    private const ulong HoleStart = 0x0080_0000, HoleEnd = 0x00C0_0000; // caller-owned memory: [8 MiB, 12 MiB) is a hole
    private const ulong MemSize = 0x0100_0000;                        // 16 MiB

    // One guest-written word: a pointer into the pool (any low bits), to itself or its parent, outside memory,
    // above every HAW, into the hole, all ones, or any bits.
    private static ulong Word(Random rng, int frame, ulong stride = 0x1000)
    {
        ulong low = (ulong)rng.Next(0, 0x1000);
        return rng.Next(12) switch
        {
            0 or 1 or 2 or 3 => PoolBase + ((ulong)rng.Next(PoolFrames) * stride) | low,
            4 => PoolBase + ((ulong)frame * stride) | low,                               // itself
            5 => PoolBase + ((ulong)Math.Max(0, frame - 1) * stride) | low,              // its parent (or the root)
            6 => 0x40_0000_0000UL | low,                                                  // outside memory, below HAW 46
            7 => (1UL << 50) | low | (ulong)rng.Next(PoolFrames) << 12,                   // above HAW 46/48
            8 => HoleStart + ((ulong)rng.Next(0x400) * 0x1000 & ~(stride - 1)) | low,     // into the hole
            9 => ulong.MaxValue,
            10 => PoolBase + ((ulong)rng.Next(PoolFrames) * stride) | low | (1UL << 63) | (ulong)rng.Next(1 << 10) << 52,
            _ => (ulong)rng.NextInt64() ^ ((ulong)rng.Next() << 33),
        };
    }

    private static void FillGuestTables(PhysicalMemory memory, Random rng, int density, ulong stride)
    {
        for (int f = 0; f < PoolFrames; f++)
        {
            ulong frame = PoolBase + ((ulong)f * stride);
            int n = rng.Next(density + 1);
            for (int i = 0; i < n; i++)
            {
                // Low indices are where requester 0, PASID 0 and IOVA 0 walk: bias towards them.
                int index = rng.Next(2) == 0 ? rng.Next(8) : rng.Next(512);
                memory.WriteUInt64(frame + ((ulong)index * 8), Word(rng, f, stride));
            }
        }
    }

    private static unsafe PhysicalMemory NewMemory(bool callerOwned, List<nint> blocks)
    {
        if (!callerOwned)
        {
            return new PhysicalMemory(MemSize);
        }

        nint low = (nint)NativeMemory.AlignedAlloc((nuint)HoleStart, 4096);
        nint high = (nint)NativeMemory.AlignedAlloc((nuint)(MemSize - HoleEnd), 4096);
        new Span<byte>((void*)low, (int)HoleStart).Clear();
        new Span<byte>((void*)high, (int)(MemSize - HoleEnd)).Fill(0x5A);
        blocks.Add(low);
        blocks.Add(high);
        return new PhysicalMemory(MemSize, [new(0, HoleStart, low), new(HoleEnd, MemSize - HoleEnd, high)]);
    }

    private static VtdProbe[] Probes(Random rng)
    {
        ushort[] rids = [0x0000, 0x0001, 0x0080, 0x0081, 0x0100, 0x01FF, (ushort)rng.Next(0x10000)];
        uint?[] pasids = [null, 0, 1, 64, 0xF_FFFF, (uint)rng.Next(0x10_0000)];
        ulong[] iovas = [0, 0x1000, 0xFEE0_0000, 0x0000_8000_0000_0000, 0xFFFF_8000_0000_0000, 0x0100_0000_0000_0000, (ulong)rng.NextInt64() & ~0xFFFUL];
        var list = new List<VtdProbe>();
        for (int i = 0; i < 12; i++)
        {
            list.Add(new VtdProbe(rids[rng.Next(rids.Length)], pasids[rng.Next(pasids.Length)], iovas[rng.Next(iovas.Length)], rng.Next(2) == 0 ? DmaAccess.Read : DmaAccess.Write));
        }

        return [.. list];
    }

    /// <summary>Every public diagnostics entry point over one image; documented exceptions only.</summary>
    private static void ExerciseImage(VtdImage image, VtdConfig config, VtdProbe[] probes)
    {
        string? json = Call("VtdImageJson.ToJson", () => image.ToJson(indented: false));
        Assert.NotNull(json);
        VtdImage? back = Call("VtdImageJson.FromJson", () => VtdImageJson.FromJson(json!));
        Assert.NotNull(back);
        Assert.Equal(json, Call("VtdImageJson.ToJson (round trip)", () => back!.ToJson(indented: false)));

        foreach (VtdProbe p in probes)
        {
            IReadOnlyList<VtdImageEntry>? path = Call("VtdImage.Path", () => image.Path(p.RequesterId, p.Pasid, p.Iova));
            Call("VtdDecoder.DescribeWalk", () => VtdDecoder.DescribeWalk(image, p.RequesterId, p.Pasid, p.Iova));
            Call("VtdDecoder.DescribeWalk(config)", () => VtdDecoder.DescribeWalk(image, config, p.RequesterId, p.Pasid, p.Iova));
            Call("VtdImage.ContextEntryAddress", () => image.ContextEntryAddress(p.RequesterId));
            foreach (VtdImageEntry e in path ?? [])
            {
                Call("VtdDecoder.DescribeEntry", () => VtdDecoder.DescribeEntry(image, e, p.RequesterId, p.Pasid));
                Call("VtdDecoder.DescribeEntry(config)", () => VtdDecoder.DescribeEntry(image, config, e, p.RequesterId, p.Pasid));
                Call("VtdDecoder.EntryName", () => VtdDecoder.EntryName(e));
            }

            Call("VtdImageDot.ToDot", () => image.ToDot(p.RequesterId, p.Pasid));
        }

        Call("VtdImageDot.ToDot(all PASIDs)", () => image.ToDot(probes[0].RequesterId));
        Call("VtdImage.Probe", () => image.Probe(config, probes));
        VtdImage? moved = Call("VtdImage.Relocate", () => image.Relocate(0x4000_0000, 0x0400_0000));
        if (moved is not null)
        {
            Call("VtdImage.Probe (relocated)", () => moved.Probe(config, probes));
        }

        foreach (VtdImageChunk c in image.Chunks.Take(4))
        {
            if (c.Size >= 8)
            {
                ulong v = Call("VtdImage.ReadUInt64", () => image.ReadUInt64(c.Address));
                Call("VtdImage.WithUInt64", () => image.WithUInt64(c.Address, ~v));
            }
        }
    }

    // ------------------------------------------------------------------------------------------------
    // Part A: properties
    // ------------------------------------------------------------------------------------------------

    /// <summary>
    /// Random guest tables (cycles, self and parent pointers, pointers outside memory, above HAW or into a
    /// hole of caller-owned RAM, all-ones and random words) under random TTM and unit presets: export, JSON
    /// round trip, path, decoder, DOT, relocation and probes throw only documented exceptions and finish in
    /// bounded time, and a probe of the exported image answers as the live unit does.
    /// </summary>
    /// <remarks>Tables packed 4 KiB apart, as a guest allocator leaves them: FAILS (the exporter builds overlapping chunks, see
    /// <see cref="Export_of_a_pasid_directory_overlapping_another_table_does_not_throw"/>).</remarks>
    [Fact]
    public void Property_guest_written_tables_never_crash_or_hang_the_diagnostics()
    {
        Gen.Select(Gen.Int[0, Configs.Length - 1], Gen.Bool, Gen.Int, Gen.Int[0, 3])
            .Sample((c, callerOwned, seed, ttm) => RunGuestTables(c, callerOwned, seed, ttm, 0x1000), iter: 150, threads: 1);
    }

    /// <summary>
    /// As <see cref="Property_guest_written_tables_never_crash_or_hang_the_diagnostics"/> with the guest's tables
    /// 128 KiB apart (no PASID directory, whatever its PDTS, can cover another table), to look past the overlap finding.
    /// </summary>
    [Fact]
    public void Property_guest_written_tables_spread_out_never_crash_or_hang_the_diagnostics()
    {
        Gen.Select(Gen.Int[0, Configs.Length - 1], Gen.Bool, Gen.Int, Gen.Int[0, 3])
            .Sample((c, callerOwned, seed, ttm) => RunGuestTables(c, callerOwned, seed, ttm, 0x2_0000), iter: 150, threads: 1);
    }

    private static unsafe void RunGuestTables(int c, bool callerOwned, int seed, int ttm, ulong stride)
    {
        VtdConfig config = Configs[c];
        var rng = new Random(seed);
        var blocks = new List<nint>();
        try
        {
            using PhysicalMemory memory = NewMemory(callerOwned, blocks);
            FillGuestTables(memory, rng, density: 10, stride);
            if (config.ScalableMode && ttm != 0 && rng.Next(3) != 0)
            {
                ttm = 1;
            }

            if (!config.ScalableMode && rng.Next(3) != 0)
            {
                ttm = 0;
            }

            var unit = new VtdUnit(memory, config);
            Enable(unit, PoolBase | ((ulong)ttm << 10));
            VtdProbe[] probes = Probes(rng);
            VtdImage? image = Call("VtdImageExporter.ExportImage(probes)", () => unit.ExportImage(probes));
            Assert.NotNull(image);
            Call("VtdImageExporter.Export", () => VtdImageExporter.Export(memory, PoolBase | ((ulong)ttm << 10), config.HostAddressWidth, true));
            ExerciseImage(image!, config, probes);

            // The image's answer is the live unit's (owned memory: an image keeps no holes).
            if (!callerOwned)
            {
                for (int i = 0; i < probes.Length; i++)
                {
                    VtdProbe p = probes[i];
                    VtdTranslation live = unit.Translate(p.RequesterId, p.Pasid, p.Iova, (ulong)p.Size, p.Access);
                    VtdProbeResult img = image!.Probes[i];
                    Assert.True(
                        live.Status == img.Status && live.Reason == img.Reason && live.PhysicalAddress == img.PhysicalAddress,
                        string.Create(CultureInfo.InvariantCulture, $"probe {p}: live {live.Status} 0x{(byte)live.Reason:x2} 0x{live.PhysicalAddress:x}, image {img.Status} 0x{(byte)img.Reason:x2} 0x{img.PhysicalAddress:x}"));
                }
            }
        }
        finally
        {
            foreach (nint b in blocks)
            {
                NativeMemory.AlignedFree((void*)b);
            }
        }
    }

    /// <summary>
    /// Images a caller builds or loads from JSON (any chunk kinds, sizes, levels and bytes; chunks not
    /// overlapping, HAW valid): path, decoder, DOT, relocation, JSON and probes throw only documented exceptions.
    /// </summary>
    [Fact]
    public void Property_caller_built_images_never_crash_the_diagnostics()
    {
        Gen.Select(Gen.Int, Gen.Int[1, 6], Gen.Int[32, 52], Gen.Int[0, 3])
            .Sample((seed, count, haw, ttm) => RunCallerImage(seed, count, haw, ttm), iter: 300, threads: 1);
    }

    private static readonly int[] ChunkSizes = [0, 8, 16, 24, 32, 40, 64, 1024, 4096];

    private static VtdImage RandomImage(int seed, int count, int haw, int ttm)
    {
        var rng = new Random(seed);
        var addresses = Enumerable.Range(1, 8).Select(i => (ulong)i * 0x1000).OrderBy(_ => rng.Next()).Take(count).ToArray();
        var chunks = new List<VtdImageChunk>();
        foreach (ulong a in addresses)
        {
            int size = ChunkSizes[rng.Next(ChunkSizes.Length)];
            byte[] data = new byte[size];
            for (int off = 0; off + 8 <= size; off += 8)
            {
                ulong w = rng.Next(3) == 0 ? 0 : rng.Next(2) == 0 ? addresses[rng.Next(addresses.Length)] | (uint)rng.Next(0x1000) : Word(rng, 0);
                BinaryPrimitives.WriteUInt64LittleEndian(data.AsSpan(off), w);
            }

            chunks.Add(new VtdImageChunk(a, (VtdImageChunkKind)rng.Next(8), rng.Next(-1, 7), data));
        }

        return new VtdImage(addresses[0] | ((ulong)ttm << 10), haw, rng.Next(2) == 0, chunks);
    }

    private static void RunCallerImage(int seed, int count, int haw, int ttm)
    {
        VtdImage image = RandomImage(seed, count, haw, ttm);
        var rng = new Random(seed);
        ExerciseImage(image, Configs[rng.Next(Configs.Length)], Probes(rng));
    }

    // ------------------------------------------------------------------------------------------------
    // Part A: deterministic findings and checks
    // ------------------------------------------------------------------------------------------------

    // An image with a root table at 0x1000 whose bus-0 entry points at a context-table chunk at 0x2000 that
    // is shorter than one context entry (a caller-built or JSON-loaded image; FromJson accepts any size).
    private static VtdImage ShortContextImage(bool scalable, int contextBytes)
    {
        byte[] root = new byte[4096];
        BinaryPrimitives.WriteUInt64LittleEndian(root, 0x2000 | 1);
        byte[] ctx = new byte[contextBytes];
        BinaryPrimitives.WriteUInt64LittleEndian(ctx, 0x3000 | 1 | (scalable ? 8UL : 0)); // present; scalable: PASIDE
        return new VtdImage(
            0x1000 | (scalable ? 1UL << 10 : 0), 46, true,
            [
                new VtdImageChunk(0x1000, VtdImageChunkKind.RootTable, 0, root),
                new VtdImageChunk(0x2000, scalable ? VtdImageChunkKind.ScalableContextTable : VtdImageChunkKind.LegacyContextTable, 0, ctx),
            ]);
    }

    /// <summary>
    /// A context entry the image holds only in part (a context chunk of 8 or 16 bytes, which FromJson accepts) counts
    /// as not in the image: Path, DescribeWalk and ToDot stop there (they read its second word with the throwing
    /// ReadUInt64 after checking only the first, and threw ArgumentOutOfRangeException, undocumented).
    /// </summary>
    [Theory]
    [InlineData(false, 8)]
    [InlineData(true, 8)]
    [InlineData(true, 16)]
    public void Path_and_walk_over_a_context_chunk_shorter_than_an_entry_do_not_throw(bool scalable, int bytes)
    {
        VtdImage image = ShortContextImage(scalable, bytes);
        string json = image.ToJson();
        VtdImage loaded = VtdImageJson.FromJson(json); // accepted as a valid image
        Call("VtdImage.Path", () => loaded.Path(0x0000, null, 0));
        Call("VtdDecoder.DescribeWalk", () => VtdDecoder.DescribeWalk(loaded, 0x0000, null, 0));
        Call("VtdDecoder.DescribeWalk(config)", () => VtdDecoder.DescribeWalk(loaded, VtdConfig.ScalableModeFirstLevel48Bit, 0x0000, null, 0));
        Call("VtdImageDot.ToDot", () => loaded.ToDot(0x0000));
    }

    /// <summary>
    /// A PASID entry the image holds only in part (a PASID-table chunk shorter than 64 bytes) counts as not in the
    /// image for ToDot and DescribeWalk (they read its q1/q2 with the throwing ReadUInt64).
    /// </summary>
    [Fact]
    public void Dot_and_walk_over_a_pasid_table_chunk_shorter_than_an_entry_do_not_throw()
    {
        byte[] root = new byte[4096], ctx = new byte[4096], dir = new byte[4096], pt = new byte[8];
        BinaryPrimitives.WriteUInt64LittleEndian(root, 0x2000 | 1);
        BinaryPrimitives.WriteUInt64LittleEndian(ctx, 0x3000 | 1 | 8);
        BinaryPrimitives.WriteUInt64LittleEndian(dir, 0x4000 | 1);
        BinaryPrimitives.WriteUInt64LittleEndian(pt, 1 | (2UL << 2) | (1UL << 6)); // present, AW 2, PGTT 001
        var image = new VtdImage(
            0x1000 | (1UL << 10), 46, true,
            [
                new VtdImageChunk(0x1000, VtdImageChunkKind.RootTable, 0, root),
                new VtdImageChunk(0x2000, VtdImageChunkKind.ScalableContextTable, 0, ctx),
                new VtdImageChunk(0x3000, VtdImageChunkKind.PasidDirectory, 0, dir),
                new VtdImageChunk(0x4000, VtdImageChunkKind.PasidTable, 0, pt),
            ]);
        VtdImage loaded = VtdImageJson.FromJson(image.ToJson());
        Call("VtdImage.Path", () => loaded.Path(0x0000, 0, 0));
        Call("VtdDecoder.DescribeWalk", () => VtdDecoder.DescribeWalk(loaded, 0x0000, 0, 0));
        Call("VtdImageDot.ToDot", () => loaded.ToDot(0x0000));
    }

    /// <summary>
    /// ToDot draws a table once per level, however many entries point to it: it drew one node per (table, IOVA
    /// prefix), so a guest that aliases one table from every entry of its parent (legal, and trivially written)
    /// made the graph grow as 512^depth from a 16 KiB image (512 × 512 nodes here; one more aliased level never
    /// finished). The exporter and Path stay linear on the same tables.
    /// </summary>
    [Fact]
    public async Task Dot_of_aliased_guest_tables_is_bounded()
    {
        using var memory = new PhysicalMemory(MemSize);
        const ulong Root = 0x1000, Ctx = 0x2000, L4 = 0x3000, L3 = 0x4000, L2 = 0x5000;
        memory.WriteUInt64(Root, Ctx | 1);
        memory.WriteUInt64(Ctx, L4 | 1);         // legacy context entry: present, TT 00
        memory.WriteUInt64(Ctx + 8, 2UL | (1UL << 8)); // AW 2 (4-level), DID 1
        for (int i = 0; i < 512; i++)
        {
            memory.WriteUInt64(L4 + ((ulong)i * 8), L3 | 3); // every PML4E → the same PDP table
            memory.WriteUInt64(L3 + ((ulong)i * 8), L2 | 3); // every PDPE → the same page directory
        }

        memory.WriteUInt64(L2, 0x20_0000 | 0x80 | 3);       // one 2 MiB leaf
        var unit = new VtdUnit(memory, VtdConfig.Legacy48Bit);
        Enable(unit, Root);
        VtdImage image = unit.ExportImage();
        Assert.Equal(5, image.Chunks.Count);

        var sw = Stopwatch.StartNew();
        string dot = await Task.Run(() => image.ToDot(0x0000)).WaitAsync(TimeSpan.FromSeconds(120));
        sw.Stop();
        int nodes = CountOf(dot, " [label=");
        Assert.True(
            nodes <= 64 * image.Chunks.Count && sw.Elapsed < Budget,
            string.Create(CultureInfo.InvariantCulture, $"ToDot of a {image.TotalBytes}-byte image drew {nodes} nodes ({dot.Length} chars) in {sw.Elapsed.TotalSeconds:F1} s"));
    }

    private static int CountOf(string s, string what)
    {
        int n = 0;
        for (int i = s.IndexOf(what, StringComparison.Ordinal); i >= 0; i = s.IndexOf(what, i + what.Length, StringComparison.Ordinal))
        {
            n++;
        }

        return n;
    }

    /// <summary>
    /// <see cref="VtdImage.Probe"/> over an image that does not fit its memory: chunks at or above the memory's end
    /// (a chunk above PhysicalMemory.MaxSize, which HAW 52 allows, or a memory smaller than the image) are not loaded
    /// and the probe meets a memory error there, as a unit that small would; a memory size that is not a positive
    /// multiple of 4 KiB is refused with ArgumentOutOfRangeException naming it (it threw from PhysicalMemory,
    /// undocumented).
    /// </summary>
    [Theory]
    [InlineData(0x0008_0000_0000_0000UL, null)]      // 2^51: below HAW 52, above MaxSize
    [InlineData(0x10_0000UL, 0x1000UL)]              // memorySize below the image
    public void Probe_of_an_image_beyond_its_memory_meets_a_memory_error(ulong chunkAddress, ulong? memorySize)
    {
        byte[] root = new byte[4096];
        var image = new VtdImage(chunkAddress, 52, true, [new VtdImageChunk(chunkAddress, VtdImageChunkKind.RootTable, 0, root)]);
        VtdImage loaded = VtdImageJson.FromJson(image.ToJson());
        VtdImage probed = loaded.Probe(VtdConfig.Legacy48Bit, [new VtdProbe(0, null, 0x1000, DmaAccess.Read)], memorySize);
        VtdProbeResult r = Assert.Single(probed.Probes);
        Assert.True(r.IsFault, r.ToString());
        Assert.Equal(VtdFaultReason.RootTableInvalid, r.Reason);
    }

    [Theory]
    [InlineData(0x1800UL)]
    [InlineData(0UL)]
    [InlineData(PhysicalMemory.MaxSize + 0x1000)]
    public void Probe_refuses_a_memory_size_that_is_not_a_memory(ulong memorySize)
    {
        var image = new VtdImage(0x1000, 46, true, [new VtdImageChunk(0x1000, VtdImageChunkKind.RootTable, 0, new byte[4096])]);
        var e = Assert.Throws<ArgumentOutOfRangeException>(() => image.Probe(VtdConfig.Legacy48Bit, [], memorySize));
        Assert.Equal("memorySize", e.ParamName);
    }

    /// <summary>
    /// A <see cref="VtdProbe"/> that is not one request (Size outside 1–4096, a page crossed, a PASID wider than
    /// 20 bits) is refused by <see cref="VtdImage.Probe"/> and ExportImage(unit, probes) with
    /// ArgumentOutOfRangeException naming the probes, before anything is evaluated (it threw from
    /// VtdUnit.Translate, undocumented), and by FromJson as a malformed member (FormatException).
    /// </summary>
    [Theory]
    [InlineData(0x1000UL, 0, 0u)]
    [InlineData(0x1000UL, 8192, 0u)]
    [InlineData(0x1FFCUL, 8, 0u)]
    [InlineData(0x1000UL, 8, 0x10_0000u)]
    public void A_probe_that_is_not_one_request_is_refused(ulong iova, int size, uint pasid)
    {
        using var memory = new PhysicalMemory(MemSize);
        var unit = new VtdUnit(memory, VtdConfig.ScalableModeFirstLevel48Bit);
        Enable(unit, 0x1000 | (1UL << 10));
        VtdProbe[] probes = [new VtdProbe(0, pasid == 0 ? null : pasid, iova, DmaAccess.Read, size)];
        Assert.Equal("probes", Assert.Throws<ArgumentOutOfRangeException>(() => unit.ExportImage(probes)).ParamName);
        VtdImage image = unit.ExportImage();
        Assert.Equal("probes", Assert.Throws<ArgumentOutOfRangeException>(() => image.Probe(VtdConfig.ScalableModeFirstLevel48Bit, probes)).ParamName);

        // The same probe in a JSON image: a valid probe's result, rewritten to the bad request.
        string json = unit.ExportImage([new VtdProbe(0, 7, 0x1000, DmaAccess.Read, 8)]).ToJson()
            .Replace("\"iova\": \"0x1000\"", string.Create(CultureInfo.InvariantCulture, $"\"iova\": \"0x{iova:x}\""), StringComparison.Ordinal)
            .Replace("\"size\": 8", string.Create(CultureInfo.InvariantCulture, $"\"size\": {size}"), StringComparison.Ordinal)
            .Replace("\"pasid\": 7", string.Create(CultureInfo.InvariantCulture, $"\"pasid\": {pasid}"), StringComparison.Ordinal);
        Assert.Throws<FormatException>(() => VtdImageJson.FromJson(json));
    }

    /// <summary>
    /// <see cref="VtdImageExporter.Export"/> checks the host address width as the image does (32–52): 64 gave the
    /// mask (1 &lt;&lt; 64) - 1 = 0 (C# masks the shift), and any width outside reached the VtdImage constructor.
    /// </summary>
    [Theory]
    [InlineData(64)]
    [InlineData(57)]
    [InlineData(31)]
    [InlineData(0)]
    public void Export_refuses_a_host_address_width_outside_32_to_52(int haw)
    {
        using var memory = new PhysicalMemory(MemSize);
        Assert.Equal("hostAddressWidth", Assert.Throws<ArgumentOutOfRangeException>(() => VtdImageExporter.Export(memory, 0x1000, haw, true)).ParamName);
    }

    /// <summary>The VtdImage constructor and <see cref="VtdImage.WithUInt64"/> throw what their docs now list.</summary>
    [Fact]
    public void Image_constructor_and_WithUInt64_throw_what_they_document()
    {
        byte[] page = new byte[4096];
        Call("VtdImage..ctor (HAW 64)", () => new VtdImage(0x1000, 64, true, [new VtdImageChunk(0x1000, VtdImageChunkKind.RootTable, 0, page)]));
        Assert.Throws<ArgumentOutOfRangeException>(() => new VtdImage(0x1000, 64, true, [new VtdImageChunk(0x1000, VtdImageChunkKind.RootTable, 0, page)]));
        Call("VtdImage..ctor (overlap)", () => new VtdImage(0x1000, 46, true, [new VtdImageChunk(0x1000, VtdImageChunkKind.RootTable, 0, page), new VtdImageChunk(0x1800, VtdImageChunkKind.PageTable, 1, page)]));
        var image = new VtdImage(0x1000, 46, true, [new VtdImageChunk(0x1000, VtdImageChunkKind.RootTable, 0, page)]);
        Call("VtdImage.WithUInt64 (outside)", () => image.WithUInt64(0x9000, 1));
        Assert.Throws<ArgumentOutOfRangeException>(() => image.WithUInt64(0x9000, 1));
    }

    /// <summary>
    /// Cycles: a root entry pointing at the root table, a context table that is its own PASID directory and
    /// PASID table, page tables and first-level tables pointing at themselves and their parents at every level:
    /// export, path, decoder, DOT, JSON and probes end, with each table exported once.
    /// </summary>
    [Theory]
    [InlineData(0)]
    [InlineData(1)]
    public void Self_and_parent_referencing_tables_terminate(int ttm)
    {
        using var memory = new PhysicalMemory(MemSize);
        const ulong T = 0x1000; // one page that is everything
        memory.WriteUInt64(T, T | 1);                                   // root LP → itself
        memory.WriteUInt64(T + 8, T | 1 | (1UL << 8) | (2UL << 2) | (1UL << 6)); // root UP / legacy ctx q1 / PASID q1
        memory.WriteUInt64(T + 16, T | 1 | 4 | 0x80);                   // PASID q2: FLPTR itself, FLPM 01
        for (int i = 3; i < 512; i++)
        {
            memory.WriteUInt64(T + ((ulong)i * 8), (i % 2 == 0 ? T : 0x2000UL) | 7);
        }

        for (int i = 0; i < 512; i++)
        {
            memory.WriteUInt64(0x2000 + ((ulong)i * 8), (i % 2 == 0 ? 0x1000UL : 0x2000UL) | 7); // child → parent, itself
        }

        foreach (VtdConfig config in Configs)
        {
            var unit = new VtdUnit(memory, config);
            Enable(unit, T | ((ulong)ttm << 10));
            VtdProbe[] probes = [new VtdProbe(0, null, 0, DmaAccess.Read), new VtdProbe(0, 0, 0x7000, DmaAccess.Write), new VtdProbe(0x80, 1, 0, DmaAccess.Read)];
            VtdImage? image = Call("VtdImageExporter.ExportImage(probes)", () => unit.ExportImage(probes));
            Assert.NotNull(image);
            Assert.True(image!.Chunks.Count <= 2);
            ExerciseImage(image, config, probes);
        }
    }

    /// <summary>
    /// Caller-owned RAM with a hole: every structure pointer (root, context, PASID directory, PASID table,
    /// FLPTR, SLPTPTR, next-table) aimed into the hole: the unit faults with the read-error reason and the
    /// diagnostics run without exceptions; the image keeps nothing from the hole.
    /// </summary>
    [Fact]
    public unsafe void Pointers_into_a_hole_of_caller_memory_are_read_errors_everywhere()
    {
        var blocks = new List<nint>();
        try
        {
            using PhysicalMemory memory = NewMemory(callerOwned: true, blocks);
            const ulong Root = 0x1000, Ctx = 0x2000, Dir = 0x3000, Pt = 0x4000;
            memory.WriteUInt64(Root, Ctx | 1);
            memory.WriteUInt64(Root + 16, HoleStart | 1);              // bus 1 → context table in the hole
            memory.WriteUInt64(Ctx, Dir | 1 | 8);                      // devfn 0: PASIDE, PDTS 0
            memory.WriteUInt64(Ctx + 32, (HoleStart + 0x1000) | 1 | 8); // devfn 1: directory in the hole
            memory.WriteUInt64(Dir, Pt | 1);
            memory.WriteUInt64(Dir + 8, (HoleStart + 0x2000) | 1);     // PASIDs 64–127 → PASID table in the hole
            memory.WriteUInt64(Pt, 1 | (2UL << 2) | (1UL << 6));       // PASID 0: first level, FLPTR in the hole
            memory.WriteUInt64(Pt + 8, 1);
            memory.WriteUInt64(Pt + 16, HoleStart + 0x3000);
            memory.WriteUInt64(Pt + 64, 1 | (2UL << 2) | (2UL << 6) | (HoleStart + 0x4000)); // PASID 1: second level in the hole
            memory.WriteUInt64(Pt + 72, 1);
            var unit = new VtdUnit(memory, VtdConfig.ScalableModeFirstLevel48Bit);
            Enable(unit, Root | (1UL << 10));
            Assert.Equal(VtdFaultReason.ScalableContextTableReadError, unit.Translate(0x0100, null, 0, 8, DmaAccess.Read).Reason);
            Assert.Equal(VtdFaultReason.PasidDirectoryReadError, unit.Translate(0x0001, 0, 0, 8, DmaAccess.Read).Reason);
            Assert.Equal(VtdFaultReason.PasidTableReadError, unit.Translate(0x0000, 64, 0, 8, DmaAccess.Read).Reason);
            Assert.Equal(VtdFaultReason.FirstLevelPointerInvalid, unit.Translate(0x0000, 0, 0, 8, DmaAccess.Read).Reason);
            Assert.Equal(VtdFaultReason.SecondLevelPointerInvalid, unit.Translate(0x0000, 1, 0, 8, DmaAccess.Read).Reason);
            VtdProbe[] probes = [new(0x0100, null, 0, DmaAccess.Read), new(0x0001, 0, 0, DmaAccess.Read), new(0, 64, 0, DmaAccess.Read), new(0, 0, 0, DmaAccess.Read), new(0, 1, 0, DmaAccess.Read)];
            VtdImage image = unit.ExportImage(probes);
            Assert.All(image.Chunks, ch => Assert.False(ch.Address < HoleEnd && ch.Address + (ulong)ch.Size > HoleStart));
            ExerciseImage(image, VtdConfig.ScalableModeFirstLevel48Bit, probes);
        }
        finally
        {
            foreach (nint b in blocks)
            {
                NativeMemory.AlignedFree((void*)b);
            }
        }
    }

    /// <summary>Malformed JSON documents: FromJson throws FormatException only (documented), never anything else.</summary>
    [Theory]
    [InlineData("")]
    [InlineData("null")]
    [InlineData("[]")]
    [InlineData("{\"format\":\"iommu-vtd-image\",\"version\":1}")]
    [InlineData("{\"format\":\"iommu-vtd-image\",\"version\":1,\"mode\":\"legacy\",\"rtaddr\":\"0x1000\",\"hostAddressWidth\":46,\"translationEnabled\":true,\"chunks\":[{\"address\":\"0x1000\",\"kind\":\"root\",\"level\":0,\"data\":\"!!\"}]}")]
    [InlineData("{\"format\":\"iommu-vtd-image\",\"version\":1,\"mode\":\"legacy\",\"rtaddr\":\"0x1000\",\"hostAddressWidth\":99,\"translationEnabled\":true,\"chunks\":[]}")]
    [InlineData("{\"format\":\"iommu-vtd-image\",\"version\":1,\"mode\":\"legacy\",\"rtaddr\":\"0xffffffffffffffff0\",\"hostAddressWidth\":46,\"translationEnabled\":true,\"chunks\":[]}")]
    [InlineData("{\"format\":\"iommu-vtd-image\",\"version\":1,\"mode\":\"legacy\",\"rtaddr\":\"0x1000\",\"hostAddressWidth\":46,\"translationEnabled\":true,\"chunks\":[{\"address\":\"0xfffffffffffff000\",\"kind\":\"root\",\"level\":0,\"data\":\"AAAAAAAAAAAAAAAAAAAAAA==\"},{\"address\":\"0xfffffffffffff008\",\"kind\":\"root\",\"level\":0,\"data\":\"AAAAAAAAAAA=\"}]}")]
    [InlineData("{\"format\":\"iommu-vtd-image\",\"version\":1,\"mode\":\"legacy\",\"rtaddr\":\"0x1000\",\"hostAddressWidth\":46,\"translationEnabled\":true,\"chunks\":[],\"probes\":[{\"requester\":\"0x1\",\"pasid\":-1,\"iova\":\"0x0\",\"access\":\"read\",\"size\":8,\"result\":\"translated\"}]}")]
    public void Malformed_json_throws_only_format_exception(string json)
    {
        Call("VtdImageJson.FromJson", () => VtdImageJson.FromJson(json));
    }

    // ------------------------------------------------------------------------------------------------
    // Part B: first-level and nested translation against the spec
    // ------------------------------------------------------------------------------------------------

    private const uint Pasid = 0x23;
    private const ushort Did = 9;
    private const ulong Page = 0x0077_7000;

    private static FirstStageRig Rig(VtdConfig? config = null, ulong q2 = 0, bool nested = false, int levels = 4)
    {
        var r = new FirstStageRig(config ?? VtdConfig.ScalableModeFirstLevel48Bit, nested: nested, levels: levels);
        r.Entry(Pasid, Did, q2);
        r.Enable();
        return r;
    }

    // pasid-sva.md §1.5 step 1: "Canonical check: N = 48 (FLPM=00) or 57 (FLPM=01); bits 63:N−1 of A must all
    // equal bit N−1, else 0x80 (SGN.1)."
    [Theory]
    [InlineData(4, 0x0000_7FFF_FFFF_F000UL, false)]
    [InlineData(4, 0x0000_8000_0000_0000UL, true)]
    [InlineData(4, 0xFFFF_8000_0000_0000UL, false)]
    [InlineData(4, 0xFFFF_7FFF_FFFF_F000UL, true)]
    [InlineData(4, 0x8000_0000_0000_0000UL, true)]
    [InlineData(4, 0x0080_0000_0000_0000UL, true)]   // a 57-bit canonical address is not 48-bit canonical
    [InlineData(5, 0x0080_0000_0000_0000UL, false)]
    [InlineData(5, 0x00FF_FFFF_FFFF_F000UL, false)]
    [InlineData(5, 0x0100_0000_0000_0000UL, true)]
    [InlineData(5, 0xFF00_0000_0000_0000UL, false)]
    [InlineData(5, 0xFE00_0000_0000_0000UL, true)]
    [InlineData(5, 0x7F00_0000_0000_0000UL, true)]
    public void Canonical_check_follows_flpm(int levels, ulong iova, bool nonCanonical)
    {
        foreach (bool nested in new[] { false, true })
        {
            using FirstStageRig r = Rig(VtdConfig.ScalableModeFirstLevel57Bit, nested: nested, levels: levels);
            r.Map(iova, nested ? 0x3000_0000UL : Page);
            if (nested)
            {
                r.SlMap(0x3000_0000, Page);
            }

            VtdTranslation t = r.Translate(Pasid, iova | 0x10);
            if (nonCanonical)
            {
                Assert.Equal(VtdFaultReason.NonCanonicalAddress, t.Reason);
                Assert.Equal(0UL, r.Read(r.EntryAt(iova, levels)) & A); // nothing walked
            }
            else
            {
                Assert.Equal(VtdTranslationStatus.Translated, t.Status);
                Assert.Equal(Page | 0x10, t.PhysicalAddress);
            }
        }
    }

    // pasid-sva.md §1.5 step 5: "set A (and EA if EAFE=1) in every entry used, and D in the leaf for writes".
    // A 5-level walk (FLPM = 01) sets A at all five levels and D only in the leaf.
    [Theory]
    [InlineData(1, false)]
    [InlineData(2, true)]
    [InlineData(3, true)]
    public void Five_level_walk_sets_a_everywhere_and_d_in_the_leaf_only(int leafLevel, bool eafe)
    {
        using FirstStageRig r = Rig(VtdConfig.ScalableModeFirstLevel57Bit, q2: eafe ? Eafe : 0, levels: 5);
        const ulong iova = 0x00AB_CDEF_8000_0000;
        ulong output = leafLevel == 3 ? 0x4000_0000UL : leafLevel == 2 ? 0x0060_0000UL : Page;
        ulong leaf = r.Map(iova, output, leafLevel);
        VtdTranslation read = r.Translate(Pasid, iova + 0x123);
        Assert.Equal(output + 0x123, read.PhysicalAddress);
        for (int level = 5; level >= leafLevel; level--)
        {
            ulong e = r.Read(r.EntryAt(iova, level));
            Assert.Equal(A | (eafe ? EA : 0), e & (A | D | EA));
        }

        VtdTranslation write = r.Translate(Pasid, iova + 0x200, DmaAccess.Write);
        Assert.Equal(VtdTranslationStatus.Translated, write.Status);
        Assert.Equal(D, r.Read(leaf) & D);
        for (int level = 5; level > leafLevel; level--)
        {
            Assert.Equal(0UL, r.Read(r.EntryAt(iova, level)) & D);
        }
    }

    // pasid-sva.md §1.4 bit 7: "PS=1 in a PDPE needs CAP.FL1GP (reserved-bit fault otherwise)"; vtd-hw.md §5.2:
    // "0x72 SFL.3 reserved bits in first-level entry". Nothing is set in memory by a faulting walk.
    [Theory]
    [InlineData(false, false)]
    [InlineData(true, false)]
    [InlineData(false, true)]
    [InlineData(true, true)]
    public void One_gib_first_level_leaf_needs_fl1gp(bool fl1gp, bool nested)
    {
        VtdConfig config = VtdConfig.ScalableModeFirstLevel48Bit with { FirstLevel1GiBPages = fl1gp };
        using FirstStageRig r = Rig(config, nested: nested);
        ulong leaf = r.Map(0x8000_0000, 0x4000_0000, leafLevel: 3);
        if (nested)
        {
            r.SlMap(0x4000_1000, 0x0055_5000);
        }

        VtdTranslation t = r.Translate(Pasid, 0x8000_1008, DmaAccess.Write);
        if (!fl1gp)
        {
            Assert.Equal(VtdFaultReason.FirstLevelReserved, t.Reason);
            Assert.Equal(0UL, r.Read(leaf) & (A | D));
            Assert.Equal(0UL, r.Read(r.EntryAt(0x8000_0000, 4)) & A);
        }
        else
        {
            Assert.Equal(nested ? 0x0055_5008UL : 0x4000_1008UL, t.PhysicalAddress);
            Assert.Equal(A | D, r.Read(leaf) & (A | D));
        }
    }

    // pasid-sva.md §1.5 step 2: "supervisor request with SRE=0 → 0x5D"; step 4: "user request and some U/S=0 →
    // 0x81"; "write and some R/W=0 (user, or supervisor with WPE=1) → 0x85". vtd-hw.md §5.2: 0x5D SPT.6,
    // 0x81 SGN.2, 0x85 SGN.6. A faulting request sets no A/D (spec invariant quoted in VtdUnit.FirstLevel).
    [Theory]
    //          SRE    WPE    US     RW     priv   write  expected
    [InlineData(false, false, true, true, true, false, VtdFaultReason.SupervisorRequestsDisabled)]
    [InlineData(true, false, false, true, true, false, VtdFaultReason.None)]      // supervisor reads a supervisor page
    [InlineData(true, false, true, true, true, false, VtdFaultReason.None)]       // supervisor reads a user page (no SMAP)
    [InlineData(true, false, false, true, false, false, VtdFaultReason.UserAccessDenied)]
    [InlineData(true, false, false, false, true, true, VtdFaultReason.None)]      // WPE=0: supervisor write to a read-only page
    [InlineData(true, true, false, false, true, true, VtdFaultReason.ScalableWrite)]
    [InlineData(true, true, false, true, true, true, VtdFaultReason.None)]
    [InlineData(true, false, true, false, false, true, VtdFaultReason.ScalableWrite)]
    [InlineData(false, true, true, false, false, false, VtdFaultReason.None)]     // user read of a read-only page
    public void Privilege_and_write_protect_rules(bool sre, bool wpe, bool user, bool readWrite, bool privileged, bool write, VtdFaultReason expected)
    {
        using FirstStageRig r = Rig(q2: (sre ? Sre : 0) | (wpe ? Wpe : 0));
        ulong bits = P | (user ? US : 0) | (readWrite ? RW : 0);
        ulong leaf = r.Map(0x5000_0000, Page, leaf: bits, table: bits);
        VtdTranslation t = r.Translate(Pasid, 0x5000_0040, write ? DmaAccess.Write : DmaAccess.Read, privileged ? DmaRequestAttributes.Privileged : DmaRequestAttributes.None);
        Assert.Equal(expected, t.Reason);
        if (expected == VtdFaultReason.None)
        {
            Assert.Equal(Page | 0x40, t.PhysicalAddress);
            Assert.Equal(A | (write ? D : 0), r.Read(leaf) & (A | D));
            Assert.Equal(readWrite || (privileged && !wpe), t.Writable);
        }
        else
        {
            Assert.Equal(0UL, r.Read(leaf) & (A | D));
        }
    }

    // pasid-sva.md §1.5 step 2: "execute request with ERE=0 → 0x5C"; step 4: "execute and (some XD=1 with NXE=1,
    // or supervisor fetch from a user page with SMEP=1) → 0x82". vtd-hw.md §5.2: 0x5C SPT.5, 0x82 SGN.3.
    // XD with NXE = 0 is ignored by the model (documented choice, UNVERIFIED in the spec notes).
    [Theory]
    //          ERE    NXE    SMEP   XD     US     priv   expected
    [InlineData(false, false, false, false, true, false, VtdFaultReason.ExecuteRequestsDisabled)]
    [InlineData(true, false, false, false, true, false, VtdFaultReason.None)]
    [InlineData(true, true, false, true, true, false, VtdFaultReason.ExecuteDenied)]
    [InlineData(true, false, false, true, true, false, VtdFaultReason.None)]
    [InlineData(true, false, true, false, true, true, VtdFaultReason.ExecuteDenied)]   // SMEP: supervisor fetch from a user page
    [InlineData(true, false, true, false, false, true, VtdFaultReason.None)]           // SMEP: supervisor page
    [InlineData(true, false, true, false, true, false, VtdFaultReason.None)]           // SMEP does not apply to user fetches
    [InlineData(true, true, false, true, false, true, VtdFaultReason.ExecuteDenied)]   // XD applies to supervisor fetches too
    public void Execute_rules(bool ere, bool nxe, bool smep, bool xd, bool user, bool privileged, VtdFaultReason expected)
    {
        VtdConfig config = VtdConfig.ScalableModeFirstLevel48Bit with { ExecuteRequests = true };
        using FirstStageRig r = Rig(config, q2: Sre | (ere ? Ere : 0) | (nxe ? Nxe : 0) | (smep ? Smep : 0));
        ulong bits = P | RW | (user ? US : 0);
        ulong leaf = r.Map(0x5000_0000, Page, leaf: bits | (xd ? XD : 0), table: bits);
        DmaRequestAttributes attrs = DmaRequestAttributes.Execute | (privileged ? DmaRequestAttributes.Privileged : 0);
        VtdTranslation t = r.Translate(Pasid, 0x5000_0040, DmaAccess.Read, attrs);
        Assert.Equal(expected, t.Reason);
        Assert.Equal(expected == VtdFaultReason.None ? A : 0, r.Read(leaf) & A);

        // The execute attribute of a write is dropped (VtdUnit.Translate docs): a write never faults 0x5C/0x82.
        VtdTranslation w = r.Translate(Pasid, 0x5000_0040, DmaAccess.Write, attrs);
        Assert.NotEqual(VtdFaultReason.ExecuteRequestsDisabled, w.Reason);
        Assert.NotEqual(VtdFaultReason.ExecuteDenied, w.Reason);
    }

    // pasid-sva.md §1.5: "requests without PASID are user" — the privilege and execute attributes of a request
    // without PASID are ignored (RID_PASID entry with SRE = 0 and a supervisor page: 0x81, never 0x5D).
    [Fact]
    public void Attributes_of_a_request_without_pasid_are_ignored()
    {
        using var r = new FirstStageRig(VtdConfig.ScalableModeFirstLevel48Bit);
        r.Entry(0, Did); // RID_PASID 0, SRE = 0
        r.Enable();
        r.Map(0x5000_0000, Page, leaf: P | RW, table: P | RW);
        Assert.Equal(VtdFaultReason.UserAccessDenied, r.Translate(null, 0x5000_0000, DmaAccess.Read, DmaRequestAttributes.Privileged).Reason);
        Assert.Equal(VtdFaultReason.UserAccessDenied, r.Translate(null, 0x5000_0000, DmaAccess.Read, DmaRequestAttributes.Execute).Reason);
    }

    // vtd-hw.md §3.4: q2 11:8 reserved, q1 22:16 reserved, q3–q7 reserved (511:192); SRE/ERE/EAFE need
    // ECAP.SRS/ERS/EAFS (pasid-sva.md §"ECAP 31/30/34"); FLPM "00 4-level, 01 5-level" (others reserved,
    // 01 needs FL5LP). vtd-hw.md §5.2: 0x5A SPT.3 reserved bits in PASID entry; 0x5B SPT.4.x invalid (PGTT, AW, FLPM…).
    [Theory]
    [InlineData("q2 bit 8", VtdFaultReason.PasidEntryReserved)]
    [InlineData("q2 bit 11", VtdFaultReason.PasidEntryReserved)]
    [InlineData("q1 bit 16", VtdFaultReason.PasidEntryReserved)]
    [InlineData("q1 bit 22", VtdFaultReason.PasidEntryReserved)]
    [InlineData("q3", VtdFaultReason.PasidEntryReserved)]
    [InlineData("q7", VtdFaultReason.PasidEntryReserved)]
    [InlineData("ERE without ERS", VtdFaultReason.PasidEntryReserved)]
    [InlineData("SRE without SRS", VtdFaultReason.PasidEntryReserved)]
    [InlineData("EAFE without EAFS", VtdFaultReason.PasidEntryReserved)]
    [InlineData("FLPM 2", VtdFaultReason.PasidEntryInvalid)]
    [InlineData("FLPM 3", VtdFaultReason.PasidEntryInvalid)]
    [InlineData("FLPM 1 without FL5LP", VtdFaultReason.PasidEntryInvalid)]
    [InlineData("PGTT 0", VtdFaultReason.PasidEntryInvalid)]
    [InlineData("PGTT 5", VtdFaultReason.PasidEntryInvalid)]
    [InlineData("PGTT 7", VtdFaultReason.PasidEntryInvalid)]
    [InlineData("FLPTR above HAW", VtdFaultReason.PasidEntryReserved)]
    public void Pasid_entry_reserved_and_invalid_fields(string field, VtdFaultReason expected)
    {
        VtdConfig config = field switch
        {
            "SRE without SRS" => VtdConfig.ScalableModeFirstLevel48Bit with { SupervisorRequests = false },
            "EAFE without EAFS" => VtdConfig.ScalableModeFirstLevel48Bit with { ExtendedAccessedFlag = false },
            _ => VtdConfig.ScalableModeFirstLevel48Bit,
        };
        using var r = new FirstStageRig(config);
        r.Map(0x5000_0000, Page);
        ulong q0 = 1 | (2UL << 2) | (1UL << 6);
        ulong q2 = r.FlRoot;
        ulong q1Extra = 0;
        switch (field)
        {
            case "q2 bit 8": q2 |= 1UL << 8; break;
            case "q2 bit 11": q2 |= 1UL << 11; break;
            case "q1 bit 16": q1Extra = 1UL << 16; break;
            case "q1 bit 22": q1Extra = 1UL << 22; break;
            case "ERE without ERS": q2 |= Ere; break;
            case "SRE without SRS": q2 |= Sre; break;
            case "EAFE without EAFS": q2 |= Eafe; break;
            case "FLPM 2": q2 |= 2UL << 2; break;
            case "FLPM 3": q2 |= 3UL << 2; break;
            case "FLPM 1 without FL5LP": q2 |= 1UL << 2; break;
            case "PGTT 0": q0 &= ~(7UL << 6); break;
            case "PGTT 5": q0 = (q0 & ~(7UL << 6)) | (5UL << 6); break;
            case "PGTT 7": q0 |= 7UL << 6; break;
            case "FLPTR above HAW": q2 |= 1UL << 47; break;
            default: break;
        }

        r.B.PasidEntry(r.Dir, Pasid, q0, Did, q1Extra, q2);
        ulong pe = r.B.PasidEntryAddress(r.Dir, Pasid);
        if (field == "q3")
        {
            r.Set(pe + 24, 1);
        }
        else if (field == "q7")
        {
            r.Set(pe + 56, 1UL << 63);
        }

        r.Enable();
        Assert.Equal(expected, r.Translate(Pasid, 0x5000_0000).Reason);
    }

    // The model follows the spec's order (pasid-sva.md §1.5 steps 3–4: reserved bits per level during the walk,
    // permissions over all levels after it), not later QEMU's (vtd-hw.md §4.5 / pasid-sva.md: "per level it checks
    // … U/S before reserved bits (0x81 …)"). An upper entry with U/S = 0 above a leaf with a reserved bit: 0x72 by
    // the spec, 0x81 by QEMU's order (QemuFirstLevelCheckOrder).
    [Theory]
    [InlineData(false, VtdFaultReason.FirstLevelReserved)]
    [InlineData(true, VtdFaultReason.UserAccessDenied)]
    public void Reserved_bit_before_user_permission_in_the_spec_order(bool qemuOrder, VtdFaultReason expected)
    {
        VtdConfig config = VtdConfig.ScalableModeFirstLevel48Bit with { QemuFirstLevelCheckOrder = qemuOrder };
        using FirstStageRig r = Rig(config);
        r.Map(0x5000_0000, 0x0060_0000 | (1UL << 14), leafLevel: 2); // bit 14 of a 2 MiB leaf is reserved
        ulong pml4e = r.EntryAt(0x5000_0000, 4);
        r.Set(pml4e, r.Read(pml4e) & ~US);
        Assert.Equal(expected, r.Translate(Pasid, 0x5000_0000).Reason);
    }

    // pasid-sva.md §1.4: bit 7 of a PTE is PAT and bit 12 of a large leaf is PAT (not address); bits 62:52 and
    // 11:8 are ignored; vtd-hw.md §4.5: "7 PS (PDPE/PDE); reserved in PML4E/PML5E; PAT in a 4 KiB PTE".
    [Theory]
    [InlineData(1, 0x80UL, 0UL)]                       // PAT in a PTE
    [InlineData(1, 0x7FF0_0000_0000_0F00UL, 0UL)]     // ignored 62:52, G, 9, 11, EA set by the guest
    [InlineData(2, 0x1000UL, 0UL)]                     // PAT of a 2 MiB leaf is not part of the address
    [InlineData(3, 0x1000UL, 0UL)]
    public void Ignored_and_pat_bits_do_not_fault_or_move_the_output(int leafLevel, ulong extra, ulong expectedShift)
    {
        using FirstStageRig r = Rig();
        ulong output = leafLevel == 3 ? 0x4000_0000UL : leafLevel == 2 ? 0x0060_0000UL : Page;
        r.Map(0x8000_0000, output, leafLevel, leaf: P | RW | US | extra);
        VtdTranslation t = r.Translate(Pasid, 0x8000_0010);
        Assert.Equal(VtdTranslationStatus.Translated, t.Status);
        Assert.Equal(output + 0x10 + expectedShift, t.PhysicalAddress);
    }

    // Nested, pasid-sva.md §1.6 step 1: "a GPA beyond the second level's input width → 0x74"; step 3: "A/D
    // updates of FL entries are writes to guest memory and need SL write permission → 0x77"; step 5: "effective
    // page size = min(FL page, SL page)".
    [Fact]
    public void Nested_table_beyond_sl_width_and_page_size_is_the_smaller()
    {
        using FirstStageRig r = Rig(VtdConfig.ScalableModeFirstLevel48Bit with { HostAddressWidth = 52 }, nested: true);
        ulong leaf = r.Map(0x8000_0000, 0x3000_0000, leafLevel: 2); // 2 MiB guest page
        r.SlMap(0x3000_0000 + 0x5000, Page);                        // 4 KiB host page
        VtdTranslation t = r.Translate(Pasid, 0x8000_5010);
        Assert.Equal(Page | 0x10, t.PhysicalAddress);
        Assert.Equal(4096UL, t.PageSize);

        // A next-table GPA beyond the 48-bit second-level input width.
        ulong pdpe = r.EntryAt(0x8000_0000, 3);
        r.Set(pdpe, (r.Read(pdpe) & ~0x000F_FFFF_FFFF_F000UL) | (1UL << 49));
        r.B.GlobalIotlbInvalidate();
        Assert.Equal(VtdFaultReason.FirstLevelTableBeyondWidth, r.Translate(Pasid, 0x8000_5010).Reason);
        Assert.Equal(0UL, r.Read(leaf) & D);
    }

    /// <summary>
    /// Nested first-level entries hold guest-physical addresses (pasid-sva.md §1.6: "each FL next-table address is
    /// again a GPA"; "a GPA beyond the second level's input width → 0x74"; vtd-hw.md: 0x74 is "FL entry address beyond
    /// MGAW"), so bits 51:HAW of them are not reserved: with HAW 46 and a 48-bit second level (AW 2), a guest table or
    /// page at GPA 2^47, which the second level maps, translates (the model faulted 0x72, as if it were host-physical).
    /// </summary>
    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public void Nested_guest_physical_addresses_above_haw_but_inside_the_sl_width_translate(bool leafAbove)
    {
        const ulong High = 1UL << 47;
        using FirstStageRig r = Rig(nested: true); // HAW 46, second level AW 2 (48-bit input)
        Assert.Equal(46, r.B.Config.HostAddressWidth);
        const ulong iova = 0x8000_0000;
        if (leafAbove)
        {
            r.Map(iova, High);
            r.SlMap(High, Page);
        }
        else
        {
            // The page table (level 1) lives at GPA 2^47 + its host frame, mapped by the second level.
            r.Map(iova, 0x3000_0000);
            r.SlMap(0x3000_0000, Page);
            ulong pde = r.EntryAt(iova, 2);
            ulong ptHost = (r.Read(pde) & 0x000F_FFFF_FFFF_F000UL) - r.GpaOffset;
            r.SlMap(High + ptHost, ptHost);
            r.Set(pde, (r.Read(pde) & ~0x000F_FFFF_FFFF_F000UL) | (High + ptHost));
        }

        VtdTranslation t = r.Translate(Pasid, iova + 0x18);
        Assert.Equal(VtdFaultReason.None, t.Reason);
        Assert.Equal(Page | 0x18, t.PhysicalAddress);
    }

    /// <summary>
    /// The exporter reads a PASID directory as 2^(PDTS+7) × 8 bytes (up to 128 KiB, vtd-hw.md §3.2/§3.3); when the guest
    /// put another structure inside that range (here its PASID table, 4 KiB into a PDTS = 3, 8 KiB directory), the
    /// image holds those bytes once, in the directory's chunk (ExportImage threw ArgumentException, undocumented,
    /// from the image's overlap check), and still answers as the unit does.
    /// </summary>
    [Fact]
    public void Export_of_a_pasid_directory_overlapping_another_table_does_not_throw()
    {
        using var memory = new PhysicalMemory(MemSize);
        const ulong Root = 0x1000, Ctx = 0x2000, Dir = 0x3000, Pt = 0x4000;
        memory.WriteUInt64(Root, Ctx | 1);
        memory.WriteUInt64(Ctx, Dir | 1 | 8 | (3UL << 9)); // PASIDE, PDTS 3: 1024 entries, 8 KiB
        memory.WriteUInt64(Dir, Pt | 1);
        memory.WriteUInt64(Pt, 1 | (2UL << 2) | (4UL << 6)); // PASID 0: pass-through
        memory.WriteUInt64(Pt + 8, 1);
        var unit = new VtdUnit(memory, VtdConfig.ScalableModeFirstLevel48Bit);
        Enable(unit, Root | (1UL << 10));
        Assert.Equal(VtdTranslationStatus.Translated, unit.Translate(0, 0, 0x1234_5000, 8, DmaAccess.Read).Status);
        VtdImage image = unit.ExportImage();
        Assert.Equal(Dir, Assert.Single(image.Chunks, c => c.Address <= Pt && Pt < c.Address + (ulong)c.Size).Address);
        VtdProbe[] probes = [new VtdProbe(0, 0, 0x1234_5000, DmaAccess.Read)];
        VtdProbeResult r = Assert.Single(image.Probe(unit.Config, probes).Probes);
        Assert.Equal((VtdTranslationStatus.Translated, 0x1234_5000UL), (r.Status, r.PhysicalAddress));

        // Relocation rewrites those bytes as the directory's entries (entry 512 is the PASID entry's q0, and points
        // at a PASID table at 0), so the PASID entry's reading may change; it must not throw.
        Call("VtdImage.Relocate", () => image.Relocate(0x40_0000, 0x10_0000).Probe(unit.Config, probes));
        Call("VtdImageExporter.Export", () => VtdImageExporter.Export(memory, Root | (1UL << 10), 46, true));
    }
}
