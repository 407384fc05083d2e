using Iommu.Memory;
using System.Buffers.Binary;
using Iommu;
using Iommu.Mm;
using Vfio.Type1.Memory;
using Vfio.Type1.Uapi;

namespace Vfio.Type1;

/// <summary>
/// A VFIO container (<c>struct vfio_container</c>, an open <c>/dev/vfio/vfio</c>): the groups it holds
/// and at most one IOMMU backend (<see cref="VfioIommuType1"/>).
/// </summary>
/// <remarks>
/// <para>Every typed method goes through the same checks as <see cref="Ioctl(uint, Span{byte})"/>, which
/// behaves like the syscall: it returns 0 (or a positive value) or a negative errno and writes output
/// fields exactly where the kernel does.</para>
/// <para>Thread safety: all members may be called concurrently; group-list changes are serialised by a
/// container lock (<c>group_lock</c>), backend operations by the backend's lock.</para>
/// </remarks>
public sealed class VfioContainer : VfioFile
{
    internal readonly Lock Sync = new();
    internal readonly List<VfioGroup> GroupList = [];
    private VfioIommuType1? _backend;

    internal VfioContainer(VfioCore core, ProcessAddressSpace owner, int id)
    {
        Core = core;
        Owner = owner;
        Id = id;
        OpenFileRef();
    }

    /// <summary>A number that tells the containers of one <see cref="VfioCore"/> apart (1, 2, … in opening order); the <c>container</c> tag of the metrics.</summary>
    public int Id { get; }

    /// <summary>The VFIO core.</summary>
    public VfioCore Core { get; }

    /// <summary>The process that opened the container (the default caller of <see cref="Ioctl(uint, Span{byte})"/>).</summary>
    public ProcessAddressSpace Owner { get; }

    /// <summary>The descriptor in <see cref="Owner"/>'s fd table.</summary>
    public int Fd { get; internal set; }

    /// <summary>True while a descriptor names the container.</summary>
    public bool IsOpen => FileRefs > 0;

    /// <summary>The IOMMU backend, null before SET_IOMMU and after the last group left.</summary>
    public VfioIommuType1? Backend => Volatile.Read(ref _backend);

    /// <summary>The groups in the container.</summary>
    public IReadOnlyList<VfioGroup> Groups
    {
        get
        {
            lock (Sync)
            {
                return [.. GroupList];
            }
        }
    }

    /// <summary>Closes <see cref="Fd"/> in the owner's fd table.</summary>
    /// <returns>0 or -EBADF.</returns>
    public Errno Close() => Owner.Close(Fd);

    private protected override (ProcessAddressSpace? Owner, int Fd) OpenedAs => (Owner, Fd);

    /// <summary>The container ioctl as the owner issues it (see <see cref="Ioctl(ProcessAddressSpace, uint, Span{byte})"/>).</summary>
    /// <param name="request">Ioctl number.</param>
    /// <param name="arg">Argument bytes.</param>
    /// <returns>The syscall result: ≥ 0, or a negative errno.</returns>
    public int Ioctl(uint request, Span<byte> arg) => Ioctl(Owner, request, arg);

    /// <summary>
    /// The container ioctl (<c>vfio_fops_unl_ioctl</c>). For requests whose argument is a value rather than
    /// a pointer (CHECK_EXTENSION, SET_IOMMU) <paramref name="arg"/> holds that value little-endian (4 or 8
    /// bytes; empty = 0). For pointer requests <paramref name="arg"/> is the user structure; pointers
    /// inside it (the dirty bitmap) are addresses in <paramref name="caller"/>.
    /// </summary>
    /// <param name="caller">The calling process (<c>current</c>).</param>
    /// <param name="request">Ioctl number.</param>
    /// <param name="arg">Argument bytes.</param>
    /// <returns>The syscall result: ≥ 0, or a negative errno.</returns>
    [KernelSymbol("vfio_fops_unl_ioctl")]
    public int Ioctl(ProcessAddressSpace caller, uint request, Span<byte> arg)
    {
        using PhysicalMemory.AccessScope guard = Core.Platform.Memory.EnterAccess();
        ArgumentNullException.ThrowIfNull(caller);
        switch (request)
        {
            case VfioUapi.VFIO_GET_API_VERSION:
                return VfioUapi.VFIO_API_VERSION;
            case VfioUapi.VFIO_CHECK_EXTENSION:
                return CheckExtension(ValueArg(arg));
            case VfioUapi.VFIO_SET_IOMMU:
                return -(int)SetIommu(ValueArg(arg));
            default:
                VfioIommuType1? b = Backend;
                return b is null
                    ? -(int)ErrorDetail.Fail(Errno.EINVAL, $"container ioctl 0x{request:x} before SET_IOMMU")
                    : b.Ioctl(caller, request, arg);
        }
    }

    /// <summary>A value-argument ioctl (CHECK_EXTENSION, SET_IOMMU, …) as the owner issues it.</summary>
    /// <param name="request">Ioctl number.</param>
    /// <param name="value">The argument value.</param>
    /// <returns>The syscall result.</returns>
    public int Ioctl(uint request, ulong value)
    {
        using PhysicalMemory.AccessScope guard = Core.Platform.Memory.EnterAccess();
        Span<byte> b = stackalloc byte[8];
        BinaryPrimitives.WriteUInt64LittleEndian(b, value);
        return Ioctl(Owner, request, b);
    }

    /// <summary><c>VFIO_GET_API_VERSION</c>.</summary>
    /// <returns>0.</returns>
    public static int GetApiVersion() => VfioUapi.VFIO_API_VERSION;

    /// <summary><c>VFIO_CHECK_EXTENSION</c>: the backend's answer, or type1's answer without a backend instance.</summary>
    /// <param name="extension">Extension number.</param>
    /// <returns>0 or 1.</returns>
    /// <remarks>5.15: UPDATE_VADDR is 1 with or without a backend (6.1.192 answers 0 without one).</remarks>
    [KernelSymbol("vfio_ioctl_check_extension")]
    public int CheckExtension(long extension)
    {
        using PhysicalMemory.AccessScope guard = Core.Platform.Memory.EnterAccess();
        VfioIommuType1? b = Backend;
        return b is not null ? b.CheckExtension(extension) : VfioIommuType1.CheckExtensionNoBackend(extension);
    }

    /// <summary><c>VFIO_SET_IOMMU</c>: opens the type1 backend and attaches every group of the container.</summary>
    /// <param name="type">TYPE1 (1), TYPE1v2 (3) or TYPE1_NESTING (6).</param>
    /// <returns>0; -EINVAL (no groups, backend already set, type 9/10 rejected by open, attach failure); -ENODEV (unknown type); attach errors.</returns>
    [KernelSymbol("vfio_ioctl_set_iommu")]
    public Errno SetIommu(long type)
    {
        using PhysicalMemory.AccessScope guard = Core.Platform.Memory.EnterAccess();
        lock (Sync)
        {
            if (GroupList.Count == 0 || _backend is not null)
            {
                return ErrorDetail.Fail(Errno.EINVAL, GroupList.Count == 0 ? "SET_IOMMU: container has no group" : "SET_IOMMU: backend already set");
            }

            if (VfioIommuType1.CheckExtensionNoBackend(type) <= 0)
            {
                return ErrorDetail.Fail(Errno.ENODEV, $"SET_IOMMU: no backend supports type {type}");
            }

            Errno e = VfioIommuType1.Open(this, type, out VfioIommuType1? backend);
            if (e != Errno.None)
            {
                return e;
            }

            for (int i = 0; i < GroupList.Count; i++)
            {
                e = backend!.AttachGroup(GroupList[i]);
                if (e != Errno.None)
                {
                    for (int j = 0; j < i; j++)
                    {
                        backend.DetachGroup(GroupList[j]);
                    }

                    backend.Release();
                    return e;
                }
            }

            Volatile.Write(ref _backend, backend);
            Core.AddBackend(backend!);
            return Errno.None;
        }
    }

    /// <summary><c>VFIO_IOMMU_MAP_DMA</c> as the owner issues it.</summary>
    /// <param name="map">The request.</param>
    /// <returns>0 or the errno of <c>vfio_dma_do_map</c>.</returns>
    public Errno MapDma(in VfioIommuType1DmaMap map) => MapDma(Owner, map);

    /// <summary><c>VFIO_IOMMU_MAP_DMA</c> issued by <paramref name="caller"/>.</summary>
    /// <param name="caller">Calling process (the memory is pinned from it and charged to it).</param>
    /// <param name="map">The request.</param>
    /// <returns>0 or the errno of <c>vfio_dma_do_map</c>.</returns>
    public Errno MapDma(ProcessAddressSpace caller, in VfioIommuType1DmaMap map)
    {
        using PhysicalMemory.AccessScope guard = Core.Platform.Memory.EnterAccess();
        Span<byte> b = stackalloc byte[VfioIommuType1DmaMap.StructSize];
        map.Write(b);
        return ErrnoExtensions.FromKernelReturn(Ioctl(caller, VfioUapi.VFIO_IOMMU_MAP_DMA, b));
    }

    /// <summary><c>VFIO_IOMMU_UNMAP_DMA</c> as the owner issues it; on success <paramref name="unmap"/>'s size is the number of bytes removed.</summary>
    /// <param name="unmap">The request; updated as the kernel copies it back.</param>
    /// <returns>0 or the errno of <c>vfio_dma_do_unmap</c>.</returns>
    /// <exception cref="InvalidOperationException">A vendor driver kept pages of a mapping pinned through the DMA-unmap
    /// notifications 5.15 sends before its <c>BUG_ON(++retries &gt; 10)</c> in <c>vfio_dma_do_unmap</c> (it did not call
    /// <see cref="VfioCore.UnpinPages"/>, or could not: say, an mdev opened with <c>MdevDevice.Open</c> outside VFIO whose
    /// group has since left the container). That mapping stays; those before it in the range are already unmapped.</exception>
    public Errno UnmapDma(ref VfioIommuType1DmaUnmap unmap) => UnmapDma(Owner, ref unmap);

    /// <summary><c>VFIO_IOMMU_UNMAP_DMA</c> issued by <paramref name="caller"/>.</summary>
    /// <param name="caller">Calling process (owner of the bitmap memory).</param>
    /// <param name="unmap">The request; updated as the kernel copies it back.</param>
    /// <returns>0 or the errno of <c>vfio_dma_do_unmap</c>.</returns>
    /// <exception cref="InvalidOperationException">A vendor driver kept pages of a mapping pinned through the DMA-unmap
    /// notifications 5.15 sends before its <c>BUG_ON(++retries &gt; 10)</c> in <c>vfio_dma_do_unmap</c> (it did not call
    /// <see cref="VfioCore.UnpinPages"/>, or could not: say, an mdev opened with <c>MdevDevice.Open</c> outside VFIO whose
    /// group has since left the container). That mapping stays; those before it in the range are already unmapped.</exception>
    public Errno UnmapDma(ProcessAddressSpace caller, ref VfioIommuType1DmaUnmap unmap)
    {
        using PhysicalMemory.AccessScope guard = Core.Platform.Memory.EnterAccess();
        Span<byte> b = stackalloc byte[48];
        unmap.Write(b);
        int len = (unmap.Flags & VfioUapi.VFIO_DMA_UNMAP_FLAG_GET_DIRTY_BITMAP) != 0 ? 48 : VfioIommuType1DmaUnmap.StructSize;
        int r = Ioctl(caller, VfioUapi.VFIO_IOMMU_UNMAP_DMA, b[..len]);
        unmap = VfioIommuType1DmaUnmap.ReadHeader(b) with { Bitmap = unmap.Bitmap };
        return ErrnoExtensions.FromKernelReturn(r);
    }

    /// <summary><c>VFIO_IOMMU_GET_INFO</c> into <paramref name="buffer"/> (its first four bytes must hold <c>argsz</c>).</summary>
    /// <param name="buffer">The user structure and room for the capability chain.</param>
    /// <returns>0 or the errno of <c>vfio_iommu_type1_get_info</c>.</returns>
    public Errno GetInfo(Span<byte> buffer) => ErrnoExtensions.FromKernelReturn(Ioctl(Owner, VfioUapi.VFIO_IOMMU_GET_INFO, buffer));

    /// <summary><c>VFIO_IOMMU_DIRTY_PAGES</c> with START or STOP.</summary>
    /// <param name="flags">START or STOP.</param>
    /// <returns>0 or the errno of <c>vfio_iommu_type1_dirty_pages</c>.</returns>
    public Errno DirtyPages(uint flags)
    {
        using PhysicalMemory.AccessScope guard = Core.Platform.Memory.EnterAccess();
        Span<byte> b = stackalloc byte[VfioIommuType1DirtyBitmap.StructSize];
        new VfioIommuType1DirtyBitmap(VfioIommuType1DirtyBitmap.StructSize, flags).Write(b);
        return ErrnoExtensions.FromKernelReturn(Ioctl(Owner, VfioUapi.VFIO_IOMMU_DIRTY_PAGES, b));
    }

    /// <summary><c>VFIO_IOMMU_DIRTY_PAGES</c> with GET_BITMAP: the bitmap is written to <paramref name="bitmap"/>.<see cref="VfioBitmap.Data"/> in the owner's memory.</summary>
    /// <param name="iova">First IOVA.</param>
    /// <param name="size">Bytes.</param>
    /// <param name="bitmap">Bitmap description.</param>
    /// <returns>0 or the errno of <c>vfio_iommu_type1_dirty_pages</c>.</returns>
    public Errno GetDirtyBitmap(ulong iova, ulong size, VfioBitmap bitmap)
    {
        using PhysicalMemory.AccessScope guard = Core.Platform.Memory.EnterAccess();
        const int len = VfioIommuType1DirtyBitmap.StructSize + VfioIommuType1DirtyBitmapGet.StructSize;
        Span<byte> b = stackalloc byte[len];
        new VfioIommuType1DirtyBitmap(len, VfioUapi.VFIO_IOMMU_DIRTY_PAGES_FLAG_GET_BITMAP).Write(b);
        new VfioIommuType1DirtyBitmapGet(iova, size, bitmap).Write(b[VfioIommuType1DirtyBitmap.StructSize..]);
        return ErrnoExtensions.FromKernelReturn(Ioctl(Owner, VfioUapi.VFIO_IOMMU_DIRTY_PAGES, b));
    }

    // __vfio_group_unset_container: caller holds Sync.
    internal void RemoveGroupLocked(VfioGroup group)
    {
        VfioIommuType1? b = _backend;
        b?.DetachGroup(group);
        GroupList.Remove(group);
        if (GroupList.Count == 0 && b is not null)
        {
            b.Release();
            Volatile.Write(ref _backend, null);
            Core.RemoveBackend(b);
        }
    }

    private protected override void Release() => Backend?.NotifyContainerClosed();

    private static long ValueArg(ReadOnlySpan<byte> arg) => arg.Length switch
    {
        >= 8 => BinaryPrimitives.ReadInt64LittleEndian(arg),
        >= 4 => BinaryPrimitives.ReadInt32LittleEndian(arg),
        _ => 0,
    };
}
