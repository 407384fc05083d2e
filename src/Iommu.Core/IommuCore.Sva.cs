using Iommu.Devices;
using Iommu.Groups;
using Iommu.Memory;
using Iommu.Mm;

namespace Iommu;

// Shared virtual addressing, 5.15 (iommu.c + iommu-sva-lib.c): one PASID per mm from the platform's
// PASID namespace (the one aux domains and AllocGlobalPasid share), referenced once per bind.
public sealed partial class IommuCore
{
    private readonly Dictionary<ProcessAddressSpace, (uint Pasid, int Refs)> _mmPasids = [];

    /// <summary>
    /// Binds <paramref name="mm"/> to <paramref name="device"/> (<c>iommu_sva_bind_device</c>): the device's
    /// requests with the mm's PASID are translated by the process's own page tables.
    /// </summary>
    /// <param name="device">The physical device.</param>
    /// <param name="mm">The process.</param>
    /// <param name="drvdata">Driver data passed to the driver (5.15: SVM flags; none is modelled).</param>
    /// <param name="handle">The bind, or null on failure. Binding a bound pair again returns the same handle.</param>
    /// <returns>
    /// 0; -ENODEV when the bus has no SVA-capable IOMMU driver or the device has no group; -EINVAL when the
    /// group holds more than one device or a PCI device has no PASID capability; the PASID allocator's
    /// -EOVERFLOW/-ENOMEM; else the driver's errno. Failures leave PASIDs, tables and the mm unchanged.
    /// </returns>
    /// <remarks>
    /// 5.15. As in 5.15 the core does not check that <see cref="IommuDevFeature.Sva"/> was enabled; without
    /// it the context entry has PASIDE=0 and the DMA faults. Model decision: the core allocates the mm's
    /// PASID (<c>iommu_sva_alloc_pasid(mm, 1, max − 1)</c>, which 5.15's <c>intel_svm_bind</c> calls first)
    /// and hands it to the driver; supervisor binds (<c>mm == NULL</c>, removed in 6.2) are not modelled.
    /// Deliberate difference: for a PCI device without a PASID capability 5.15 takes <c>pci_max_pasids</c>' -EINVAL
    /// as an unsigned PASID limit and binds a PASID the device can never send; the model refuses with that -EINVAL
    /// instead (6.2 and later refuse too, with -EOPNOTSUPP, when <c>max_pasids</c> is 0).
    /// </remarks>
    [KernelSymbol("iommu_sva_bind_device")]
    public Errno SvaBindDevice(Device device, ProcessAddressSpace mm, object? drvdata, out IommuSva? handle)
    {
        using PhysicalMemory.AccessScope guard = Platform.Memory.EnterAccess();
        ArgumentNullException.ThrowIfNull(device);
        ArgumentNullException.ThrowIfNull(mm);
        handle = null;
        if (device.Bus?.IommuOps is not IIommuSvaOps ops)
        {
            return Fail(Errno.ENODEV, $"no IOMMU driver binds processes to {device.Name} (sva_bind)");
        }

        IommuGroup? group = device.IommuGroup;
        if (group is null)
        {
            return Fail(Errno.ENODEV, $"{device.Name} has no IOMMU group");
        }

        lock (group.Mutex)
        {
            if (group.DeviceList.Count != 1)
            {
                return Fail(Errno.EINVAL, $"{group} holds {group.DeviceList.Count} devices; SVA needs a singleton group");
            }

            // intel_svm_bind: pci_max_pasids(dev), else intel_pasid_max_id (20 bits).
            int max = device is PciDevice pci ? (pci.HasPasidCapability ? pci.MaxPasids : -1) : Internal.PasidIda.MaxPasid;
            if (max < 0)
            {
                return Fail(Errno.EINVAL, $"{device.Name} has no PASID capability");
            }

            // The PASID comes back from under the table's lock: binds and unbinds of other groups
            // (other group mutexes) change the table meanwhile.
            Errno ret = SvaAllocPasid(mm, 1, (uint)max - 1, out uint pasid);
            if (ret != Errno.None)
            {
                return ret;
            }

            ErrorDetail.Clear();
            ret = ops.SvaBind(device, mm, pasid, drvdata, out handle);
            if (ret != Errno.None)
            {
                handle = null;
                SvaFreePasid(mm);
                return KeepOrFail(ret, $"IOMMU driver refused to bind {mm} to {device.Name}");
            }

            return Errno.None;
        }
    }

    /// <summary>Drops one bind (<c>iommu_sva_unbind_device</c>); the last bind of the pair tears its PASID entry down, the mm's last drops its PASID.</summary>
    /// <param name="handle">A handle from <see cref="SvaBindDevice"/>. A stale handle is ignored.</param>
    /// <remarks>5.15. The device must have stopped using the PASID (not enforced, as in the kernel).</remarks>
    [KernelSymbol("iommu_sva_unbind_device")]
    public void SvaUnbindDevice(IommuSva handle)
    {
        using PhysicalMemory.AccessScope guard = Platform.Memory.EnterAccess();
        ArgumentNullException.ThrowIfNull(handle);
        if (handle.Device.Bus?.IommuOps is not IIommuSvaOps ops || handle.Device.IommuGroup is not IommuGroup group)
        {
            return;
        }

        lock (group.Mutex)
        {
            if (ops.SvaUnbind(handle))
            {
                SvaFreePasid(handle.Mm);
            }
        }
    }

    /// <summary>The PASID of a bind (<c>iommu_sva_get_pasid</c>).</summary>
    /// <param name="handle">A handle from <see cref="SvaBindDevice"/>.</param>
    /// <returns>The mm's PASID, or <see cref="PasidInvalid"/> without a driver callback or for a handle no longer bound.</returns>
    [KernelSymbol("iommu_sva_get_pasid")]
    public uint SvaGetPasid(IommuSva handle)
    {
        using PhysicalMemory.AccessScope guard = Platform.Memory.EnterAccess();
        ArgumentNullException.ThrowIfNull(handle);
        return handle.Device.Bus?.IommuOps is IIommuSvaOps ops ? ops.SvaGetPasid(handle) : PasidInvalid;
    }

    // iommu_sva_alloc_pasid (5.15): reference the mm's PASID, or allocate the lowest free one in [min, max].
    private Errno SvaAllocPasid(ProcessAddressSpace mm, uint min, uint max, out uint pasid)
    {
        pasid = 0;
        if (min == 0 || max < min)
        {
            return Fail(Errno.EINVAL, $"PASID range [{min}, {max}] is invalid");
        }

        lock (_mmPasids)
        {
            if (_mmPasids.TryGetValue(mm, out (uint Pasid, int Refs) e))
            {
                if (e.Pasid < min || e.Pasid > max)
                {
                    return Fail(Errno.EOVERFLOW, $"{mm}'s PASID {e.Pasid} is outside [{min}, {max}]");
                }

                _mmPasids[mm] = (e.Pasid, e.Refs + 1);
                pasid = e.Pasid;
                return Errno.None;
            }

            pasid = PasidIda.Allocate(min, max);
            if (pasid == 0)
            {
                return Fail(Errno.ENOMEM, $"no free PASID in [{min}, {max}] for {mm}");
            }

            _mmPasids[mm] = (pasid, 1);
            return Errno.None;
        }
    }

    // iommu_sva_free_pasid (5.15): the last reference returns the number to the allocator (mm->pasid = 0).
    private void SvaFreePasid(ProcessAddressSpace mm)
    {
        lock (_mmPasids)
        {
            if (!_mmPasids.TryGetValue(mm, out (uint Pasid, int Refs) e))
            {
                return;
            }

            if (e.Refs > 1)
            {
                _mmPasids[mm] = (e.Pasid, e.Refs - 1);
                return;
            }

            _mmPasids.Remove(mm);
            PasidIda.Free(e.Pasid);
        }
    }
}
