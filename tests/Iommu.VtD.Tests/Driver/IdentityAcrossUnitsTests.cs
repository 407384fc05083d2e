using CsCheck;
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

    /// <summary>
    /// Property over random RMRRs (inside, straddling and beyond RAM, overlapping, some 2 MiB-aligned so
    /// that their parts outside RAM get superpages), random devices present and random add orders, on
    /// legacy and scalable units without pass-through: every page of an RMRR whose device is present
    /// translates 1:1 for every identity device, RAM stays mapped 1:1, and no other page beyond RAM
    /// translates; no table frame waits on a pending-free list.
    /// </summary>
    [Fact]
    public void Random_RMRR_layouts_are_mapped_exactly()
    {
        const ulong RamPages = Memory >> 12;
        Gen<(int Start, int Pages, int Dev)[]> rmrrs = Gen.Select(
            Gen.OneOf(Gen.Int[-64, 64], Gen.Int[0, 3000], Gen.Int[0, 5].Select(i => 512 * i)),
            Gen.OneOf(Gen.Int[1, 8], Gen.Int[1, 700], Gen.Const(512), Gen.Const(1024)),
            Gen.Int[0, 3]).Array[1, 6];
        Gen.Select(rmrrs, Gen.Int[0, 15], Gen.Int[0, 3].Array[4], Gen.Bool).Sample((regions, present, order, scalable) =>
        {
            using var p = new Platform(new PlatformOptions { MemorySize = Memory, DefaultDomainType = DomainType.Identity });
            PciBus pci = p.AddPciBus();
            var unit = new VtdUnit(p.Memory, (scalable ? VtdConfig.ScalableMode48Bit : VtdConfig.Legacy48Bit) with { PassThrough = false });
            pci.AddDmaRemapper(unit, includeAll: true);
            pci.SetIommuOps(new IntelIommu(p, unit)).ThrowIfError();
            string Bdf(int dev) => $"0000:00:{dev + 1:x2}.0";
            foreach ((int start, int pages, int dev) in regions)
            {
                ulong first = (RamPages + (ulong)(long)start) << 12;
                pci.AddRmrr(first, first + ((ulong)pages << 12) - 1, PciAddress.Parse(Bdf(dev), null));
            }

            var devices = new List<PciDevice>();
            foreach (int dev in order.Distinct().Concat(Enumerable.Range(0, 4)).Distinct())
            {
                if ((present & (1 << dev)) != 0)
                {
                    devices.Add(pci.AddDevice(new PciDeviceSpec(Bdf(dev)) { ClassCode = 0x0C0330, Acs = true }));
                }
            }

            if (devices.Count == 0)
            {
                return;
            }

            var reached = new HashSet<ulong>();
            foreach ((int start, int pages, int dev) in regions)
            {
                if ((present & (1 << dev)) != 0)
                {
                    for (ulong pg = 0; pg < (ulong)pages; pg++)
                    {
                        reached.Add(RamPages + (ulong)(long)start + pg);
                    }
                }
            }

            var probes = new SortedSet<ulong> { RamPages - 1, RamPages };
            foreach ((int start, int pages, _) in regions)
            {
                ulong s0 = RamPages + (ulong)(long)start;
                foreach (ulong pg in new[] { s0 - 1, s0, s0 + ((ulong)pages / 2), s0 + (ulong)pages - 1, s0 + (ulong)pages })
                {
                    probes.Add(pg);
                }
            }

            foreach (PciDevice dev in devices)
            {
                foreach (ulong pg in probes)
                {
                    ulong a = pg << 12;
                    bool expected = pg < RamPages || reached.Contains(pg);
                    VtdTranslation t = unit.Translate(dev.RequesterId, null, a, 1, DmaAccess.Write);
                    bool ok = t.Status == VtdTranslationStatus.Translated && t.PhysicalAddress == a;
                    Assert.True(ok == expected && (expected || t.Status != VtdTranslationStatus.Translated), $"{dev.Name} at 0x{a:x}: {t.Status} 0x{t.PhysicalAddress:x}, expected {(expected ? "1:1" : "no translation")}");
                }
            }

            Assert.Equal(0, ((DmarDomain)p.Iommu.GetDomainForDev(devices[0])!).PageTable.PendingFrees);
        }, iter: 60);
    }
}
