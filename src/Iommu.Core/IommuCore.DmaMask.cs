using Iommu.Devices;
using Iommu.Domains;
using Iommu.Internal;

namespace Iommu;

// A device's DMA addressing limits (kernel/dma/mapping.c and include/linux/dma-mapping.h, 5.15): the streaming and
// coherent DMA masks, and the segment limits a scatterlist map respects (dev->dma_parms).
public sealed partial class IommuCore
{
    private const ulong ZoneDmaMask = 0xFF_FFFF; // DMA_BIT_MASK(zone_dma_bits), zone_dma_bits = 24 on x86
    private const uint DefaultMaxSegSize = 65536; // SZ_64K

    /// <summary>
    /// Sets the DMA mask of <paramref name="device"/> (<c>dma_set_mask</c>): the highest DMA address its
    /// streaming mappings may get.
    /// </summary>
    /// <param name="device">The device.</param>
    /// <param name="mask">The mask, e.g. <c>0xffff_ffff</c> for a device that drives 32 address bits.</param>
    /// <returns>
    /// <see cref="Errno.None"/>, or EIO (nothing changes): the device has no DMA mask (an mdev), or
    /// <c>dma_supported</c> refuses the mask. A device whose DMA goes through an IOMMU DMA domain
    /// (<c>iommu_dma_ops</c>, which has no <c>dma_supported</c>) accepts any mask; any other device is
    /// served by dma-direct, which accepts 32 bits and more, and a smaller mask only when it reaches the
    /// last page of RAM or covers ZONE_DMA's 16 MiB (<c>dma_direct_supported</c>).
    /// </returns>
    /// <remarks>
    /// The mask limits the IOVAs the DMA API allocates in an IOMMU DMA domain (<c>iommu_dma_alloc_iova</c>:
    /// below the mask and the domain's aperture; PCI devices whose limit is above 4 GiB still try below 4 GiB
    /// first) and, on the dma-direct path, the physical addresses a mapping may use: one whose last byte is
    /// above the mask fails (the kernel bounces it through swiotlb where that is active; the model has no
    /// swiotlb). Which ops serve the device is decided at each call from its group's default domain (the
    /// kernel decides at probe, <c>iommu_setup_dma_ops</c>).
    /// </remarks>
    /// <exception cref="ArgumentNullException"><paramref name="device"/> is null.</exception>
    [KernelSymbol("dma_set_mask")]
    public Errno DmaSetMask(Device device, ulong mask)
    {
        using Memory.PhysicalMemory.AccessScope guard = Platform.Memory.EnterAccess();
        ArgumentNullException.ThrowIfNull(device);
        if (!device.HasDmaMask)
        {
            return ErrorDetail.Fail(Errno.EIO, $"{device.Name} has no DMA mask (dev->dma_mask is NULL)");
        }

        if (!DmaSupported(device, mask))
        {
            return ErrorDetail.Fail(Errno.EIO, DmaUnsupportedText(device, mask));
        }

        Volatile.Write(ref device.DmaMaskValue, mask);
        return Errno.None;
    }

    /// <summary>
    /// Sets the coherent DMA mask of <paramref name="device"/> (<c>dma_set_coherent_mask</c>): the highest
    /// DMA address of its coherent buffers (<see cref="DmaAllocCoherent"/>).
    /// </summary>
    /// <param name="device">The device.</param>
    /// <param name="mask">The mask.</param>
    /// <returns><see cref="Errno.None"/>, or EIO when <c>dma_supported</c> refuses the mask (as for <see cref="DmaSetMask"/>; nothing changes).</returns>
    /// <remarks>As in the kernel this needs no <c>dev->dma_mask</c>: an mdev's coherent mask can be set.</remarks>
    /// <exception cref="ArgumentNullException"><paramref name="device"/> is null.</exception>
    [KernelSymbol("dma_set_coherent_mask")]
    public Errno DmaSetCoherentMask(Device device, ulong mask)
    {
        using Memory.PhysicalMemory.AccessScope guard = Platform.Memory.EnterAccess();
        ArgumentNullException.ThrowIfNull(device);
        if (!DmaSupported(device, mask))
        {
            return ErrorDetail.Fail(Errno.EIO, DmaUnsupportedText(device, mask));
        }

        Volatile.Write(ref device.CoherentDmaMaskValue, mask);
        return Errno.None;
    }

    /// <summary>
    /// Sets both masks of <paramref name="device"/> (<c>dma_set_mask_and_coherent</c>): the DMA mask, then,
    /// if that succeeded, the coherent mask.
    /// </summary>
    /// <param name="device">The device.</param>
    /// <param name="mask">The mask.</param>
    /// <returns>What <see cref="DmaSetMask"/> returns (the coherent mask is set only when that is <see cref="Errno.None"/>).</returns>
    /// <exception cref="ArgumentNullException"><paramref name="device"/> is null.</exception>
    [KernelSymbol("dma_set_mask_and_coherent")]
    public Errno DmaSetMaskAndCoherent(Device device, ulong mask)
    {
        Errno rc = DmaSetMask(device, mask);
        if (rc == Errno.None)
        {
            DmaSetCoherentMask(device, mask);
        }

        return rc;
    }

    /// <summary>The DMA mask the DMA API uses for <paramref name="device"/> (<c>dma_get_mask</c>): its mask, or 32 bits when it has none.</summary>
    /// <param name="device">The device.</param>
    /// <returns>The mask (32 bits also when the mask is 0).</returns>
    /// <exception cref="ArgumentNullException"><paramref name="device"/> is null.</exception>
    [KernelSymbol("dma_get_mask")]
    public static ulong DmaGetMask(Device device)
    {
        ArgumentNullException.ThrowIfNull(device);
        return device.DmaMask is ulong mask and not 0 ? mask : Dma32BitLimit;
    }

    /// <summary>
    /// Sets the longest DMA segment a scatterlist map of <paramref name="device"/> produces
    /// (<c>dma_set_max_seg_size</c>; 64 KiB until set).
    /// </summary>
    /// <param name="device">The device.</param>
    /// <param name="size">Bytes.</param>
    /// <returns><see cref="Errno.None"/>, or EIO for a device without DMA parameters (<c>dev->dma_parms</c>: PCI devices have them, others in the model do not).</returns>
    /// <exception cref="ArgumentNullException"><paramref name="device"/> is null.</exception>
    [KernelSymbol("dma_set_max_seg_size")]
    public Errno DmaSetMaxSegSize(Device device, uint size)
    {
        using Memory.PhysicalMemory.AccessScope guard = Platform.Memory.EnterAccess();
        ArgumentNullException.ThrowIfNull(device);
        if (!device.HasDmaParms)
        {
            return ErrorDetail.Fail(Errno.EIO, $"{device.Name} has no DMA parameters (dev->dma_parms is NULL)");
        }

        Volatile.Write(ref device.MaxSegmentSize, size);
        return Errno.None;
    }

    /// <summary>The longest DMA segment a scatterlist map of <paramref name="device"/> produces (<c>dma_get_max_seg_size</c>).</summary>
    /// <param name="device">The device.</param>
    /// <returns>Bytes: what <see cref="DmaSetMaxSegSize"/> set, 64 KiB before, for a device without DMA parameters, and when 0 was set (as the kernel reads 0).</returns>
    /// <exception cref="ArgumentNullException"><paramref name="device"/> is null.</exception>
    [KernelSymbol("dma_get_max_seg_size")]
    public static uint DmaGetMaxSegSize(Device device)
    {
        ArgumentNullException.ThrowIfNull(device);
        uint size = Volatile.Read(ref device.MaxSegmentSize);
        return size != 0 ? size : DefaultMaxSegSize; // "if (dev->dma_parms && dev->dma_parms->max_segment_size)"
    }

    /// <summary>
    /// Sets the address boundary no DMA segment of <paramref name="device"/> may cross (<c>dma_set_seg_boundary</c>):
    /// a mask of the form 2^n - 1.
    /// </summary>
    /// <param name="device">The device.</param>
    /// <param name="mask">The boundary mask (PCI devices start at <c>0xffff_ffff</c>: no segment crosses a 4 GiB line).</param>
    /// <returns><see cref="Errno.None"/>, or EIO for a device without DMA parameters.</returns>
    /// <exception cref="ArgumentNullException"><paramref name="device"/> is null.</exception>
    /// <exception cref="ArgumentOutOfRangeException"><paramref name="mask"/> + 1 is not a power of two (the DMA API's layout depends on it; the kernel does not check).</exception>
    [KernelSymbol("dma_set_seg_boundary")]
    public Errno DmaSetSegBoundary(Device device, ulong mask)
    {
        using Memory.PhysicalMemory.AccessScope guard = Platform.Memory.EnterAccess();
        ArgumentNullException.ThrowIfNull(device);
        if ((mask & (mask + 1)) != 0 || mask < Memory.PhysicalMemory.PageSize - 1)
        {
            throw new ArgumentOutOfRangeException(nameof(mask), mask, $"A segment boundary mask must be 2^n - 1 with n >= 12, not 0x{mask:x}.");
        }

        if (!device.HasDmaParms)
        {
            return ErrorDetail.Fail(Errno.EIO, $"{device.Name} has no DMA parameters (dev->dma_parms is NULL)");
        }

        Volatile.Write(ref device.SegmentBoundaryMask, mask);
        return Errno.None;
    }

    /// <summary>The boundary no DMA segment of <paramref name="device"/> crosses (<c>dma_get_seg_boundary</c>).</summary>
    /// <param name="device">The device.</param>
    /// <returns>The mask: <c>0xffff_ffff</c> for a PCI device until set, all ones for a device without DMA parameters.</returns>
    /// <exception cref="ArgumentNullException"><paramref name="device"/> is null.</exception>
    [KernelSymbol("dma_get_seg_boundary")]
    public static ulong DmaGetSegBoundary(Device device)
    {
        ArgumentNullException.ThrowIfNull(device);
        return Volatile.Read(ref device.SegmentBoundaryMask);
    }

    // dma_supported: iommu_dma_ops has no ->dma_supported (any mask); dma-direct: dma_direct_supported.
    private bool DmaSupported(Device device, ulong mask)
    {
        if (device.IommuGroup?.DefaultDomain is { } domain && domain.Type.IsDmaApi())
        {
            return true;
        }

        return mask >= Dma32BitLimit || mask >= DirectMinMask();
    }

    // dma_direct_supported's min_mask: the last page of RAM ((max_pfn - 1) << PAGE_SHIFT), at most ZONE_DMA's mask.
    private ulong DirectMinMask()
    {
        Memory.PhysicalMemory memory = Platform.Memory;
        IReadOnlyList<Memory.HostMemoryRange>? ram = memory.HostRanges;
        ulong end = ram is { Count: > 0 } ? ram[^1].PhysicalAddress + ram[^1].Length : memory.Size;
        return Math.Min(end - Memory.PhysicalMemory.PageSize, ZoneDmaMask);
    }

    private string DmaUnsupportedText(Device device, ulong mask) =>
        $"DMA mask 0x{mask:x} of {device.Name} is below what dma-direct can serve: 32 bits, or 0x{DirectMinMask():x} (the last page of RAM or ZONE_DMA, dma_direct_supported)";
}
