namespace Iommu.Mm;

/// <summary>
/// A subscriber to a process's page-table changes (<c>struct mmu_notifier</c> with its
/// <c>mmu_notifier_ops</c>): how an IOMMU that walks the CPU's tables (SVA) keeps its caches in step.
/// </summary>
/// <remarks>
/// <para>Order (5.15 <c>mmu_notifier.h</c>): <see cref="InvalidateRange"/> runs after the leaves of the
/// range were changed (munmap, mprotect, a copy-on-write break, fork's write-protection of the
/// parent) and before any page they named is freed or reused; <see cref="Release"/> runs once at exit,
/// before the tables and pages are freed, and the subscription ends with it.</para>
/// <para>Versions: this is 5.15's <c>invalidate_range</c> hook. 6.6+ renames the secondary-TLB hook
/// (the spec marks that rename UNVERIFIED); the model keeps the 5.15 name and calls it at the same
/// point, which is what SVA's flush depends on. The calls cover the smallest page range holding every
/// changed leaf of one operation (the kernel may also split them into sub-ranges).</para>
/// <para>Both run under the process's lock: they may read the process (same thread) but must not wait
/// for another thread that uses it.</para>
/// </remarks>
public abstract class MmuNotifier
{
    /// <summary>The leaves of <c>[start, end)</c> changed; flush every cached translation of the range.</summary>
    /// <param name="mm">The process.</param>
    /// <param name="start">Page-aligned start.</param>
    /// <param name="end">Page-aligned end (exclusive).</param>
    [KernelSymbol("mmu_notifier_ops.invalidate_range")]
    public abstract void InvalidateRange(ProcessAddressSpace mm, ulong start, ulong end);

    /// <summary>The process is exiting (<c>exit_mmap</c>): stop using its tables. Default: nothing.</summary>
    /// <param name="mm">The process.</param>
    [KernelSymbol("mmu_notifier_ops.release")]
    public virtual void Release(ProcessAddressSpace mm)
    {
    }
}
