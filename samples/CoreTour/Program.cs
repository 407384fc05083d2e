using CoreTour;
using Iommu;
using Iommu.Devices;
using Iommu.Domains;
using Iommu.Groups;

// A short tour of the IOMMU core (Iommu.Core). Step 0 is the README quick start on the VT-d model
// and driver; the later steps use a teaching driver (ToyIommu) that records what the core asks of
// it. The full tour (mdevs, type1, DMA, faults) is samples/AuxDomainTour.
if (args.Contains("--help"))
{
    Console.WriteLine("CoreTour: walks the Linux IOMMU core API (groups, attach, iommu_map splitting, unmap, aux domains, errno).");
    Console.WriteLine("Usage: dotnet run --project samples/CoreTour [--help]");
    return 0;
}

int failures = 0;
void Expect(bool ok, string what)
{
    Console.WriteLine($"  [{(ok ? "ok" : "UNEXPECTED")}] {what}");
    failures += ok ? 0 : 1;
}

Console.WriteLine("== 0. Quick start (README)");
(uint qsPasid, DmaResult qsOk, DmaResult qsFault) = QuickStart.Run();
Expect(qsPasid == 1 && qsOk.IsOk && qsOk.Address == 0x2_0000_0040, "the aux domain got PASID 1 and the ADI's DMA landed at 0x200000040");
Expect(qsFault.Status == DmaStatus.Fault && qsFault.FaultReason.Code == 0x85, $"DMA to an unmapped IOVA faulted: {qsFault.FaultReason}, a scalable-mode write without write permission (SGN.6)");

using var platform = new Platform(new PlatformOptions { MemorySize = 16 * Sizes.GiB });
PciBus pci = platform.AddPciBus();
IommuCore iommu = platform.Iommu;
var toy = new ToyIommu(iommu);

Console.WriteLine();
Console.WriteLine("== 1. Devices and IOMMU groups (pci_device_group)");
PciDevice siov = pci.AddDevice(new PciDeviceSpec("0000:00:02.0") { PasidWidth = 20, ScalableIov = true, Acs = true });
PciDevice nic0 = pci.AddDevice(new PciDeviceSpec("0000:00:03.0") { Multifunction = true });
PciDevice nic1 = pci.AddDevice(new PciDeviceSpec("0000:00:03.1") { Multifunction = true });
PciDevice port = pci.AddDevice(new PciDeviceSpec("0000:00:1c.0") { IsBridge = true, Acs = true });
PciDevice bridge = pci.AddDevice(new PciDeviceSpec("0000:01:00.0") { IsPcieToPciBridge = true, Upstream = port.Address, Acs = true });
PciDevice legacy = pci.AddDevice(new PciDeviceSpec("0000:02:05.0") { Upstream = bridge.Address });
pci.SetIommuOps(toy).ThrowIfError();
Console.WriteLine($"  {"device",-14} {"group",5}  why");
foreach (PciDevice d in new[] { siov, nic0, nic1, port, bridge, legacy })
{
    string why = d == nic0 || d == nic1 ? "multifunction without ACS" : d == legacy ? "behind the PCIe-to-PCI bridge" : d == bridge ? "PCIe-to-PCI bridge" : "isolated";
    Console.WriteLine($"  {d.Name,-14} {d.IommuGroup!.Id,5}  {why}");
}

Expect(nic0.IommuGroup == nic1.IommuGroup && legacy.IommuGroup == bridge.IommuGroup && siov.IommuGroup != nic0.IommuGroup, "groups follow the kernel's isolation rules");

Console.WriteLine();
Console.WriteLine("== 2. Attach an UNMANAGED domain (what VFIO does)");
IDomain dom = iommu.DomainAlloc(pci)!;
Errno multi = iommu.AttachDevice(dom, nic0);
Expect(multi == Errno.EINVAL, $"iommu_attach_device on a 2-device group -> -{multi}");
Expect(iommu.AttachGroup(dom, nic0.IommuGroup!) == Errno.None, "iommu_attach_group attaches both functions");
Expect(iommu.AttachGroup(dom, nic0.IommuGroup!) == Errno.EBUSY, "attaching again while not on the default domain -> -EBUSY");

Console.WriteLine();
Console.WriteLine("== 3. iommu_map splits into the largest pages alignment allows (5.15 iommu_pgsize)");
toy.Calls.Clear();
iommu.Map(dom, iova: 0x1000, paddr: 0x20_1000, size: 4 * Sizes.MiB, IommuProt.Read | IommuProt.Write).ThrowIfError();
toy.Calls.ForEach(c => Console.WriteLine($"  driver: {c}"));
Expect(toy.Calls.SequenceEqual(["map_pages(iova=0x1000, pgsize=4K, count=511)", "map_pages(iova=0x200000, pgsize=2M, count=1)", "map_pages(iova=0x400000, pgsize=4K, count=1)"]), "511 x 4K, 1 x 2M, 1 x 4K");
Expect(iommu.IovaToPhys(dom, 0x20_0abc) == 0x40_0abc, "iova_to_phys keeps the offset inside the 2M page");

toy.Calls.Clear();
ulong unmapped = iommu.Unmap(dom, 0x20_0000, Sizes.Page);
Console.WriteLine($"  iommu_unmap(0x200000, 4K) returned 0x{unmapped:x}");
Expect(unmapped == 2 * Sizes.MiB, "unmapping 4K of a 2M page removes the whole page (returns more than asked)");

try
{
    iommu.Map(dom, 0x800, 0x800, Sizes.Page, IommuProt.Read).ThrowIfError();
    Expect(false, "unaligned map must fail");
}
catch (IommuException e)
{
    Console.WriteLine($"  {e.Message}");
    Expect(e.Errno == Errno.EINVAL, "unaligned map -> -EINVAL, and the message names the range");
}

iommu.DetachGroup(dom, nic0.IommuGroup!);
Expect(nic0.IommuGroup!.Domain == nic0.IommuGroup.DefaultDomain, "detach puts the group back on its default domain");

Console.WriteLine();
Console.WriteLine("== 4. Auxiliary domains on a Scalable-IOV parent (the 2018 seed API)");
iommu.GetDevAttr(siov, IommuDevAttr.AuxdCapability, out bool capable).ThrowIfError();
Expect(capable, $"IOMMU_DEV_ATTR_AUXD_CAPABILITY of {siov.Name} = {capable}");
iommu.GetDevAttr(nic0, IommuDevAttr.AuxdCapability, out bool nicCapable).ThrowIfError();
Expect(!nicCapable, $"IOMMU_DEV_ATTR_AUXD_CAPABILITY of {nic0.Name} (no PASID) = {nicCapable}");
iommu.SetDevAttr(siov, IommuDevAttr.AuxdEnable).ThrowIfError();
var guests = new List<IDomain>();
for (int i = 0; i < 3; i++)
{
    IDomain g = iommu.DomainAlloc(pci)!;
    iommu.AttachDeviceAux(g, siov).ThrowIfError();
    iommu.DomainGetAttr(g, DomainAttr.AuxdId, out uint pasid).ThrowIfError();
    Console.WriteLine($"  aux domain {i}: PASID {pasid} (iommu_aux_get_pasid agrees: {iommu.AuxGetPasid(g, siov)})");
    guests.Add(g);
}

Expect(siov.IommuGroup!.Domain == siov.IommuGroup.DefaultDomain, "aux attach bypasses the group: its domain is unchanged");
Errno rid = iommu.AttachDevice(guests[0], siov);
Expect(rid == Errno.EPERM, $"normal attach of an UNMANAGED domain to an aux-mode device -> -{rid}");

Console.WriteLine();
Console.WriteLine(failures == 0 ? "All steps behaved as the kernel does." : $"{failures} step(s) did not behave as expected.");
return failures == 0 ? 0 : 1;
