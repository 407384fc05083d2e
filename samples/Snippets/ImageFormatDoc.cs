// snippet-begin: vtd-image
using Iommu.VtD.Diagnostics;
using Iommu.VtD.Hardware;   // DmaAccess
// snippet-end: vtd-image
using Iommu;
using Iommu.Devices;
using Iommu.Domains;
using Iommu.VtD.Driver;

namespace Snippets;

/// <summary>docs/vtd-image-format.md: export, relocate, probe and JSON of a driver's structures.</summary>
internal static class ImageFormatDoc
{
    public static (VtdImage Image, VtdImage Probed, VtdImage FromJson, VtdImage UnitImage) Run()
    {
        using var platform = new Platform(new PlatformOptions { MemorySize = 4 * Sizes.GiB });
        PciBus pci = platform.AddPciBus(segment: 0);
        var unit = new VtdUnit(platform.Memory, VtdConfig.ScalableMode48Bit);
        pci.AddDmaRemapper(unit, includeAll: true);
        var driver = new IntelIommu(platform, unit);
        pci.SetIommuOps(driver).ThrowIfError();
        PciDevice dev = pci.AddDevice(new PciDeviceSpec("0000:01:00.0"));        // requester 0x0100
        IDomain domain = platform.Iommu.DomainAlloc(pci)!;
        platform.Iommu.AttachDevice(domain, dev).ThrowIfError();
        platform.Iommu.Map(domain, 0x1000_0000, 0x8000_0000, Sizes.Page, IommuProt.Read | IommuProt.Write).ThrowIfError();

        // snippet-begin: vtd-image
        VtdImage img = driver.ExportImage();            // IntelIommu: unit 0 (or ExportImage(unitIndex))
        VtdImage img2 = unit.ExportImage();             // VtdUnit: the root table latched by SRTP, GSTS.TES
        VtdImage small = img.Relocate(0x100_0000, 32 << 20);   // move every structure into a window
        VtdImage probed = small.Probe(unit.Config, [new VtdProbe(0x0100, null, 0x1000_0000, DmaAccess.Write)], memorySize: 256 << 20);
        string json = probed.ToJson();                  // VtdImageJson.ToJson / VtdImageJson.FromJson
        // snippet-end: vtd-image
        return (img, probed, VtdImageJson.FromJson(json), img2);
    }
}
