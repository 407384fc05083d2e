using Iommu;
using Iommu.Devices;
using Iommu.Memory;
using Iommu.Mm;

namespace UacceAccel;

/// <summary>How the engine's DMA reaches memory.</summary>
public enum AccelDmaMode
{
    /// <summary>Untranslated requests with the queue's PASID (<see cref="PciDevice.DmaRead(uint?, ulong, Span{byte})"/>): a page the process never touched faults.</summary>
    Untranslated = 0,

    /// <summary>
    /// ATS (<see cref="PciDevice.AtsDmaRead"/>): translations cached in the device's ATC, and a page that does not translate
    /// is requested through PRI; the engine waits for the page group response and retries. Needs the driver to set the
    /// context entry's DTE/PRE and an iopf path that answers page requests.
    /// </summary>
    Ats = 1,
}

/// <summary>
/// The accelerator hardware: a PCIe function with ATS, PRI and PASID and a few hardware queues. Each queue has a
/// ring of <see cref="AccelDescriptor"/>s (one page of device-user-shared memory) and a doorbell page (MMIO: u32 tail
/// written by the process at offset 0, u32 head written by the engine at offset 4). A started queue executes its
/// descriptors with its PASID, so the addresses in them are the opener's virtual addresses.
/// </summary>
/// <remarks>
/// Model decisions: the ring and doorbell pages are device memory the engine reads and writes directly (not through the
/// IOMMU), like on-device queue memory behind a BAR; only the data the descriptors name goes through the IOMMU. The
/// engine notices doorbells when <see cref="Service"/> runs (a device polling its doorbells).
/// </remarks>
public sealed class AccelEngine
{
    /// <summary>Descriptors per ring.</summary>
    public const int RingEntries = (int)(PageSize / AccelDescriptor.Size);

    /// <summary>Bytes of the DUS region (the ring).</summary>
    public const ulong RingBytes = PageSize;

    /// <summary>Bytes of the MMIO region (the doorbell page).</summary>
    public const ulong DoorbellBytes = PageSize;

    private const ulong PageSize = PhysicalMemory.PageSize;

    private readonly AccelQueuePair[] _queues;

    /// <summary>Creates the engine and its queues' memory.</summary>
    /// <param name="device">The PCIe function.</param>
    /// <param name="pages">Where the ring and doorbell pages come from.</param>
    /// <param name="queues">Hardware queues.</param>
    /// <param name="mode">How DMA reaches memory.</param>
    public AccelEngine(PciDevice device, HostPageAllocator pages, int queues, AccelDmaMode mode)
    {
        ArgumentNullException.ThrowIfNull(device);
        ArgumentNullException.ThrowIfNull(pages);
        ArgumentOutOfRangeException.ThrowIfLessThan(queues, 1);
        Device = device;
        Memory = pages.Memory;
        Mode = mode;
        _queues = new AccelQueuePair[queues];
        for (int i = 0; i < queues; i++)
        {
            pages.Allocate(2, 1, out ulong pfn).ThrowIfError();
            _queues[i] = new AccelQueuePair(i, pfn * PageSize, (pfn + 1) * PageSize);
            Memory.Write(_queues[i].RingPa, new byte[2 * PageSize]);
        }
    }

    /// <summary>The PCIe function.</summary>
    public PciDevice Device { get; }

    /// <summary>Memory holding rings and data.</summary>
    public PhysicalMemory Memory { get; }

    /// <summary>How DMA reaches memory.</summary>
    public AccelDmaMode Mode { get; }

    /// <summary>The hardware queues.</summary>
    public IReadOnlyList<AccelQueuePair> Queues => _queues;

    /// <summary>Programs the queue's PASID and enables it (what a driver's <c>start_queue</c> writes).</summary>
    /// <param name="q">The queue.</param>
    /// <param name="pasid">PASID of its DMA, or null for requests without PASID.</param>
    public static void Start(AccelQueuePair q, uint? pasid)
    {
        ArgumentNullException.ThrowIfNull(q);
        q.Pasid = pasid;
        q.Enabled = true;
    }

    /// <summary>Disables the queue: no DMA afterwards; an outstanding page request is forgotten.</summary>
    /// <param name="q">The queue.</param>
    public static void Stop(AccelQueuePair q)
    {
        ArgumentNullException.ThrowIfNull(q);
        q.Enabled = false;
        q.Waiting = false;
    }

    /// <summary>Clears the queue's ring and doorbell for its next user.</summary>
    /// <param name="q">The queue.</param>
    public void Reset(AccelQueuePair q)
    {
        ArgumentNullException.ThrowIfNull(q);
        Stop(q);
        Memory.Write(q.RingPa, new byte[RingBytes]);
        Memory.Write(q.DoorbellPa, new byte[8]);
        q.Head = 0;
        q.Pasid = null;
        q.Updated = false;
    }

    /// <summary>
    /// The engine looks at every enabled queue's doorbell and executes descriptors from its head up to the tail. A
    /// descriptor whose DMA is waiting for a page group response stays at the head (status still pending); the next
    /// call retries it, after the response arrived (<see cref="PciDevice.ReceivePageGroupResponse"/>).
    /// </summary>
    /// <returns>Descriptors completed.</returns>
    public int Service()
    {
        int done = 0;
        foreach (AccelQueuePair q in _queues)
        {
            if (q.Enabled)
            {
                done += Run(q);
            }
        }

        return done;
    }

    private int Run(AccelQueuePair q)
    {
        int done = 0;
        uint tail = Memory.ReadUInt32(q.DoorbellPa) % RingEntries;
        Span<byte> raw = stackalloc byte[AccelDescriptor.Size];
        while (q.Head != tail)
        {
            ulong pa = q.RingPa + ((ulong)q.Head * AccelDescriptor.Size);
            Memory.Read(pa, raw);
            AccelStatus status = Execute(q, AccelDescriptor.FromBytes(raw));
            if (status == AccelStatus.Pending)
            {
                q.Waiting = true;
                return done;
            }

            Memory.WriteUInt32(pa + AccelDescriptor.StatusOffset, (uint)status);
            q.Head = (q.Head + 1) % RingEntries;
            Memory.WriteUInt32(q.DoorbellPa + 4, (uint)q.Head);
            q.Completed++;
            q.Updated = true;
            done++;
        }

        q.Waiting = false;
        return done;
    }

    private AccelStatus Execute(AccelQueuePair q, AccelDescriptor d)
    {
        if (d.Op == AccelOp.Nop)
        {
            return AccelStatus.Success;
        }

        if (d.Op is not (AccelOp.Copy or AccelOp.Xor) || d.Length > AccelDescriptor.MaxLength)
        {
            return AccelStatus.BadDescriptor;
        }

        byte[] buf = new byte[d.Length];
        AccelStatus s = Transfer(q, d.Source, buf, write: false);
        if (s != AccelStatus.Success)
        {
            return s;
        }

        if (d.Op == AccelOp.Xor)
        {
            for (int i = 0; i < buf.Length; i++)
            {
                buf[i] ^= (byte)d.Key;
            }
        }

        return Transfer(q, d.Destination, buf, write: true);
    }

    // One DMA with the queue's PASID. PageRequestPending: a handler may have answered already (a synchronous iopf
    // path), so try once more at once; still pending → the descriptor waits for the response.
    private AccelStatus Transfer(AccelQueuePair q, ulong va, byte[] buf, bool write)
    {
        for (int attempt = 0; attempt < 2; attempt++)
        {
            DmaResult r = Mode == AccelDmaMode.Ats
                ? (write ? Device.AtsDmaWrite(q.Pasid, va, buf) : Device.AtsDmaRead(q.Pasid, va, buf))
                : (write ? Device.DmaWrite(q.Pasid, va, buf) : Device.DmaRead(q.Pasid, va, buf));
            switch (r.Status)
            {
                case DmaStatus.Ok:
                    return AccelStatus.Success;
                case DmaStatus.PageRequestFailed:
                    return AccelStatus.PageRequestFailed;
                case DmaStatus.PageRequestPending:
                    continue;
                default:
                    return AccelStatus.TranslationFault;
            }
        }

        return AccelStatus.Pending;
    }
}

/// <summary>One hardware queue of the <see cref="AccelEngine"/>.</summary>
public sealed class AccelQueuePair
{
    internal AccelQueuePair(int index, ulong ringPa, ulong doorbellPa)
    {
        Index = index;
        RingPa = ringPa;
        DoorbellPa = doorbellPa;
    }

    /// <summary>Queue number.</summary>
    public int Index { get; }

    /// <summary>Physical address of the ring (the DUS region).</summary>
    public ulong RingPa { get; }

    /// <summary>Physical address of the doorbell page (the MMIO region).</summary>
    public ulong DoorbellPa { get; }

    /// <summary>Whether the queue executes descriptors.</summary>
    public bool Enabled { get; internal set; }

    /// <summary>The PASID its DMA carries, or null (requests without PASID).</summary>
    public uint? Pasid { get; internal set; }

    /// <summary>Index of the next descriptor to execute.</summary>
    public int Head { get; internal set; }

    /// <summary>Whether the head descriptor waits for a page group response.</summary>
    public bool Waiting { get; internal set; }

    /// <summary>Descriptors completed since the engine was created.</summary>
    public long Completed { get; internal set; }

    /// <summary>Whether a driver holds the queue.</summary>
    public bool Assigned { get; internal set; }

    internal bool Updated { get; set; }
}
