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
    public void Mlock_of_a_PROT_NONE_area_locks_it_then_fails_ENOMEM_and_populates_nothing_after_it()
    {
        // populate_vma_page_range sets FOLL_FORCE only for accessible areas: check_vma_flags refuses PROT_NONE with
        // -EFAULT, __mm_populate stops there and do_mlock returns __mlock_posix_error_return(-EFAULT) = -ENOMEM.
        // apply_vma_lock_flags has already locked (and charged) the whole range.
        using var p = new ProcessAddressSpace(_pages, "p");
        ulong va = p.Mmap(3 * Page);
        Assert.Equal(Errno.None, p.Mprotect(va + Page, Page, VmProt.None));

        Assert.Equal(Errno.ENOMEM, p.Mlock(va, 3 * Page));
        Assert.Equal(3, p.LockedVm);
        Assert.True(p.Walk(va).Present); // populated before the PROT_NONE area
        Assert.Equal(0UL, p.Walk(va + (2 * Page)).Pte); // not after it

        Assert.Equal(Errno.None, p.Mlock(va + (2 * Page), Page));
        Assert.True(p.Walk(va + (2 * Page)).Present);
        Assert.Equal(3, p.LockedVm);
    }

    [Fact]
    public void Mlock_leaves_hugetlb_and_pfnmap_areas_unlocked_and_uncharged()
    {
        // mlock_fixup: VM_SPECIAL (VM_PFNMAP) and hugetlb areas get no VM_LOCKED and are not counted; __mm_populate
        // skips VM_PFNMAP areas. count_mm_mlocked_page_nr counts VM_LOCKED areas only, so their pages count again
        // in every budget check.
        using var p = new ProcessAddressSpace(_pages, "p");
        ulong huge = p.Mmap(2 * Sizes.MiB, kind: VmaKind.HugePage);
        ulong bar = p.Mmap(2 * Page, kind: VmaKind.PfnMap, physicalBase: 0xfe00_0000);

        Assert.Equal(Errno.None, p.Mlock(huge, 2 * Sizes.MiB));
        Assert.Equal(Errno.None, p.Mlock(bar, 2 * Page));
        Assert.Equal(0, p.LockedVm);
        Assert.Equal(0UL, p.Walk(bar).Pte);

        p.CapIpcLock = false;
        p.RlimitMemlock = 4 * Page;
        Assert.Equal(Errno.ENOMEM, p.Mlock(huge, 2 * Sizes.MiB));
        Assert.Equal(Errno.None, p.Mlock(bar, 2 * Page));
        Assert.Equal(Errno.None, p.Mlock(bar, 2 * Page)); // never counted as already locked, nor charged
        Assert.Equal(0, p.LockedVm);

        p.Munmap(huge, 2 * Sizes.MiB);
        p.Munmap(bar, 2 * Page);
        Assert.Equal(0, p.LockedVm);
    }

    [Fact]
    public void Mlock_without_CAP_IPC_LOCK_and_a_zero_RLIMIT_MEMLOCK_is_EPERM_before_any_other_check()
    {
        // do_mlock: can_do_mlock() first.
        using var p = new ProcessAddressSpace(_pages, "p");
        ulong va = p.Mmap(Page);
        p.CapIpcLock = false;
        p.RlimitMemlock = 0;
        Assert.Equal(Errno.EPERM, p.Mlock(va, Page));
        Assert.Equal(Errno.EPERM, p.Mlock(va, 0));
        Assert.Equal(Errno.EPERM, p.Mlock(ulong.MaxValue - 0xfff, 0x2000));
        Assert.Equal(0, p.LockedVm);

        p.CapIpcLock = true;
        Assert.Equal(Errno.None, p.Mlock(va, Page));
        Assert.Equal(1, p.LockedVm);
    }

    [Fact]
    public void Mlock_past_TASK_SIZE_without_wrapping_is_ENOMEM_and_a_length_that_rounds_to_0_is_0()
    {
        // do_mlock has no TASK_SIZE check: a range above it has no VMA (apply_vma_lock_flags' -ENOMEM); only an end
        // that wraps is -EINVAL. PAGE_ALIGN(len + offset) of a length near 2^64 wraps to 0: nothing to do, 0.
        using var p = new ProcessAddressSpace(_pages, "p");
        Assert.Equal(Errno.ENOMEM, p.Mlock(0x7FFF_FFFF_F000UL, Page));
        Assert.Equal(Errno.ENOMEM, p.Mlock(0x8000_0000_0000UL, 1UL << 40));
        Assert.Equal(Errno.EINVAL, p.Mlock(ulong.MaxValue - 0xfff, 0x2000));
        Assert.Equal(Errno.None, p.Mlock(0x1000, ulong.MaxValue));
        Assert.Equal(0, p.LockedVm);
    }

    [Fact(Timeout = 30_000)]
    public async Task Mlock_of_a_huge_range_does_not_walk_its_pages()
    {
        // do_mlock's budget is len >> PAGE_SHIFT less count_mm_mlocked_page_nr over the VMAs: no walk of 2^34 pages.
        using var p = new ProcessAddressSpace(_pages, "p");
        ulong va = p.Mmap(2 * Page);
        Errno e = await Task.Run(() => p.Mlock(va, 1UL << 46));
        Assert.Equal(Errno.ENOMEM, e); // the gap after the area
        Assert.Equal(2, p.LockedVm);

        p.CapIpcLock = false;
        p.RlimitMemlock = 1UL << 50;
        e = await Task.Run(() => p.Mlock(va, 1UL << 46));
        Assert.Equal(Errno.ENOMEM, e);
        Assert.Equal(2, p.LockedVm);
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

    [Fact]
    public void A_read_pin_needs_PROT_READ_as_check_vma_flags_demands()
    {
        // check_vma_flags: a pin without FOLL_WRITE (and without FOLL_FORCE, as pin_user_pages_remote is called by
        // vaddr_get_pfns) of an area without VM_READ is -EFAULT; PROT_WRITE or PROT_EXEC alone carry no VM_READ
        // (calc_vm_prot_bits), although an x86 CPU can read through their leaves.
        using var p = new ProcessAddressSpace(_pages, "p");
        ulong wo = p.Mmap(Page, VmProt.Write);
        ulong xo = p.Mmap(Page, VmProt.Exec);
        ulong bar = p.Mmap(Page, VmProt.Write, VmaKind.PfnMap, physicalBase: 0xfe00_0000);
        Assert.Equal(Errno.EFAULT, p.PinUserPage(wo, false, out _, out _));
        Assert.Equal(Errno.EFAULT, p.PinUserPage(xo, false, out _, out _));
        Assert.Equal(Errno.EFAULT, p.PinUserPage(bar, false, out _, out _)); // follow_fault_pfn: vma_permits_fault
        Assert.Equal(Errno.None, p.Read(wo, new byte[1])); // the CPU reads all the same

        Assert.Equal(Errno.None, p.PinUserPage(wo, true, out ulong pfn, out bool reserved));
        Assert.False(reserved);
        p.UnpinUserPage(pfn, reserved);
        Assert.Equal(Errno.None, p.PinUserPage(bar, true, out pfn, out reserved));
        Assert.True(reserved);
        Assert.Equal(0xfe00_0000UL >> 12, pfn);
    }

    [Fact]
    public void Fork_neither_inherits_mlock_nor_shares_a_pinned_page_with_the_child()
    {
        // dup_mmap clears VM_LOCKED in the child (locked_vm 0); copy_present_page gives the child its own copy of a
        // page pinned for DMA, so the parent's writes keep reaching the pinned page the device reads.
        using var parent = new ProcessAddressSpace(_pages, "parent");
        ulong va = parent.Mmap(2 * Page);
        Assert.Equal(Errno.None, parent.Mlock(va, 2 * Page));
        Assert.Equal(Errno.None, parent.Write(va, [1]));
        Assert.Equal(Errno.None, parent.PinUserPage(va, true, out ulong pinned, out _));

        using ProcessAddressSpace child = parent.Fork("child");
        Assert.Equal(2, parent.LockedVm);
        Assert.Equal(0, child.LockedVm);
        Assert.NotEqual(pinned, child.Walk(va).Pfn);
        Assert.True(parent.Walk(va).Writable);
        Assert.Equal(child.Walk(va + Page).Pfn, parent.Walk(va + Page).Pfn); // not pinned: shared copy-on-write

        Assert.Equal(Errno.None, parent.Write(va, [2]));
        Assert.Equal(Errno.None, child.Write(va, [3]));
        Assert.Equal(pinned, parent.Walk(va).Pfn);
        byte[] b = new byte[1];
        _platform.Memory.Read(pinned << 12, b); // what a device reads through the pin
        Assert.Equal(2, b[0]);
        Assert.Equal(Errno.None, child.Read(va, b));
        Assert.Equal(3, b[0]);

        // The child's own mlock charges the child and breaks copy-on-write (populate with FOLL_WRITE).
        Assert.Equal(Errno.None, child.Mlock(va, 2 * Page));
        Assert.Equal(2, child.LockedVm);
        Assert.NotEqual(child.Walk(va + Page).Pfn, parent.Walk(va + Page).Pfn);
        parent.UnpinUserPage(pinned, false);
    }
}
