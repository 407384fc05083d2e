using Iommu.Devices;
using Iommu.Domains;
using static Iommu.VtD.Tests.Driver.DriverTestKit;

namespace Iommu.VtD.Tests.Driver;

/// <summary>
/// A device probed into a group that is attached to a domain other than its default one (a function hot-added to a
/// multifunction device whose group a VM owns). 5.15's <c>iommu_probe_device</c> attaches the default domain after
/// <c>iommu_group_add_device</c> attached the group's domain, so the new function DMAs through the host's DMA domain
/// apart from its group; later kernels keep it in the group's domain, and so do we.
/// </summary>
public sealed class ProbeIntoAttachedGroupTests
{
    [Theory]
    [InlineData("Legacy48")]
    [InlineData("Sm48")]
    public void A_function_added_to_a_group_attached_elsewhere_joins_the_group_s_domain_not_the_host_s(string config)
    {
        using var f = new DriverBed(Config(config), memory: SmallMemory);
        PciDevice a = f.Pci.AddDevice(new PciDeviceSpec("0000:00:06.0") { Multifunction = true });
        PciDevice b = f.Pci.AddDevice(new PciDeviceSpec("0000:00:06.1") { Multifunction = true });
        Assert.Same(a.IommuGroup, b.IommuGroup);
        f.Pci.RemoveDevice(b);

        IDomain vm = f.Unmanaged();
        Assert.Equal(Errno.None, f.Iommu.AttachGroup(vm, a.IommuGroup!));
        Assert.Equal(Errno.None, f.Iommu.Map(vm, 0x10_0000, 0x3000_0000, 0x1000, IommuProt.Read | IommuProt.Write));
        ulong host = f.Iommu.DmaMapPage(a, 0x5000_0000, 0x1000, DmaDataDirection.Bidirectional); // a host DMA mapping in the default domain

        b = f.Pci.AddDevice(new PciDeviceSpec("0000:00:06.1") { Multifunction = true });

        Assert.Same(vm, b.IommuGroup!.Domain);
        f.AssertDma(b, null, 0x10_0000, 0x3000_0000, "the new function reaches the group's domain");
        f.AssertDma(b, null, host, 0, "and not the host's DMA mapping");

        // Back to the default domain with the whole group.
        f.Iommu.DetachGroup(vm, a.IommuGroup!);
        f.AssertDma(b, null, host, 0x5000_0000, "after the group's detach");
        f.AssertDma(b, null, 0x10_0000, 0);
    }
}
