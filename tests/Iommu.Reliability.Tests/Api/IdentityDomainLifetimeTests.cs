using Iommu.Devices;
using Iommu.Domains;
using Iommu.VtD.Driver;
using Iommu.VtD.Hardware;

namespace Iommu.Reliability.Tests.Api;

/// <summary>
/// The VT-d driver hands one static identity domain (si_domain) to every identity group. Releasing one such group used
/// to free it in the core's eyes (the in-use mark's dying flag, or the freed flag), so the other groups' calls on their
/// live default domain threw, and the last group's release threw too.
/// </summary>
public sealed class IdentityDomainLifetimeTests
{
    private static (Platform Platform, PciBus Pci) NewPlatform()
    {
        var platform = new Platform(new PlatformOptions { MemorySize = 1 * Sizes.GiB, TableMemorySize = 16 * Sizes.MiB, DefaultDomainType = DomainType.Identity });
        PciBus pci = platform.AddPciBus();
        var unit = new VtdUnit(platform.Memory, VtdConfig.ScalableMode48Bit);
        pci.AddDmaRemapper(unit, includeAll: true);
        var driver = new IntelIommu(platform, unit);
        pci.SetIommuOps(driver).ThrowIfError();
        return (platform, pci);
    }

    // The static identity domain is shared by every identity group: releasing one group "frees" it
    // (Dying stays set), and the other groups' calls on their live default domain then throw.
    [Fact]
    public void Identity_domain_still_used_by_another_group_answers_after_one_group_is_released()
    {
        (Platform platform, PciBus pci) = NewPlatform();
        using Platform _p = platform;
        PciDevice a = pci.AddDevice(new PciDeviceSpec("0000:00:03.0") { Acs = true });
        PciDevice b = pci.AddDevice(new PciDeviceSpec("0000:00:04.0") { Acs = true });
        IDomain da = platform.Iommu.GetDomainForDev(a)!;
        IDomain db = platform.Iommu.GetDomainForDev(b)!;
        Assert.Equal(DomainType.Identity, db.Type);
        Assert.Same(da, db);
        Assert.Equal(0x1234UL, platform.Iommu.IovaToPhys(db, 0x1234));

        pci.RemoveDevice(a);

        Assert.Same(db, platform.Iommu.GetDomainForDev(b));
        Assert.Equal(0x1234UL, platform.Iommu.IovaToPhys(db, 0x1234));
        platform.Iommu.FlushIotlbAll(db);
    }

    [Fact]
    public void Removing_two_identity_devices_does_not_throw()
    {
        (Platform platform, PciBus pci) = NewPlatform();
        using Platform _p = platform;
        PciDevice a = pci.AddDevice(new PciDeviceSpec("0000:00:03.0") { Acs = true });
        PciDevice b = pci.AddDevice(new PciDeviceSpec("0000:00:04.0") { Acs = true });
        pci.RemoveDevice(a);
        pci.RemoveDevice(b);
    }
}
