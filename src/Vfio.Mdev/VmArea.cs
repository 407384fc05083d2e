using Iommu;

namespace Vfio.Mdev;

/// <summary>The part of a <c>struct vm_area_struct</c> an mdev <c>mmap</c> callback looks at.</summary>
/// <param name="start">First user address (<c>vm_start</c>).</param>
/// <param name="length">Length in bytes (<c>vm_end - vm_start</c>).</param>
/// <param name="pageOffset">File offset in pages (<c>vm_pgoff</c>), which encodes the region.</param>
/// <param name="writable">Whether the mapping is writable (<c>VM_WRITE</c>).</param>
[KernelSymbol("struct vm_area_struct")]
public sealed class VmArea(ulong start, ulong length, ulong pageOffset, bool writable)
{
    /// <summary>First user address.</summary>
    public ulong Start { get; } = start;

    /// <summary>Length in bytes.</summary>
    public ulong Length { get; } = length;

    /// <summary>File offset in pages.</summary>
    public ulong PageOffset { get; } = pageOffset;

    /// <summary>Whether the mapping is writable.</summary>
    public bool Writable { get; } = writable;

    /// <summary>The first physical page frame the vendor mapped (<c>remap_pfn_range</c>), or null.</summary>
    public ulong? RemappedPfn { get; private set; }

    /// <summary>Backs the whole area with physical pages from <paramref name="pfn"/> (<c>remap_pfn_range</c>).</summary>
    /// <param name="pfn">First page frame.</param>
    [KernelSymbol("remap_pfn_range")]
    public void RemapPfnRange(ulong pfn) => RemappedPfn = pfn;
}
