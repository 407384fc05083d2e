using System.Runtime.CompilerServices;

namespace Iommu.Internal;

/// <summary>
/// A re-entrant lock for short critical sections on the map/unmap paths: the invalidation queue
/// (the kernel's <c>qi->q_lock</c>), the unit's register file (whose driver-side mirror is
/// <c>iommu->register_lock</c>) and an IOVA domain (<c>iova_rbtree_lock</c> and the flush queue's
/// lock). All of them are spinlocks in the kernel.
/// </summary>
/// <remarks>
/// <para>Why not <see cref="Lock"/>: its release is an interlocked operation (it must see waiters to
/// wake), so an uncontended enter and exit cost two locked instructions; here the release is a plain
/// store, as a kernel spinlock's is. One <c>iommu_unmap</c> takes two such locks (the driver's queue,
/// the unit's registers) and a <c>dma_unmap_page</c> in a flush-queue domain two rounds of its IOVA
/// domain's; on the machines we measure a locked instruction costs as much as the rest of a lock
/// round trip (a <see cref="Lock"/> enter and exit measured 18 ns, this one 7).</para>
/// <para>A contended enter spins, yields and then sleeps (<see cref="SpinWait"/>); nothing holds
/// these locks across a wait for another thread, so a waiter only ever waits for a running (or
/// preempted) holder. Re-entry by the holder is allowed, as with <see cref="Lock"/>: a translation
/// that faults while the same thread processes the invalidation queue (a page group response that
/// makes a device retry) records its fault under the same lock.</para>
/// <para>Ordering: the enter is a compare-and-swap (a full barrier), the exit a release store, so
/// everything the holder did is visible to the next holder.</para>
/// </remarks>
internal sealed class RawSpinLock
{
    private int _owner; // managed thread id of the holder; 0 when free
    private int _depth; // re-entries by the holder beyond its first; written only by the holder

    /// <summary>Whether the calling thread holds the lock.</summary>
    public bool IsHeldByCurrentThread => Volatile.Read(ref _owner) == Environment.CurrentManagedThreadId;

    /// <summary>Takes the lock (again, when the calling thread holds it) until the scope is disposed.</summary>
    /// <returns>The scope; dispose it on this thread (<c>using (x.EnterScope())</c>).</returns>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public Scope EnterScope()
    {
        int me = Environment.CurrentManagedThreadId;
        if (Interlocked.CompareExchange(ref _owner, me, 0) != 0)
        {
            EnterContended(me);
        }

        return new Scope(this);
    }

    [MethodImpl(MethodImplOptions.NoInlining)]
    private void EnterContended(int me)
    {
        if (Volatile.Read(ref _owner) == me)
        {
            _depth++;
            return;
        }

        var spin = default(SpinWait);
        do
        {
            spin.SpinOnce();
        }
        while (Volatile.Read(ref _owner) != 0 || Interlocked.CompareExchange(ref _owner, me, 0) != 0);
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private void Exit()
    {
        if (_depth != 0)
        {
            _depth--;
            return;
        }

        Volatile.Write(ref _owner, 0);
    }

    /// <summary>A held lock: disposing it releases one level.</summary>
    public readonly ref struct Scope
    {
        private readonly RawSpinLock _lock;

        internal Scope(RawSpinLock owner) => _lock = owner;

        /// <summary>Releases the lock (one level of re-entry).</summary>
        [MethodImpl(MethodImplOptions.AggressiveInlining)]
        public void Dispose() => _lock.Exit();
    }
}
