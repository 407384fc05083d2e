using Iommu;

namespace Uacce;

/// <summary>
/// The area an mmap of a queue file creates (<c>struct vm_area_struct</c> as <c>uacce_fops_mmap</c> hands it on):
/// the driver backs it with <see cref="RemapPfnRange"/>; the process then sees the region at <see cref="Start"/>.
/// </summary>
public sealed class UacceVmArea
{
    internal UacceVmArea(UacceQueueFileRegionType type, ulong length)
    {
        Type = type;
        Length = length;
    }

    /// <summary>The region type (the mmap page offset).</summary>
    public UacceQueueFileRegionType Type { get; }

    /// <summary>Bytes, a multiple of the page size.</summary>
    public ulong Length { get; }

    /// <summary>The physical address the driver mapped, once it called <see cref="RemapPfnRange"/>.</summary>
    public ulong? PhysicalBase { get; private set; }

    /// <summary>The user address of the mapping, once mmap succeeded (0 before).</summary>
    public ulong Start { get; internal set; }

    /// <summary>Maps the whole area onto physical memory starting at <paramref name="physicalBase"/> (<c>remap_pfn_range</c>, <c>VM_PFNMAP</c>).</summary>
    /// <param name="physicalBase">Page-aligned physical address.</param>
    /// <exception cref="ArgumentException"><paramref name="physicalBase"/> is not page aligned.</exception>
    [KernelSymbol("remap_pfn_range")]
    public void RemapPfnRange(ulong physicalBase)
    {
        if ((physicalBase & (UacceCore.PageSize - 1)) != 0)
        {
            throw new ArgumentException($"0x{physicalBase:x} is not page aligned", nameof(physicalBase));
        }

        PhysicalBase = physicalBase;
    }
}
