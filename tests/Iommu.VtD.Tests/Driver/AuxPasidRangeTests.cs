using Iommu.Devices;
using Iommu.Domains;
using Iommu.VtD.Hardware;
using static Iommu.VtD.Tests.Driver.DriverTestKit;

namespace Iommu.VtD.Tests.Driver;

/// <summary>
/// Edges of the PASID-related public API (aux domains, PASID attach, global PASIDs, SVA) where the model
/// deliberately differs from the kernel it follows.
/// </summary>
public sealed class AuxPasidRangeTests
{
    // 5.15 aux_domain_add_dev allocates the domain's default PASID with ioasid_alloc(NULL, PASID_MIN,
    // pci_max_pasids(pdev) - 1, NULL): bounded by the device's PASID capability only. Its PASID table is sized from
    // min(device, 2 << ECAP.PSS) rounded up to a page of directory entries (intel_pasid_alloc_table), so on a unit
    // with 5-bit PASIDs 5.15 would attach PASID 32 and program its entry, and the hardware would refuse every DMA
    // with it (ECAP.PSS: a PASID beyond the supported width is an error). We stop the range at the unit's limit, as
    // iommu_alloc_global_pasid does: -ENODEV naming the range actually searched, nothing attached, and the attach
    // succeeds once a PASID inside it is free.
    [Fact]
    public void Aux_attach_draws_its_pasid_only_from_pasids_the_unit_carries()
    {
        using var f = new DriverBed(VtdConfig.ScalableMode48Bit with { PasidWidth = 5 }, memory: SmallMemory); // 2 << PSS = 32
        PciDevice parent = f.AuxParent("0000:00:04.0", pasidWidth: 20);
        PciDevice other = f.AddDevice("0000:00:02.0", pasidWidth: 20);

        // Another user holds every PASID the unit carries.
        for (uint want = 1; want < 32; want++)
        {
            Assert.Equal(want, f.Iommu.AllocGlobalPasid(other));
        }

        IDomain d = f.Unmanaged();
        Assert.Equal(Errno.None, f.Iommu.Map(d, 0x4000_0000, 0x1_4000_0000, M2, RW));

        Assert.Equal(Errno.ENODEV, f.Iommu.AuxAttachDevice(d, parent));
        Assert.Contains("[1, 0x1f]", ErrorDetail.LastMessage, StringComparison.Ordinal);
        Assert.Equal(-22, f.Iommu.AuxGetPasid(d, parent)); // -EINVAL: no default PASID

        f.Iommu.FreeGlobalPasid(17);
        Assert.Equal(Errno.None, f.Iommu.AuxAttachDevice(d, parent));
        Assert.Equal(17, f.Iommu.AuxGetPasid(d, parent));
    }
}
