using System.Runtime.InteropServices;
using CsCheck;
using Iommu.Memory;

namespace Iommu.Core.Tests;

/// <summary>
/// Physical memory over RAM the caller owns, with holes: bytes land in the caller's host memory at
/// the offsets its ranges say, a hole is never RAM (Contains is false, accessors throw before moving a
/// byte), and Dispose leaves the caller's memory alone.
/// </summary>
public sealed unsafe class CallerOwnedMemoryTests
{
    private const ulong Page = PhysicalMemory.PageSize;
    private const ulong Chunk = 1UL << PhysicalMemory.ChunkShift;

    [Fact]
    public void Bytes_written_by_physical_address_land_in_the_callers_memory_and_back()
    {
        using var host = new HostBlocks();
        nint low = host.Alloc(4 * Chunk, Chunk);
        nint high = host.Alloc(Chunk, Page);
        using var memory = new PhysicalMemory(16 * Chunk, [new(0, 4 * Chunk, low), new(8 * Chunk, Chunk, high)]);

        memory.WriteUInt64(0x1000, 0x1122_3344_5566_7788);
        memory.Write((8 * Chunk) + 0x10, [1, 2, 3]);
        *(ulong*)(low + 0x2000) = 0xABCD;

        Assert.Equal(0x1122_3344_5566_7788UL, *(ulong*)(low + 0x1000));
        Assert.Equal([1, 2, 3], new ReadOnlySpan<byte>((byte*)high + 0x10, 3).ToArray());
        Assert.Equal(0xABCDUL, memory.ReadUInt64(0x2000));
        Assert.Equal(5 * Chunk, memory.BackedBytes);
        Assert.Equal(2, memory.HostRanges!.Count);
        Assert.True(memory.IsBacked(8 * Chunk));
        Assert.False(memory.IsBacked(4 * Chunk));
    }

    [Fact]
    public void A_hole_is_not_ram_and_accessors_name_it_without_moving_a_byte()
    {
        using var host = new HostBlocks();
        nint a = host.Alloc(0x3000, Page);
        nint b = host.Alloc(0x2000, Page);
        using var memory = new PhysicalMemory(Chunk, [new(0, 0x3000, a), new(0x5000, 0x2000, b)]);

        Assert.True(memory.Contains(0x2000, 0x1000));
        Assert.False(memory.Contains(0x2000, 0x1001));
        Assert.False(memory.Contains(0x3000, 8));
        Assert.False(memory.Contains(0x8000, 8));

        new Span<byte>((void*)a, 0x3000).Fill(0x55);
        var ex = Assert.Throws<ArgumentOutOfRangeException>(() => memory.Write(0x2F00, new byte[0x200]));
        Assert.Contains("[0x2f00, 0x3100)", ex.Message, StringComparison.Ordinal);
        Assert.Contains("hole", ex.Message, StringComparison.Ordinal);
        Assert.Equal(0x55, ((byte*)a)[0x2F00]); // nothing written before the hole was found
        Assert.Throws<ArgumentOutOfRangeException>(() => memory.ReadUInt64(0x4000));
        Assert.Throws<ArgumentOutOfRangeException>(() => memory.Table(0x3000));
        Assert.Throws<ArgumentOutOfRangeException>(() => memory.Read(0x6000, new byte[0x1001]));
        Assert.Throws<ArgumentOutOfRangeException>(() => memory.PinContiguous(0x2000, 0x2000));
    }

    [Fact]
    public void Adjacent_ranges_in_different_host_blocks_read_and_write_as_one_run()
    {
        using var host = new HostBlocks();
        nint a = host.Alloc(0x1000, Page);
        nint b = host.Alloc(0x1000, Page);
        using var memory = new PhysicalMemory(Chunk, [new(0x1000, 0x1000, a), new(0x2000, 0x1000, b)]);

        byte[] run = [.. Enumerable.Range(0, 0x800).Select(i => (byte)i)];
        memory.Write(0x1C00, run);

        Assert.True(memory.Contains(0x1000, 0x2000));
        Assert.Equal(run[..0x400], new ReadOnlySpan<byte>((byte*)a + 0xC00, 0x400).ToArray());
        Assert.Equal(run[0x400..], new ReadOnlySpan<byte>((byte*)b, 0x400).ToArray());
        byte[] back = new byte[0x800];
        memory.Read(0x1C00, back);
        Assert.Equal(run, back);
    }

    [Fact]
    public void Pinning_caller_ram_is_a_view_of_it_and_may_be_repeated()
    {
        using var host = new HostBlocks();
        nint ram = host.Alloc(2 * Chunk, Chunk);
        using var memory = new PhysicalMemory(4 * Chunk, [new(Chunk, 2 * Chunk, ram)]);

        ContiguousRegion first = memory.PinContiguous(Chunk, 2 * Chunk);
        ContiguousRegion again = memory.PinContiguous(Chunk + Page, Page);
        first.Table(Chunk + Page)[3] = 42;

        Assert.Equal((nint)ram, (nint)first.BasePointer);
        Assert.Equal(42UL, ((ulong*)ram)[(Page / 8) + 3]);
        Assert.Equal(42UL, again.Table(Chunk + Page)[3]);
    }

    [Fact]
    public void A_frame_allocator_over_caller_ram_hands_out_zeroed_frames()
    {
        using var host = new HostBlocks();
        nint ram = host.Alloc(Chunk, Chunk);
        new Span<byte>((void*)ram, (int)Chunk).Fill(0xEE);
        using var memory = new PhysicalMemory(2 * Chunk, [new(Chunk, Chunk, ram)]);
        var frames = new FrameAllocator(memory, Chunk, Chunk);

        Assert.True(frames.TryAllocate(out ulong pa));
        Assert.Equal(Chunk, pa);
        Assert.True(memory.Table(pa).IndexOfAnyExcept(0UL) < 0);
    }

    [Fact]
    public void Dispose_leaves_the_callers_memory_alone()
    {
        using var host = new HostBlocks();
        nint ram = host.Alloc(Chunk, Chunk);
        var memory = new PhysicalMemory(Chunk, [new(0, Chunk, ram)]);
        memory.WriteUInt64(0x100, 7);
        memory.Dispose();

        Assert.Equal(7UL, *(ulong*)(ram + 0x100)); // still the caller's, still readable
        Assert.Throws<ObjectDisposedException>(() => memory.ReadUInt64(0x100));
    }

    [Theory]
    [InlineData(0x1000UL, 0UL, "non-empty")]
    [InlineData(0x800UL, 0x1000UL, "4 KiB-aligned")]
    [InlineData(0x1FF000UL, 0x2000UL, "inside the 0x200000 bytes")]
    public void Ranges_that_cannot_be_ram_are_refused_with_the_range_named(ulong pa, ulong length, string why)
    {
        using var host = new HostBlocks();
        nint ram = host.Alloc(0x2000, Page);
        var ex = Assert.Throws<ArgumentOutOfRangeException>(() => new PhysicalMemory(Chunk, [new(pa, length, ram)]));
        Assert.Contains(why, ex.Message, StringComparison.Ordinal);
        Assert.Contains($"0x{pa:x}", ex.Message, StringComparison.Ordinal);
    }

    [Fact]
    public void Overlapping_ranges_are_refused_with_both_named()
    {
        using var host = new HostBlocks();
        nint a = host.Alloc(0x3000, Page);
        nint b = host.Alloc(0x1000, Page);
        var ex = Assert.Throws<ArgumentException>(() => new PhysicalMemory(Chunk, [new(0x2000, 0x1000, b), new(0, 0x3000, a)]));
        Assert.Contains("[0x0, 0x3000)", ex.Message, StringComparison.Ordinal);
        Assert.Contains("[0x2000, 0x3000)", ex.Message, StringComparison.Ordinal);
    }

    /// <summary>
    /// Property: whatever valid ranges come before it (whole chunks, whose pointers a constructor would
    /// put in its directory), a constructor that refuses a range — overlapping, misaligned or outside
    /// the memory — leaves the caller's memory to the caller, also once its half-built object is
    /// finalized (it used to free the caller's blocks, crashing the process).
    /// </summary>
    [Fact]
    public void A_constructor_that_refuses_its_ranges_leaves_the_callers_memory_to_the_caller()
    {
        Gen.Select(Gen.Int[1, 3], Gen.Int[0, 2], Gen.Bool).Sample((valid, badKind, badFirst) =>
        {
            using var host = new HostBlocks();
            var ranges = new List<HostMemoryRange>();
            for (int i = 0; i < valid; i++)
            {
                nint block = host.Alloc(Chunk, Chunk);
                *(ulong*)block = 0x5A5A + (ulong)i;
                ranges.Add(new HostMemoryRange((ulong)i * Chunk, Chunk, block));
            }

            nint other = host.Alloc(Page, Page);
            HostMemoryRange bad = badKind switch
            {
                0 => new((ulong)(valid * (int)Chunk) - Page, Page, other), // overlaps the last valid range
                1 => new(8 * Chunk, Page, other + 8),                       // host address not page-aligned
                _ => new(16 * Chunk, Page, other),                          // outside the memory
            };
            ranges.Insert(badFirst ? 0 : ranges.Count, bad);

            Assert.ThrowsAny<ArgumentException>(() => new PhysicalMemory(16 * Chunk, ranges));
            GC.Collect();
            GC.WaitForPendingFinalizers(); // the half-built memory's finalizer must not free the caller's blocks

            for (int i = 0; i < valid; i++)
            {
                Assert.Equal(0x5A5A + (ulong)i, *(ulong*)ranges.First(r => r.PhysicalAddress == (ulong)i * Chunk && r.Length == Chunk).Host);
            }
        }, iter: 30);
    }

    /// <summary>
    /// Property: over random layouts (ranges of 1 page to several 2 MiB chunks, holes between some,
    /// each range in its own host block), random copies of random lengths at random addresses agree
    /// with a flat model: Contains is true exactly when every byte is RAM, bytes read are the bytes
    /// written, writes land at the host offset their range gives, and an access that reaches a hole
    /// throws (TryRead/TryWrite: returns false) without changing any byte.
    /// </summary>
    [Fact]
    public void Copies_over_random_layouts_agree_with_a_flat_model()
    {
        const int spacePages = 8 * 512; // 16 MiB: 8 chunks
        Gen<(int Hole, int Ram)[]> layout = Gen.Select(
            Gen.OneOf(Gen.Const(0), Gen.Int[1, 3], Gen.Int[1, 700]),
            Gen.OneOf(Gen.Int[1, 3], Gen.Int[1, 700], Gen.Int[500, 1100])).Array[1, 8];
        Gen<(ulong Pa, int Length, int Kind)[]> ops = Gen.Select(Gen.ULong[0, (spacePages * Page) - 1], Gen.OneOf(Gen.Int[0, 16], Gen.Int[0, 9000]), Gen.Int[0, 5]).Array[1, 40];

        Gen.Select(layout, ops, Gen.Bool).Sample((segments, steps, hugeAligned) =>
        {
            using var host = new HostBlocks();
            var ranges = new List<HostMemoryRange>();
            var ramPage = new bool[spacePages];
            var model = new byte[spacePages * (int)Page];
            int page = 0;
            foreach ((int hole, int ram) in segments)
            {
                page += hole;
                int n = Math.Min(ram, spacePages - page);
                if (n <= 0)
                {
                    break;
                }

                nint block = host.Alloc((ulong)n * Page, hugeAligned ? Chunk : Page);
                new Span<byte>((void*)block, n * (int)Page).Clear();
                ranges.Add(new HostMemoryRange((ulong)page * Page, (ulong)n * Page, block));
                ramPage.AsSpan(page, n).Fill(true);
                page += n;
            }

            using var memory = new PhysicalMemory(spacePages * Page, ranges);
            byte fill = 1;
            foreach ((ulong pa0, int length0, int kind) in steps)
            {
                ulong pa = kind == 2 ? pa0 & ~7UL : pa0;
                int length = kind == 2 ? 8 : (int)Math.Min((ulong)length0, (spacePages * Page) - pa);
                bool allRam = length == 0 ? ramPage[(int)(pa / Page)] : Enumerable.Range((int)(pa / Page), (int)(((pa + (ulong)length - 1) / Page) - (pa / Page) + 1)).All(p => ramPage[p]);
                Assert.Equal(allRam, memory.Contains(pa, (ulong)length));
                byte[] buffer = new byte[length];
                switch (kind)
                {
                    case 0 or 1:
                        buffer.AsSpan().Fill(fill++);
                        if (allRam)
                        {
                            memory.Write(pa, buffer);
                            buffer.CopyTo(model, (int)pa);
                        }
                        else if (length != 0)
                        {
                            Assert.Throws<ArgumentOutOfRangeException>(() => memory.Write(pa, buffer));
                        }

                        break;
                    case 2:
                        if (allRam)
                        {
                            Assert.Equal(BitConverter.ToUInt64(model, (int)pa), memory.ReadUInt64(pa));
                        }
                        else
                        {
                            Assert.Throws<ArgumentOutOfRangeException>(() => memory.ReadUInt64(pa));
                        }

                        break;
                    case 4:
                        buffer.AsSpan().Fill(fill++);
                        Assert.Equal(allRam, memory.TryWrite(pa, buffer));
                        if (allRam)
                        {
                            buffer.CopyTo(model, (int)pa);
                        }

                        break;
                    case 5:
                        Assert.Equal(allRam, memory.TryRead(pa, buffer));
                        Assert.Equal(allRam ? model.AsSpan((int)pa, length).ToArray() : new byte[length], buffer);
                        break;
                    default:
                        if (allRam)
                        {
                            memory.Read(pa, buffer);
                            Assert.Equal(model.AsSpan((int)pa, length).ToArray(), buffer);
                        }
                        else if (length != 0)
                        {
                            Assert.Throws<ArgumentOutOfRangeException>(() => memory.Read(pa, buffer));
                        }

                        break;
                }
            }

            // Every RAM byte is in its host block at the range's offset.
            foreach (HostMemoryRange r in ranges)
            {
                Assert.True(new ReadOnlySpan<byte>((void*)r.Host, (int)r.Length).SequenceEqual(model.AsSpan((int)r.PhysicalAddress, (int)r.Length)));
            }
        }, iter: 150);
    }

    // Caller-owned host memory for one test, freed after the memory over it is disposed.
    private sealed class HostBlocks : IDisposable
    {
        private readonly List<nint> _blocks = [];

        public nint Alloc(ulong bytes, ulong alignment)
        {
            nint p = (nint)NativeMemory.AlignedAlloc((nuint)bytes, (nuint)alignment);
            _blocks.Add(p);
            return p;
        }

        public void Dispose()
        {
            foreach (nint p in _blocks)
            {
                NativeMemory.AlignedFree((void*)p);
            }
        }
    }
}
