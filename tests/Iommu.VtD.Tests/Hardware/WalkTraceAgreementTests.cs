using CsCheck;
using Iommu.Memory;
using Iommu.VtD.Driver;
using Iommu.VtD.Hardware;

namespace Iommu.VtD.Tests.Hardware;

/// <summary>
/// The hardware's second-level walker and the driver's page-table engine are two readings of the same
/// tables: over random maps and unmaps of mixed page sizes, the walk trace and iova_to_phys agree on
/// every address, and the trace is a well-formed path from the root.
/// </summary>
public sealed class WalkTraceAgreementTests
{
    private const ulong K4 = 4096, M2 = 2UL << 20, G1 = 1UL << 30;
    private const ulong RW = DmaPte.Read | DmaPte.Write;

    [Theory]
    [InlineData(3, 0)]
    [InlineData(3, 2)]
    [InlineData(4, 0)]
    [InlineData(4, 1)]
    [InlineData(4, 2)]
    [InlineData(5, 2)]
    public void Walk_trace_agrees_with_iova_to_phys_over_random_maps_and_unmaps(int levels, int superpageLevels)
    {
        // Reserved bits as a unit with these page sizes sees them: a PS leaf it does not support is a
        // reserved-bit fault, PS is reserved at levels 4 and 5.
        var leafReserved = new ulong[6];
        var nonLeafReserved = new ulong[6];
        leafReserved[2] = superpageLevels >= 1 ? 0 : ulong.MaxValue;
        leafReserved[3] = superpageLevels >= 2 ? 0 : ulong.MaxValue;
        nonLeafReserved[4] = nonLeafReserved[5] = VtdFormat.SlPageSize;

        ulong[] sizes = [K4, 3 * K4, M2 - K4, M2, M2 + K4, 3 * M2, G1, G1 + M2];
        ulong[] offsets = [0, K4, M2 - K4, M2, G1 - M2, G1];
        Gen<(bool Map, int Slot, int Size, int Offset, int Pa)> op =
            Gen.Select(Gen.Int[0, 2].Select(i => i != 0), Gen.Int[0, 7], Gen.Int[0, sizes.Length - 1], Gen.Int[0, offsets.Length - 1], Gen.Int[0, 2]);
        op.Array[1, 25].Sample(ops =>
        {
            using var memory = new PhysicalMemory(64 * Sizes.GiB);
            var frames = new FrameAllocator(memory, 60 * Sizes.GiB, Sizes.GiB);
            Assert.Equal(Errno.None, DmaPageTable.Create(memory, frames, levels, out DmaPageTable? table));
            DmaPageTable t = table!;
            var hw = new MemoryEntrySource(memory);
            var probes = new List<ulong>();
            foreach (var (map, slot, size, offset, pa) in ops)
            {
                // Slots 4 GiB apart, spread over the address space the table covers.
                ulong iova = (((ulong)slot * 4 * G1) << (9 * (levels - 3))) + offsets[offset];
                ulong length = sizes[size];
                if (map)
                {
                    ulong paddr = ((ulong)slot * 4 * G1) + (pa == 0 ? 0 : pa == 1 ? K4 : 0) + offsets[offset];
                    t.Map(iova, paddr, length, RW, superpageLevels, out _);
                }
                else
                {
                    t.Unmap(iova, length);
                    t.ReleasePendingFrees();
                }

                probes.AddRange([iova, iova + 8, iova + (length / 2), iova + length - 8, iova + length]);
                foreach (ulong p in probes)
                {
                    SecondLevelWalker.Walk(hw, t.Root, t.Levels, p, leafReserved, nonLeafReserved, out SecondLevelWalkTrace trace);
                    ulong driver = t.IovaToPhys(p);
                    if (trace.Status == SecondLevelWalkStatus.Leaf)
                    {
                        Assert.True(trace.Read && trace.Write);
                        Assert.Equal(driver, trace.Output | (p & (trace.PageSize - 1)));
                    }
                    else
                    {
                        Assert.Equal(SecondLevelWalkStatus.NotPresent, trace.Status);
                        Assert.Equal(0UL, driver);
                    }

                    // One entry per level from the top down to where it stopped, each in the table
                    // the entry above pointed to.
                    Assert.Equal(levels - trace.Level + 1, trace.Count);
                    ulong expectedTable = t.Root;
                    for (int i = 0; i < trace.Count; i++)
                    {
                        SecondLevelWalkEntry e = trace.Entries[i];
                        Assert.Equal(levels - i, e.Level);
                        Assert.Equal(expectedTable, e.Address & ~0xFFFUL);
                        Assert.Equal(memory.ReadUInt64(e.Address), e.Value);
                        expectedTable = e.Value & VtdFormat.SlAddressMask;
                    }
                }
            }

            t.FreeAll();
            Assert.Equal(0, frames.LiveFrames);
        }, iter: 40);
    }
}
