// The package consumer check run by eng/check-packages.sh (from .ci/run): copied into a throwaway
// console project outside the repository that references the five packages from a local folder,
// it runs the README quick start and exits non-zero when the DMA did not land where it should.
// It is not part of Iommu.sln and is not built with the repository's Directory.Build.props.
using Iommu;
using Iommu.Devices;
using Iommu.Domains;
using Iommu.Mm;
using Iommu.VtD.Driver;
using Iommu.VtD.Hardware;
using Uacce;
using Vfio.Mdev;
using Vfio.Type1;
using Vfio.Type1.Memory;

int failures = 0;
void Check(bool ok, string what)
{
    Console.WriteLine($"{(ok ? "ok  " : "FAIL")} {what}");
    if (!ok)
    {
        failures++;
    }
}

// The README quick start (samples/CoreTour/QuickStart.cs), against the packages.
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

Check(pasid > 0, $"aux domain PASID {pasid} > 0");
Check(ok.Status == DmaStatus.Ok && ok.Address == 0x2_0000_0040, $"DMA write translated to 0x{ok.Address:x} (expected 0x200000040)");
byte[] landed = new byte[5];
platform.Memory.Read(0x2_0000_0040, landed);
Check(landed.AsSpan().SequenceEqual("hello"u8), $"physical 0x200000040 holds \"{System.Text.Encoding.ASCII.GetString(landed)}\"");
Check(fault.Status == DmaStatus.Fault, $"unmapped IOVA faults ({fault.Status})");

// The Iommu.VtD PACKAGE.md snippet: a plain (non-aux) domain, DMA without a PASID.
PciDevice dev = pci.AddDevice(new PciDeviceSpec("0000:00:03.0"));
IDomain plain = platform.Iommu.DomainAlloc(pci)!;
platform.Iommu.AttachDevice(plain, dev).ThrowIfError();
platform.Iommu.Map(plain, 0x1000, 0x8000_0000, Sizes.Page, IommuProt.Read | IommuProt.Write).ThrowIfError();
DmaResult hi = dev.DmaWrite(null, 0x1010, "hi"u8);
DmaResult no = dev.DmaWrite(null, 0x9000, "no"u8);
Check(hi.Status == DmaStatus.Ok && hi.Address == 0x8000_0010, $"RID DMA translated to 0x{hi.Address:x} (expected 0x80000010)");
Check(no.Status == DmaStatus.Fault, $"unmapped RID DMA faults ({no.Status})");

// The VFIO packages load and set up against the same platform.
var mdev = new MdevCore(platform);
var vfio = new VfioCore(platform);
var qemu = new ProcessAddressSpace(HostPageAllocator.ForPlatform(platform), "qemu");
VfioContainer container = vfio.OpenContainer(qemu, out int fd);
Check(mdev.Parents.Count == 0 && container.Backend is null && fd >= 0, $"Vfio.Mdev and Vfio.Type1: container fd {fd}, no backend before VFIO_SET_IOMMU");

// The Uacce package: a device without SVA on this plain platform gets PASID 0 queues.
var uacce = new UacceCore(platform);
Check(uacce.Devices.Count == 0 && UacceCommands.StartQ == 0x5700, "Uacce: no device registered, UACCE_CMD_START_Q = 0x5700");

Console.WriteLine(failures == 0 ? "package consumer check passed" : $"package consumer check: {failures} failure(s)");
return failures == 0 ? 0 : 1;
