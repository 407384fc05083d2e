using Iommu.Devices;
using Iommu.Domains;
using Iommu.VtD.Driver;
using Iommu.VtD.Hardware;

namespace Iommu.VtD.Tests.Driver;

/// <summary>
/// 5.15's identity default domain is one static domain for the system (<c>si_domain</c>), and
/// <c>hw_pass_through</c> one global that <c>init_dmars</c> clears when ANY unit lacks ECAP.PT: then
/// <c>si_domain_init</c> maps every RAM range 1:1 and every unit's identity devices (also those behind
/// a unit with PT) translate through that table, reaching RAM and nothing else.
/// </summary>
public sealed class IdentityAcrossUnitsTests
{
    private const ulong Memory = 1UL << 30;

    [Theory]
    [InlineData(true, true)]
    [InlineData(true, false)]
    [InlineData(false, true)]
    [InlineData(false, false)]
    public void Identity_devices_reach_ram_through_si_domain_when_another_unit_lacks_pass_through(bool scalable0, bool scalable1)
    {
        using var p = new Platform(new PlatformOptions { MemorySize = Memory, DefaultDomainType = DomainType.Identity });
        PciBus pci = p.AddPciBus();
        var u0 = new VtdUnit(p.Memory, scalable0 ? VtdConfig.ScalableMode48Bit : VtdConfig.Legacy48Bit); // ECAP.PT
        var u1 = new VtdUnit(p.Memory, (scalable1 ? VtdConfig.ScalableMode48Bit : VtdConfig.Legacy48Bit) with { PassThrough = false });
        pci.AddDmaRemapper(u1, includeAll: false, PciAddress.Parse("0000:00:10.0", null));
        pci.AddDmaRemapper(u0, includeAll: true);
        var driver = new IntelIommu(p, u0, u1);
        pci.SetIommuOps(driver).ThrowIfError();
        PciDevice a = pci.AddDevice(new PciDeviceSpec("0000:00:03.0") { Acs = true });
        PciDevice b = pci.AddDevice(new PciDeviceSpec("0000:00:10.0") { Acs = true });

        // Both on the one identity domain (iommu_def_domain_type IDENTITY; intel_iommu_domain_alloc: &si_domain->domain).
        IDomain? da = p.Iommu.GetDomainForDev(a), db = p.Iommu.GetDomainForDev(b);
        Assert.NotNull(da);
        Assert.Same(da, db);
        Assert.Equal(DomainType.Identity, da!.Type);

        foreach ((PciDevice dev, VtdUnit unit) in new[] { (a, u0), (b, u1) })
        {
            foreach (ulong ram in new ulong[] { 0x1000, 0x1234_5000, Memory - 0x1000 })
            {
                VtdTranslation t = unit.Translate(dev.RequesterId, null, ram, 1, DmaAccess.Write);
                Assert.True(t.Status == VtdTranslationStatus.Translated && t.PhysicalAddress == ram, $"{dev.Name} at 0x{ram:x}: {t.Status} 0x{t.PhysicalAddress:x} {t.Reason}");
            }

            // Not RAM: no 1:1 leaf there, so no pass-through of everything (TT=10 / PGTT=100) either.
            foreach (ulong beyond in new ulong[] { Memory, Memory + 0x20_0000, 1UL << 38 })
            {
                VtdTranslation t = unit.Translate(dev.RequesterId, null, beyond, 1, DmaAccess.Read);
                Assert.True(t.Status != VtdTranslationStatus.Translated, $"{dev.Name} at 0x{beyond:x} reached 0x{t.PhysicalAddress:x}");
            }
        }
    }
}
