using Iommu.Devices;
using Iommu.Mm;

namespace Iommu;

/// <summary>
/// A bind of a process to a device (<c>struct iommu_sva</c>): what <see cref="IommuCore.SvaBindDevice"/>
/// returns and <see cref="IommuCore.SvaUnbindDevice"/> takes. Drivers derive their per-(mm, device) state from it.
/// </summary>
[KernelSymbol("struct iommu_sva")]
public abstract class IommuSva
{
    /// <summary>Creates the handle of a bind.</summary>
    /// <param name="device">The bound device.</param>
    /// <param name="mm">The bound process.</param>
    protected IommuSva(Device device, ProcessAddressSpace mm)
    {
        ArgumentNullException.ThrowIfNull(device);
        ArgumentNullException.ThrowIfNull(mm);
        Device = device;
        Mm = mm;
    }

    /// <summary>The bound device (<c>iommu_sva.dev</c>).</summary>
    public Device Device { get; }

    /// <summary>The bound process.</summary>
    public ProcessAddressSpace Mm { get; }
}
