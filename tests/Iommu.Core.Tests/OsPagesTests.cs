using Iommu.Memory;

namespace Iommu.Core.Tests;

/// <summary>
/// Owned memory's chunks come straight from the OS (<see cref="OsPages"/>) instead of malloc, whose heap handed
/// recycled, physically scattered pages to every platform created after one was freed (its page walks then ran
/// 30–40% slower; the speed itself is measured by the benchmarks, not here). What a user can observe is that
/// memory is zero until written and private to its platform, whatever the process allocated and freed before:
/// random sizes and orders of allocations, dirtying and frees, directly and through <see cref="PhysicalMemory"/>.
/// </summary>
public sealed unsafe class OsPagesTests
{
    [Fact]
    public void Linux_blocks_are_mapped_from_the_os()
    {
        Assert.Equal(OperatingSystem.IsLinux(), OsPages.Mapped);
    }

    // Both allocators: the OS mapping (Linux) and the calloc fallback of the other systems.
    [Theory]
    [InlineData(1, true)]
    [InlineData(2, true)]
    [InlineData(3, true)]
    [InlineData(1, false)]
    [InlineData(2, false)]
    public void Every_block_is_page_aligned_and_zero_whatever_was_freed_before(int seed, bool os)
    {
        Func<nuint, nint> alloc = os ? n => (nint)OsPages.Alloc(n) : n => (nint)OsPages.AllocZeroedAligned(n);
        Action<nint, nuint> free = os ? (b, n) => OsPages.Free((byte*)b, n) : (b, _) => OsPages.FreeZeroedAligned((byte*)b);
        var rng = new Random(seed);
        var live = new List<(nint Block, nuint Bytes, byte Fill)>();
        try
        {
            for (int step = 0; step < 400; step++)
            {
                if (live.Count > 0 && rng.Next(3) == 0)
                {
                    int i = rng.Next(live.Count);
                    (nint block, nuint bytes, byte fill) = live[i];
                    AssertFilled((byte*)block, bytes, fill); // no other block's writes reached it
                    free(block, bytes);
                    live.RemoveAt(i);
                    continue;
                }

                nuint size = (nuint)(rng.Next(1, 600) * PhysicalMemory.PageSize);
                byte* p = (byte*)alloc(size);
                Assert.Equal(0UL, (ulong)p % PhysicalMemory.PageSize);
                AssertFilled(p, size, 0);
                byte mark = (byte)rng.Next(1, 256);
                new Span<byte>(p, (int)size).Fill(mark);
                live.Add(((nint)p, size, mark));
            }
        }
        finally
        {
            foreach ((nint block, nuint bytes, _) in live)
            {
                free(block, bytes);
            }
        }
    }

    [Fact]
    public void A_memory_created_after_others_were_dirtied_and_disposed_reads_zero()
    {
        const ulong Chunk = 2 * Sizes.MiB;
        for (int round = 0; round < 4; round++)
        {
            var dirty = new PhysicalMemory(64 * Sizes.MiB);
            for (ulong pa = 0; pa < 64 * Sizes.MiB; pa += Chunk / 2)
            {
                dirty.WriteUInt64(pa + 8, 0xdead_beef_0000_0000 | pa);
            }

            _ = dirty.PinContiguous(16 * Sizes.MiB, 8 * Sizes.MiB); // a multi-chunk block, freed whole
            dirty.Dispose();

            using var fresh = new PhysicalMemory(64 * Sizes.MiB);
            _ = fresh.PinContiguous(16 * Sizes.MiB, 8 * Sizes.MiB);
            for (ulong pa = 0; pa < 64 * Sizes.MiB; pa += Chunk / 2)
            {
                Assert.Equal(0UL, fresh.ReadUInt64(pa + 8));
            }

            Assert.Equal(0UL, fresh.ReadUInt64(16 * Sizes.MiB + 8)); // inside the pinned block
        }
    }

    private static void AssertFilled(byte* p, nuint bytes, byte value)
    {
        var span = new ReadOnlySpan<byte>(p, (int)bytes);
        int at = span.IndexOfAnyExcept(value);
        Assert.True(at < 0, $"byte {at} of a 0x{bytes:x}-byte block is 0x{(at < 0 ? 0 : span[at]):x2}, expected 0x{value:x2}");
    }
}
