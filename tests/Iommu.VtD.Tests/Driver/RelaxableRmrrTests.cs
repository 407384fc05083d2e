using Iommu.Devices;
using Iommu.Domains;
using Iommu.VtD.Hardware;

namespace Iommu.VtD.Tests.Driver;

/// <summary>
/// The class code where 5.15's intel-iommu reads it: the RMRRs of USB and graphics devices are relaxable
/// (device_rmrr_is_relaxable), so they are reported as IOMMU_RESV_DIRECT_RELAXABLE, still identity mapped
/// into a DMA default domain, and lock nothing; an ISA bridge gets the floppy workaround's relaxable
/// [0, 16 MiB) region (CONFIG_INTEL_IOMMU_FLOPPY_WA).
/// </summary>
public sealed class RelaxableRmrrTests : IDisposable
{
    private const ulong RmrrBase = 0x7E0_0000, RmrrEnd = 0x7E0_FFFF;
    private static readonly IommuResvRegion Msi = new(0xFEE0_0000, 0x10_0000, IommuProt.None, IommuResvType.Msi);

    private readonly DriverBed _bed = new(VtdConfig.Legacy48Bit, memory: 2 * Sizes.GiB);

    public void Dispose() => _bed.Dispose();

    public static TheoryData<uint, bool> ClassCodes => new()
    {
        { 0x0C_0330, true },  // xHCI
        { 0x0C_0300, true },  // UHCI
        { 0x0C_03FE, true },  // USB device (not host controller): still class 0x0C03
        { 0x03_0000, true },  // VGA
        { 0x03_8000, true },  // other display controller
        { 0x0C_0500, false }, // SMBus
        { 0x04_0300, false }, // HD audio
        { 0x02_0000, false }, // Ethernet
        { 0x00_0000, false },
        { 0x06_0100, false }, // ISA bridge: its own region, but its RMRRs lock it
    };

    [Theory]
    [MemberData(nameof(ClassCodes))]
    public void Only_USB_and_display_class_codes_make_an_RMRR_relaxable(uint classCode, bool relaxable)
    {
        _bed.Pci.AddRmrr(RmrrBase, RmrrEnd, PciAddress.Parse("0000:00:14.0", null));
        PciDevice dev = _bed.Pci.AddDevice(new PciDeviceSpec("0000:00:14.0") { ClassCode = classCode });

        Assert.Equal(classCode, dev.ClassCode);
        Assert.Equal(relaxable, dev.RmrrRelaxable);
        Assert.Equal(!relaxable, dev.RmrrLocked);
        IommuResvRegion rmrr = new(RmrrBase, RmrrEnd - RmrrBase + 1, IommuProt.Read | IommuProt.Write, relaxable ? IommuResvType.DirectRelaxable : IommuResvType.Direct);
        Assert.Contains(rmrr, _bed.Iommu.GetResvRegions(dev));

        IDomain d = _bed.Iommu.DomainAlloc(_bed.Pci)!;
        Assert.Equal(relaxable ? Errno.None : Errno.EPERM, _bed.Iommu.AttachDevice(d, dev));
        Assert.Equal(relaxable ? d : dev.IommuGroup!.DefaultDomain, _bed.Iommu.GetDomainForDev(dev));
        if (relaxable)
        {
            _bed.Iommu.DetachDevice(d, dev);
        }

        _bed.Iommu.DomainFree(d);
    }

    [Fact]
    public void A_relaxable_RMRR_is_still_identity_mapped_in_the_DMA_default_domain()
    {
        _bed.Pci.AddRmrr(RmrrBase, RmrrEnd, PciAddress.Parse("0000:00:14.0", null));
        _bed.Platform.Memory.WriteUInt64(RmrrBase + 0x8000, 0x5EED_F00D);
        PciDevice usb = _bed.Pci.AddDevice(new PciDeviceSpec("0000:00:14.0") { ClassCode = 0x0C_0330 });
        var buf = new byte[8];

        Assert.Equal(IommuResvType.DirectRelaxable, Assert.Single(_bed.Iommu.GetGroupResvRegions(usb.IommuGroup!), r => r.Start == RmrrBase).Type);
        Assert.True(usb.DmaRead(null, RmrrBase + 0x8000, buf).IsOk);
        Assert.Equal(0x5EED_F00DUL, BitConverter.ToUInt64(buf));
        Assert.Equal(RmrrBase, _bed.Iommu.IovaToPhys(usb.IommuGroup!.DefaultDomain!, RmrrBase));
    }

    [Fact]
    public void A_device_below_a_bridge_in_scope_takes_relaxability_from_its_own_class_code()
    {
        PciDevice port = _bed.Pci.AddDevice(new PciDeviceSpec("0000:00:1c.0") { IsBridge = true, Acs = true });
        _bed.Pci.AddRmrr(RmrrBase, RmrrEnd, port.Address);
        PciDevice gpu = _bed.Pci.AddDevice(new PciDeviceSpec("0000:01:00.0") { Upstream = port.Address, Acs = true, ClassCode = 0x03_0000 });
        PciDevice nic = _bed.Pci.AddDevice(new PciDeviceSpec("0000:02:00.0") { Upstream = port.Address, Acs = true, ClassCode = 0x02_0000 });

        Assert.Equal([new IommuResvRegion(RmrrBase, RmrrEnd - RmrrBase + 1, IommuProt.Read | IommuProt.Write, IommuResvType.DirectRelaxable), Msi], _bed.Iommu.GetResvRegions(gpu));
        Assert.Equal([new IommuResvRegion(RmrrBase, RmrrEnd - RmrrBase + 1, IommuProt.Read | IommuProt.Write, IommuResvType.Direct), Msi], _bed.Iommu.GetResvRegions(nic));
        Assert.False(gpu.RmrrLocked);
        Assert.True(nic.RmrrLocked);
    }

    [Fact]
    public void An_ISA_bridge_reports_the_floppy_region_below_16_MiB_as_direct_relaxable_and_gets_it_identity_mapped()
    {
        PciDevice isa = _bed.Pci.AddDevice(new PciDeviceSpec("0000:00:1f.0") { ClassCode = 0x06_0100 });
        PciDevice other = _bed.Pci.AddDevice(new PciDeviceSpec("0000:00:1e.0") { ClassCode = 0x06_0400 }); // PCI-to-PCI bridge class: no region

        var floppy = new IommuResvRegion(0, 1UL << 24, IommuProt.Read | IommuProt.Write, IommuResvType.DirectRelaxable);
        Assert.Equal([floppy, Msi], _bed.Iommu.GetResvRegions(isa));
        Assert.Equal([Msi], _bed.Iommu.GetResvRegions(other));
        Assert.False(isa.RmrrLocked);

        IDomain def = isa.IommuGroup!.DefaultDomain!;
        Assert.Equal(0x5000UL, _bed.Iommu.IovaToPhys(def, 0x5000));
        Assert.Equal(0xFF_F000UL, _bed.Iommu.IovaToPhys(def, 0xFF_F000));
        Assert.Equal(0UL, _bed.Iommu.IovaToPhys(def, 1UL << 24));
    }

    [Fact]
    public void A_class_code_wider_than_24_bits_is_refused()
    {
        ArgumentOutOfRangeException e = Assert.Throws<ArgumentOutOfRangeException>(() => _bed.Pci.AddDevice(new PciDeviceSpec("0000:00:14.0") { ClassCode = 0x100_0000 }));
        Assert.Contains("0000:00:14.0", e.Message, StringComparison.Ordinal);
        Assert.Null(_bed.Pci.Find(PciAddress.Parse("0000:00:14.0", null)));
    }
}
