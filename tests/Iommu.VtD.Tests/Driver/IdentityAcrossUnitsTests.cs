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

/// <summary>
/// 5.15 <c>si_domain_init</c> without <c>hw_pass_through</c> also maps the RMRRs of the devices present
/// (<c>for_each_rmrr_units</c>, <c>for_each_active_dev_scope</c>) 1:1, so an identity device named in an
/// RMRR outside RAM keeps reaching it. The model maps them as each such device attaches (a device added
/// after si_domain was built too); an RMRR of an absent device, or declared after its devices attached,
/// is not mapped.
/// </summary>
public sealed class SiDomainRmrrTests
{
    private const ulong Memory = 1UL << 30;

    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public void The_RMRRs_of_present_devices_are_mapped_1_to_1_outside_RAM_too(bool scalable)
    {
        using var p = new Platform(new PlatformOptions { MemorySize = Memory, DefaultDomainType = DomainType.Identity });
        PciBus pci = p.AddPciBus();
        var unit = new VtdUnit(p.Memory, (scalable ? VtdConfig.ScalableMode48Bit : VtdConfig.Legacy48Bit) with { PassThrough = false });
        pci.AddDmaRemapper(unit, includeAll: true);
        pci.SetIommuOps(new IntelIommu(p, unit)).ThrowIfError();

        // Straddling the end of RAM, wholly beyond it, and one for a device that is never added.
        const ulong Straddle = Memory - 0x4000, StraddleEnd = Memory + 0x3FFF, Beyond = Memory + 0x20_0000, BeyondEnd = Memory + 0x20_FFFF;
        const ulong Absent = Memory + 0x40_0000, AbsentEnd = Memory + 0x40_0FFF;
        pci.AddRmrr(Straddle, StraddleEnd, PciAddress.Parse("0000:00:14.0", null));
        pci.AddRmrr(Beyond, BeyondEnd, PciAddress.Parse("0000:00:1d.0", null));
        pci.AddRmrr(Absent, AbsentEnd, PciAddress.Parse("0000:00:1f.0", null));
        PciDevice usb = pci.AddDevice(new PciDeviceSpec("0000:00:14.0") { ClassCode = 0x0C0330, Acs = true });
        PciDevice gpu = pci.AddDevice(new PciDeviceSpec("0000:00:1d.0") { ClassCode = 0x030000, Acs = true });
        Assert.Equal(DomainType.Identity, p.Iommu.GetDomainForDev(usb)!.Type);

        // Declared after its device attached: 5.15 maps RMRRs at boot only.
        const ulong Late = Memory + 0x60_0000, LateEnd = Memory + 0x60_0FFF;
        pci.AddRmrr(Late, LateEnd, PciAddress.Parse("0000:00:14.0", null));

        foreach ((PciDevice dev, ulong[] reached) in new[] { (usb, new[] { Straddle, Memory - 0x1000, Memory, StraddleEnd & ~0xFFFUL }), (gpu, new[] { Beyond, BeyondEnd & ~0xFFFUL }) })
        {
            foreach (ulong a in reached)
            {
                VtdTranslation t = unit.Translate(dev.RequesterId, null, a, 1, DmaAccess.Write);
                Assert.True(t.Status == VtdTranslationStatus.Translated && t.PhysicalAddress == a, $"{dev.Name} at 0x{a:x}: {t.Status} 0x{t.PhysicalAddress:x} {t.Reason}");
            }
        }

        // RAM stays mapped around the straddling RMRR; nothing else outside RAM is.
        Assert.Equal(Memory - 0x5000, unit.Translate(usb.RequesterId, null, Memory - 0x5000, 1, DmaAccess.Write).PhysicalAddress);
        foreach (ulong a in new[] { StraddleEnd + 1, Beyond - 0x1000, BeyondEnd + 1, Absent, Late })
        {
            VtdTranslation t = unit.Translate(usb.RequesterId, null, a, 1, DmaAccess.Read);
            Assert.True(t.Status != VtdTranslationStatus.Translated, $"0x{a:x} reached 0x{t.PhysicalAddress:x}");
        }
    }
}
