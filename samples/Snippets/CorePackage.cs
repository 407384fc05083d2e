// snippet-begin: iommu-core-package
using Iommu;
using Iommu.Devices;
using Iommu.Domains;
using Iommu.VtD.Driver;     // from the Iommu.VtD package
using Iommu.VtD.Hardware;
// snippet-end: iommu-core-package

namespace Snippets;

/// <summary>src/Iommu.Core/PACKAGE.md.</summary>
internal static class CorePackage
{
    public static DmaResult Run()
    {
        // snippet-begin: iommu-core-package
        using var platform = new Platform(new PlatformOptions { MemorySize = 64 * Sizes.GiB });
        PciBus pci = platform.AddPciBus(segment: 0);
        var dmar = new VtdUnit(platform.Memory, VtdConfig.ScalableMode48Bit);
        pci.AddDmaRemapper(dmar, includeAll: true);
        pci.SetIommuOps(new IntelIommu(platform, dmar)).ThrowIfError();        // bus_set_iommu()
        PciDevice dev = pci.AddDevice(new PciDeviceSpec("0000:00:02.0") { PasidWidth = 20, ScalableIov = true });

        IommuCore iommu = platform.Iommu;
        iommu.DevEnableFeature(dev, IommuDevFeature.Aux).ThrowIfError();       // iommu_dev_enable_feature()
        IDomain domain = iommu.DomainAlloc(pci) ?? throw new InvalidOperationException("no domain");
        iommu.AuxAttachDevice(domain, dev).ThrowIfError();                     // iommu_aux_attach_device()
        uint pasid = (uint)iommu.AuxGetPasid(domain, dev);                     // iommu_aux_get_pasid()
        iommu.Map(domain, iova: 0x1000_0000, paddr: 0x2_0000_0000, size: 2 * Sizes.MiB,
                  IommuProt.Read | IommuProt.Write).ThrowIfError();
        DmaResult ok = dev.DmaWrite(pasid, iova: 0x1000_0040, "hello"u8);     // lands at 0x2_0000_0040
        // snippet-end: iommu-core-package
        return ok;
    }
}
