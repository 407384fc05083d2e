using Iommu.Devices;
using Iommu.VtD.Hardware;
using Iommu.VtD.Tests.Hardware.Infrastructure;

namespace Iommu.VtD.Tests.Hardware;

/// <summary>The requester-id DMA family an emulator calls (<see cref="VtdUnit.Read(ushort, uint?, ulong, Span{byte})"/>, <see cref="VtdUnit.Write(ushort, uint?, ulong, ReadOnlySpan{byte})"/>) and what its result's fields hold (issue 17).</summary>
public sealed class RequesterDmaTests
{
    private const ushort Rid = 0x0310;
    private const ulong Data = 0x2000_0000;

    [Fact]
    public void A_write_then_read_across_pages_moves_every_byte_and_names_the_physical_address()
    {
        using var b = new VtdBench(VtdConfig.Legacy48Bit);
        ulong sl = b.SetupLegacyDevice(Rid, aw: 2, did: 1);
        b.Map(sl, 4, 0x7000, Data + 0x5000);
        b.Map(sl, 4, 0x8000, Data + 0x1000); // the next IOVA page is elsewhere in memory
        b.Enable(scalable: false);

        ReadOnlySpan<byte> text = "hello, device memory across a page boundary"u8;
        DmaResult w = b.Unit.Write(Rid, null, 0x7FF0, text);
        Assert.Equal((DmaStatus.Ok, (ulong)text.Length, (ulong?)(Data + 0x5FF0), (ulong?)null), (w.Status, w.Transferred, w.PhysicalAddress, w.StopAddress));
        Assert.Equal((byte)'h', (byte)b.Memory.ReadUInt64(Data + 0x5FF0));
        Assert.Equal((byte)text[16], (byte)b.Memory.ReadUInt64(Data + 0x1000));       // byte 16 is on the next page

        var back = new byte[text.Length];
        DmaResult r = b.Unit.Read(Rid, null, 0x7FF0, back);
        Assert.True(r.IsOk);
        Assert.Equal(text.ToArray(), back);
    }

    [Fact]
    public void A_transfer_that_stops_names_the_device_address_of_the_page_that_stopped_it_and_no_physical_address()
    {
        using var b = new VtdBench(VtdConfig.Legacy48Bit);
        ulong sl = b.SetupLegacyDevice(Rid, aw: 2, did: 1);
        b.Map(sl, 4, 0x7000, Data);
        b.Enable(scalable: false);

        DmaResult r = b.Unit.Read(Rid, null, 0x7F00, new byte[0x200]);
        Assert.Equal((DmaStatus.Fault, 0x100UL, (ulong?)null, (ulong?)0x8000UL), (r.Status, r.Transferred, r.PhysicalAddress, r.StopAddress));
        Assert.Equal(6, r.FaultReason.Code); // a read through a not-present entry, legacy mode

        DmaResult w = b.Unit.Write(Rid, null, 0x9000, new byte[8]);
        Assert.Equal(((ulong?)null, (ulong?)0x9000UL), (w.PhysicalAddress, w.StopAddress));
    }
}
