namespace Iommu.Benchmarks;

/// <summary>The workload of shared/bench/ref_pagetable.c: the same shuffled order, bases and checks.</summary>
internal static class Workload
{
    public const ulong IovaBase = 0x4000_0000;
    public const ulong PhysBase = 0x2_0000_0000;

    /// <summary>0..n-1 shuffled with the C floor's xorshift64 and seed, so both visit pages in the same order.</summary>
    public static ulong[] Order(int n)
    {
        var order = new ulong[n];
        for (int i = 0; i < n; i++)
        {
            order[i] = (ulong)i;
        }

        ulong seed = 88172645463325252UL;
        for (int i = n - 1; i > 0; i--)
        {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            int j = (int)(seed % (ulong)(i + 1));
            (order[i], order[j]) = (order[j], order[i]);
        }

        return order;
    }
}
