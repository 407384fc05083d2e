using Iommu.Devices;
using Iommu.Domains;
using Iommu.VtD.Driver;
using static Iommu.VtD.Tests.Driver.DriverTestKit;

namespace Iommu.VtD.Tests.Driver;

public sealed class PcieToPciBridgeAliasTests
{
    // A PCIe-to-PCI bridge forwards its secondary side's DMA with requester ID (secondary bus, 00.0), so
    // 5.15's domain_context_mapping programs that entry too (pci_for_each_dma_alias, PCI_EXP_TYPE_PCI_BRIDGE),
    // and domain_context_clear clears it again. The driver programmed only the device's own RID and its
    // declared aliases: with no function at 02:00.0, the bridge-owned DMA faulted.
    [Theory]
    [InlineData("Legacy48")]
    [InlineData("Sm48")]
    public void Dma_carrying_the_bridge_secondary_bus_requester_id_translates_and_is_cleared_on_removal(string config)
    {
        using DriverBed f = New(config);
        PciDevice port = f.Pci.AddDevice(new PciDeviceSpec("0000:00:1c.0") { IsBridge = true, Acs = true });
        PciDevice bridge = f.Pci.AddDevice(new PciDeviceSpec("0000:01:00.0") { IsPcieToPciBridge = true, Upstream = port.Address });
        PciDevice conventional = f.Pci.AddDevice(new PciDeviceSpec("0000:02:07.0") { Upstream = bridge.Address });
        Assert.Same(bridge.IommuGroup, conventional.IommuGroup);

        IDomain un = f.Unmanaged();
        Assert.Equal(Errno.None, f.Iommu.Map(un, 0x1000, 0x9000, K4, RW));
        Assert.Equal(Errno.None, f.Iommu.AttachGroup(un, conventional.IommuGroup!));
        f.Platform.Memory.WriteUInt64(0x9000, 0x1234_5678);

        Span<byte> buf = stackalloc byte[8];
        const ushort bridgeOwned = 0x0200;
        DmaResult r = f.Unit.Read(bridgeOwned, null, 0x1000, buf);
        Assert.True(r.IsOk, $"DMA with requester 02:00.0 faulted: {r.FaultReason}");
        Assert.Equal(0x1234_5678UL, BitConverter.ToUInt64(buf));
        f.AssertDma(conventional, null, 0x1000, 0x9000);

        f.Pci.RemoveDevice(conventional);
        Assert.False(f.Unit.Read(bridgeOwned, null, 0x1000, buf).IsOk, "the removed device's bridge alias still translates");
    }

    // The hardware side: a conventional function behind a PCIe-to-PCI bridge reaches the unit as the bridge's
    // (secondary bus, 00.0), as on real hardware and in QEMU, so its faults name that ID, not its own.
    [Theory]
    [InlineData("Legacy48")]
    [InlineData("Sm48")]
    public void Dma_of_a_conventional_function_behind_the_bridge_carries_the_bridge_requester_id(string config)
    {
        using DriverBed f = New(config);
        PciDevice port = f.Pci.AddDevice(new PciDeviceSpec("0000:00:1c.0") { IsBridge = true, Acs = true });
        PciDevice bridge = f.Pci.AddDevice(new PciDeviceSpec("0000:01:00.0") { IsPcieToPciBridge = true, Upstream = port.Address });
        PciDevice conventional = f.Pci.AddDevice(new PciDeviceSpec("0000:02:07.0") { Upstream = bridge.Address });
        PciDevice beside = f.Pci.AddDevice(new PciDeviceSpec("0000:00:03.0"));
        Assert.Equal(0x0200, conventional.DmaRequesterId);
        Assert.Equal(0x0238, conventional.RequesterId);
        Assert.Equal(beside.RequesterId, beside.DmaRequesterId);

        Span<byte> buf = stackalloc byte[8];
        DmaResult r = conventional.DmaRead(null, 0xdead_0000, buf); // nothing mapped there
        Assert.False(r.IsOk);
        DmarFaultRecord rec = Assert.Single(f.Driver.Faults);
        Assert.Equal(0x0200, rec.SourceId);
    }
}
