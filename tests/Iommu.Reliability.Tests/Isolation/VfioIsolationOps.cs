using System.Buffers.Binary;
using System.Globalization;
using CsCheck;
using Iommu.Devices;
using Iommu.Domains;
using Iommu.Mm;
using Iommu.VtD.Driver;
using Iommu.VtD.Hardware;
using SiovAccel;
using Vfio.Mdev;
using Vfio.Type1;
using Vfio.Type1.Uapi;

namespace Iommu.Reliability.Tests.Isolation;

/// <summary>One step of the VFIO-level isolation property (printed as the ioctl / sysfs action it is).</summary>
public abstract record VfioOp
{
    public const int Slots = 4;
    public const int Guests = 2;
    public const int BufferPages = 16;

    protected static string Hex(ulong v) => "0x" + v.ToString("x", CultureInfo.InvariantCulture);
}

/// <summary>echo $uuid > mdev_supported_types/siov_accel-wq/create (slot <see cref="Slot"/>).</summary>
public sealed record MdevCreateOp(int Slot) : VfioOp
{
    public override string ToString() => $"m{Slot} = mdev_create(siov_accel-wq)";
}

/// <summary>echo 1 > $mdev/remove (only when no guest uses it).</summary>
public sealed record MdevRemoveOp(int Slot) : VfioOp
{
    public override string ToString() => $"mdev_remove(m{Slot})";
}

/// <summary>Guest opens the mdev's group, SET_CONTAINER to its container (SET_IOMMU TYPE1v2 if first), GET_DEVICE_FD.</summary>
public sealed record JoinOp(int Slot, int Guest) : VfioOp
{
    public override string ToString() => $"guest{Guest}: open group of m{Slot}, SET_CONTAINER, GET_DEVICE_FD";
}

/// <summary>Close the device fd, UNSET_CONTAINER, close the group.</summary>
public sealed record LeaveOp(int Slot) : VfioOp
{
    public override string ToString() => $"m{Slot}: close device fd, UNSET_CONTAINER, close group";
}

/// <summary>VFIO_IOMMU_MAP_DMA of buffer pages [BufPage, BufPage + Pages) at IOVA page <see cref="IovaPage"/>; skipped if the model has the range mapped.</summary>
public sealed record MapDmaOp(int Guest, int IovaPage, int Pages, int BufPage, bool Write) : VfioOp
{
    public override string ToString() => $"guest{Guest}: MAP_DMA(iova {Hex(VfioIsolationBed.Iova(IovaPage))}, buf page {BufPage}, {Pages} pages, {(Write ? "RW" : "R")})";
}

/// <summary>VFIO_IOMMU_UNMAP_DMA of the guest's mapping number <see cref="Index"/> (or of an IOVA page nothing maps).</summary>
public sealed record UnmapDmaOp(int Guest, int Index, bool Exact) : VfioOp
{
    public override string ToString() => $"guest{Guest}: UNMAP_DMA({(Exact ? "mapping" : "hole")} #{Index})";
}

/// <summary>A DMA of 8 bytes by the parent with the PASID of m{Slot}'s guest (or the PASID m{Slot} last had).</summary>
public sealed record AdiDmaOp(int Slot, int IovaPage, int Offset, bool Write) : VfioOp
{
    public override string ToString() => $"adi_dma_{(Write ? "write" : "read")}(m{Slot}, iova {Hex(VfioIsolationBed.Iova(IovaPage) + (ulong)Offset)})";
}
