using Iommu.Devices;
using Iommu.Faults;
using Iommu.Memory;
using Iommu.Mm;

namespace Iommu;

// I/O page faults, 5.15 (drivers/iommu/io-pgfault.c): a driver's device fault handler queues page requests by
// group; a worker handles each group on the process model and answers it with one page response.
public sealed partial class IommuCore
{
    // IOMMU_FAULT_PERM_* of a page request.
    private const uint FaultPermRead = 1, FaultPermWrite = 2, FaultPermExec = 4;

    // dev->iommu->iopf_param, guarded by itself (the kernel's param->lock).
    private readonly Dictionary<Device, IopfDeviceParam> _iopfParams = [];

    /// <summary>Allocates an I/O page fault queue and its work queue (<c>iopf_queue_alloc</c>).</summary>
    /// <param name="name">Names the work queue (<c>iopf_queue/</c><paramref name="name"/>); Intel uses <c>dmarN-iopfq</c>.</param>
    /// <returns>The queue (the kernel's NULL on allocation failure is not modelled).</returns>
    [KernelSymbol("iopf_queue_alloc")]
    public IopfQueue IopfQueueAlloc(string name)
    {
        using PhysicalMemory.AccessScope guard = Platform.Memory.EnterAccess();
        ArgumentNullException.ThrowIfNull(name);
        return new IopfQueue(this, "iopf_queue/" + name);
    }

    /// <summary>Removes every device from <paramref name="queue"/> and waits for its work (<c>iopf_queue_free</c>).</summary>
    /// <param name="queue">The queue, or null (nothing happens).</param>
    [KernelSymbol("iopf_queue_free")]
    public void IopfQueueFree(IopfQueue? queue)
    {
        using PhysicalMemory.AccessScope guard = Platform.Memory.EnterAccess();
        if (queue is null)
        {
            return;
        }

        IopfDeviceParam[] devices;
        lock (queue.Lock)
        {
            devices = [.. queue.Devices];
        }

        foreach (IopfDeviceParam p in devices)
        {
            _ = IopfQueueRemoveDevice(queue, p.Device);
        }

        queue.Flush(); // destroy_workqueue drains it
    }

    /// <summary>Puts <paramref name="device"/> on <paramref name="queue"/> (<c>iopf_queue_add_device</c>).</summary>
    /// <param name="queue">The queue.</param>
    /// <param name="device">The device.</param>
    /// <returns>0; -ENODEV when the device has no IOMMU data; -EBUSY when it is already on a queue (this one or another).</returns>
    [KernelSymbol("iopf_queue_add_device")]
    public Errno IopfQueueAddDevice(IopfQueue queue, Device device)
    {
        using PhysicalMemory.AccessScope guard = Platform.Memory.EnterAccess();
        ArgumentNullException.ThrowIfNull(queue);
        ArgumentNullException.ThrowIfNull(device);
        if (!device.HasIommu)
        {
            return Fail(Errno.ENODEV, $"{device.Name} has no IOMMU data (not probed by an IOMMU driver)");
        }

        lock (queue.Lock)
        lock (_iopfParams)
        {
            if (_iopfParams.TryGetValue(device, out IopfDeviceParam? on))
            {
                return Fail(Errno.EBUSY, $"{device.Name} is already on {on.Queue}");
            }

            var param = new IopfDeviceParam(device, queue);
            queue.Devices.Add(param);
            _iopfParams.Add(device, param);
            return Errno.None;
        }
    }

    /// <summary>Takes <paramref name="device"/> off <paramref name="queue"/> and frees its partial faults (<c>iopf_queue_remove_device</c>).</summary>
    /// <param name="queue">The queue, or null.</param>
    /// <param name="device">The device.</param>
    /// <returns>0; -EINVAL for a null queue, a device without IOMMU data, or one not on this queue.</returns>
    /// <remarks>Groups already queued are still handled (the caller flushes first when it needs them answered).</remarks>
    [KernelSymbol("iopf_queue_remove_device")]
    public Errno IopfQueueRemoveDevice(IopfQueue? queue, Device device)
    {
        using PhysicalMemory.AccessScope guard = Platform.Memory.EnterAccess();
        ArgumentNullException.ThrowIfNull(device);
        if (queue is null || !device.HasIommu)
        {
            return Fail(Errno.EINVAL, $"{device.Name} cannot leave {(queue is null ? "a null queue" : queue.ToString())}");
        }

        // queue->lock, then dev->iommu->lock as 5.15: a report (which holds the latter across the handler) never
        // finds the device leaving its queue halfway through.
        lock (queue.Lock)
        lock (device.IommuParamLock)
        lock (_iopfParams)
        {
            if (!_iopfParams.TryGetValue(device, out IopfDeviceParam? param) || param.Queue != queue)
            {
                return Fail(Errno.EINVAL, $"{device.Name} is not on {queue}");
            }

            queue.Devices.Remove(param);
            _iopfParams.Remove(device);
            param.Partial.Clear(); // "just in case some faults are still stuck"
            return Errno.None;
        }
    }

    /// <summary>Waits until every fault group of the device's queue queued so far is handled and answered (<c>iopf_queue_flush_dev</c>).</summary>
    /// <param name="device">The device.</param>
    /// <returns>0; -ENODEV when the device has no IOMMU data or is on no queue.</returns>
    /// <remarks>
    /// <para>Blocks; call it without holding a lock the fault path takes (as the kernel drops <c>pasid_mutex</c> around it).</para>
    /// <para>Model addition: first it waits for the driver's page request handler that feeds the queue (VT-d: the unit's
    /// PRQ interrupt thread) to have reported every request it was woken for before the call. The kernel leaves that to
    /// the caller ("the caller must flush its low-level queue first"), and its only callers, the drivers' PRQ drains,
    /// have done so; a user of the model has no other way to wait for that thread, so a device's page request followed
    /// by this call is answered when it returns, as before the handler had its own thread.</para>
    /// </remarks>
    [KernelSymbol("iopf_queue_flush_dev")]
    public Errno IopfQueueFlushDev(Device device)
    {
        using PhysicalMemory.AccessScope guard = Platform.Memory.EnterAccess();
        ArgumentNullException.ThrowIfNull(device);
        IopfDeviceParam? param = null;
        if (device.HasIommu)
        {
            lock (_iopfParams)
            {
                _iopfParams.TryGetValue(device, out param);
            }
        }

        if (param is null)
        {
            return Fail(Errno.ENODEV, $"{device.Name} is on no iopf queue");
        }

        param.Queue.SourceFlush?.Invoke();
        param.Queue.Flush();
        return Errno.None;
    }

    /// <summary>Drops every stored non-last page request of every device on <paramref name="queue"/> (<c>iopf_queue_discard_partial</c>).</summary>
    /// <param name="queue">The queue, or null.</param>
    /// <returns>0; -EINVAL for a null queue.</returns>
    /// <remarks>Called after a page request queue overflow: the last requests of those groups may have been lost, so their partial requests would never complete.</remarks>
    [KernelSymbol("iopf_queue_discard_partial")]
    public Errno IopfQueueDiscardPartial(IopfQueue? queue)
    {
        using PhysicalMemory.AccessScope guard = Platform.Memory.EnterAccess();
        if (queue is null)
        {
            return Fail(Errno.EINVAL, "no iopf queue");
        }

        lock (queue.Lock)
        lock (_iopfParams)
        {
            foreach (IopfDeviceParam p in queue.Devices)
            {
                p.Partial.Clear();
            }
        }

        return Errno.None;
    }

    /// <summary>
    /// The device fault handler IOMMU drivers register for I/O page faults (<c>iommu_queue_iopf</c>): a page request that
    /// is not the last of its group is stored; the last one makes a group of itself and every stored request with the same
    /// group index, queued for the worker, which answers it with one <see cref="PageResponse"/>.
    /// </summary>
    /// <param name="fault">The fault.</param>
    /// <param name="cookie">The <see cref="Device"/> given at <see cref="RegisterDeviceFaultHandler"/>.</param>
    /// <returns>0; -EOPNOTSUPP for a fault that is not a page request; -ENODEV when the device is on no iopf queue (or the cookie is no device).</returns>
    /// <remarks>
    /// <para>5.15. Stored requests are matched by group index only, not by PASID, as 5.15's <c>iommu_queue_iopf</c> does: a group of
    /// one PASID may take in a stored request of another PASID with the same index.</para>
    /// <para>The worker handles the group's requests in arrival order with the status sticky: after the first that is not
    /// SUCCESS the rest are not handled. One request is SUCCESS when it has a PASID, the PASID is bound to a live process
    /// (<c>iommu_sva_find</c>), a memory area holds the address, the area's flags allow every requested access (read,
    /// write, execute; PROT_NONE allows none), and the fault succeeds on the process model as a CPU touch would (copy-on-write
    /// break included, whose notifier flush comes before the answer); else INVALID. FAILURE is never answered. The answer
    /// carries the group index and, when the last request needs it, its PASID.</para>
    /// </remarks>
    [KernelSymbol("iommu_queue_iopf")]
    public Errno QueueIopf(IommuFault fault, object? cookie)
    {
        using PhysicalMemory.AccessScope guard = Platform.Memory.EnterAccess();
        ArgumentNullException.ThrowIfNull(fault);
        if (fault.Type != IommuFaultType.PageRequest)
        {
            return Fail(Errno.EOPNOTSUPP, $"iopf handles page requests only, not {fault.Type}");
        }

        // One section from the lookup to the group, so the device's parameters are not used after they left the
        // queue. (iommu_report_device_fault's caller also holds dev->iommu->lock, which iopf_queue_remove_device takes.)
        IopfDeviceParam? param = null;
        IopfGroup group;
        lock (_iopfParams)
        {
            if (cookie is Device device)
            {
                _iopfParams.TryGetValue(device, out param);
            }

            if (param is null)
            {
                return Fail(Errno.ENODEV, $"{cookie} is on no iopf queue");
            }

            if (!fault.Flags.HasFlag(PageRequestFlags.LastPage))
            {
                param.Partial.Add(fault);
                return Errno.None;
            }

            var faults = new List<IommuFault>();
            param.Partial.RemoveAll(p =>
            {
                bool match = p.GroupId == fault.GroupId;
                if (match)
                {
                    faults.Add(p);
                }

                return match;
            });
            faults.Add(fault);
            group = new IopfGroup(param.Device, faults);
        }

        param.Queue.QueueWork(group);
        return Errno.None;
    }

    // iopf_handle_group (the worker): handle in order with a sticky status, then iopf_complete_group.
    internal void LogIopfWorkerFailure(Exception exception, string queue) => Internal.Log.IopfWorkerFailed(_log, exception, queue);

    internal void IopfHandleGroup(IopfGroup group)
    {
        using PhysicalMemory.AccessScope guard = Platform.Memory.EnterAccess();
        IommuPageResponseCode status = IommuPageResponseCode.Success;
        foreach (IommuFault f in group.Faults)
        {
            if (status == IommuPageResponseCode.Success)
            {
#pragma warning disable CA1031 // answered Invalid and logged: the device must get its answer
                try
                {
                    status = IopfHandleSingle(f);
                }
                catch (Exception ex) when (ex is not ObjectDisposedException || !Platform.Memory.IsDisposed)
                {
                    // Only the platform's disposal ends the worker's answer: a freed domain's ObjectDisposedException,
                    // from a notifier that still maps into it, is the notifier's bug like any other exception.
                    // Handling threw (an MMU notifier with a bug, run by a copy-on-write break): the group is answered
                    // Invalid, as for a fault the process cannot take, rather than left for the device to wait forever.
                    Internal.Log.IopfHandlingFailed(_log, ex, $"{group.Device.Name}'s fault at 0x{f.Address:x}");
                    status = IommuPageResponseCode.Invalid;
                }
#pragma warning restore CA1031
            }
        }

        IommuFault last = group.Faults[^1];
        bool pasid = last.Flags.HasFlag(PageRequestFlags.PasidValid) && last.Flags.HasFlag(PageRequestFlags.ResponseNeedsPasid);
        _ = PageResponse(group.Device, new IommuPageResponse
        {
            Pasid = last.Pasid,
            GroupId = last.GroupId,
            Code = status,
            Flags = pasid ? IommuPageResponse.FlagPasidValid : 0,
        });
    }

    // iopf_handle_single: the process model decides (find_extend_vma does not grow: no stack areas are modelled).
    private IommuPageResponseCode IopfHandleSingle(IommuFault fault)
    {
        if (!fault.Flags.HasFlag(PageRequestFlags.PasidValid) || SvaFind(fault.Pasid) is not ProcessAddressSpace mm)
        {
            return IommuPageResponseCode.Invalid;
        }

        Errno e = mm.HandleMmFault(fault.Address, (fault.Perm & FaultPermRead) != 0, (fault.Perm & FaultPermWrite) != 0, (fault.Perm & FaultPermExec) != 0);
        return e == Errno.None ? IommuPageResponseCode.Success : IommuPageResponseCode.Invalid;
    }

    // iommu_sva_find: the live mm holding a PASID (mmget_not_zero fails once it exited), or null.
    private ProcessAddressSpace? SvaFind(uint pasid)
    {
        lock (_mmPasids)
        {
            foreach (KeyValuePair<ProcessAddressSpace, (uint Pasid, int Refs)> e in _mmPasids)
            {
                if (e.Value.Pasid == pasid)
                {
                    return e.Key.Exited ? null : e.Key;
                }
            }
        }

        return null;
    }
}
