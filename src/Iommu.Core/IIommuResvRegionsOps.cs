using Iommu.Devices;
using Iommu.Domains;

namespace Iommu;

/// <summary>The optional <c>get_resv_regions</c> callback of <see cref="IIommuOps"/>: without it a device has no reserved regions.</summary>
public interface IIommuResvRegionsOps
{
    /// <summary>Adds the device's reserved IOVA regions to <paramref name="regions"/> (<c>get_resv_regions</c>).</summary>
    /// <param name="device">The device.</param>
    /// <param name="regions">Where to add them.</param>
    [KernelSymbol("iommu_ops.get_resv_regions")]
    void GetResvRegions(Device device, IList<IommuResvRegion> regions);
}
