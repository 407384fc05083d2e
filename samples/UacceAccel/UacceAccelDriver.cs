using Iommu;
using Uacce;

namespace UacceAccel;

/// <summary>
/// The accelerator's uacce driver (shaped like HiSilicon QM's uacce ops): one hardware queue per open file, the
/// opener's PASID programmed at START_Q, the doorbell page as the MMIO region and the ring as the DUS region.
/// </summary>
public sealed class UacceAccelDriver : IUacceOps, IUacceMmapOps, IUacceAvailableInstancesOps
{
    /// <summary>Creates the driver of <paramref name="engine"/>.</summary>
    /// <param name="engine">The hardware.</param>
    public UacceAccelDriver(AccelEngine engine)
    {
        ArgumentNullException.ThrowIfNull(engine);
        Engine = engine;
    }

    /// <summary>The hardware.</summary>
    public AccelEngine Engine { get; }

    /// <inheritdoc/>
    public int GetAvailableInstances(UacceDevice uacce)
    {
        int free = 0;
        foreach (AccelQueuePair q in Engine.Queues)
        {
            free += q.Assigned ? 0 : 1;
        }

        return free;
    }

    /// <inheritdoc/>
    /// <returns>0, or -EBUSY when every hardware queue is taken.</returns>
    public Errno GetQueue(UacceDevice uacce, uint pasid, UacceQueue queue)
    {
        ArgumentNullException.ThrowIfNull(queue);
        foreach (AccelQueuePair hw in Engine.Queues)
        {
            if (!hw.Assigned)
            {
                hw.Assigned = true;
                queue.Private = hw;
                return Errno.None;
            }
        }

        return ErrorDetail.Fail(Errno.EBUSY, "no free hardware queue");
    }

    /// <inheritdoc/>
    public void PutQueue(UacceQueue queue)
    {
        AccelQueuePair hw = Hw(queue);
        Engine.Reset(hw);
        hw.Assigned = false;
    }

    /// <inheritdoc/>
    public Errno StartQueue(UacceQueue queue)
    {
        ArgumentNullException.ThrowIfNull(queue);

        // Without SVA the queue's PASID is 0: the engine then sends requests without PASID (IOVAs of the DMA domain).
        bool sva = (queue.Uacce.Flags & UacceDeviceFlags.Sva) != 0;
        AccelEngine.Start(Hw(queue), sva ? queue.Pasid : null);
        return Errno.None;
    }

    /// <inheritdoc/>
    public void StopQueue(UacceQueue queue) => AccelEngine.Stop(Hw(queue));

    /// <inheritdoc/>
    public bool IsQUpdated(UacceQueue queue)
    {
        AccelQueuePair hw = Hw(queue);
        bool updated = hw.Updated;
        hw.Updated = false;
        return updated;
    }

    /// <inheritdoc/>
    /// <returns>0; -EINVAL for an MMIO mapping longer than the doorbell page or a DUS mapping not exactly the ring's size.</returns>
    public Errno Mmap(UacceQueue queue, UacceVmArea vma)
    {
        ArgumentNullException.ThrowIfNull(vma);
        AccelQueuePair hw = Hw(queue);
        switch (vma.Type)
        {
            case UacceQueueFileRegionType.Mmio when vma.Length <= AccelEngine.DoorbellBytes:
                vma.RemapPfnRange(hw.DoorbellPa);
                return Errno.None;
            case UacceQueueFileRegionType.Dus when vma.Length == AccelEngine.RingBytes:
                vma.RemapPfnRange(hw.RingPa);
                return Errno.None;
            default:
                return ErrorDetail.Fail(Errno.EINVAL, $"a {vma.Type} mapping of {vma.Length} bytes does not fit queue {hw.Index}");
        }
    }

    private static AccelQueuePair Hw(UacceQueue queue)
    {
        ArgumentNullException.ThrowIfNull(queue);
        return queue.Private as AccelQueuePair ?? throw new InvalidOperationException($"{queue} has no hardware queue");
    }
}
