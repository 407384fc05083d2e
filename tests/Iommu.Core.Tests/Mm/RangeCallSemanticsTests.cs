using Iommu.Mm;

namespace Iommu.Core.Tests.Mm;

// mprotect and mlock over ranges as 5.15's do_mprotect_pkey and do_mlock handle them: the order of their checks,
// what stays changed when they stop half-way, and which areas mlock leaves alone (mm/mprotect.c, mm/mlock.c, mm/gup.c).
public sealed class RangeCallSemanticsTests : IDisposable
{
    private const ulong Page = 4096;

    private readonly Platform _platform = new();
    private readonly HostPageAllocator _pages;

    public RangeCallSemanticsTests() => _pages = HostPageAllocator.ForPlatform(_platform, 4 * Sizes.GiB, 64 * Sizes.MiB);

    public void Dispose() => _platform.Dispose();

    [Fact]
    public void Mprotect_over_a_gap_changes_the_areas_before_it_and_leaves_the_ones_after_it()
    {
        // do_mprotect_pkey: mprotect_fixup area by area from the start, -ENOMEM at the first gap.
        using var p = new ProcessAddressSpace(_pages, "p");
        ulong va = p.Mmap(4 * Page);
        p.Munmap(va + (2 * Page), Page);
        Assert.Equal(Errno.None, p.Write(va, [1]));
        Assert.Equal(Errno.None, p.Write(va + (3 * Page), [1]));

        Assert.Equal(Errno.ENOMEM, p.Mprotect(va, 4 * Page, VmProt.Read));
        Assert.Equal(Errno.EFAULT, p.Write(va + Page, [2])); // before the gap: read-only now
        Assert.Equal(Errno.None, p.Write(va + (3 * Page), [2])); // after the gap: untouched
        Assert.Equal([VmProt.Read, VmProt.ReadWrite], p.Areas.Select(a => a.Prot));

        // A range starting in the gap changes nothing.
        Assert.Equal(Errno.ENOMEM, p.Mprotect(va + (2 * Page), 2 * Page, VmProt.None));
        Assert.Equal(Errno.None, p.Write(va + (3 * Page), [3]));

        // The whole of a mapped range: 0.
        Assert.Equal(Errno.None, p.Mprotect(va + (3 * Page), Page, VmProt.Read));
        Assert.Equal(Errno.EFAULT, p.Write(va + (3 * Page), [4]));
    }

    [Fact]
    public void Mprotect_checks_alignment_then_length_then_wrap_then_prot_bits_then_the_start()
    {
        // do_mprotect_pkey's order: -EINVAL unaligned, 0 for length 0, -ENOMEM for a wrapping end,
        // arch_validate_prot's -EINVAL, -ENOMEM when no area holds the start (TASK_SIZE is not checked).
        using var p = new ProcessAddressSpace(_pages, "p");
        ulong va = p.Mmap(Page);
        const VmProt Unknown = (VmProt)0x10, ProtSem = (VmProt)8;
        Assert.Equal(Errno.EINVAL, p.Mprotect(va + 1, 0, Unknown));
        Assert.Equal(Errno.None, p.Mprotect(va, 0, Unknown));
        Assert.Equal(Errno.None, p.Mprotect(0x1000, 0, VmProt.Read)); // nothing mapped there: no lookup for length 0
        Assert.Equal(Errno.ENOMEM, p.Mprotect(ulong.MaxValue - 0xfff, 0x2000, Unknown));
        Assert.Equal(Errno.EINVAL, p.Mprotect(0x1000, Page, Unknown));
        Assert.Equal(Errno.ENOMEM, p.Mprotect(0x1000, Page, VmProt.Read));
        Assert.Equal(Errno.ENOMEM, p.Mprotect(0x8000_0000_0000UL, Page, VmProt.Read));
        Assert.Equal(Errno.EINVAL, p.Mprotect(va, Page, Unknown));
        Assert.Equal(VmProt.ReadWrite, p.Areas[0].Prot);

        Assert.Equal(Errno.None, p.Mprotect(va, Page, VmProt.Read | ProtSem)); // PROT_SEM: accepted, ignored
        Assert.Equal(VmProt.Read, p.Areas[0].Prot);
        Assert.Equal(Errno.None, p.Mprotect(va, 1, VmProt.None)); // rounded up to the page
        Assert.Equal(Errno.EFAULT, p.Read(va, new byte[1]));
    }

    [Fact]
    public void Huge_page_areas_split_only_on_2_MiB_boundaries()
    {
        // hugetlb_vm_op_split: __split_vma's -EINVAL. mprotect stops there after changing the areas before it;
        // munmap unmaps nothing.
        using var p = new ProcessAddressSpace(_pages, "p");
        ulong huge = p.Mmap(4 * Sizes.MiB, kind: VmaKind.HugePage);
        Assert.Equal(Errno.None, p.Write(huge + Page, [5]));

        Assert.Throws<ArgumentException>(() => p.Munmap(huge, Page));
        Assert.Throws<ArgumentException>(() => p.Munmap(huge + Page, 2 * Sizes.MiB));
        byte[] b = new byte[1];
        Assert.Equal(Errno.None, p.Read(huge + Page, b));
        Assert.Equal(5, b[0]);

        Assert.Equal(Errno.EINVAL, p.Mprotect(huge, Page, VmProt.Read));
        Assert.Equal(Errno.EINVAL, p.Mprotect(huge + Page, 2 * Sizes.MiB, VmProt.Read));
        Assert.Equal(Errno.None, p.Write(huge, [6]));

        Assert.Equal(Errno.None, p.Mprotect(huge + (2 * Sizes.MiB), 2 * Sizes.MiB, VmProt.Read));
        Assert.Equal(Errno.EFAULT, p.Write(huge + (2 * Sizes.MiB), [7]));
        p.Munmap(huge, 2 * Sizes.MiB);
        Assert.Equal(Errno.EFAULT, p.Read(huge, b));
        Assert.Equal(Errno.None, p.Read(huge + (2 * Sizes.MiB), b));
    }

    [Fact]
    public void Mprotect_making_a_locked_read_only_area_writable_breaks_copy_on_write_at_once()
    {
        // mprotect_fixup: (oldflags & (VM_WRITE | VM_SHARED | VM_LOCKED)) == VM_LOCKED and VM_WRITE in the new flags
        // -> populate_vma_page_range with FOLL_WRITE: the zero page mlock mapped is replaced by private writable pages.
        using var p = new ProcessAddressSpace(_pages, "p");
        ulong va = p.Mmap(2 * Page, VmProt.Read);
        Assert.Equal(Errno.None, p.Mlock(va, 2 * Page));
        Assert.Equal(_pages.ZeroPagePfn, p.Walk(va).Pfn);

        Assert.Equal(Errno.None, p.Mprotect(va, 2 * Page, VmProt.ReadWrite));
        for (ulong a = va; a < va + (2 * Page); a += Page)
        {
            X86PageWalk w = p.Walk(a);
            Assert.NotEqual(_pages.ZeroPagePfn, w.Pfn);
            Assert.True(w.Present && w.Writable);
        }

        // An area that is not locked stays as it was until a write fault.
        ulong other = p.Mmap(Page, VmProt.Read);
        Assert.Equal(Errno.None, p.Read(other, new byte[1]));
        Assert.Equal(Errno.None, p.Mprotect(other, Page, VmProt.ReadWrite));
        Assert.Equal(_pages.ZeroPagePfn, p.Walk(other).Pfn);
    }
}
