using System.Buffers.Binary;
using Iommu;
using Iommu.Devices;
using Iommu.Domains;
using Vfio.Mdev;

namespace SiovAccel;

/// <summary>
/// A Scalable-IOV accelerator (in the spirit of Intel DSA/idxd with its "vDCM"): a PCI parent with
/// a PASID capability and the Scalable-IOV DVSEC, exposing <see cref="Adis"/> assignable device
/// interfaces (work queues), one per mdev of type <c>siov_accel-wq</c>.
/// </summary>
/// <remarks>
/// <para>Isolation is by the IOMMU: <c>create</c> enables AUX on the parent
/// (<c>iommu_dev_enable_feature(IOMMU_DEV_FEAT_AUX)</c>) and calls <c>mdev_set_iommu_device(mdev, parent)</c>, so VFIO
/// type1 aux-attaches its domain to the parent and records it with <c>mdev_set_iommu_domain</c>.
/// When user space opens the device (which VFIO only allows once the group's container has its
/// IOMMU set, i.e. after the attach), the driver reads the domain (<c>mdev_get_iommu_domain</c>), gets
/// its PASID (<c>iommu_aux_get_pasid</c>) and programs the ADI; closing disables it.</para>
/// <para>With <see cref="SiovAccelMode.PasidAttach"/> (the 6.2+ way) the parent owns the PASIDs
/// instead: <c>create</c> allocates the ADI's PASID (<c>iommu_alloc_global_pasid</c>, ≈6.4) and
/// enables nothing; <c>open</c> attaches the domain recorded for the mdev (<c>mdev_set_iommu_domain</c>,
/// done by whoever owns the mdev's address space) to that PASID of the parent
/// (<c>iommu_attach_device_pasid</c>) and programs the ADI; <c>close</c> detaches it and
/// <c>remove</c> frees the PASID, as idxd does with its kernel PASID.</para>
/// <para>Device layout (vfio-pci offsets): config space (region 7) and BAR0 (region 0) with the ADI's
/// registers — 0x00 status (bit 0 enabled), 0x08 PASID, 0x10 software error, 0x18 fault address —
/// and the 64-byte portal at <see cref="PortalOffset"/>: writing a descriptor there executes it.</para>
/// <para>Thread safety: ADI allocation is under the driver's lock; each ADI serialises its own work.</para>
/// </remarks>
public sealed class SiovAccelDriver : MdevParentOpsBase, IMdevOpenDeviceOps, IMdevReadWriteOps
{
    /// <summary>BAR0 offset of the descriptor portal.</summary>
    public const int PortalOffset = 0x100;

    /// <summary>Size of BAR0.</summary>
    public const int Bar0Size = 0x1000;

    private const int OffsetShift = 40;
    private const int Bar0Index = 0;
    private const int ConfigIndex = 7;

    private readonly Lock _lock = new();
    private readonly IommuCore _iommu;
    private readonly Adi[] _adis;
    private int _assigned;

    /// <summary>Creates the driver for <paramref name="parent"/>.</summary>
    /// <param name="iommu">The platform's IOMMU core.</param>
    /// <param name="parent">The accelerator: must have a PASID capability and the Scalable-IOV DVSEC.</param>
    /// <param name="adiCount">How many work queues it exposes.</param>
    /// <param name="mode">How ADIs get their PASID: aux domains (5.15) or PASID attach (6.2+).</param>
    public SiovAccelDriver(IommuCore iommu, PciDevice parent, int adiCount = 8, SiovAccelMode mode = SiovAccelMode.Aux)
    {
        ArgumentNullException.ThrowIfNull(iommu);
        ArgumentNullException.ThrowIfNull(parent);
        ArgumentOutOfRangeException.ThrowIfLessThan(adiCount, 1);
        if (!parent.HasPasidCapability || !parent.HasScalableIovDvsec)
        {
            throw new ArgumentException($"{parent.Name} needs a PASID capability and the Scalable-IOV DVSEC to expose ADIs.", nameof(parent));
        }

        _iommu = iommu;
        Parent = parent;
        Mode = mode;
        _adis = new Adi[adiCount];
        for (int i = 0; i < adiCount; i++)
        {
            _adis[i] = new Adi(parent, i);
        }

        SupportedTypeGroups =
        [
            MdevTypeGroup.Conventional("wq", _ => AdiCount - AssignedCount, "vfio-pci", "Work queue", "One dedicated work queue, DMA isolated by PASID"),
        ];
    }

    /// <summary>The physical accelerator.</summary>
    public PciDevice Parent { get; }

    /// <summary>How ADIs get their PASID.</summary>
    public SiovAccelMode Mode { get; }

    /// <summary>Number of ADIs.</summary>
    public int AdiCount => _adis.Length;

    /// <summary>The ADIs.</summary>
    public IReadOnlyList<Adi> Adis => _adis;

    /// <summary>ADIs currently owned by an mdev.</summary>
    public int AssignedCount
    {
        get
        {
            lock (_lock)
            {
                return _assigned;
            }
        }
    }

    /// <inheritdoc/>
    public override string DriverName => "siov_accel";

    /// <inheritdoc/>
    public override IReadOnlyList<MdevTypeGroup> SupportedTypeGroups { get; }

    /// <summary>The ADI behind <paramref name="mdev"/>.</summary>
    /// <param name="mdev">An mdev of this driver.</param>
    /// <returns>The ADI.</returns>
    public static Adi AdiOf(IMdevDevice mdev)
    {
        ArgumentNullException.ThrowIfNull(mdev);
        return mdev.GetDrvdata() as Adi ?? throw new InvalidOperationException($"{mdev.Uuid} has no ADI.");
    }

    /// <inheritdoc/>
    public override Errno Create(IMdevDevice mdev)
    {
        ArgumentNullException.ThrowIfNull(mdev);
        Adi? adi = null;
        lock (_lock)
        {
            foreach (Adi a in _adis)
            {
                if (!a.Assigned)
                {
                    adi = a;
                    break;
                }
            }

            if (adi is null)
            {
                return ErrorDetail.Fail(Errno.ENOSPC, $"{Parent.Name}: all {AdiCount} work queues are assigned");
            }

            if (Mode == SiovAccelMode.PasidAttach)
            {
                // idxd (≈6.5): the PASID comes from the global allocator, not from a domain.
                uint pasid = _iommu.AllocGlobalPasid(Parent);
                if (pasid == IommuCore.PasidInvalid)
                {
                    return ErrorDetail.Fail(Errno.ENOSPC, $"{Parent.Name}: no PASID left for work queue {adi.Index}");
                }

                adi.AllocatedPasid = pasid;
            }
            else if (_assigned == 0)
            {
                Errno ret = _iommu.DevEnableFeature(Parent, IommuDevFeature.Aux);
                if (ret != Errno.None)
                {
                    return ret;
                }
            }

            adi.Assigned = true;
            _assigned++;
        }

        mdev.SetDrvdata(adi);
        if (Mode == SiovAccelMode.Aux)
        {
            mdev.SetIommuDevice(Parent);
        }

        return Errno.None;
    }

    /// <inheritdoc/>
    public override Errno Remove(IMdevDevice mdev)
    {
        ArgumentNullException.ThrowIfNull(mdev);
        if (mdev.GetDrvdata() is not Adi adi)
        {
            return Errno.None;
        }

        DisableAdi(adi);
        mdev.SetDrvdata(null);
        if (Mode == SiovAccelMode.Aux)
        {
            mdev.SetIommuDevice(null);
        }

        lock (_lock)
        {
            adi.Assigned = false;
            if (adi.AllocatedPasid is uint pasid)
            {
                _iommu.FreeGlobalPasid(pasid);
                adi.AllocatedPasid = null;
            }

            if (--_assigned == 0 && Mode == SiovAccelMode.Aux)
            {
                _iommu.DevDisableFeature(Parent, IommuDevFeature.Aux);
            }
        }

        return Errno.None;
    }

    /// <inheritdoc/>
    public Errno OpenDevice(IMdevDevice mdev)
    {
        Adi adi = AdiOf(mdev);
        IDomain? domain = mdev.GetIommuDomain();
        if (domain is null)
        {
            return ErrorDetail.Fail(Errno.EINVAL, $"{mdev.Uuid}: no IOMMU domain is attached on behalf of the mdev (mdev_get_iommu_domain is NULL)");
        }

        if (Mode == SiovAccelMode.PasidAttach)
        {
            uint global = adi.AllocatedPasid!.Value;
            Errno err = _iommu.AttachDevicePasid(domain, Parent, global);
            if (err != Errno.None)
            {
                return err;
            }

            adi.AttachedDomain = domain;
            adi.Program(global);
            return Errno.None;
        }

        int pasid = _iommu.AuxGetPasid(domain, Parent);
        if (pasid < 0)
        {
            return (Errno)(-pasid);
        }

        adi.Program((uint)pasid);
        return Errno.None;
    }

    /// <inheritdoc/>
    public void CloseDevice(IMdevDevice mdev) => DisableAdi(AdiOf(mdev));

    // Stops the ADI first (no DMA in flight with the PASID), then, in PASID-attach mode, detaches the domain.
    private void DisableAdi(Adi adi)
    {
        adi.Disable();
        if (adi.AttachedDomain is IDomain domain)
        {
            _iommu.DetachDevicePasid(domain, Parent, adi.AllocatedPasid!.Value);
            adi.AttachedDomain = null;
        }
    }

    /// <inheritdoc/>
    public long Read(IMdevDevice mdev, Span<byte> buffer, long offset)
    {
        Adi adi = AdiOf(mdev);
        (int index, long pos) = Split(offset);
        if (index == ConfigIndex && pos + buffer.Length <= 256)
        {
            Span<byte> cfg = stackalloc byte[256];
            BinaryPrimitives.WriteUInt16LittleEndian(cfg, Parent.Spec.VendorId);
            BinaryPrimitives.WriteUInt16LittleEndian(cfg[2..], Parent.Spec.DeviceId);
            cfg[0x0b] = 0x08; // base system peripheral
            cfg[0x0a] = 0x80; // other
            BinaryPrimitives.WriteUInt32LittleEndian(cfg[0x10..], 0x4); // 64-bit memory BAR
            cfg.Slice((int)pos, buffer.Length).CopyTo(buffer);
            return buffer.Length;
        }

        if (index == Bar0Index && pos + buffer.Length <= Bar0Size)
        {
            adi.ReadRegisters((int)pos, buffer);
            return buffer.Length;
        }

        return ErrorDetail.Fail(Errno.EINVAL, $"{mdev.Uuid}: read of {buffer.Length} bytes at region {index} offset 0x{pos:x} is outside the device").ToKernelReturn();
    }

    /// <inheritdoc/>
    public long Write(IMdevDevice mdev, ReadOnlySpan<byte> buffer, long offset)
    {
        Adi adi = AdiOf(mdev);
        (int index, long pos) = Split(offset);
        if (index == Bar0Index && pos == PortalOffset && buffer.Length == AccelDescriptor.Length)
        {
            adi.Submit(AccelDescriptor.Parse(buffer));
            return buffer.Length;
        }

        if ((index == Bar0Index && pos + buffer.Length <= Bar0Size) || (index == ConfigIndex && pos + buffer.Length <= 256))
        {
            return buffer.Length; // registers and config space are read-only here
        }

        return ErrorDetail.Fail(Errno.EINVAL, $"{mdev.Uuid}: write of {buffer.Length} bytes at region {index} offset 0x{pos:x} is outside the device (descriptors are 64-byte writes at 0x{PortalOffset:x})").ToKernelReturn();
    }

    private static (int Index, long Pos) Split(long offset) => ((int)(offset >> OffsetShift), offset & ((1L << OffsetShift) - 1));
}
