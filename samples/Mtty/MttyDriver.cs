using System.Buffers.Binary;
using Iommu;
using Iommu.Devices;
using Iommu.Domains;
using Iommu.Memory;
using Vfio.Mdev;
using Vfio.Mdev.Pinning;

namespace Mtty;

/// <summary>
/// A model of the kernel's <c>samples/vfio-mdev/mtty.c</c>: a virtual PCI serial card with types
/// <c>mtty-1</c> (one port) and <c>mtty-2</c> (two ports) sharing a budget of <see cref="MaxPorts"/>
/// ports per driver instance. Config space and the I/O BARs are emulated through read/write.
/// </summary>
/// <remarks>
/// <para>Isolation is vendor-defined (no <c>mdev_set_iommu_device</c>), so under VFIO type1 the card
/// lands in the external domain. Unlike the kernel sample, this card can DMA
/// (<see cref="IoctlDmaLoopback"/>): it pins guest pages through <see cref="IVfioPinning"/>, keeps
/// them pinned, and unpins them when user space unmaps the IOVA (the DMA-unmap notifier it registers
/// on open) or when the device is closed.</para>
/// <para>As in 5.10/5.15, <c>create</c> does not enforce the budget: <c>available_instances</c> can go
/// negative. Pass <c>enforceBudget</c> to get the later behaviour (≈6.7 mtty refuses with -ENOSPC).</para>
/// <para>Thread safety: the budget is protected by the driver's lock, each card by its own.</para>
/// </remarks>
public sealed class MttyDriver : IMdevParentOps, IMdevOpenDeviceOps, IMdevReadWriteOps, IMdevIoctlOps
{
    /// <summary>Ports shared by every card of one driver instance (MAX_MTTYS).</summary>
    public const int MaxPorts = 24;

    /// <summary>The sample's DMA-loopback ioctl, _IO('M', 0x40): not a VFIO ioctl.</summary>
    public const uint IoctlDmaLoopback = ('M' << 8) | 0x40;

    private const int PageShift = 12;
    private const ulong PageSize = 1UL << PageShift;

    private readonly Lock _lock = new();
    private readonly PhysicalMemory _memory;
    private readonly IVfioPinning? _pinning;
    private readonly bool _enforceBudget;
    private int _usedPorts;

    /// <summary>Creates the driver and its parent device (the class device <c>mtty</c>).</summary>
    /// <param name="memory">Host memory the card's DMA reaches once pages are pinned.</param>
    /// <param name="pinning">The VFIO pinning service (type1's external domain), or null for a card without DMA.</param>
    /// <param name="enforceBudget">Refuse creates beyond the budget with -ENOSPC (later kernels) instead of accepting them (5.15).</param>
    public MttyDriver(PhysicalMemory memory, IVfioPinning? pinning = null, bool enforceBudget = false)
    {
        ArgumentNullException.ThrowIfNull(memory);
        _memory = memory;
        _pinning = pinning;
        _enforceBudget = enforceBudget;
        SupportedTypeGroups =
        [
            MdevTypeGroup.Conventional("1", _ => (MaxPorts - UsedPorts) / 1, "vfio-pci", displayName: "Single port serial"),
            MdevTypeGroup.Conventional("2", _ => (MaxPorts - UsedPorts) / 2, "vfio-pci", displayName: "Dual port serial"),
        ];
    }

    /// <summary>The parent device to register (<c>mtty_dev.dev</c>).</summary>
    public Device ParentDevice { get; } = new("mtty");

    /// <summary>Ports in use by live cards.</summary>
    public int UsedPorts
    {
        get
        {
            lock (_lock)
            {
                return _usedPorts;
            }
        }
    }

    /// <inheritdoc/>
    public string DriverName => "mtty";

    /// <inheritdoc/>
    public IReadOnlyList<MdevTypeGroup> SupportedTypeGroups { get; }

    /// <summary>The card behind <paramref name="mdev"/>.</summary>
    /// <param name="mdev">An mdev of this driver.</param>
    /// <returns>Its state.</returns>
    public static MttyDevice Card(IMdevDevice mdev)
    {
        ArgumentNullException.ThrowIfNull(mdev);
        return mdev.GetDrvdata() as MttyDevice ?? throw new InvalidOperationException($"{mdev.Uuid} is not an mtty card.");
    }

    /// <summary>Registers the driver's parent with <paramref name="core"/> (what <c>mtty_dev_init</c> does).</summary>
    /// <param name="core">The platform's mdev core.</param>
    /// <returns>The registration result.</returns>
    public Errno Register(MdevCore core)
    {
        ArgumentNullException.ThrowIfNull(core);
        return core.RegisterDevice(ParentDevice, this);
    }

    /// <inheritdoc/>
    public Errno Create(IMdevDevice mdev)
    {
        ArgumentNullException.ThrowIfNull(mdev);
        int ports = mdev.TypeGroupId switch
        {
            0 => 1,
            1 => 2,
            _ => 0,
        };
        if (ports == 0)
        {
            return ErrorDetail.Fail(Errno.EINVAL, $"mtty: unknown type group {mdev.TypeGroupId}");
        }

        lock (_lock)
        {
            if (_enforceBudget && MaxPorts - _usedPorts < ports)
            {
                return ErrorDetail.Fail(Errno.ENOSPC, $"mtty: {ports} ports requested, {MaxPorts - _usedPorts} of {MaxPorts} left");
            }

            _usedPorts += ports;
        }

        mdev.SetDrvdata(new MttyDevice(ports));
        return Errno.None;
    }

    /// <inheritdoc/>
    public Errno Remove(IMdevDevice mdev)
    {
        ArgumentNullException.ThrowIfNull(mdev);
        if (mdev.GetDrvdata() is MttyDevice card)
        {
            lock (_lock)
            {
                _usedPorts -= card.Ports;
            }

            mdev.SetDrvdata(null);
        }

        return Errno.None;
    }

    /// <inheritdoc/>
    public Errno OpenDevice(IMdevDevice mdev)
    {
        MttyDevice card = Card(mdev);
        if (_pinning is null)
        {
            return Errno.None;
        }

        VfioIommuNotifier notifier = (action, unmap) => OnDmaUnmap(mdev, card, action, unmap);
        Errno ret = _pinning.RegisterNotifier(mdev.Device, VfioNotifyType.Iommu, VfioIommuNotifyEvents.DmaUnmap, notifier);
        if (ret != Errno.None)
        {
            return ret;
        }

        lock (card.SyncRoot)
        {
            card.Notifier = notifier;
        }

        return Errno.None;
    }

    /// <inheritdoc/>
    public void CloseDevice(IMdevDevice mdev)
    {
        MttyDevice card = Card(mdev);
        VfioIommuNotifier? notifier;
        lock (card.SyncRoot)
        {
            UnpinWhere(mdev, card, _ => true);
            notifier = card.Notifier;
            card.Notifier = null;
        }

        if (notifier is not null)
        {
            _pinning!.UnregisterNotifier(mdev.Device, VfioNotifyType.Iommu, notifier);
        }
    }

    /// <inheritdoc/>
    public long Read(IMdevDevice mdev, Span<byte> buffer, long offset) => Access(Card(mdev), buffer, [], offset, write: false);

    /// <inheritdoc/>
    public long Write(IMdevDevice mdev, ReadOnlySpan<byte> buffer, long offset) => Access(Card(mdev), [], buffer, offset, write: true);

    /// <inheritdoc/>
    public long Ioctl(IMdevDevice mdev, uint cmd, Span<byte> arg)
    {
        MttyDevice card = Card(mdev);
        switch (cmd)
        {
            case VfioPci.DeviceGetInfo:
                if (arg.Length < 16 || BinaryPrimitives.ReadUInt32LittleEndian(arg) < 16)
                {
                    return ErrorDetail.Fail(Errno.EINVAL, "VFIO_DEVICE_GET_INFO: argsz below 16").ToKernelReturn();
                }

                BinaryPrimitives.WriteUInt32LittleEndian(arg[4..], VfioPci.DeviceFlagsPci | VfioPci.DeviceFlagsReset);
                BinaryPrimitives.WriteUInt32LittleEndian(arg[8..], VfioPci.NumRegions);
                BinaryPrimitives.WriteUInt32LittleEndian(arg[12..], VfioPci.NumIrqs);
                return 0;
            case VfioPci.DeviceReset:
                card.Reset();
                return 0;
            case IoctlDmaLoopback:
                return DmaLoopback(mdev, card, arg);
            default:
                return ErrorDetail.Fail(Errno.ENOTTY, $"mtty: unknown ioctl 0x{cmd:x}").ToKernelReturn();
        }
    }

    private static long Access(MttyDevice card, Span<byte> readBuf, ReadOnlySpan<byte> writeBuf, long offset, bool write)
    {
        int index = (int)(offset >> VfioPci.OffsetShift);
        long pos = offset & ((1L << VfioPci.OffsetShift) - 1);
        int count = write ? writeBuf.Length : readBuf.Length;
        switch (index)
        {
            case VfioPci.Config:
                if (pos + count > 256)
                {
                    return ErrorDetail.Fail(Errno.EINVAL, $"mtty: config access [0x{pos:x}, +{count}) beyond 256 bytes").ToKernelReturn();
                }

                if (write)
                {
                    card.WriteConfig((int)pos, writeBuf);
                }
                else
                {
                    card.ReadConfig((int)pos, readBuf);
                }

                return count;
            case VfioPci.Bar0 or VfioPci.Bar1 when index < card.Ports:
                if (pos + count > MttyDevice.IoBarSize)
                {
                    return ErrorDetail.Fail(Errno.EINVAL, $"mtty: BAR{index} access [0x{pos:x}, +{count}) beyond {MttyDevice.IoBarSize} bytes").ToKernelReturn();
                }

                for (int i = 0; i < count; i++)
                {
                    if (write)
                    {
                        card.WritePort(index, (int)pos + i, writeBuf[i]);
                    }
                    else
                    {
                        readBuf[i] = card.ReadPort(index, (int)pos + i);
                    }
                }

                return count;
            default:
                return ErrorDetail.Fail(Errno.EINVAL, $"mtty: region {index} does not exist on a {card.Ports}-port card").ToKernelReturn();
        }
    }

    private long DmaLoopback(IMdevDevice mdev, MttyDevice card, Span<byte> arg)
    {
        if (!MttyDmaLoopback.TryRead(arg, out MttyDmaLoopback req))
        {
            return ErrorDetail.Fail(Errno.EINVAL, "mtty DMA loopback: argsz below 32 or flags set").ToKernelReturn();
        }

        if (_pinning is null)
        {
            return ErrorDetail.Fail(Errno.ENOTTY, "mtty DMA loopback: this card has no DMA (no pinning service)").ToKernelReturn();
        }

        if (req.Length == 0 || req.SourceIova + req.Length < req.SourceIova || req.DestinationIova + req.Length < req.DestinationIova)
        {
            return ErrorDetail.Fail(Errno.EINVAL, $"mtty DMA loopback: bad range of 0x{req.Length:x} bytes").ToKernelReturn();
        }

        lock (card.SyncRoot)
        {
            if (card.Notifier is null)
            {
                return ErrorDetail.Fail(Errno.EINVAL, "mtty DMA loopback: device not open").ToKernelReturn();
            }

            int ret = EnsurePinned(mdev, card, req.SourceIova, req.Length, IommuProt.Read);
            if (ret < 0)
            {
                return ret;
            }

            ret = EnsurePinned(mdev, card, req.DestinationIova, req.Length, IommuProt.Read | IommuProt.Write);
            if (ret < 0)
            {
                return ret;
            }

            byte[] chunk = new byte[PageSize];
            for (ulong done = 0; done < req.Length;)
            {
                ulong src = req.SourceIova + done, dst = req.DestinationIova + done;
                ulong n = Math.Min(req.Length - done, Math.Min(PageSize - (src & (PageSize - 1)), PageSize - (dst & (PageSize - 1))));
                Span<byte> data = chunk.AsSpan(0, (int)n);
                _memory.Read(Phys(card, src), data);
                _memory.Write(Phys(card, dst), data);
                done += n;
            }

            return (long)req.Length;
        }
    }

    private static ulong Phys(MttyDevice card, ulong iova) =>
        (card.Pinned[iova >> PageShift].PhysPfn << PageShift) | (iova & (PageSize - 1));

    // Pins the pages of [iova, iova+length) not pinned yet. Pages pinned for reading only are pinned
    // again when write access is needed (type1 counts both pins).
    private int EnsurePinned(IMdevDevice mdev, MttyDevice card, ulong iova, ulong length, IommuProt prot)
    {
        var need = new List<ulong>();
        for (ulong pfn = iova >> PageShift; pfn <= (iova + length - 1) >> PageShift; pfn++)
        {
            if (!card.Pinned.TryGetValue(pfn, out var e) || (prot.HasFlag(IommuProt.Write) && !e.Writable))
            {
                need.Add(pfn);
            }
        }

        for (int start = 0; start < need.Count; start += IVfioPinning.PinPagesMaxEntries)
        {
            ulong[] user = need.GetRange(start, Math.Min(IVfioPinning.PinPagesMaxEntries, need.Count - start)).ToArray();
            ulong[] phys = new ulong[user.Length];
            int ret = _pinning!.PinPages(mdev.Device, user, user.Length, prot, phys);
            if (ret < 0)
            {
                return ret;
            }

            for (int i = 0; i < user.Length; i++)
            {
                bool writable = prot.HasFlag(IommuProt.Write);
                card.Pinned[user[i]] = card.Pinned.TryGetValue(user[i], out var e)
                    ? (phys[i], e.Pins + 1, e.Writable || writable)
                    : (phys[i], 1, writable);
            }
        }

        return 0;
    }

    private int OnDmaUnmap(IMdevDevice mdev, MttyDevice card, VfioIommuNotifyEvents action, VfioDmaUnmapEvent unmap)
    {
        if (action != VfioIommuNotifyEvents.DmaUnmap)
        {
            return NotifyResult.Done;
        }

        lock (card.SyncRoot)
        {
            ulong first = unmap.Iova >> PageShift, last = (unmap.Iova + unmap.Size - 1) >> PageShift;
            UnpinWhere(mdev, card, pfn => pfn >= first && pfn <= last);
        }

        return NotifyResult.Ok;
    }

    private void UnpinWhere(IMdevDevice mdev, MttyDevice card, Func<ulong, bool> match)
    {
        var pfns = new List<ulong>();
        foreach ((ulong pfn, (ulong _, int pins, bool _)) in card.Pinned)
        {
            if (match(pfn))
            {
                for (int i = 0; i < pins; i++)
                {
                    pfns.Add(pfn);
                }
            }
        }

        foreach (ulong pfn in pfns)
        {
            card.Pinned.Remove(pfn);
        }

        for (int start = 0; start < pfns.Count; start += IVfioPinning.PinPagesMaxEntries)
        {
            ulong[] user = pfns.GetRange(start, Math.Min(IVfioPinning.PinPagesMaxEntries, pfns.Count - start)).ToArray();
            _pinning!.UnpinPages(mdev.Device, user, user.Length);
        }
    }
}
