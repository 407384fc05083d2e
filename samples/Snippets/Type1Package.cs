// snippet-begin: vfio-type1-package
using Iommu;
using Iommu.Devices;
using Iommu.Mm;
using Iommu.VtD.Driver;
using Iommu.VtD.Hardware;
using Vfio.Type1;
using Vfio.Type1.Uapi;
// snippet-end: vfio-type1-package

namespace Snippets;

/// <summary>src/Vfio.Type1/PACKAGE.md.</summary>
internal static class Type1Package
{
    public static (DmaResult Dma, byte[] Seen) Run()
    {
        // snippet-begin: vfio-type1-package
        using var platform = new Platform(new PlatformOptions { MemorySize = 64 * Sizes.GiB });
        PciBus pci = platform.AddPciBus(segment: 0);
        var dmar = new VtdUnit(platform.Memory, VtdConfig.ScalableMode48Bit);   // remaps interrupts (ECAP.IR)
        pci.AddDmaRemapper(dmar, includeAll: true);
        pci.SetIommuOps(new IntelIommu(platform, dmar)).ThrowIfError();
        PciDevice nic = pci.AddDevice(new PciDeviceSpec("0000:00:03.0"));

        var vfio = new VfioCore(platform);                                    // default options, as on a host
        var qemu = new ProcessAddressSpace(HostPageAllocator.ForPlatform(platform), "qemu");
        VfioContainer container = vfio.OpenContainer(qemu, out _);           // open("/dev/vfio/vfio")

        vfio.RegisterDevice(nic).ThrowIfError();                              // bound to vfio-pci
        vfio.OpenGroup(qemu, nic.IommuGroup!.Id, out VfioGroup? group, out _).ThrowIfError();  // open("/dev/vfio/N")
        group!.SetContainer(container).ThrowIfError();                        // VFIO_GROUP_SET_CONTAINER
        container.SetIommu(VfioUapi.VFIO_TYPE1v2_IOMMU).ThrowIfError();       // VFIO_SET_IOMMU

        ulong ram = qemu.Mmap(1 * Sizes.MiB);
        container.MapDma(new VfioIommuType1DmaMap(32,
            VfioUapi.VFIO_DMA_MAP_FLAG_READ | VfioUapi.VFIO_DMA_MAP_FLAG_WRITE,
            ram, 0x10_0000, 1 * Sizes.MiB)).ThrowIfError();                   // VFIO_IOMMU_MAP_DMA
        DmaResult dma = nic.DmaWrite(null, 0x10_0040, "to guest RAM"u8);      // lands in qemu's memory at ram + 0x40
        // snippet-end: vfio-type1-package
        byte[] seen = new byte[12];
        qemu.Read(ram + 0x40, seen).ThrowIfError();
        return (dma, seen);
    }
}
