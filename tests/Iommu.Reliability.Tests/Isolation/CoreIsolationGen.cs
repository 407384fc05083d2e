using CsCheck;
using Iommu.Devices;
using Iommu.Domains;
using Iommu.VtD.Driver;

namespace Iommu.Reliability.Tests.Isolation;

/// <summary>Generators of the core isolation property: op lists over a small IOVA / physical address pool so that ops collide often.</summary>
internal static class CoreIsolationGen
{
    private const ulong Sz4K = ModelDomain.Sz4K, Sz2M = ModelDomain.Sz2M, Sz1G = ModelDomain.Sz1G;

    // 1 GiB-aligned IOVA regions: low, inside memory (identity DMA works), beyond memory (identity
    // DMA is a master abort), and near the top of the 48-bit space (other top-level entries).
    // None touches the interrupt window 0xFEEx_xxxx or the table memory at the top of RAM.
    private static readonly ulong[] s_iovaRegions = [0, 1 * Sz1G, 5 * Sz1G, 511 * Sz1G, (1UL << 47) - Sz1G];

    // 1 GiB-aligned physical regions below the table memory (top 64 MiB of 8 GiB).
    private static readonly ulong[] s_paRegions = [1 * Sz1G, 2 * Sz1G, 3 * Sz1G, 6 * Sz1G];

    private static readonly ulong[] s_4kOffsets = [0, 1, 2, 511];

    private static readonly Gen<int> s_slot = Gen.Int[0, CoreOp.DomainSlots - 1];
    private static readonly Gen<int> s_dev = Gen.Int[0, CoreIsolationBed.Devices - 1];
    private static readonly Gen<int> s_target = Gen.Frequency((4, s_slot), (1, Gen.Int[CoreOp.DomainSlots, CoreOp.DomainSlots + CoreIsolationBed.Devices - 1]));

    // Page size of a map/unmap and an address aligned to it inside the pool.
    private static readonly Gen<(ulong Iova, ulong PageSize)> s_iova = Gen.Select(
        Gen.Int[0, s_iovaRegions.Length - 1], Gen.Frequency((6, Gen.Const(Sz4K)), (3, Gen.Const(Sz2M)), (1, Gen.Const(Sz1G))), Gen.Int[0, 3], Gen.Int[0, 3],
        (r, pg, m, p) => (s_iovaRegions[r] + (pg == Sz1G ? 0 : (ulong)m * Sz2M) + (pg == Sz4K ? s_4kOffsets[p] * Sz4K : 0), pg));

    private static readonly Gen<IommuProt> s_prot = Gen.Frequency(
        (4, Gen.Const(IommuProt.Read | IommuProt.Write)), (2, Gen.Const(IommuProt.Read)), (2, Gen.Const(IommuProt.Write)), (1, Gen.Const(IommuProt.Read | IommuProt.Write | IommuProt.Cache)), (1, Gen.Const(IommuProt.None)));

    private static readonly Gen<CoreOp> s_map = Gen.Select(s_target, s_iova, Gen.Int[0, s_paRegions.Length - 1], Gen.Int[0, 3], Gen.Int[0, 3], Gen.Int[1, 3], s_prot)
        .Select((t, a, pr, m, p, count, prot) =>
        {
            // The physical address usually shares the IOVA's alignment (superpages possible) and
            // sometimes not (a 2M/1G range then maps as 4K leaves).
            ulong pa = s_paRegions[pr] + (a.PageSize == Sz1G ? 0 : (ulong)m * Sz2M);
            if (a.PageSize == Sz4K || p == 3)
            {
                pa += s_4kOffsets[p] * Sz4K;
            }

            ulong size = a.PageSize == Sz1G ? Sz1G : a.PageSize * (ulong)(a.PageSize == Sz2M ? Math.Min(count, 2) : count);
            return (CoreOp)new MapOp(t, a.Iova, pa, size, prot);
        });

    // Unmap ranges that start or end inside a superpage are common: a 4K-granular start inside a
    // 2M/1G leaf, 2M from there (into the next leaf), a page size plus 4K.
    private static readonly Gen<CoreOp> s_unmap = Gen.Select(s_target, s_iova, Gen.Int[0, 5])
        .Select((t, a, s) => (CoreOp)new UnmapOp(t, a.Iova, s switch
        {
            0 => a.PageSize,
            1 => Sz4K,
            2 => a.PageSize * 2,
            3 => a.PageSize + Sz4K,
            4 => Sz2M,
            _ => Sz1G,
        }));

    private static readonly Gen<CoreOp> s_dma = Gen.Select(
            s_dev,
            Gen.Bool,
            Gen.Frequency((5, Gen.Const(ProbePasid.None)), (4, Gen.Const(ProbePasid.Known)), (1, Gen.Const(ProbePasid.Never))),
            Gen.Int[0, 7],
            Gen.Frequency((5, Gen.Const(ProbeAddr.OwnLeaf)), (2, Gen.Const(ProbeAddr.AnyLeaf)), (3, Gen.Const(ProbeAddr.Stale)), (1, Gen.Const(ProbeAddr.Pool))),
            Gen.Int[0, 1023],
            Gen.Int[0, 3])
        .Select((dev, write, pasid, pi, addr, ai, off) => new DmaOp(dev, write, pasid, pi, addr, ai, off))
        .Select(
            Gen.Frequency(
                (6, Gen.Const(DmaRequestAttributes.None)),
                (2, Gen.Const(DmaRequestAttributes.Privileged)),
                (1, Gen.Const(DmaRequestAttributes.Execute)),
                (1, Gen.Const(DmaRequestAttributes.Privileged | DmaRequestAttributes.Execute))),
            (op, attrs) => (CoreOp)(op with { Attrs = attrs }));

    private static readonly Gen<IommuVtdS1> s_s1Flags = Gen.Frequency(
        (3, Gen.Const(IommuVtdS1.None)), (3, Gen.Const(IommuVtdS1.Sre)), (3, Gen.Const(IommuVtdS1.Sre | IommuVtdS1.Wpe)), (1, Gen.Const(IommuVtdS1.Eafe | IommuVtdS1.Sre)));

    // Stage-1 leaves: mostly present, user, writable; the target is a read-write data page, a read-only
    // one, or a GPA the parent does not map.
    private static readonly Gen<CoreOp> s_stage1Set = Gen.Select(
            Gen.Int[0, CoreIsolationBed.Stage1Pages - 1],
            Gen.Int[0, CoreIsolationBed.Stage1Targets - 1],
            Gen.Frequency((8, Gen.Const(true)), (1, Gen.Const(false))),
            Gen.Frequency((3, Gen.Const(true)), (1, Gen.Const(false))),
            Gen.Frequency((3, Gen.Const(true)), (1, Gen.Const(false))),
            Gen.Bool,
            Gen.Frequency((3, Gen.Const(Stage1Inv.None)), (3, Gen.Const(Stage1Inv.Page)), (1, Gen.Const(Stage1Inv.All))))
        .Select((p, t, present, w, u, xd, inv) => (CoreOp)new Stage1SetOp(p, t, present, w, u, xd, inv));

    // DMA API maps: a page or a few (sometimes 32, or 512 for a leaf table or a superpage), at an offset
    // inside the page or not, in every direction.
    private static readonly Gen<CoreOp> s_dmaMap = Gen.Select(
            s_dev,
            Gen.Int[0, s_paRegions.Length - 1],
            Gen.Int[0, 63],
            Gen.Frequency((6, Gen.Const(1UL)), (3, Gen.Const(3UL)), (1, Gen.Const(32UL)), (1, Gen.Const(512UL))),
            Gen.Int[0, 3],
            Gen.Frequency((4, Gen.Const(DmaDataDirection.Bidirectional)), (2, Gen.Const(DmaDataDirection.ToDevice)), (2, Gen.Const(DmaDataDirection.FromDevice))))
        .Select((dev, r, page, pages, off, dir) =>
        {
            ulong pa = s_paRegions[r] + (pages == 512 && page % 2 == 0 ? 0 : (ulong)page * Sz4K) + (off == 1 ? 0x10UL : off == 2 ? 0x800UL : 0);
            ulong size = (pages * Sz4K) - (off == 3 ? 0x100UL : 0);
            return (CoreOp)new DmaMapOp(dev, pa, size, dir);
        });

    /// <summary>One op, weighted so that attach/map/DMA dominate and every op type shows up in every list.</summary>
    public static Gen<CoreOp> Op { get; } = Gen.Frequency(
        (4, s_slot.Select(s => (CoreOp)new DomainAllocOp(s))),
        (2, s_slot.Select(s => (CoreOp)new DomainFreeOp(s))),
        (5, Gen.Select(s_slot, s_dev, (s, d) => (CoreOp)new AttachOp(s, d))),
        (4, Gen.Select(s_slot, s_dev, (s, d) => (CoreOp)new DetachOp(s, d))),
        (3, Gen.Select(s_dev, Gen.Frequency((3, Gen.Const(true)), (1, Gen.Const(false))), (d, e) => (CoreOp)new AuxdOp(d, e))),
        (6, Gen.Select(s_slot, s_dev, (s, d) => (CoreOp)new AuxAttachOp(s, d))),
        (4, Gen.Select(s_slot, s_dev, (s, d) => (CoreOp)new AuxDetachOp(s, d))),
        (5, Gen.Select(Gen.Frequency((4, s_slot), (1, Gen.Const(CoreOp.DomainSlots))), s_dev, Gen.Frequency((4, Gen.Const(PasidChoice.Known)), (4, Gen.Const(PasidChoice.Global)), (1, Gen.Const(PasidChoice.Zero)), (1, Gen.Const(PasidChoice.Beyond))), Gen.Int[0, 15], (s, d, c, i) => (CoreOp)new PasidAttachOp(s, d, c, i))),
        (3, Gen.Select(s_dev, Gen.Int[0, 7], (d, i) => (CoreOp)new PasidDetachOp(d, i))),
        (14, s_map),
        (9, s_unmap),
        (8, s_dmaMap),
        (6, Gen.Select(s_dev, Gen.Int[0, 63], (d, i) => (CoreOp)new DmaUnmapOp(d, i))),
        (1, Gen.Select(s_dev, Gen.Frequency((3, Gen.Const(16)), (1, Gen.Const(255)), (1, Gen.Const(256)), (1, Gen.Const(300))), (d, n) => (CoreOp)new DmaBurstOp(d, n))),
        (3, Gen.Frequency((2, Gen.Const(1)), (2, Gen.Const(4)), (2, Gen.Const(9)), (2, Gen.Const(10)), (1, Gen.Const(30))).Select(ms => (CoreOp)new ClockOp(ms))),
        (1, Gen.Select(s_s1Flags, Gen.Frequency((6, Gen.Const(true)), (1, Gen.Const(false))), Gen.Frequency((6, Gen.Const(true)), (1, Gen.Const(false))), (f, u, w) => (CoreOp)new NestAllocOp(f, u, w))),
        (1, s_dev.Select(d => (CoreOp)new NestAttachOp(d))),
        (5, s_stage1Set),
        (2, Gen.Select(Gen.Int[0, CoreIsolationBed.Stage1Pages - 1], Gen.Frequency((4, Gen.Const(false)), (1, Gen.Const(true))), (p, all) => (CoreOp)new Stage1InvalidateOp(p, all))),
        (30, s_dma));

    /// <summary>A sample: a platform configuration and 1–500 ops.</summary>
    public static Gen<(int Config, CoreOp[] Ops)> Sample { get; } =
        Gen.Select(Gen.Int[0, CoreIsolationConfig.All.Count - 1], Op.Array[1, 500]);

    /// <summary>Indexes of the configurations whose units have both stages (first-level DMA domains, nesting).</summary>
    private static readonly int[] s_bothStages = [.. Enumerable.Range(0, CoreIsolationConfig.All.Count).Where(i => CoreIsolationConfig.All[i].BothStages)];

    /// <summary>
    /// A sample of the mixed-levels property: a configuration with both stages, a nested domain attached
    /// to one device first, then ops with more stage-1 changes, and two DMA probes in three aimed by that
    /// device at its own stage-1 pages (beside second-level UNMANAGED and first-level DMA domains).
    /// </summary>
    public static Gen<(int Config, CoreOp[] Ops)> MixedSample { get; } = Gen.Select(
            Gen.Int[0, s_bothStages.Length - 1],
            Gen.Select(s_s1Flags, Gen.Frequency((6, Gen.Const(true)), (1, Gen.Const(false))), Gen.Frequency((6, Gen.Const(true)), (1, Gen.Const(false))), (f, u, w) => new NestAllocOp(f, u, w)),
            s_dev,
            Gen.Frequency((5, Op), (2, s_stage1Set)).Array[1, 300])
        .Select((c, alloc, dev, ops) => (s_bothStages[c], (CoreOp[])[alloc, new NestAttachOp(dev), .. ops.Select((o, i) => o is DmaOp d && i % 3 != 0 ? d with { Dev = dev, Pasid = ProbePasid.None, Addr = ProbeAddr.OwnLeaf } : o)]));

    /// <summary>An IOVA of the pool (for probes that aim nowhere in particular).</summary>
    public static ulong PoolIova(int index) =>
        s_iovaRegions[index % s_iovaRegions.Length] + ((ulong)(index / s_iovaRegions.Length % 4) * Sz2M) + (s_4kOffsets[index / 20 % 4] * Sz4K);

    /// <summary>How a sample prints: the configuration, then one op a line.</summary>
    public static string Print((int Config, CoreOp[] Ops) sample) =>
        $"config {CoreIsolationConfig.All[sample.Config]}, {sample.Ops.Length} ops:{Environment.NewLine}"
        + string.Join(Environment.NewLine, sample.Ops.Select((o, i) => $"  {i,3}: {o}"));
}
