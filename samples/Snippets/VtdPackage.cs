// snippet-begin: iommu-vtd-package
using Iommu;
using Iommu.Devices;
using Iommu.Domains;
using Iommu.VtD.Driver;
using Iommu.VtD.Hardware;
// snippet-end: iommu-vtd-package

namespace Snippets;

/// <summary>src/Iommu.VtD/PACKAGE.md.</summary>
internal static class VtdPackage
{
    public static (DmaResult Ok, DmaResult Fault) Run()
    {
        // snippet-begin: iommu-vtd-package
        using var platform = new Platform(new PlatformOptions { MemorySize = 64 * Sizes.GiB });
        PciBus pci = platform.AddPciBus(segment: 0);
        var dmar = new VtdUnit(platform.Memory, VtdConfig.ScalableMode48Bit);   // the hardware
        pci.AddDmaRemapper(dmar, includeAll: true);                              // its DRHD scope
        pci.SetIommuOps(new IntelIommu(platform, dmar)).ThrowIfError();          // the driver

        PciDevice dev = pci.AddDevice(new PciDeviceSpec("0000:00:03.0"));
        IDomain domain = platform.Iommu.DomainAlloc(pci)!;
        platform.Iommu.AttachDevice(domain, dev).ThrowIfError();
        platform.Iommu.Map(domain, 0x1000, 0x8000_0000, Sizes.Page, IommuProt.Read | IommuProt.Write).ThrowIfError();
        DmaResult ok = dev.DmaWrite(null, 0x1010, "hi"u8);        // translated by the VT-d page walk
        DmaResult fault = dev.DmaWrite(null, 0x9000, "no"u8);     // unmapped: a fault the driver logs (IntelIommu.Faults)
        // snippet-end: iommu-vtd-package
        return (ok, fault);
    }
}
