using Iommu.Memory;
using Iommu.Devices;
using Iommu.Domains;

namespace Iommu;

public sealed partial class IommuCore
{
    /// <summary>
    /// Reads a per-device attribute (the seed's <c>iommu_get_dev_attr</c>):
    /// <see cref="IommuDevAttr.AuxdCapability"/> or <see cref="IommuDevAttr.AuxdEnabled"/>.
    /// </summary>
    /// <param name="device">The physical device (never the mdev).</param>
    /// <param name="attr">A GET attribute.</param>
    /// <param name="value">The value (false on error).</param>
    /// <returns>-ENODEV when the device's bus has no IOMMU ops or the driver has no <c>get_dev_attr</c>; -EINVAL for a SET attribute; else the driver's result.</returns>
    /// <remarks>
    /// Seed v4: dispatches through <c>dev->bus->iommu_ops</c>. The attribute direction is checked by
    /// the core: the seed's v4 cover letter describes the attributes, but its diffs were not found, so
    /// the split into GET and SET attributes is this model's reading of it.
    /// </remarks>
    [KernelSymbol("iommu_get_dev_attr", Version = "seed v4")]
    public Errno GetDevAttr(Device device, IommuDevAttr attr, out bool value)
    {
        using PhysicalMemory.AccessScope guard = Platform.Memory.EnterAccess();
        ArgumentNullException.ThrowIfNull(device);
        value = false;
        if (device.Bus?.IommuOps is not IIommuDevFeatureOps ops)
        {
            return Fail(Errno.ENODEV, $"no IOMMU driver answers device attributes for {device.Name}");
        }

        if (attr is not (IommuDevAttr.AuxdCapability or IommuDevAttr.AuxdEnabled))
        {
            return Fail(Errno.EINVAL, $"{attr} is not an attribute that can be read");
        }

        ErrorDetail.Clear();
        Errno ret = ops.GetDevAttr(device, attr, out value);
        if (ret != Errno.None)
        {
            value = false;
            return KeepOrFail(ret, $"IOMMU driver refused to read {attr} of {device.Name}");
        }

        return ret;
    }

    /// <summary>
    /// Changes a per-device attribute (the seed's <c>iommu_set_dev_attr</c>):
    /// <see cref="IommuDevAttr.AuxdEnable"/> or <see cref="IommuDevAttr.AuxdDisable"/>.
    /// </summary>
    /// <param name="device">The physical device.</param>
    /// <param name="attr">A SET attribute.</param>
    /// <returns>-ENODEV when there is no driver or no <c>set_dev_attr</c>; -EINVAL for a GET attribute; else the driver's result.</returns>
    [KernelSymbol("iommu_set_dev_attr", Version = "seed v4")]
    public Errno SetDevAttr(Device device, IommuDevAttr attr)
    {
        using PhysicalMemory.AccessScope guard = Platform.Memory.EnterAccess();
        ArgumentNullException.ThrowIfNull(device);
        if (device.Bus?.IommuOps is not IIommuDevFeatureOps ops)
        {
            return Fail(Errno.ENODEV, $"no IOMMU driver takes device attributes for {device.Name}");
        }

        if (attr is not (IommuDevAttr.AuxdEnable or IommuDevAttr.AuxdDisable))
        {
            return Fail(Errno.EINVAL, $"{attr} is not an attribute that can be set");
        }

        return CallSetDevAttr(ops, device, attr);
    }

    /// <summary>Whether the device and its IOMMU support <paramref name="feature"/> (<c>iommu_dev_has_feature</c>).</summary>
    /// <param name="device">The physical device.</param>
    /// <param name="feature">The feature.</param>
    /// <returns>False without a driver; for AUX the driver's AUXD_CAPABILITY; false for features the seed ops cannot express.</returns>
    /// <remarks>5.1–5.10 (removed in 5.15, where only the driver op remains). Dispatches like the 5.15 calls, through the driver that probed the device.</remarks>
    [KernelSymbol("iommu_dev_has_feature", Version = "5.10")]
    public bool DevHasFeature(Device device, IommuDevFeature feature)
    {
        using PhysicalMemory.AccessScope guard = Platform.Memory.EnterAccess();
        ArgumentNullException.ThrowIfNull(device);
        return feature == IommuDevFeature.Aux && device.IommuOps is IIommuDevFeatureOps ops
            && ops.GetDevAttr(device, IommuDevAttr.AuxdCapability, out bool v) == Errno.None && v;
    }

    /// <summary>Whether <paramref name="feature"/> is enabled on the device (<c>iommu_dev_feature_enabled</c>).</summary>
    /// <param name="device">The physical device.</param>
    /// <param name="feature">The feature.</param>
    /// <returns>False without a driver; for AUX the driver's AUXD_ENABLED.</returns>
    [KernelSymbol("iommu_dev_feature_enabled")]
    public bool DevFeatureEnabled(Device device, IommuDevFeature feature)
    {
        using PhysicalMemory.AccessScope guard = Platform.Memory.EnterAccess();
        ArgumentNullException.ThrowIfNull(device);
        return feature == IommuDevFeature.Aux && device.IommuOps is IIommuDevFeatureOps ops
            && ops.GetDevAttr(device, IommuDevAttr.AuxdEnabled, out bool v) == Errno.None && v;
    }

    /// <summary>Enables <paramref name="feature"/> (<c>iommu_dev_enable_feature</c>).</summary>
    /// <param name="device">The physical device.</param>
    /// <param name="feature">The feature.</param>
    /// <returns>-ENODEV without a driver (a device no IOMMU driver probed) or for an unknown feature; for AUX the driver's AUXD_ENABLE result; for SVA/IOPF (5.15) the driver's <see cref="IIommuSvaOps.SvaEnableFeature"/> result.</returns>
    /// <remarks>5.15 dispatches through the device's own IOMMU (<c>dev->iommu->iommu_dev->ops</c>); 5.10 through <c>dev->bus->iommu_ops</c>.</remarks>
    [KernelSymbol("iommu_dev_enable_feature")]
    public Errno DevEnableFeature(Device device, IommuDevFeature feature)
    {
        using PhysicalMemory.AccessScope guard = Platform.Memory.EnterAccess();
        ArgumentNullException.ThrowIfNull(device);
        if (feature is IommuDevFeature.Sva or IommuDevFeature.Iopf)
        {
            return device.IommuOps is IIommuSvaOps sva
                ? CallSvaFeature(sva.SvaEnableFeature, device, feature)
                : Fail(Errno.ENODEV, $"no IOMMU driver enables {feature} on {device.Name}");
        }

        if (device.IommuOps is not IIommuDevFeatureOps ops)
        {
            return Fail(Errno.ENODEV, $"no IOMMU driver probed {device.Name}");
        }

        return feature == IommuDevFeature.Aux
            ? CallSetDevAttr(ops, device, IommuDevAttr.AuxdEnable)
            : Fail(Errno.ENODEV, $"feature {feature} is not modelled for {device.Name}");
    }

    /// <summary>Disables <paramref name="feature"/> (<c>iommu_dev_disable_feature</c>).</summary>
    /// <param name="device">The physical device.</param>
    /// <param name="feature">The feature.</param>
    /// <returns>-EBUSY without a driver (the kernel's no-driver result); -ENODEV for an unknown feature; for AUX the driver's AUXD_DISABLE result; for SVA/IOPF the driver's <see cref="IIommuSvaOps.SvaDisableFeature"/> result.</returns>
    [KernelSymbol("iommu_dev_disable_feature")]
    public Errno DevDisableFeature(Device device, IommuDevFeature feature)
    {
        using PhysicalMemory.AccessScope guard = Platform.Memory.EnterAccess();
        ArgumentNullException.ThrowIfNull(device);
        if (feature is IommuDevFeature.Sva or IommuDevFeature.Iopf)
        {
            return device.IommuOps is IIommuSvaOps sva
                ? CallSvaFeature(sva.SvaDisableFeature, device, feature)
                : Fail(Errno.EBUSY, $"no IOMMU driver disables {feature} on {device.Name}");
        }

        if (device.IommuOps is not IIommuDevFeatureOps ops)
        {
            return Fail(Errno.EBUSY, $"no IOMMU driver probed {device.Name}");
        }

        return feature == IommuDevFeature.Aux
            ? CallSetDevAttr(ops, device, IommuDevAttr.AuxdDisable)
            : Fail(Errno.ENODEV, $"feature {feature} is not modelled for {device.Name}");
    }

    /// <summary>Reads <see cref="DomainAttr.Geometry"/> (<c>iommu_domain_get_attr(DOMAIN_ATTR_GEOMETRY)</c>).</summary>
    /// <param name="domain">The domain.</param>
    /// <param name="attr">Must be <see cref="DomainAttr.Geometry"/>.</param>
    /// <param name="geometry">A copy of the domain's geometry.</param>
    /// <returns>Always 0.</returns>
    /// <remarks>5.10 and the seed; 5.15 callers read <see cref="IDomain.Geometry"/> directly.</remarks>
    [KernelSymbol("iommu_domain_get_attr", Version = "5.10")]
    public Errno DomainGetAttr(IDomain domain, DomainAttr attr, out IommuDomainGeometry geometry)
    {
        using PhysicalMemory.AccessScope guard = Platform.Memory.EnterAccess();
        ArgumentNullException.ThrowIfNull(domain);
        if (attr != DomainAttr.Geometry)
        {
            throw new ArgumentException($"{attr} does not have a geometry value.", nameof(attr));
        }

        geometry = domain.Geometry;
        return Errno.None;
    }

    /// <summary>Reads a boolean domain attribute: <see cref="DomainAttr.Paging"/> (answered by the core) or a driver attribute such as <see cref="DomainAttr.Nesting"/>.</summary>
    /// <param name="domain">The domain.</param>
    /// <param name="attr">The attribute.</param>
    /// <param name="value">The value (false on error).</param>
    /// <returns>0; -EINVAL when the driver has no <c>domain_get_attr</c>; else the driver's result.</returns>
    [KernelSymbol("iommu_domain_get_attr", Version = "5.10")]
    public Errno DomainGetAttr(IDomain domain, DomainAttr attr, out bool value)
    {
        using PhysicalMemory.AccessScope guard = Platform.Memory.EnterAccess();
        ArgumentNullException.ThrowIfNull(domain);
        if (attr == DomainAttr.Geometry)
        {
            throw new ArgumentException("DOMAIN_ATTR_GEOMETRY has an IommuDomainGeometry value.", nameof(attr));
        }

        if (attr == DomainAttr.Paging)
        {
            value = domain.PgsizeBitmap != 0;
            return Errno.None;
        }

        Errno ret = DriverDomainAttr(domain, attr, out ulong raw);
        value = ret == Errno.None && raw != 0;
        return ret;
    }

    /// <summary>
    /// Reads a numeric domain attribute from the driver, notably the seed's
    /// <see cref="DomainAttr.AuxdId"/>: the PASID devices must tag DMA with for this auxiliary domain.
    /// </summary>
    /// <param name="domain">The domain.</param>
    /// <param name="attr">A driver attribute.</param>
    /// <param name="value">The value (0 on error).</param>
    /// <returns>-EINVAL when the driver has no <c>domain_get_attr</c>; else the driver's result (VT-d: -EINVAL before the first aux attach).</returns>
    [KernelSymbol("iommu_domain_get_attr", Version = "5.10")]
    public Errno DomainGetAttr(IDomain domain, DomainAttr attr, out uint value)
    {
        using PhysicalMemory.AccessScope guard = Platform.Memory.EnterAccess();
        ArgumentNullException.ThrowIfNull(domain);
        if (attr is DomainAttr.Geometry or DomainAttr.Paging)
        {
            throw new ArgumentException($"{attr} is not a numeric attribute.", nameof(attr));
        }

        Errno ret = DriverDomainAttr(domain, attr, out ulong raw);
        value = ret == Errno.None ? (uint)raw : 0;
        return ret;
    }

    private static Errno DriverDomainAttr(IDomain domain, DomainAttr attr, out ulong value)
    {
        value = 0;
        if (domain.Ops is not IIommuDomainAttrOps ops)
        {
            return Fail(Errno.EINVAL, $"the domain's IOMMU driver has no domain attributes ({attr})");
        }

        ErrorDetail.Clear();
        Errno ret = ops.DomainGetAttr(domain, attr, out value);
        if (ret != Errno.None)
        {
            value = 0;
            return KeepOrFail(ret, $"IOMMU driver has no value for {attr}");
        }

        return ret;
    }

    private static Errno CallSvaFeature(Func<Device, IommuDevFeature, Errno> op, Device device, IommuDevFeature feature)
    {
        ErrorDetail.Clear();
        Errno ret = op(device, feature);
        return ret == Errno.None ? ret : KeepOrFail(ret, $"IOMMU driver refused {feature} on {device.Name}");
    }

    private static Errno CallSetDevAttr(IIommuDevFeatureOps ops, Device device, IommuDevAttr attr)
    {
        ErrorDetail.Clear();
        Errno ret = ops.SetDevAttr(device, attr);
        return ret == Errno.None ? ret : KeepOrFail(ret, $"IOMMU driver refused {attr} on {device.Name}");
    }
}
