using System.Runtime.CompilerServices;

namespace Iommu.Internal;

/// <summary>
/// Per-thread stripes for plain (non-interlocked) counters on hot paths: each thread increments the
/// counters of its own stripe, so translating threads share no cache line; a reader sums the stripes. A
/// count can be lost only when two threads whose stripes coincide increment the same counter at the same
/// instant (odds 1 in <see cref="Count"/> per pair of threads).
/// </summary>
[SkipLocalsInit] // Offset's local is only an address: nothing to zero
internal static unsafe class ThreadStripe
{
    /// <summary>Stripes: 256.</summary>
    public const int Count = 1 << Bits;

    /// <summary>Longs per stripe: 128 bytes, so no two stripes share a cache line or its prefetch pair.</summary>
    public const int Stride = 16;

    private const int Bits = 8;

    /// <summary>
    /// The calling thread's stripe, as an offset in longs (a multiple of <see cref="Stride"/> below
    /// <see cref="Count"/> × <see cref="Stride"/>), from the address of a local: threads' stacks lie a
    /// stack size (1.5 MiB or more) apart, so the address bits above 64 KiB tell threads apart, hashed to a
    /// stripe. No memory read: a thread-static read is a <c>__tls_get_addr</c> call on Linux. A thread whose
    /// stack depth crosses a 64 KiB step counts on another stripe from then on, which only spreads its counts.
    /// The local is never written (a caller that inlines this and skips zeroing its locals spends no store on it).
    /// </summary>
    public static nuint Offset
    {
        [MethodImpl(MethodImplOptions.AggressiveInlining)]
        get
        {
            byte here;
            ulong sp = (ulong)&here;
            return (nuint)(((sp >> 16) * 0x9E3779B97F4A7C15UL) >> (64 - Bits)) * Stride;
        }
    }

    /// <summary>A pinned array of <see cref="Count"/> stripes, with one stripe of padding before them.</summary>
    /// <param name="stripes">Receives a pointer to the first stripe (valid while the array is reachable).</param>
    /// <returns>The array: keep it referenced as long as the pointer is used.</returns>
    public static long[] Allocate(out long* stripes)
    {
        long[] counts = GC.AllocateArray<long>((Count + 1) * Stride, pinned: true);
        stripes = (long*)Unsafe.AsPointer(ref counts[Stride]);
        return counts;
    }

    /// <summary>The sum of one counter over every stripe.</summary>
    /// <param name="stripes">The first stripe (from <see cref="Allocate"/>).</param>
    /// <param name="counter">The counter's index in a stripe (below <see cref="Stride"/>).</param>
    /// <returns>The total.</returns>
    public static long Sum(long* stripes, int counter)
    {
        long total = 0;
        for (int s = 0; s < Count; s++)
        {
            total += Volatile.Read(ref stripes[(s * Stride) + counter]);
        }

        return total;
    }
}
