namespace Iommu.Benchmarks;

/// <summary>The workloads of shared/bench/ref_pagetable.c and ref_dma.c: the same shuffled order, IOVA sequences and bases.</summary>
internal static class Workload
{
    public const ulong IovaBase = 0x4000_0000;
    public const ulong PhysBase = 0x2_0000_0000;

    /// <summary>Where ref_dma.c maps its pages (page i at DmaIovaBase + i × 4K).</summary>
    public const ulong DmaIovaBase = 0x1000_0000;

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

    /// <summary>
    /// The first <paramref name="count"/> IOVAs of ref_dma.c's read sequence over <paramref name="pages"/>
    /// pages: xorshift64 from the same seed, a page and a <paramref name="length"/>-aligned offset in it per
    /// read. Pinned, so the C rows read the same array.
    /// </summary>
    public static ulong[] DmaIovas(int pages, int length, int count)
    {
        ulong[] iovas = GC.AllocateArray<ulong>(count, pinned: true);
        ulong s = 88172645463325252UL;
        for (int i = 0; i < count; i++)
        {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            iovas[i] = DmaIovaBase + ((s % (ulong)pages) * 4096) + ((s >> 40) % (ulong)(4096 / length) * (ulong)length);
        }

        return iovas;
    }
}
