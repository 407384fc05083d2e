using Iommu.Memory;
using Iommu.Devices;
using Iommu.Domains;
using Iommu.Faults;

namespace Iommu;

public sealed partial class IommuCore
{
    /// <summary>Installs the legacy per-domain fault handler (<c>iommu_set_fault_handler</c>).</summary>
    /// <param name="domain">The domain.</param>
    /// <param name="handler">The handler, or null to remove it.</param>
    /// <param name="token">Passed back to the handler.</param>
    [KernelSymbol("iommu_set_fault_handler")]
    public void SetFaultHandler(IDomain domain, IommuFaultHandler? handler, object? token)
    {
        using PhysicalMemory.AccessScope guard = Platform.Memory.EnterAccess();
        ArgumentNullException.ThrowIfNull(domain);
        domain.Handler = handler;
        domain.HandlerToken = token;
    }

    /// <summary>Reports a fault to the domain's handler (<c>report_iommu_fault</c>); drivers call this.</summary>
    /// <param name="domain">The domain the DMA went through.</param>
    /// <param name="device">The device.</param>
    /// <param name="iova">Faulting IOVA.</param>
    /// <param name="access">Direction.</param>
    /// <returns>The handler's result, or -ENOSYS (as a negative int) when there is no handler.</returns>
    [KernelSymbol("report_iommu_fault")]
    public int ReportFault(IDomain domain, Device device, ulong iova, IommuFaultAccess access)
    {
        using PhysicalMemory.AccessScope guard = Platform.Memory.EnterAccess();
        ArgumentNullException.ThrowIfNull(domain);
        ArgumentNullException.ThrowIfNull(device);
        Interlocked.Increment(ref _domainFaults);
        IommuFaultHandler? handler = domain.Handler;
        return handler is null ? Errno.ENOSYS.ToKernelReturn() : handler(domain, device, iova, access, domain.HandlerToken);
    }

    /// <summary>Registers the device's fault handler (<c>iommu_register_device_fault_handler</c>).</summary>
    /// <param name="device">The device.</param>
    /// <param name="handler">The handler.</param>
    /// <param name="data">Passed back to the handler.</param>
    /// <returns>-EINVAL when the device has no IOMMU data (never probed); -EBUSY when a handler is already registered.</returns>
    [KernelSymbol("iommu_register_device_fault_handler")]
    public Errno RegisterDeviceFaultHandler(Device device, IommuDeviceFaultHandler handler, object? data)
    {
        using PhysicalMemory.AccessScope guard = Platform.Memory.EnterAccess();
        ArgumentNullException.ThrowIfNull(device);
        ArgumentNullException.ThrowIfNull(handler);
        if (!device.HasIommu)
        {
            return Fail(Errno.EINVAL, $"{device.Name} has no IOMMU data (not probed by an IOMMU driver)");
        }

        lock (device.IommuParamLock)
        {
            if (device.FaultParam is not null)
            {
                return Fail(Errno.EBUSY, $"{device.Name} already has a fault handler (one per device)");
            }

            device.FaultParam = new DeviceFaultParam(handler, data);
            return Errno.None;
        }
    }

    /// <summary>Unregisters the device's fault handler (<c>iommu_unregister_device_fault_handler</c>).</summary>
    /// <param name="device">The device.</param>
    /// <returns>-EINVAL without IOMMU data; -EBUSY while page requests await a response; 0 otherwise (also when none was registered).</returns>
    [KernelSymbol("iommu_unregister_device_fault_handler")]
    public Errno UnregisterDeviceFaultHandler(Device device)
    {
        using PhysicalMemory.AccessScope guard = Platform.Memory.EnterAccess();
        ArgumentNullException.ThrowIfNull(device);
        if (!device.HasIommu)
        {
            return Fail(Errno.EINVAL, $"{device.Name} has no IOMMU data (not probed by an IOMMU driver)");
        }

        lock (device.IommuParamLock)
        {
            DeviceFaultParam? param = device.FaultParam;
            if (param is null)
            {
                return Errno.None;
            }

            lock (param.Lock)
            {
                if (param.Pending.Count != 0)
                {
                    return Fail(Errno.EBUSY, $"{device.Name} has {param.Pending.Count} page request(s) awaiting a response");
                }
            }

            device.FaultParam = null;
            return Errno.None;
        }
    }

    /// <summary>
    /// Reports a fault to the device's handler (<c>iommu_report_device_fault</c>). A page request
    /// that ends a group (<see cref="PageRequestFlags.LastPage"/>) is kept pending for
    /// <see cref="PageResponse"/>, unless the handler fails.
    /// </summary>
    /// <param name="device">The device.</param>
    /// <param name="fault">The fault.</param>
    /// <returns>-EINVAL without IOMMU data or handler; else the handler's result.</returns>
    [KernelSymbol("iommu_report_device_fault")]
    public Errno ReportDeviceFault(Device device, IommuFault fault)
    {
        using PhysicalMemory.AccessScope guard = Platform.Memory.EnterAccess();
        ArgumentNullException.ThrowIfNull(device);
        ArgumentNullException.ThrowIfNull(fault);
        CountDeviceFault(fault);
        if (!device.HasIommu)
        {
            return Fail(Errno.EINVAL, $"{device.Name} has no fault handler registered");
        }

        // Held across the handler, as 5.15 holds dev->iommu->lock: an unregister waits, so it sees the
        // request pending (EBUSY) rather than drop the handler between the lookup and the add.
        lock (device.IommuParamLock)
        {
            DeviceFaultParam? param = device.FaultParam;
            if (param is null)
            {
                return Fail(Errno.EINVAL, $"{device.Name} has no fault handler registered");
            }

            bool queued = fault.Type == IommuFaultType.PageRequest && fault.Flags.HasFlag(PageRequestFlags.LastPage);
            if (queued)
            {
                lock (param.Lock)
                {
                    param.Pending.Add(fault);
                }
            }

            Errno ret;
            try
            {
                ret = param.Handler(fault, param.Data);
            }
            catch when (queued)
            {
                // A handler that throws has not taken the request: it is not pending (the caller answers it, as
                // for a handler that returns an error), or it would block the handler's unregistration forever.
                lock (param.Lock)
                {
                    param.Pending.Remove(fault);
                }

                throw;
            }

            if (ret != Errno.None && queued)
            {
                lock (param.Lock)
                {
                    param.Pending.Remove(fault);
                }
            }

            return ret;
        }
    }

    /// <summary>Answers a pending page request (<c>iommu_page_response</c>).</summary>
    /// <param name="device">The device.</param>
    /// <param name="response">The answer; matched to a pending request by group id (and PASID when the request needs it).</param>
    /// <returns>-ENODEV when the device's domain has no <c>page_response</c>; -EINVAL without a handler, for a bad version or flags, or when no pending request matches; else the driver's result.</returns>
    [KernelSymbol("iommu_page_response")]
    public Errno PageResponse(Device device, IommuPageResponse response)
    {
        using PhysicalMemory.AccessScope guard = Platform.Memory.EnterAccess();
        ArgumentNullException.ThrowIfNull(device);
        ArgumentNullException.ThrowIfNull(response);
        IDomain? domain = GetDomainForDev(device);
        if (domain?.Ops is not IIommuPageResponseOps ops)
        {
            return Fail(Errno.ENODEV, $"the domain of {device.Name} cannot answer page requests");
        }

        DeviceFaultParam? param = device.HasIommu ? device.FaultParam : null;
        if (param is null)
        {
            return Fail(Errno.EINVAL, $"{device.Name} has no fault handler registered");
        }

        if (response.Version != IommuPageResponse.Version1 || (response.Flags & ~IommuPageResponse.FlagPasidValid) != 0)
        {
            return Fail(Errno.EINVAL, $"page response version {response.Version} flags 0x{response.Flags:x} are not valid");
        }

        bool hasPasid = (response.Flags & IommuPageResponse.FlagPasidValid) != 0;
        lock (param.Lock)
        {
            foreach (IommuFault pending in param.Pending)
            {
                if (pending.GroupId != response.GroupId)
                {
                    continue;
                }

                bool needsPasid = pending.Flags.HasFlag(PageRequestFlags.ResponseNeedsPasid);
                if (needsPasid && (!hasPasid || response.Pasid != pending.Pasid))
                {
                    continue;
                }

                IommuPageResponse msg = !needsPasid && hasPasid ? response with { Flags = 0, Pasid = 0 } : response;
                Errno ret = ops.PageResponse(device, pending, msg);
                param.Pending.Remove(pending);
                return ret;
            }
        }

        return Fail(Errno.EINVAL, $"no pending page request of {device.Name} matches group {response.GroupId}");
    }

    /// <summary>The device's reserved IOVA regions as its driver reports them (<c>iommu_get_resv_regions</c>).</summary>
    /// <param name="device">The device.</param>
    /// <returns>The regions (empty without a driver or callback).</returns>
    [KernelSymbol("iommu_get_resv_regions")]
    public IReadOnlyList<IommuResvRegion> GetResvRegions(Device device)
    {
        using PhysicalMemory.AccessScope guard = Platform.Memory.EnterAccess();
        ArgumentNullException.ThrowIfNull(device);
        var list = new List<IommuResvRegion>();
        if (device.IommuOps is IIommuResvRegionsOps ops)
        {
            ops.GetResvRegions(device, list);
        }

        return list;
    }

    /// <summary>
    /// The reserved regions of every device of the group, sorted by start, with overlapping or
    /// adjacent regions of the same type merged (<c>iommu_get_group_resv_regions</c>).
    /// </summary>
    /// <param name="group">The group.</param>
    /// <returns>The merged regions.</returns>
    [KernelSymbol("iommu_get_group_resv_regions")]
    public IReadOnlyList<IommuResvRegion> GetGroupResvRegions(Groups.IommuGroup group)
    {
        using PhysicalMemory.AccessScope guard = Platform.Memory.EnterAccess();
        ArgumentNullException.ThrowIfNull(group);
        var all = new List<IommuResvRegion>();
        foreach (Device d in group.Devices)
        {
            all.AddRange(GetResvRegions(d));
        }

        all.Sort(static (a, b) => a.Start != b.Start ? a.Start.CompareTo(b.Start) : a.Type.CompareTo(b.Type));
        var merged = new List<IommuResvRegion>(all.Count);
        foreach (IommuResvRegion r in all)
        {
            int i = merged.FindLastIndex(m => m.Type == r.Type);
            if (i >= 0 && merged[i].End != ulong.MaxValue && r.Start <= merged[i].End + 1)
            {
                ulong end = Math.Max(merged[i].End, r.End);
                merged[i] = merged[i] with { Length = end - merged[i].Start + 1 };
                continue;
            }

            merged.Add(r);
        }

        return merged;
    }
}
