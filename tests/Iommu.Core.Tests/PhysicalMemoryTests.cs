using CsCheck;
using Iommu.Memory;

namespace Iommu.Core.Tests;

public sealed class PhysicalMemoryTests
{
    // 8 MiB with three random pages from one page below the first 2 MiB chunk boundary (at start).
    private static PhysicalMemory Patterned(int seed, out ulong start)
    {
        var mem = new PhysicalMemory(8 * Sizes.MiB);
        byte[] pattern = new byte[3 * 4096];
        new Random(seed).NextBytes(pattern);
        start = (2 * Sizes.MiB) - 4096;
        mem.Write(start, pattern);
        return mem;
    }

    // TryRead copies short ranges inline (overlapping vector moves), up to a page in 64 B moves and
    // longer ones through Memmove: at any length and offset (across a chunk boundary too) it moves exactly the bytes Read moves
    // and writes nothing past the destination's length.
    [Fact]
    public void TryRead_moves_exactly_the_bytes_of_the_range_at_any_length_and_offset()
    {
        using PhysicalMemory mem = Patterned(seed: 7, out ulong start);
        Gen.Select(Gen.OneOf(Gen.Int[0, 80], Gen.Int[0, 4096]), Gen.Int[0, 8191]).Sample((length, offset) =>
        {
            byte[] expected = new byte[length];
            mem.Read(start + (ulong)offset, expected);
            byte[] got = new byte[length + 64];
            got.AsSpan().Fill(0xEE);
            Assert.True(mem.TryRead(start + (ulong)offset, got.AsSpan(0, length)));
            Assert.Equal(expected, got[..length]);
            Assert.All(got[length..], b => Assert.Equal(0xEE, b));
        });
    }

    // TryWrite shares the copy: exactly the range changes, at any length and offset.
    [Fact]
    public void TryWrite_changes_exactly_the_bytes_of_the_range_at_any_length_and_offset()
    {
        ulong start = (2 * Sizes.MiB) - 4096;
        Gen.Select(Gen.OneOf(Gen.Int[0, 80], Gen.Int[0, 4096]), Gen.Int[0, 8191], Gen.Int[1, 255]).Sample((length, offset, seed) =>
        {
            using var mem = new PhysicalMemory(8 * Sizes.MiB); // samples run in parallel
            byte[] before = new byte[3 * 4096];
            new Random(seed).NextBytes(before);
            mem.Write(start, before);
            byte[] source = new byte[length];
            new Random(seed + 1).NextBytes(source);
            Assert.True(mem.TryWrite(start + (ulong)offset, source));
            byte[] after = new byte[3 * 4096];
            mem.Read(start, after);
            source.CopyTo(before.AsSpan(offset));
            Assert.Equal(before, after);
        });
    }

    // TryReadUInt64 (a descriptor fetch by quadwords) reads what Read reads at every aligned offset and
    // count, across a chunk boundary and over never-written chunks too, writes nothing past the
    // destination's length, refuses a range that leaves memory without touching the destination, and
    // throws for a misaligned address as ReadUInt64 does.
    [Fact]
    public void TryReadUInt64_reads_the_words_read_reads_and_refuses_ranges_outside_memory()
    {
        using PhysicalMemory mem = Patterned(seed: 11, out ulong start);
        Gen.Select(Gen.Int[0, 8], Gen.Int[-512, 1535]).Sample((count, word) =>
        {
            ulong pa = (ulong)((long)start + (word * 8L));
            byte[] expected = new byte[count * 8];
            mem.Read(pa, expected);
            ulong[] got = new ulong[count + 2];
            got.AsSpan().Fill(0xEEEE);
            Assert.True(mem.TryReadUInt64(pa, got.AsSpan(0, count)));
            Assert.Equal(expected, System.Runtime.InteropServices.MemoryMarshal.AsBytes(got.AsSpan(0, count)).ToArray());
            Assert.Equal(0xEEEEUL, got[count]);
        });

        ulong[] four = [1, 2, 3, 4];
        Assert.False(mem.TryReadUInt64((8 * Sizes.MiB) - 16, four));
        Assert.False(mem.TryReadUInt64(ulong.MaxValue - 7, four));
        Assert.Equal([1UL, 2, 3, 4], four);
        Assert.True(mem.TryReadUInt64(6 * Sizes.MiB, four)); // never written: zeros
        Assert.Equal([0UL, 0, 0, 0], four);
        Assert.Throws<ArgumentException>(() => mem.TryReadUInt64(start + 4, new ulong[2]));
    }

    // A caller's span may be the same memory (GetSpan): TryRead and TryWrite then move the bytes as
    // memmove does, whichever side of the other the destination starts, at any length and distance.
    [Fact]
    public void TryRead_and_TryWrite_into_an_overlapping_span_of_the_same_memory_move_as_memmove()
    {
        ulong start = 64 * 1024;
        Gen.Select(Gen.OneOf(Gen.Int[1, 80], Gen.Int[1, 4096]), Gen.Int[-200, 200], Gen.Int[1, 255], Gen.Bool).Sample((length, distance, seed, read) =>
        {
            using var mem = new PhysicalMemory(Sizes.MiB); // samples run in parallel
            byte[] before = new byte[3 * 4096];
            new Random(seed).NextBytes(before);
            mem.Write(start, before);
            ulong src = start + 4096, dst = (ulong)((long)src + distance);
            Span<byte> other = mem.GetSpan(read ? dst : src, length);
            Assert.True(read ? mem.TryRead(src, other) : mem.TryWrite(dst, other));
            byte[] after = new byte[3 * 4096];
            mem.Read(start, after);
            Array.Copy(before, 4096, before, 4096 + distance, length); // Array.Copy moves overlapping ranges as memmove
            Assert.Equal(before, after);
        });
    }

    // A frame is a host page: whole-page copies and table reads never straddle a cache line more
    // than they must, and a pinned block can be handed to APIs that want page-aligned memory.
    [Fact]
    public unsafe void Frames_and_pinned_blocks_start_on_host_page_boundaries()
    {
        using var mem = new PhysicalMemory(64 * Sizes.MiB);
        foreach (ulong pa in new ulong[] { 0, 0x1000, 3 * Sizes.MiB, (64 * Sizes.MiB) - 0x1000 })
        {
            fixed (byte* p = mem.Frame(pa))
            {
                Assert.Equal(0UL, (ulong)p % 4096);
            }
        }

        mem.WriteUInt64(40 * Sizes.MiB, 0x1234);
        ContiguousRegion block = mem.PinContiguous(36 * Sizes.MiB, 8 * Sizes.MiB);
        Assert.Equal(0UL, (ulong)block.BasePointer % 4096);
        Assert.Equal(0x1234UL, *(ulong*)(block.BasePointer + (4 * Sizes.MiB)));
    }

    [Fact]
    public void Unwritten_memory_reads_as_zero_without_being_backed()
    {
        using var mem = new PhysicalMemory(64 * Sizes.GiB);
        var buf = new byte[64];
        buf.AsSpan().Fill(0xAA);

        mem.Read(40 * Sizes.GiB + 12, buf);

        Assert.All(buf, b => Assert.Equal(0, b));
        Assert.Equal(0UL, mem.ReadUInt64(63 * Sizes.GiB));
        Assert.Equal(0UL, mem.BackedBytes);
        Assert.False(mem.IsBacked(40 * Sizes.GiB));
    }

    [Fact]
    public void Writes_back_one_chunk_and_read_back()
    {
        using var mem = new PhysicalMemory(64 * Sizes.GiB);

        mem.WriteUInt64(0x2_0000_0008, 0x0123_4567_89ab_cdef);

        Assert.Equal(0x0123_4567_89ab_cdefUL, mem.ReadUInt64(0x2_0000_0008));
        Assert.Equal(0x89ab_cdefU, mem.ReadUInt32(0x2_0000_0008));
        Assert.Equal(0x0123_4567U, mem.ReadUInt32(0x2_0000_000c));
        Assert.Equal(2 * Sizes.MiB, mem.BackedBytes);
        Assert.True(mem.IsBacked(0x2_0000_0000));
        Assert.False(mem.IsBacked(0x2_0020_0000));
    }

    [Fact]
    public void Table_view_aliases_the_same_bytes_as_byte_access()
    {
        using var mem = new PhysicalMemory(Sizes.GiB);
        Span<ulong> table = mem.Table(0x5000);
        table[3] = 0x1122_3344_5566_7788;

        Assert.Equal(512, table.Length);
        Assert.Equal(0x1122_3344_5566_7788UL, mem.ReadUInt64(0x5018));
        var bytes = new byte[8];
        mem.Read(0x5018, bytes);
        Assert.Equal(new byte[] { 0x88, 0x77, 0x66, 0x55, 0x44, 0x33, 0x22, 0x11 }, bytes);
        Assert.Equal(0x88, mem.Frame(0x5000)[0x18]);
    }

    [Fact]
    public void Read_and_write_cross_chunk_boundaries()
    {
        using var mem = new PhysicalMemory(Sizes.GiB);
        byte[] data = new byte[10000];
        new Random(7).NextBytes(data);
        ulong pa = (2 * Sizes.MiB) - 3000; // straddles the first 2 MiB chunk boundary

        mem.Write(pa, data);
        byte[] back = new byte[data.Length];
        mem.Read(pa, back);

        Assert.Equal(data, back);
        Assert.Equal(4 * Sizes.MiB, mem.BackedBytes);
    }

    [Fact]
    public void Fill_sets_bytes_and_zero_fill_of_unbacked_memory_backs_nothing()
    {
        using var mem = new PhysicalMemory(Sizes.GiB);
        mem.Fill(0x10_0000, 3 * Sizes.MiB, 0);
        Assert.Equal(0UL, mem.BackedBytes);

        mem.Fill(0x1ff_ff00, 0x200, 0x5a);
        Assert.Equal(0x5a5a_5a5a_5a5a_5a5aUL, mem.ReadUInt64(0x1ff_ff00));
        Assert.Equal(0x5a5a_5a5a_5a5a_5a5aUL, mem.ReadUInt64(0x200_00f8));
        Assert.Equal(0UL, mem.ReadUInt64(0x200_0100));
    }

    [Theory]
    [InlineData(0x4000_0000UL, 1UL)]
    [InlineData(0x3fff_fff9UL, 8UL)]
    [InlineData(ulong.MaxValue, 1UL)]
    public void Out_of_range_access_names_the_range(ulong pa, ulong length)
    {
        using var mem = new PhysicalMemory(Sizes.GiB);

        var ex = Assert.Throws<ArgumentOutOfRangeException>(() => mem.Read(pa, new byte[length]));

        Assert.Contains($"0x{pa:x}", ex.Message, StringComparison.Ordinal);
        Assert.Contains("0x40000000", ex.Message, StringComparison.Ordinal);
        Assert.False(mem.Contains(pa, length));
    }

    [Fact]
    public void Misaligned_table_and_qword_access_is_rejected()
    {
        using var mem = new PhysicalMemory(Sizes.GiB);

        Assert.Throws<ArgumentException>(() => mem.Table(0x1008));
        Assert.Throws<ArgumentException>(() => mem.ReadUInt64(0x1004));
        Assert.Throws<ArgumentException>(() => mem.WriteUInt32(0x1002, 1));
        Assert.Throws<ArgumentException>(() => mem.GetSpan(0x1f_ff00, 0x200));
    }

    [Theory]
    [InlineData(0UL)]
    [InlineData(4097UL)]
    [InlineData((1UL << 46) + 4096)]
    public void Invalid_sizes_are_rejected(ulong size) =>
        Assert.Throws<ArgumentOutOfRangeException>(() => new PhysicalMemory(size));

    [Fact]
    public void Disposed_memory_refuses_access()
    {
        var mem = new PhysicalMemory(Sizes.GiB);
        mem.WriteUInt64(0, 1);
        mem.Dispose();

        Assert.Throws<ObjectDisposedException>(() => mem.ReadUInt64(0));
    }

    [Fact]
    public void Concurrent_first_touches_of_one_chunk_back_it_once()
    {
        using var mem = new PhysicalMemory(Sizes.GiB);
        Parallel.For(0, 64, i => mem.WriteUInt64(0x4000_000 + ((ulong)i * 8), (ulong)i + 1));

        Assert.Equal(2 * Sizes.MiB, mem.BackedBytes);
        for (int i = 0; i < 64; i++)
        {
            Assert.Equal((ulong)i + 1, mem.ReadUInt64(0x4000_000 + ((ulong)i * 8)));
        }
    }
}
