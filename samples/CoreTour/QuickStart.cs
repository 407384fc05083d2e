using Iommu;
using Iommu.Devices;
using Iommu.Domains;
using Iommu.VtD.Driver;
using Iommu.VtD.Hardware;

namespace CoreTour;

/// <summary>The README's quick start, kept here so that it compiles and runs (a test checks the README copy).</summary>
internal static class QuickStart
{
    public static (uint Pasid, DmaResult Ok, DmaResult Fault) Run()
    {
        // snippet-begin: quick-start
        using var platform = new Platform(new PlatformOptions { MemorySize = 64 * Sizes.GiB });
        PciBus pci = platform.AddPciBus(segment: 0);
        var dmar = new VtdUnit(platform.Memory, VtdConfig.ScalableMode48Bit);  // the hardware
        pci.AddDmaRemapper(dmar, includeAll: true);                             // its DRHD scope
        pci.SetIommuOps(new IntelIommu(platform, dmar)).ThrowIfError();         // bus_set_iommu()
        PciDevice parent = pci.AddDevice(new PciDeviceSpec("0000:00:02.0") { PasidWidth = 20, ScalableIov = true });
        IommuCore iommu = platform.Iommu;                                       // the kernel-named API

        iommu.SetDevAttr(parent, IommuDevAttr.AuxdEnable).ThrowIfError();
        IDomain domain = iommu.DomainAlloc(pci) ?? throw new InvalidOperationException("no domain");
        iommu.AttachDeviceAux(domain, parent).ThrowIfError();                   // iommu_attach_device_aux()
        iommu.DomainGetAttr(domain, DomainAttr.AuxdId, out uint pasid).ThrowIfError();
        iommu.Map(domain, iova: 0x1000_0000, paddr: 0x2_0000_0000, size: 2 * Sizes.MiB,
                  IommuProt.Read | IommuProt.Write).ThrowIfError();

        DmaResult ok = parent.DmaWrite(pasid, iova: 0x1000_0040, "hello"u8);    // translated by the VT-d model
        DmaResult fault = parent.DmaWrite(pasid, iova: 0x7000_0000, "oops"u8);  // unmapped: a VT-d fault
        Console.WriteLine($"PASID {pasid}: {ok.Status} at 0x{ok.Address:x}; unmapped: {fault.Status} (reason {fault.FaultReason})");
        // snippet-end: quick-start
        return (pasid, ok, fault);
    }
}
