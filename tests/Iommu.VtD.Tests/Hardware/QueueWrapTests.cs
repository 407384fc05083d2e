using Iommu.VtD.Hardware;
using Iommu.VtD.Tests.Hardware.Infrastructure;

namespace Iommu.VtD.Tests.Hardware;

public sealed class QueueWrapTests
{
    [Fact]
    public void Queue_head_follows_the_tail_across_the_wrap_and_every_wait_writes_its_status()
    {
        using var b = new VtdBench(VtdConfig.Legacy48Bit);
        ulong queue = b.AllocFrame();   // QS=0: one page, 256 descriptors of 16 bytes
        ulong status = b.AllocFrame();
        b.Unit.Write64(0x88, 0);        // IQT
        b.Unit.Write64(0x90, queue);    // IQA: base, DW=0, QS=0
        b.Gcmd(1u << 26);               // QIE
        Assert.NotEqual(0u, b.Unit.Read32(0x1C) & (1u << 26));

        int tail = 0;
        for (uint n = 1; n <= 300; n++)
        {
            // A wait descriptor (type 5) with SW: write n to the status word.
            ulong at = queue + ((ulong)tail * 16);
            b.Memory.WriteUInt64(at, ((ulong)n << 32) | (1UL << 5) | 5);
            b.Memory.WriteUInt64(at + 8, status);
            tail = (tail + 1) % 256;
            b.Unit.Write64(0x88, (ulong)tail << 4);

            Assert.Equal(n, b.Memory.ReadUInt32(status));
            Assert.Equal((ulong)tail << 4, b.Unit.Read64(0x80)); // IQH caught up with IQT, modulo the queue size
        }

        Assert.Equal(0u, b.Fsts & (1u << 4)); // no IQE
    }
}
