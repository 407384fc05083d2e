using System.Buffers.Binary;
using Iommu;
using Iommu.Devices;
using Iommu.Domains;
using Vfio.Mdev;

namespace Acme.Wq;

/// <summary>One work queue (WQ) of the device; each mdev owns one.</summary>
public sealed class Wq(int index)
{
    public int Index { get; } = index;

    public bool Assigned { get; internal set; }

    /// <summary>The PASID the queue's DMA carries while the device file is open, else null.</summary>
    public uint? Pasid { get; internal set; }
}

/// <summary>The vendor driver of a Scalable-IOV device with a few work queues, one per mdev.</summary>
public sealed class AcmeWqDriver : MdevParentOpsBase, IMdevOpenDeviceOps, IMdevReadWriteOps
{
    /// <summary>BAR0 offset of the queue's PASID register (read, 4 bytes).</summary>
    public const long PasidRegister = 0x08;

    /// <summary>BAR0 offset of the portal: a 16-byte write (IOVA, value) makes the queue DMA-write the value.</summary>
    public const long Portal = 0x100;

    private readonly Lock _lock = new();
    private readonly IommuCore _iommu;
    private readonly PciDevice _parent;
    private readonly Wq[] _queues;
    private int _assigned;

    public AcmeWqDriver(IommuCore iommu, PciDevice parent, int queues = 4)
    {
        _iommu = iommu;
        _parent = parent;
        _queues = [.. Enumerable.Range(0, queues).Select(i => new Wq(i))];
        SupportedTypeGroups = [MdevTypeGroup.Conventional("wq", _ => queues - Volatile.Read(ref _assigned), "vfio-pci")];
    }

    public override string DriverName => "acme_wq";

    public override IReadOnlyList<MdevTypeGroup> SupportedTypeGroups { get; }

    public override Errno Create(IMdevDevice mdev)
    {
        lock (_lock)
        {
            Wq? wq = Array.Find(_queues, q => !q.Assigned);
            if (wq is null)
            {
                return ErrorDetail.Fail(Errno.ENOSPC, $"{DriverName}: all {_queues.Length} work queues are assigned");
            }

            if (_assigned == 0)
            {
                // AUX is a mode of the parent: enable it with the first mdev, disable it with the last.
                Errno ret = _iommu.DevEnableFeature(_parent, IommuDevFeature.Aux);
                if (ret != Errno.None)
                {
                    return ret;
                }
            }

            wq.Assigned = true;
            _assigned++;
            mdev.SetDrvdata(wq);
        }

        // The parent represents this mdev in IOMMU scope: VFIO gives the mdev an aux domain on it.
        mdev.SetIommuDevice(_parent);
        return Errno.None;
    }

    public override Errno Remove(IMdevDevice mdev)
    {
        if (mdev.GetDrvdata() is not Wq wq)
        {
            return Errno.None;
        }

        mdev.SetDrvdata(null);
        mdev.SetIommuDevice(null);
        lock (_lock)
        {
            wq.Assigned = false;
            wq.Pasid = null;
            if (--_assigned == 0)
            {
                _iommu.DevDisableFeature(_parent, IommuDevFeature.Aux);
            }
        }

        return Errno.None;
    }

    public Errno OpenDevice(IMdevDevice mdev)
    {
        Wq wq = QueueOf(mdev);

        // VFIO opens the device only after VFIO_SET_IOMMU, which attached the mdev's aux domain.
        IDomain? domain = mdev.GetIommuDomain();
        if (domain is null)
        {
            return ErrorDetail.Fail(Errno.EINVAL, $"{mdev.Uuid}: no aux domain yet (open it after VFIO_SET_IOMMU)");
        }

        int pasid = _iommu.AuxGetPasid(domain, _parent);
        if (pasid < 0)
        {
            return (Errno)(-pasid);
        }

        wq.Pasid = (uint)pasid;
        return Errno.None;
    }

    public void CloseDevice(IMdevDevice mdev) => QueueOf(mdev).Pasid = null;

    public long Read(IMdevDevice mdev, Span<byte> buffer, long offset)
    {
        Wq wq = QueueOf(mdev);
        if (offset != PasidRegister || buffer.Length != 4)
        {
            return Errno.EINVAL.ToKernelReturn();
        }

        BinaryPrimitives.WriteUInt32LittleEndian(buffer, wq.Pasid ?? 0);
        return 4;
    }

    public long Write(IMdevDevice mdev, ReadOnlySpan<byte> buffer, long offset)
    {
        Wq wq = QueueOf(mdev);
        if (offset != Portal || buffer.Length != 16 || wq.Pasid is not uint pasid)
        {
            return Errno.EINVAL.ToKernelReturn();
        }

        // The device's DMA carries the queue's PASID: the IOMMU translates it with the mdev's aux domain.
        ulong iova = BinaryPrimitives.ReadUInt64LittleEndian(buffer);
        DmaResult r = _parent.DmaWrite(pasid, iova, buffer[8..]);
        return r.Status == DmaStatus.Ok ? 16 : Errno.EFAULT.ToKernelReturn();
    }

    private static Wq QueueOf(IMdevDevice mdev) =>
        mdev.GetDrvdata() as Wq ?? throw new InvalidOperationException($"{mdev.Uuid} is not an mdev of acme_wq");
}
