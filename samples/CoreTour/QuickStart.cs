using Iommu;
using Iommu.Devices;
using Iommu.Domains;

namespace CoreTour;

/// <summary>The README's quick start, kept here so that it compiles and runs (a test checks the README copy).</summary>
internal static class QuickStart
{
    public static (uint Pasid, ulong Phys) Run()
    {
        // quick-start-begin
        using var platform = new Platform(new PlatformOptions { MemorySize = 64 * Sizes.GiB });
        PciBus pci = platform.AddPciBus(segment: 0);
        IommuCore iommu = platform.Iommu;                         // the kernel-named API
        pci.SetIommuOps(new ToyIommu(iommu)).ThrowIfError();      // bus_set_iommu(); Iommu.VtD's IntelIommu in real use
        PciDevice parent = pci.AddDevice(new PciDeviceSpec("0000:00:02.0") { PasidWidth = 20, ScalableIov = true });

        iommu.GetDevAttr(parent, IommuDevAttr.AuxdCapability, out bool capable).ThrowIfError();
        iommu.SetDevAttr(parent, IommuDevAttr.AuxdEnable).ThrowIfError();
        IDomain domain = iommu.DomainAlloc(pci) ?? throw new InvalidOperationException("no domain");
        iommu.AttachDeviceAux(domain, parent).ThrowIfError();     // iommu_attach_device_aux()
        iommu.DomainGetAttr(domain, DomainAttr.AuxdId, out uint pasid).ThrowIfError();

        iommu.Map(domain, iova: 0x1000_0000, paddr: 0x2_0000_0000, size: 2 * Sizes.MiB,
                  IommuProt.Read | IommuProt.Write).ThrowIfError();
        ulong phys = iommu.IovaToPhys(domain, 0x1000_0042);      // 0x2_0000_0042
        Console.WriteLine($"capable={capable} pasid={pasid} iova 0x10000042 -> 0x{phys:x}");
        // quick-start-end
        return (pasid, phys);
    }
}
