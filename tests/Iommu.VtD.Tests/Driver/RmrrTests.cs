using Iommu.Devices;
using Iommu.Domains;
using Iommu.VtD.Hardware;

namespace Iommu.VtD.Tests.Driver;

/// <summary>
/// RMRRs (PciBus.AddRmrr) through intel_iommu_get_resv_regions: the devices in scope report the range
/// as an IOMMU_RESV_DIRECT region, the core identity-maps it into their DMA default domain, the DMA API
/// never hands it out, and the devices are RMRR-locked for UNMANAGED attach.
/// </summary>
public sealed class RmrrTests : IDisposable
{
    private const ulong RmrrBase = 0x7E0_0000, RmrrEnd = 0x7E0_FFFF;

    private readonly DriverBed _bed = new(VtdConfig.Legacy48Bit, memory: 2 * Sizes.GiB);

    public void Dispose() => _bed.Dispose();

    [Fact]
    public void A_device_in_scope_or_below_a_bridge_in_scope_reports_the_RMRR_as_a_direct_region_before_the_MSI_window()
    {
        PciDevice port = _bed.Pci.AddDevice(new PciDeviceSpec("0000:00:1c.0") { IsBridge = true, Acs = true });
        _bed.Pci.AddRmrr(RmrrBase, RmrrEnd, PciAddress.Parse("0000:00:14.0", null), port.Address);
        PciDevice usb = _bed.AddDevice("0000:00:14.0");
        PciDevice below = _bed.Pci.AddDevice(new PciDeviceSpec("0000:01:00.0") { Upstream = port.Address, Acs = true });
        PciDevice other = _bed.AddDevice("0000:00:02.0");

        var direct = new IommuResvRegion(RmrrBase, RmrrEnd - RmrrBase + 1, IommuProt.Read | IommuProt.Write, IommuResvType.Direct);
        var msi = new IommuResvRegion(0xFEE0_0000, 0x10_0000, IommuProt.None, IommuResvType.Msi);
        Assert.Equal([direct, msi], _bed.Iommu.GetResvRegions(usb));
        Assert.Equal([direct, msi], _bed.Iommu.GetResvRegions(below));
        Assert.Equal([msi], _bed.Iommu.GetResvRegions(other));
        Assert.Equal([direct, msi], _bed.Iommu.GetGroupResvRegions(usb.IommuGroup!));
    }

    [Fact]
    public void The_RMRR_is_identity_mapped_in_the_DMA_default_domain_so_firmware_DMA_keeps_working()
    {
        _bed.Pci.AddRmrr(RmrrBase, RmrrEnd, PciAddress.Parse("0000:00:14.0", null));
        _bed.Platform.Memory.WriteUInt64(RmrrBase + 0x8000, 0x5EED_F00D);
        PciDevice usb = _bed.AddDevice("0000:00:14.0");
        PciDevice other = _bed.AddDevice("0000:00:02.0");
        var buf = new byte[8];

        Assert.True(usb.DmaRead(null, RmrrBase + 0x8000, buf).IsOk);
        Assert.Equal(0x5EED_F00DUL, BitConverter.ToUInt64(buf));
        Assert.Equal(RmrrEnd & ~0xFFFUL, _bed.Iommu.IovaToPhys(usb.IommuGroup!.DefaultDomain!, RmrrEnd & ~0xFFFUL));
        Assert.False(other.DmaRead(null, RmrrBase + 0x8000, buf).IsOk);
    }

    [Fact]
    public void The_DMA_API_never_hands_out_an_IOVA_inside_the_RMRR()
    {
        // The allocator hands out the top of the 32-bit space first: put the RMRR there.
        _bed.Pci.AddRmrr(0xFFF0_0000, 0xFFFF_FFFF, PciAddress.Parse("0000:00:14.0", null));
        PciDevice usb = _bed.AddDevice("0000:00:14.0");

        ulong iova = _bed.Iommu.DmaMapPage(usb, 0x1000_0000, Sizes.Page, DmaDataDirection.Bidirectional);

        Assert.True(iova + Sizes.Page <= 0xFFF0_0000, $"0x{iova:x} lies in the RMRR");
    }

    [Fact]
    public void A_device_named_in_an_RMRR_cannot_be_attached_to_an_UNMANAGED_domain()
    {
        _bed.Pci.AddRmrr(RmrrBase, RmrrEnd, PciAddress.Parse("0000:00:14.0", null));
        PciDevice usb = _bed.AddDevice("0000:00:14.0");
        IDomain def = usb.IommuGroup!.DefaultDomain!;
        IDomain d = _bed.Iommu.DomainAlloc(_bed.Pci)!;

        Assert.Equal(Errno.EPERM, _bed.Iommu.AttachDevice(d, usb));

        Assert.Same(def, _bed.Iommu.GetDomainForDev(usb));
        _bed.Iommu.DomainFree(d);
    }

    [Fact]
    public void AddRmrr_refuses_an_empty_or_partial_page_region()
    {
        Assert.Throws<ArgumentOutOfRangeException>(() => _bed.Pci.AddRmrr(0x2000, 0x1FFF));
        Assert.Throws<ArgumentOutOfRangeException>(() => _bed.Pci.AddRmrr(0x2800, 0x2FFF));
        Assert.Throws<ArgumentOutOfRangeException>(() => _bed.Pci.AddRmrr(0x2000, 0x27FF));
    }
}
