using Iommu.VtD.Hardware;
using Iommu.VtD.Tests.Hardware.Infrastructure;

namespace Iommu.VtD.Tests.Hardware;

/// <summary>
/// Queued invalidation against the VT-d specification's text (not QEMU 7.2's behaviour): queue errors,
/// tail alignment in a 256-bit queue, wait descriptor flags and context-cache function masks.
/// </summary>
public sealed class InvalidationSpecAuditTests
{
    private const ushort Rid = 0x0608;
    private const ushort Did = 0x2A;
    private const uint Iqe = 1u << 4;

    private static ulong Wait(uint data) => 5 | (1UL << 5) | ((ulong)data << 32);

    // Writes one descriptor at slot index of the queue without touching IQT.
    private static void Put(VtdBench b, bool wide, int index, ulong q0, ulong q1 = 0)
    {
        ulong at = (b.Unit.Read64(0x90) & ~0xFFFUL) + ((ulong)index * (wide ? 32UL : 16UL));
        b.Memory.WriteUInt64(at, q0);
        b.Memory.WriteUInt64(at + 8, q1);
        if (wide)
        {
            b.Memory.WriteUInt64(at + 16, 0);
            b.Memory.WriteUInt64(at + 24, 0);
        }
    }

    /// <summary>
    /// FSTS IQE: no new descriptor is fetched while IQE is set, tail updates then fetch nothing, and once
    /// software clears IQE hardware fetches again from IQH (Linux's qi_check_fault rewrites the bad slot
    /// with its wait descriptor, clears IQE and writes no tail).
    /// </summary>
    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public void Clearing_iqe_resumes_fetching_at_iqh_without_a_tail_write(bool wide)
    {
        using var b = new VtdBench(VtdConfig.ScalableMode48Bit);
        b.EnableQueue(wide);
        int shift = wide ? 5 : 4;
        ulong status = b.AllocFrame();
        Put(b, wide, 0, 0);          // type 0: invalid
        Put(b, wide, 1, Wait(1), status);
        b.Unit.Write64(0x88, 2UL << shift);
        Assert.Equal(Iqe, b.Fsts & Iqe);
        Assert.Equal(0UL, b.Unit.Read64(0x80) >> shift);

        // A tail update while IQE is set fetches nothing.
        Put(b, wide, 2, Wait(2), status);
        b.Unit.Write64(0x88, 3UL << shift);
        Assert.Equal(0UL, b.Unit.Read64(0x80) >> shift);
        Assert.Equal(0u, b.Memory.ReadUInt32(status));

        // Software replaces the bad descriptor and clears IQE; the unit drains the queue on its own.
        Put(b, wide, 0, Wait(3), status);
        b.Unit.Write32(0x34, Iqe);
        Assert.Equal(0u, b.Fsts & Iqe);
        Assert.Equal(3UL, b.Unit.Read64(0x80) >> shift);
        Assert.Equal(2u, b.Memory.ReadUInt32(status));
    }

    /// <summary>IQT with DW=1: bit 4 must be 0; otherwise IQE with IQEI 6 and nothing is fetched.</summary>
    [Fact]
    public void Misaligned_tail_in_a_256_bit_queue_reports_iqei_6_and_fetches_nothing()
    {
        using var b = new VtdBench(VtdConfig.ScalableMode48Bit);
        b.EnableQueue(wide: true);
        ulong status = b.AllocFrame();
        Put(b, true, 0, Wait(1), status);
        b.Unit.Write64(0x88, 0x30); // one and a half 256-bit descriptors
        Assert.Equal(Iqe, b.Fsts & Iqe);
        Assert.Equal(6UL, b.Unit.Read64(0xB0) & 0xF);
        Assert.Equal(0UL, b.Unit.Read64(0x80));
        Assert.Equal(0u, b.Memory.ReadUInt32(status));
    }

    /// <summary>IQA: with DW=1 a queue of 2^QS pages holds 2^(QS+7) descriptors; a tail at that index is invalid (IQEI 1).</summary>
    [Fact]
    public void Tail_at_the_256_bit_queue_size_is_an_invalid_tail()
    {
        using var b = new VtdBench(VtdConfig.ScalableMode48Bit);
        b.EnableQueue(wide: true); // QS = 1: 8 KiB, 256 descriptors of 32 bytes
        for (int i = 0; i < 255; i++)
        {
            Put(b, true, i, 5 | (1UL << 6)); // wait, FN only
        }

        b.Unit.Write64(0x88, 255UL << 5);
        Assert.Equal(0u, b.Fsts & Iqe);
        Assert.Equal(255UL << 5, b.Unit.Read64(0x80));
        b.Unit.Write64(0x88, 256UL << 5);
        Assert.Equal(Iqe, b.Fsts & Iqe);
        Assert.Equal(1UL, b.Unit.Read64(0xB0) & 0xF);
    }

    /// <summary>IQH with DW=1: a one-page queue holds 128 descriptors of 32 bytes; the head wraps at 0x1000 and bit 4 stays 0.</summary>
    [Fact]
    public void Queue_of_256_bit_descriptors_wraps_after_128_entries()
    {
        using var b = new VtdBench(VtdConfig.ScalableMode48Bit);
        ulong queue = b.AllocFrame();
        ulong status = b.AllocFrame();
        b.Unit.Write64(0x88, 0);
        b.Unit.Write64(0x90, queue | (1UL << 11)); // DW=1, QS=0
        b.Gcmd(1u << 26);
        int tail = 0;
        for (uint n = 1; n <= 200; n++)
        {
            Put(b, true, tail, Wait(n), status);
            tail = (tail + 1) % 128;
            b.Unit.Write64(0x88, (ulong)tail << 5);
            Assert.Equal(n, b.Memory.ReadUInt32(status));
            Assert.Equal((ulong)tail << 5, b.Unit.Read64(0x80));
        }

        Assert.Equal(0u, b.Fsts & Iqe);
    }

    /// <summary>Invalidation Wait Descriptor: FN alone (no status write, no interrupt) is a valid fence (QEMU 7.2 raises IQE).</summary>
    [Fact]
    public void Wait_descriptor_with_only_fn_completes_without_error()
    {
        using var b = new VtdBench(VtdConfig.Legacy48Bit);
        b.EnableQueue(wide: false);
        b.Submit(5 | (1UL << 6));
        Assert.Equal(0u, b.Fsts & Iqe);
        Assert.Equal(1UL, b.QueueHead);
        Assert.Equal(0u, b.Unit.Read32(0x9C));
    }

    /// <summary>Context-cache Invalidate Descriptor, device-selective: FM 3 ignores SID bits 2:0, so all eight functions go.</summary>
    [Theory]
    [InlineData(0, false)]
    [InlineData(1, false)]
    [InlineData(2, false)]
    [InlineData(3, true)]
    public void Device_selective_context_invalidation_honours_the_function_mask(int fm, bool dropsFunction7)
    {
        using var b = new VtdBench(VtdConfig.Legacy48Bit);
        ushort other = (ushort)(Rid | 7); // same device, function 7; the named SID is function 0
        foreach (ushort rid in new[] { Rid, other })
        {
            ulong sl = b.SetupLegacyDevice(rid, 2, Did);
            b.Map(sl, 4, 0x4000, 0x00D0_0000);
        }

        b.Enable(scalable: false);
        b.Unit.Translate(other, null, 0x4000, 4, DmaAccess.Read);
        b.LegacyContext(b.ContextTableFor(other >> 8, false), other & 0xFF, 0, 0);
        b.EnableQueue(wide: false);
        b.Submit(1 | (3UL << 4) | ((ulong)Did << 16) | ((ulong)Rid << 32) | ((ulong)fm << 48));
        Assert.Equal(0u, b.Fsts & Iqe);
        VtdTranslation t = b.Unit.Translate(other, null, 0x4000, 4, DmaAccess.Read);
        Assert.Equal(dropsFunction7, t.IsFault);
    }
}
