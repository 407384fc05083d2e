using System.Runtime.InteropServices;
using Iommu.Devices;
using Iommu.Memory;
using Iommu.VtD.Hardware;
using Iommu.VtD.Tests.Hardware.Infrastructure;

namespace Iommu.VtD.Tests.Hardware;

/// <summary>
/// A unit over RAM the emulator owns, with a hole (an MMIO window) between two host blocks: DMA,
/// table walks and status writes reach the emulator's bytes directly, and a hole is never RAM — a DMA
/// there is a memory error with its address, a table there is the spec's table-read fault, a status
/// write there is an invalidation queue error (issue 17).
/// </summary>
public sealed unsafe class CallerMemoryTests : IDisposable
{
    private const ulong LowRam = 0x2800_0000;       // [0, 640 MiB) from one host block
    private const ulong HoleEnd = 0x3000_0000;      // [640 MiB, 768 MiB): no RAM
    private const ulong HighRam = 0x1000_0000;      // [768 MiB, 1 GiB) from another host block
    private const ushort Rid = 0x0310;

    private readonly nint _low = (nint)NativeMemory.AlignedAlloc((nuint)LowRam, 2 << 20);
    private readonly nint _high = (nint)NativeMemory.AlignedAlloc((nuint)HighRam, 2 << 20);
    private readonly VtdBench _b;

    public CallerMemoryTests()
    {
        // The emulator's RAM is not zeroed: the unit must not care.
        new Span<byte>((void*)_low, 0x0200_0000).Fill(0xA5); // covers the bench's table frames at 16 MiB
        _b = new VtdBench(VtdConfig.Legacy48Bit, new PhysicalMemory(VtdBench.MemorySize, [new(0, LowRam, _low), new(HoleEnd, HighRam, _high)]));
        _b.Memory.Fill(0x0100_0000, 0x0100_0000, 0); // the bench's table frames, as a guest allocator would zero them
    }

    public void Dispose()
    {
        _b.Dispose();
        NativeMemory.AlignedFree((void*)_low);
        NativeMemory.AlignedFree((void*)_high);
    }

    [Fact]
    public void Dma_reaches_the_emulators_bytes_on_both_sides_of_the_hole()
    {
        ulong sl = _b.SetupLegacyDevice(Rid, aw: 2, did: 1);
        _b.Map(sl, 4, 0x7000, 0x2000_0000);
        _b.Map(sl, 4, 0x8000, HoleEnd + 0x5000);
        _b.Enable(scalable: false);

        Assert.True(_b.Unit.Write(Rid, null, 0x7FFC, [1, 2, 3, 4, 5, 6, 7, 8]).IsOk);

        Assert.Equal([1, 2, 3, 4], new ReadOnlySpan<byte>((byte*)_low + 0x2000_0FFC, 4).ToArray());
        Assert.Equal([5, 6, 7, 8], new ReadOnlySpan<byte>((byte*)_high + 0x5000, 4).ToArray());
    }

    [Fact]
    public void A_dma_into_the_hole_is_a_memory_error_with_its_address_after_the_ram_part_moved()
    {
        ulong sl = _b.SetupLegacyDevice(Rid, aw: 2, did: 1);
        _b.Map(sl, 4, 0x7000, 0x2000_0000);
        _b.Map(sl, 4, 0x8000, LowRam + 0x10_0000); // a page of the MMIO window
        _b.Enable(scalable: false);

        byte[] data = new byte[0x200];
        data.AsSpan().Fill(0x11);
        DmaResult w = _b.Unit.Write(Rid, null, 0x7F00, data);
        VtdTranslation t = _b.Unit.Translate(Rid, null, 0x8000, 8, DmaAccess.Write);

        Assert.Equal((DmaStatus.MemoryError, 0x100UL, (ulong?)0x8000UL), (w.Status, w.Transferred, w.StopAddress));
        Assert.Equal((VtdTranslationStatus.Translated, LowRam + 0x10_0000), (t.Status, t.PhysicalAddress)); // the translation is fine; the access is what fails
        Assert.Equal(0u, _b.Fsts & 1); // a master abort, not a remapping fault
        Assert.Equal(-1, new ReadOnlySpan<byte>((byte*)_low + 0x2000_0F00, 0x100).IndexOfAnyExcept((byte)0x11)); // the RAM page's part moved
    }

    [Fact]
    public void A_context_table_in_the_hole_is_the_context_table_read_fault()
    {
        _b.LegacyRoot(Rid >> 8, LowRam + 0x2000);
        _b.Enable(scalable: false);

        DmaResult r = _b.Unit.Read(Rid, null, 0x1000, new byte[8]);

        Assert.Equal(DmaStatus.Fault, r.Status);
        Assert.Equal((int)VtdFaultReason.ContextTableInvalid, r.FaultReason.Code);
        Assert.Equal((ulong)VtdFaultReason.ContextTableInvalid, (_b.FaultRecord(0).Hi >> 32) & 0xFF);
    }

    [Fact]
    public void A_wait_descriptor_whose_status_address_is_in_the_hole_is_a_queue_error_and_writes_nothing()
    {
        _b.EnableQueue(wide: false);

        _b.Submit(((ulong)0x1234 << 32) | (1UL << 5) | 5, LowRam + 0x40);

        Assert.NotEqual(0u, _b.Fsts & (1u << 4)); // IQE
        Assert.Equal(0UL, _b.QueueHead); // IQH stays on the descriptor that failed
    }
}
