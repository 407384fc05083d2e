using CsCheck;
using Iommu.Devices;
using Iommu.VtD.Hardware;
using Iommu.VtD.Tests.Hardware.Infrastructure;

namespace Iommu.VtD.Tests.Hardware;

/// <summary>
/// Every DMA length at every offset moves exactly its bytes: the unit's copies pick a different code path
/// by length (inline vector moves for 16–64 B, a vector loop up to a page, the general copy otherwise, and a
/// path of its own for a request the translation memo serves), so a length or an offset at a boundary of one
/// of them is where a byte would go missing or land outside the range.
/// </summary>
public sealed class DmaLengthPropertyTests
{
    private const ushort Rid = 0x0310;
    private const ulong Data = 0x2000_0000;
    private const ulong IovaBase = 0x10000;
    private const int Region = 0xA000; // the physical bytes the mapped pages lie in, from Data

    // IOVA page k of the window lands on a physical page out of order, so a request that crosses a page must
    // translate the next page itself.
    private static readonly ulong[] PageOf = [0x5000, 0x1000, 0x9000, 0x3000];

    // One request: read or write, at an offset into the window, of a length. Short lengths are drawn more often: that is where the copy's paths change.
    private readonly record struct Request(bool Write, int Offset, int Length);

    private static readonly Gen<Request> Requests =
        Gen.Select(Gen.Bool, Gen.Int[0, (PageOf.Length * 4096) - 1], Gen.Frequency((3, Gen.Int[1, 80]), (1, Gen.Int[1, 2 * 4096])))
            .Where(t => t.Item2 + t.Item3 <= PageOf.Length * 4096)
            .Select(t => new Request(t.Item1, t.Item2, t.Item3));

    // pasid: null for untagged requests (on a scalable unit, through the RID_PASID entry).
    [Theory]
    [InlineData(false, null)]
    [InlineData(true, null)]
    [InlineData(true, 5u)]
    public void Reads_and_writes_of_any_length_and_offset_move_exactly_their_bytes(bool scalable, uint? pasid)
    {
        using var b = new VtdBench(scalable ? VtdConfig.ScalableMode48Bit : VtdConfig.Legacy48Bit);
        ulong sl = scalable ? b.SetupScalableDevice(Rid, pasid ?? 0, aw: 2, did: 1).SlRoot : b.SetupLegacyDevice(Rid, aw: 2, did: 1);
        for (int k = 0; k < PageOf.Length; k++)
        {
            b.Map(sl, 4, IovaBase + ((ulong)k << 12), Data + PageOf[k]);
        }

        b.Enable(scalable);

        // What the region holds: random bytes to start each sample with, then every write the model predicts.
        // One bench for every sample, so the samples run one at a time (threads: 1).
        byte[] model = new byte[Region];
        Gen.Select(Requests.Array[1, 40], Gen.Int[0, int.MaxValue]).Sample(
            t =>
            {
                var bytes = new Random(t.Item2);
                bytes.NextBytes(model);
                Assert.True(b.Memory.TryWrite(Data, model));
                foreach (Request r in t.Item1)
                {
                    ulong iova = IovaBase + (ulong)r.Offset;
                    if (r.Write)
                    {
                        byte[] source = new byte[r.Length];
                        bytes.NextBytes(source);
                        DmaResult w = b.Unit.Write(Rid, pasid, iova, source);
                        Assert.Equal((DmaStatus.Ok, (ulong)r.Length, (ulong?)PhysicalOf(r.Offset)), (w.Status, w.Transferred, w.PhysicalAddress));
                        for (int i = 0; i < r.Length; i++)
                        {
                            model[PhysicalOf(r.Offset + i) - Data] = source[i];
                        }

                        // The whole region, so a byte written outside the range shows too.
                        byte[] region = new byte[Region];
                        Assert.True(b.Memory.TryRead(Data, region));
                        int wrong = Array.FindIndex(region, 0, i => region[i] != model[i]);
                        if (wrong >= 0)
                        {
                            Assert.Fail($"after a {r.Length} B write at offset 0x{r.Offset:x}: physical 0x{Data + (ulong)wrong:x} holds 0x{region[wrong]:x2}, expected 0x{model[wrong]:x2}");
                        }
                    }
                    else
                    {
                        // The destination is a slice with guard bytes on both sides: none of them may change.
                        const int Guard = 40;
                        byte[] destination = new byte[r.Length + (2 * Guard)];
                        Array.Fill(destination, (byte)0xEE);
                        DmaResult rd = b.Unit.Read(Rid, pasid, iova, destination.AsSpan(Guard, r.Length));
                        Assert.Equal((DmaStatus.Ok, (ulong)r.Length, (ulong?)PhysicalOf(r.Offset)), (rd.Status, rd.Transferred, rd.PhysicalAddress));
                        for (int i = 0; i < destination.Length; i++)
                        {
                            int at = i - Guard;
                            byte expected = at >= 0 && at < r.Length ? model[PhysicalOf(r.Offset + at) - Data] : (byte)0xEE;
                            if (destination[i] != expected)
                            {
                                Assert.Fail($"byte {at} of a {r.Length} B read at offset 0x{r.Offset:x}: 0x{destination[i]:x2}, expected 0x{expected:x2}");
                            }
                        }
                    }
                }
            },
            iter: 300,
            threads: 1,
            print: t => string.Join(", ", t.Item1.Select(r => $"{(r.Write ? "write" : "read")} {r.Length} B at 0x{r.Offset:x}")));
    }

    private static ulong PhysicalOf(int offset) => Data + PageOf[offset >> 12] + (ulong)(offset & 0xFFF);
}
