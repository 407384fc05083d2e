using Iommu.Memory;
using Iommu.Devices;
using Iommu.Domains;

namespace Iommu;

public sealed partial class IommuCore
{
    /// <summary>
    /// Attaches <paramref name="domain"/> to <paramref name="device"/> as an auxiliary domain (the seed's
    /// <c>iommu_attach_device_aux</c>). Bypasses the group: no group lock, no single-device check, no
    /// change of the group's domain.
    /// </summary>
    /// <param name="domain">The domain.</param>
    /// <param name="device">The physical (parent) device.</param>
    /// <returns>-ENODEV when the domain's driver has no <c>aux_attach_dev</c>; else the driver's result.</returns>
    /// <exception cref="ObjectDisposedException">The domain was freed (<see cref="DomainFree"/>).</exception>
    [KernelSymbol("iommu_attach_device_aux", Version = "seed v4")]
    public Errno AttachDeviceAux(IDomain domain, Device device)
    {
        using PhysicalMemory.AccessScope guard = Platform.Memory.EnterAccess();
        ArgumentNullException.ThrowIfNull(domain);
        ThrowIfFreed(domain);
        using DomainUse use = new(guard, domain);
        ArgumentNullException.ThrowIfNull(device);
        if (domain.Ops is not IIommuAuxOps ops)
        {
            return Fail(Errno.ENODEV, $"the domain's IOMMU driver has no auxiliary-domain support ({device.Name})");
        }

        ErrorDetail.Clear();
        Errno ret = ops.AuxAttachDev(domain, device);
        return ret == Errno.None ? ret : KeepOrFail(ret, $"IOMMU driver refused the auxiliary attach to {device.Name}");
    }

    /// <summary>Detaches an auxiliary domain (the seed's <c>iommu_detach_device_aux</c>); a no-op without the driver callback.</summary>
    /// <param name="domain">The domain.</param>
    /// <param name="device">The physical device.</param>
    [KernelSymbol("iommu_detach_device_aux", Version = "seed v4")]
    public void DetachDeviceAux(IDomain domain, Device device)
    {
        using PhysicalMemory.AccessScope guard = Platform.Memory.EnterAccess();
        ArgumentNullException.ThrowIfNull(domain);
        ArgumentNullException.ThrowIfNull(device);
        if (domain.Ops is IIommuAuxOps ops)
        {
            ops.AuxDetachDev(domain, device);
        }
    }

    /// <summary>The 5.1 merged name of <see cref="AttachDeviceAux"/> (<c>iommu_aux_attach_device</c>).</summary>
    /// <param name="domain">The domain.</param>
    /// <param name="device">The physical device.</param>
    /// <returns>As <see cref="AttachDeviceAux"/>.</returns>
    [KernelSymbol("iommu_aux_attach_device")]
    public Errno AuxAttachDevice(IDomain domain, Device device) => AttachDeviceAux(domain, device);

    /// <summary>The 5.1 merged name of <see cref="DetachDeviceAux"/> (<c>iommu_aux_detach_device</c>).</summary>
    /// <param name="domain">The domain.</param>
    /// <param name="device">The physical device.</param>
    [KernelSymbol("iommu_aux_detach_device")]
    public void AuxDetachDevice(IDomain domain, Device device) => DetachDeviceAux(domain, device);

    /// <summary>The PASID <paramref name="domain"/> uses on <paramref name="device"/> (<c>iommu_aux_get_pasid</c>).</summary>
    /// <param name="domain">The domain.</param>
    /// <param name="device">The physical device.</param>
    /// <returns>The PASID (&gt; 0), or -ENODEV without the driver callback, or the driver's negative errno.</returns>
    [KernelSymbol("iommu_aux_get_pasid")]
    public int AuxGetPasid(IDomain domain, Device device)
    {
        using PhysicalMemory.AccessScope guard = Platform.Memory.EnterAccess();
        ArgumentNullException.ThrowIfNull(domain);
        ArgumentNullException.ThrowIfNull(device);
        if (domain.Ops is not IIommuAuxOps ops)
        {
            return Fail(Errno.ENODEV, $"the domain's IOMMU driver has no aux_get_pasid ({device.Name})").ToKernelReturn();
        }

        return ops.AuxGetPasid(domain, device);
    }
}
