using Iommu;

namespace Uacce;

/// <summary>
/// The driver callbacks every uacce device has (<c>struct uacce_ops</c>): a queue per open file, started and
/// stopped by the user's ioctls. Optional callbacks are separate interfaces the same object may implement:
/// <see cref="IUacceMmapOps"/>, <see cref="IUacceIoctlOps"/>, <see cref="IUacceAvailableInstancesOps"/>.
/// </summary>
/// <remarks>Called under the device's mutex (<c>uacce-&gt;mutex</c>); <see cref="IsQUpdated"/> without it, as <c>poll</c> does.</remarks>
[KernelSymbol("struct uacce_ops")]
public interface IUacceOps
{
    /// <summary>Attaches hardware to a new queue (<c>get_queue</c>).</summary>
    /// <param name="uacce">The device.</param>
    /// <param name="pasid">The opener's PASID (SVA devices), else 0.</param>
    /// <param name="queue">The new queue; the driver may keep its state in <see cref="UacceQueue.Private"/>.</param>
    /// <returns>0 or an errno (e.g. -EBUSY when no hardware queue is free), returned by open.</returns>
    [KernelSymbol("uacce_ops.get_queue")]
    Errno GetQueue(UacceDevice uacce, uint pasid, UacceQueue queue);

    /// <summary>Gives the queue's hardware back (<c>put_queue</c>).</summary>
    /// <param name="queue">The queue (INIT or STARTED, already stopped).</param>
    [KernelSymbol("uacce_ops.put_queue")]
    void PutQueue(UacceQueue queue);

    /// <summary>Starts the queue (<c>start_queue</c>; HiSilicon programs the queue's PASID here).</summary>
    /// <param name="queue">The queue, in INIT.</param>
    /// <returns>0 or an errno, returned by START_Q (the queue stays INIT).</returns>
    [KernelSymbol("uacce_ops.start_queue")]
    Errno StartQueue(UacceQueue queue);

    /// <summary>Stops a started queue (<c>stop_queue</c>): it must not DMA afterwards.</summary>
    /// <param name="queue">The queue.</param>
    [KernelSymbol("uacce_ops.stop_queue")]
    void StopQueue(UacceQueue queue);

    /// <summary>Whether the queue has completions to report (<c>is_q_updated</c>), for poll.</summary>
    /// <param name="queue">The queue.</param>
    /// <returns>True when poll should report EPOLLIN|EPOLLRDNORM.</returns>
    [KernelSymbol("uacce_ops.is_q_updated")]
    bool IsQUpdated(UacceQueue queue);
}

/// <summary>Optional <c>uacce_ops.mmap</c>: without it every mmap fails with -EINVAL.</summary>
public interface IUacceMmapOps
{
    /// <summary>Backs a queue region the user maps (<c>mmap(q, vma, qfr)</c>), usually with <see cref="UacceVmArea.RemapPfnRange"/>.</summary>
    /// <param name="queue">The queue.</param>
    /// <param name="vma">The area being mapped: its length and region type.</param>
    /// <returns>0 or an errno returned by mmap (HiSilicon: -EINVAL for a wrong length).</returns>
    [KernelSymbol("uacce_ops.mmap")]
    Errno Mmap(UacceQueue queue, UacceVmArea vma);
}

/// <summary>Optional <c>uacce_ops.ioctl</c>: commands other than START_Q/PUT_Q; without it they fail with -EINVAL.</summary>
public interface IUacceIoctlOps
{
    /// <summary>A driver-specific command.</summary>
    /// <param name="queue">The queue (not a zombie).</param>
    /// <param name="cmd">The command number.</param>
    /// <param name="arg">The argument bytes (the user buffer the argument points at).</param>
    /// <returns>0 or an errno.</returns>
    [KernelSymbol("uacce_ops.ioctl")]
    Errno Ioctl(UacceQueue queue, uint cmd, ReadOnlySpan<byte> arg);
}

/// <summary>Optional <c>uacce_ops.get_available_instances</c>: without it the sysfs attribute reads -ENODEV.</summary>
public interface IUacceAvailableInstancesOps
{
    /// <summary>How many more queues could be opened now.</summary>
    /// <param name="uacce">The device.</param>
    /// <returns>The count.</returns>
    [KernelSymbol("uacce_ops.get_available_instances")]
    int GetAvailableInstances(UacceDevice uacce);
}
