using Iommu.Devices;
using Iommu.Domains;
using Iommu.VtD.Driver;
using Iommu.VtD.Hardware;
using static Iommu.VtD.Tests.Driver.DriverTestKit;

namespace Iommu.VtD.Tests.Driver;

/// <summary>
/// A domain's width (<c>gaw</c>) after it has been attached to units of different widths. 5.15's
/// prepare_domain_attach_device sets gaw to the width of the unit attached last, even above what the
/// domain's (already dropped) levels or a narrower unit it is on can take. Found by MultiUnitDomainPropertyTests.
/// </summary>
public sealed class MultiUnitGawTests
{
    private const ulong Pa = 0x5000_0000;

    private static (Platform P, PciBus Pci, PciDevice Narrow, PciDevice Wide) Bed(VtdConfig narrow)
    {
        var p = new Platform(new PlatformOptions { MemorySize = SmallMemory, TableMemorySize = 64 * Sizes.MiB });
        PciBus pci = p.AddPciBus();
        var n = new VtdUnit(p.Memory, narrow);
        var w = new VtdUnit(p.Memory, VtdConfig.Legacy48Bit);
        pci.AddDmaRemapper(n, includeAll: false, PciAddress.Parse("0000:00:03.0", null));
        pci.AddDmaRemapper(w, includeAll: true);
        pci.SetIommuOps(new IntelIommu(p, n, w)).ThrowIfError();
        return (p, pci, pci.AddDevice(new PciDeviceSpec("0000:00:03.0") { Acs = true }), pci.AddDevice(new PciDeviceSpec("0000:00:04.0") { Acs = true }));
    }

    /// <summary>
    /// Attached once to a 39-bit unit, the domain walks 3 levels; a later attach to a 48-bit unit must not
    /// raise gaw to 48: 5.15 then hits BUG_ON(!domain_pfn_supported) in __domain_mapping, and the model
    /// wrote the leaf at the IOVA taken modulo 2^39, so the device reached the page at another IOVA.
    /// </summary>
    [Fact]
    public void A_domain_whose_levels_were_dropped_keeps_their_width_on_a_wider_unit()
    {
        (Platform p, PciBus pci, PciDevice narrow, PciDevice wide) = Bed(VtdConfig.Legacy39Bit);
        using (p)
        {
            IDomain dom = p.Iommu.DomainAlloc(pci)!;
            Assert.Equal(Errno.None, p.Iommu.AttachDevice(dom, narrow));
            p.Iommu.DetachDevice(dom, narrow);
            Assert.Equal(Errno.None, p.Iommu.AttachDevice(dom, wide));
            Assert.Equal(39, ((DmarDomain)dom).Gaw);

            ulong high = (1UL << 48) - K4;
            Assert.Equal(Errno.EFAULT, p.Iommu.Map(dom, high, Pa, K4, RW));
            Assert.Equal(0UL, p.Iommu.IovaToPhys(dom, high & ((1UL << 39) - 1)));
        }
    }

    /// <summary>
    /// On a unit that walks 4 levels but takes 39 bits (MGAW 39) and then on a 48-bit one, gaw must stay 39 (as
    /// 6.12, where a domain's width never grows): at 48 a map above 2^39 succeeds that the first unit's
    /// device cannot reach (input beyond MGAW).
    /// </summary>
    [Fact]
    public void A_domain_in_use_on_a_narrow_unit_keeps_its_width_when_a_wider_unit_joins()
    {
        (Platform p, PciBus pci, PciDevice narrow, PciDevice wide) = Bed(VtdConfig.Legacy48Bit with { MaxGuestAddressWidth = 39 });
        using (p)
        {
            IDomain dom = p.Iommu.DomainAlloc(pci)!;
            Assert.Equal(Errno.None, p.Iommu.AttachDevice(dom, narrow));
            Assert.Equal(Errno.None, p.Iommu.AttachDevice(dom, wide));
            Assert.Equal(39, ((DmarDomain)dom).Gaw);
            Assert.Equal(Errno.EFAULT, p.Iommu.Map(dom, 1UL << 40, Pa, K4, RW));
        }
    }
}
