using Iommu.Devices;
using Iommu.Domains;
using Iommu.VtD.Driver;
using Iommu.VtD.Hardware;
using static Iommu.VtD.Tests.Driver.DriverTestKit;

namespace Iommu.VtD.Tests.Driver;

/// <summary>A DMA fault as a user prints it: the DMA's result and the driver's record say the same reason, in hex, named.</summary>
public sealed class FaultRecordTextTests
{
    [Theory]
    [InlineData("Legacy48", VtdFaultReason.Write, VtdFaultReason.Read)]
    [InlineData("Sm48", VtdFaultReason.ScalableWrite, VtdFaultReason.ScalableRead)]
    public void Result_and_record_print_the_recorded_reason_in_hex(string config, VtdFaultReason write, VtdFaultReason read)
    {
        using DriverBed f = New(config);
        PciDevice dev = f.AddDevice("0000:00:03.0");
        IDomain dom = f.Unmanaged();
        Assert.Equal(Errno.None, f.Iommu.AttachDevice(dom, dev));

        DmaResult w = f.Write(dev, null, 0x5_0000, 1);
        Span<byte> buf = stackalloc byte[8];
        DmaResult r = dev.DmaRead(null, 0x6_0000, buf);

        Assert.Equal(2, f.Driver.Faults.Count);
        (DmaResult result, DmarFaultRecord rec, VtdFaultReason want)[] cases = [(w, f.Driver.Faults[0], write), (r, f.Driver.Faults[1], read)];
        foreach ((DmaResult result, DmarFaultRecord rec, VtdFaultReason want) in cases)
        {
            // The record's reason is the FR field the driver read from the unit's fault recording register.
            Assert.Equal(want, rec.Reason);
            string text = $"0x{(byte)rec.Reason:x2} ({want})";
            Assert.Equal(text, result.FaultReason.ToString());
            Assert.Contains($"FaultReason = {text}", result.ToString(), StringComparison.Ordinal);
            Assert.Contains($"Reason = {text}", rec.ToString(), StringComparison.Ordinal);
            Assert.Contains($"SourceId = 0x{dev.RequesterId:x4}", rec.ToString(), StringComparison.Ordinal);
            Assert.Contains($"Address = 0x{rec.Address:x}", rec.ToString(), StringComparison.Ordinal);
            Assert.Equal((byte)want, result.FaultReason.Code);
        }
    }

    // A newcomer prints a DMA's result or a unit's translation and compares it with the docs, which give addresses in
    // hex; the generated ToString printed them in decimal.
    [Fact]
    public void Dma_results_and_translations_print_addresses_and_sizes_in_hex()
    {
        using DriverBed f = New("Sm48");
        PciDevice dev = f.AddDevice("0000:00:03.0");
        IDomain dom = f.Unmanaged();
        Assert.Equal(Errno.None, f.Iommu.AttachDevice(dom, dev));
        Assert.Equal(Errno.None, f.Iommu.Map(dom, 0x1_0000, 0x80_0000, 0x1000, IommuProt.Read | IommuProt.Write));

        Span<byte> buf = stackalloc byte[8];
        DmaResult ok = dev.DmaRead(null, 0x1_0040, buf);
        Assert.Equal("DmaResult { Status = Ok, Transferred = 8, Address = 0x800040, FaultReason = none }", ok.ToString());
        DmaResult fault = dev.DmaRead(null, 0x6_0010, buf);
        Assert.Equal("DmaResult { Status = Fault, Transferred = 0, Address = 0x60010, FaultReason = 0x86 (ScalableRead) }", fault.ToString());

        VtdTranslation t = f.Unit.Translate(dev.RequesterId, null, 0x1_0040, 4, DmaAccess.Read);
        Assert.Equal("VtdTranslation { Status = Translated, InputAddress = 0x10040, PhysicalAddress = 0x800040, PageSize = 0x1000, Writable = True, Reason = none, FaultRecorded = False }", t.ToString());
        VtdTranslation tf = f.Unit.Translate(dev.RequesterId, null, 0x7_0000, 4, DmaAccess.Write);
        Assert.Equal("VtdTranslation { Status = Fault, InputAddress = 0x70000, PhysicalAddress = 0x0, PageSize = 0x0, Writable = False, Reason = 0x85 (ScalableWrite), FaultRecorded = True }", tf.ToString());
    }
}
