// Runs every PACKAGE.md snippet and checks what it did; exits 1 when one did not behave as its text says.
using Iommu.Devices;
using Snippets;

int failures = 0;
void Check(bool ok, string what)
{
    Console.WriteLine($"{(ok ? "ok  " : "FAIL")} {what}");
    failures += ok ? 0 : 1;
}

DmaResult core = CorePackage.Run();
Check(core.Status == DmaStatus.Ok && core.Address == 0x2_0000_0040, $"Iommu.Core: aux-domain DMA at 0x{core.Address:x}");

(DmaResult ok, DmaResult fault) = VtdPackage.Run();
Check(ok.Status == DmaStatus.Ok && ok.Address == 0x8000_0010, $"Iommu.VtD: DMA at 0x{ok.Address:x}");
Check(fault.Status == DmaStatus.Fault, $"Iommu.VtD: unmapped DMA {fault.Status}");

(Vfio.Mdev.MdevDevice mdev, Device? iommuDevice) = MdevPackage.Run();
Check(iommuDevice?.Name == "0000:00:04.0" && mdev.IommuGroup is not null, $"Vfio.Mdev: {mdev.Name} has IOMMU device {iommuDevice?.Name}");

(DmaResult dma, byte[] seen) = Type1Package.Run();
Check(dma.Status == DmaStatus.Ok && System.Text.Encoding.ASCII.GetString(seen) == "to guest RAM", $"Vfio.Type1: DMA {dma.Status}, guest memory holds \"{System.Text.Encoding.ASCII.GetString(seen)}\"");

(Uacce.UacceDeviceFlags flags, DmaResult sva, ulong cpuPa) = UaccePackage.Run();
Check(flags == Uacce.UacceDeviceFlags.Sva && sva.Status == DmaStatus.Ok && sva.Address == cpuPa, $"Uacce: SVA {flags}, DMA {sva.Status} at 0x{sva.Address:x} (CPU page 0x{cpuPa:x})");

Console.WriteLine(failures == 0 ? "every snippet behaved" : $"{failures} snippet check(s) failed");
return failures == 0 ? 0 : 1;
