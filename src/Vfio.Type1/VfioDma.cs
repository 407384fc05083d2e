using Iommu.Domains;
using Iommu.Mm;

namespace Vfio.Type1;

/// <summary>One mapping made by MAP_DMA (<c>struct vfio_dma</c>).</summary>
/// <remarks>Thread safety: owned by its <see cref="VfioIommuType1"/>; read it only under that backend's lock (or from tests when idle).</remarks>
public sealed class VfioDma
{
    internal readonly List<PinnedRun> Runs = [];
    internal readonly SortedDictionary<ulong, VfioPfn> PfnList = [];
    internal ulong[]? Bitmap;
    internal int Node; // its node in the backend's mapping tree

    internal VfioDma(ulong iova, ulong vaddr, ulong size, IommuProt prot, ProcessAddressSpace task, bool lockCap)
    {
        Iova = iova;
        Vaddr = vaddr;
        Size = size;
        Prot = prot;
        Task = task;
        LockCap = lockCap;
    }

    /// <summary>First IOVA.</summary>
    public ulong Iova { get; }

    /// <summary>User address the pages were (or will be) pinned from.</summary>
    public ulong Vaddr { get; internal set; }

    /// <summary>Bytes.</summary>
    public ulong Size { get; internal set; }

    /// <summary>READ / WRITE.</summary>
    public IommuProt Prot { get; }

    /// <summary>The process whose mm is charged (<c>dma-&gt;task</c>).</summary>
    public ProcessAddressSpace Task { get; }

    /// <summary>CAP_IPC_LOCK at map time.</summary>
    public bool LockCap { get; }

    /// <summary>Mapped into the IOMMU domains.</summary>
    public bool IommuMapped { get; internal set; }

    /// <summary>VADDR-invalidated (5.12+).</summary>
    public bool VaddrInvalid { get; internal set; }

    /// <summary>Pages charged to <see cref="Task"/>'s locked_vm by this mapping.</summary>
    public long LockedPages { get; internal set; }

    /// <summary>Externally pinned pages (vfio_pin_pages) in this mapping.</summary>
    public int ExternalPinCount => PfnList.Count;

    internal ulong End => Iova + Size;
}

internal readonly record struct PinnedRun(ulong Iova, ulong Pfn, ulong Pages, bool Reserved, long Accounted);

internal sealed class VfioPfn(ulong iova, ulong pfn, bool reserved)
{
    public ulong Iova { get; } = iova;

    public ulong Pfn { get; } = pfn;

    public bool Reserved { get; } = reserved;

    public int RefCount { get; set; } = 1;

    public bool Accounted { get; set; }
}
