using System.Runtime.InteropServices;
using CsCheck;
using Iommu.Memory;
using Iommu.VtD.Hardware;
using Iommu.VtD.Tests.Hardware.Infrastructure;

namespace Iommu.VtD.Tests.Hardware;

/// <summary>
/// The unit's descriptor fetch over queues that reach past RAM: past the end of memory, or into a hole
/// between two ranges of caller-owned RAM (an emulator's MMIO window). Every slot in RAM executes in order;
/// the first slot the unit cannot read stops the queue there with FSTS.IQE set, IQERCD.IQEI 2 (the
/// descriptor-fetch error) and IQH at that slot; clearing IQE makes the unit try that slot again and stop
/// again, and nothing after it ever runs.
/// </summary>
public sealed unsafe class InvalidationQueueFetchPropertyTests
{
    private const uint Iqe = 1u << 4;
    private const ulong Size = 64UL << 20;     // the physical address space of each case
    private const ulong QueueAt = 32UL << 20;  // the queue's base in the hole case (RAM below it)

    /// <summary>
    /// Random queue sizes (1 to 8 pages), widths, places of the first page the unit cannot read (the queue's
    /// first page included), and submissions of 1 to all but one slot, in both memory kinds.
    /// </summary>
    [Fact]
    public void Property_the_first_slot_outside_ram_stops_the_queue_with_a_fetch_error()
    {
        Gen.Select(Gen.Int[0, 3], Gen.Bool, Gen.Bool, Gen.UInt).Sample((qs, wide, hole, seed) => Run(qs, wide, hole, seed), iter: 60);
    }

    private static void Run(int qs, bool wide, bool hole, uint seed)
    {
        var rng = new Random((int)seed);
        int pages = 1 << qs;
        int shift = wide ? 5 : 4;
        int perPage = 4096 >> shift;
        int entries = pages * perPage;
        int unreadablePage = rng.Next(pages); // the queue's first page the unit cannot read
        int holePages = rng.Next(1, 3);

        // Owned memory: the queue's last pages lie past the end of memory. Caller-owned: a hole of one or
        // two pages starts at the unreadable page and RAM resumes after it.
        ulong queue;
        nint low = 0, high = 0;
        PhysicalMemory memory;
        if (hole)
        {
            queue = QueueAt;
            ulong holeStart = QueueAt + ((ulong)unreadablePage << 12), holeEnd = holeStart + ((ulong)holePages << 12);
            low = (nint)NativeMemory.AlignedAlloc((nuint)holeStart, 4096);
            high = (nint)NativeMemory.AlignedAlloc((nuint)(Size - holeEnd), 4096);
            memory = new PhysicalMemory(Size, [new(0, holeStart, low), new(holeEnd, Size - holeEnd, high)]);
            memory.Fill(0x0100_0000, 0x0040_0000, 0); // the bench's frames (status words), as a guest allocator zeroes them
        }
        else
        {
            queue = Size - ((ulong)unreadablePage << 12);
            memory = new PhysicalMemory(Size);
        }

        try
        {
            using var b = new VtdBench(VtdConfig.ScalableMode48Bit, memory);
            ulong statusBase = b.AllocFrames(8); // one word per slot, 2,048 of them

            // Every slot the unit can read holds a wait that writes its own status word.
            int firstBad = unreadablePage * perPage;
            for (int i = 0; i < firstBad; i++)
            {
                ulong slot = queue + ((ulong)i << shift);
                b.Memory.WriteUInt64(slot, 5 | (1UL << 5) | ((ulong)(i + 1) << 32));
                b.Memory.WriteUInt64(slot + 8, statusBase + (4UL * (ulong)i));
                if (wide)
                {
                    b.Memory.WriteUInt64(slot + 16, 0);
                    b.Memory.WriteUInt64(slot + 24, 0);
                }
            }

            b.Unit.Write64(0x88, 0);
            b.Unit.Write64(0x90, queue | (wide ? 1UL << 11 : 0) | (uint)qs);
            b.Gcmd(1u << 26);

            int tail = rng.Next(1, entries);
            bool stops = tail > firstBad;
            int ran = stops ? firstBad : tail;
            string at = $"QS {qs}, DW {(wide ? 1 : 0)}, {(hole ? $"a {holePages}-page hole" : "the end of memory")} at queue page {unreadablePage}, tail {tail}";

            void Check(string when)
            {
                Assert.True(stops == ((b.Fsts & Iqe) != 0), $"FSTS.IQE {when} ({at})");
                Assert.True((ulong)ran << shift == b.Unit.Read64(0x80), $"IQH 0x{b.Unit.Read64(0x80):x}, expected slot {ran}, {when} ({at})");
                if (stops)
                {
                    Assert.True((b.Unit.Read64(0xB0) & 0xF) == 2, $"IQEI {b.Unit.Read64(0xB0) & 0xF}, expected 2 (fetch), {when} ({at})");
                }

                for (int i = 0; i < firstBad; i++)
                {
                    uint expected = i < ran ? (uint)(i + 1) : 0;
                    Assert.True(expected == b.Memory.ReadUInt32(statusBase + (4UL * (ulong)i)), $"status word of slot {i} {when} ({at})");
                }
            }

            b.Unit.Write64(0x88, (ulong)tail << shift);
            Check("after the tail write");

            // Fetching stops while IQE is set; cleared, the unit reads the same slot again and stops again.
            b.Unit.Write64(0x88, (ulong)tail << shift);
            Check("after a second tail write");
            b.Unit.Write32(0x34, Iqe);
            Check("after software cleared IQE");
        }
        finally
        {
            if (hole)
            {
                NativeMemory.AlignedFree((void*)low);
                NativeMemory.AlignedFree((void*)high);
            }
        }
    }
}
