using Iommu.Devices;
using Iommu.VtD.Tests.Hardware.Infrastructure;

namespace Iommu.VtD.Tests.Hardware;

/// <summary>
/// Audit of the hardware page-request path against the VT-d page request descriptor and the PCIe Page
/// Request Interface: what lands in the queue and what the device sees.
/// </summary>
public class PageRequestSpecAuditTests
{
    private const uint Pasid = 0x2A;

    /// <summary>
    /// ER and PM come from the PASID TLP prefix: a page request without one (PP = 0) cannot carry them, so the
    /// descriptor's bits 52 and 53 stay 0, as the fault record's PRIV/EXE and the DMA path already treat such requests.
    /// </summary>
    [Fact]
    public void A_request_without_pasid_carries_no_execute_or_privilege_bits()
    {
        using var r = new AtsRig();
        Assert.True(r.Unit.PageRequest(r.Dev, new PageRequestMessage(null, 0x5000, Read: true, Write: false, Execute: true, Privileged: true, 3, LastInGroup: true)));
        Assert.Equal(0x0000_0000_0300_0001UL, r.Descriptor(0).Q0);
        Assert.Equal(0x5000UL | 1 | 4 | (3UL << 3), r.Descriptor(0).Q1);

        // With a PASID both bits are the prefix's.
        Assert.True(r.Unit.PageRequest(r.Dev, new PageRequestMessage(Pasid, 0x6000, Read: true, Write: false, Execute: true, Privileged: true, 4, LastInGroup: true)));
        Assert.Equal(0x0030_002A_0300_0101UL, r.Descriptor(32).Q0);
    }

    /// <summary>
    /// PCIe Page Request Interface: a host answering Response Failure need not preserve the PRG index, and the function
    /// stops its PRI. Every request still outstanding is then failed, not left waiting for a response that never comes.
    /// </summary>
    [Fact]
    public void Response_failure_with_another_group_index_fails_every_outstanding_request()
    {
        using var r = new AtsRig();
        r.Fl.Entry(Pasid, 9);
        Assert.Equal(DmaStatus.PageRequestPending, r.Dev.AtsDmaRead(Pasid, 0x1000, new byte[8]).Status);
        int prgi = (int)((r.Descriptor(0).Q1 >> 3) & 0x1FF);

        r.Respond(Pasid, (prgi + 5) & 0x1FF, 0xF);
        Assert.False(r.Dev.PriEnabled);
        Assert.True(r.Dev.WaitForPageGroupResponses(TimeSpan.Zero));
        Assert.Equal(DmaStatus.PageRequestFailed, r.Dev.AtsDmaRead(Pasid, 0x1000, new byte[8]).Status);
    }
}
