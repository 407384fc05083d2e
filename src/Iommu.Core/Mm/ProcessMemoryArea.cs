namespace Iommu.Mm;

/// <summary>
/// One memory area of a <see cref="ProcessAddressSpace"/> (a VMA of its <c>mm_struct</c>), as
/// <see cref="ProcessAddressSpace.Areas"/> lists it.
/// </summary>
/// <remarks>
/// Not named <c>VmArea</c>: that name is <c>Vfio.Mdev.VmArea</c>, the <c>vm_area_struct</c> an mdev
/// <c>mmap</c> callback receives, and both namespaces are often imported together.
/// </remarks>
/// <param name="Start">First address.</param>
/// <param name="Length">Bytes.</param>
/// <param name="Prot">Protection.</param>
/// <param name="Kind">Backing.</param>
/// <param name="Shared"><c>MAP_SHARED</c> (pages are shared with forked children).</param>
/// <param name="PhysicalBase">For <see cref="VmaKind.PfnMap"/>: the physical address mapped at <paramref name="Start"/>.</param>
public readonly record struct ProcessMemoryArea(ulong Start, ulong Length, VmProt Prot, VmaKind Kind, bool Shared, ulong PhysicalBase)
{
    /// <summary>One past the last address.</summary>
    public ulong End => Start + Length;

    /// <summary>Whether <see cref="ProcessAddressSpace.Fork"/> leaves the area out of the child (<c>VM_DONTCOPY</c>, set e.g. by a driver's mmap).</summary>
    public bool DontCopy { get; init; }
}
