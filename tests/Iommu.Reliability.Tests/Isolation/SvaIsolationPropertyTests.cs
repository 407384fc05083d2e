using CsCheck;
using Iommu.Reliability.Tests.Infrastructure;
using Xunit.Abstractions;

namespace Iommu.Reliability.Tests.Isolation;

/// <summary>
/// The isolation property with processes (issue 21, pasid-sva.md §4 inv 1–4, 7, 9): random interleavings of SVA
/// bind/unbind, mmap'd pages munmap'd, mprotect'd, mlock'd, written by the CPU, fork (COW) and exit of up to three
/// processes, and DMA with a process's PASID from two ATS+PRI devices (untranslated or through the ATC, so hits
/// happen) and a plain PASID device. A DMA succeeds iff the CPU tables of the process bound with that PASID allow it
/// at that moment and reaches exactly that page (address and bytes); a page request is answered once, SUCCESS iff
/// the VMA allows the access, and the retry reaches the page the fault mapped.
/// </summary>
/// <remarks>
/// Plants this property caught (each put in by hand, then taken out again):
/// <list type="bullet">
/// <item>the notifier's device-TLB flush skipped (<c>SvmInvalidateRange</c> without <c>SvmFlushDevIotlb</c>): caught at
/// sample 186 of the default seed, shrunk to bind, ATS write, mprotect(PROT_NONE), ATS write reaching the old page from
/// the ATC; that sequence is kept below as a fixed example so the plant is caught on every run.</item>
/// <item>the iopf handler answering SUCCESS whatever <c>handle_mm_fault</c> returned (<c>IopfHandleSingle</c>): caught at
/// sample 2, shrunk to bind, mprotect(PROT_NONE), ATS read: the page request answered 0 (inv 2).</item>
/// </list>
/// </remarks>
public sealed class SvaIsolationPropertyTests(ITestOutputHelper output)
{
    private static readonly Gen<int> s_proc = Gen.Int[0, SvaIsolationBed.Procs - 1];
    private static readonly Gen<int> s_page = Gen.Int[0, SvaIsolationBed.Pages - 1];

    private static readonly Gen<SvaOp> s_op = Gen.Frequency(
        (6, Gen.Select(s_proc, s_page).Select((p, i) => new SvaOp(SvaOpKind.CpuWrite, 0, p, i, 0))),
        (2, Gen.Select(s_proc, s_page).Select((p, i) => new SvaOp(SvaOpKind.Munmap, 0, p, i, 0))),
        (3, Gen.Select(s_proc, s_page, Gen.Int[0, 2]).Select((p, i, a) => new SvaOp(SvaOpKind.Mprotect, 0, p, i, a))),
        (1, Gen.Select(s_proc, s_page).Select((p, i) => new SvaOp(SvaOpKind.Mlock, 0, p, i, 0))),
        (1, Gen.Select(s_proc, s_page, Gen.Int[0, 1]).Select((p, i, a) => new SvaOp(SvaOpKind.Fork, 0, p, i, a))),
        (1, s_proc.Select(p => new SvaOp(SvaOpKind.Exit, 0, p, 0, 0))),
        (1, s_proc.Select(p => new SvaOp(SvaOpKind.Spawn, 0, p, 0, 0))),
        (3, Gen.Select(Gen.Int[0, 1], s_proc).Select((d, p) => new SvaOp(SvaOpKind.Bind, d, p, 0, 0))),
        (2, Gen.Select(Gen.Int[0, 1], s_proc).Select((d, p) => new SvaOp(SvaOpKind.Unbind, d, p, 0, 0))),
        (24, Gen.Select(Gen.Int[0, SvaIsolationBed.Devices - 1], s_proc, s_page, Gen.Int[0, 3]).Select((d, p, i, a) => new SvaOp(SvaOpKind.Dma, d, p, i, a))),
        (1, Gen.Select(Gen.Int[0, SvaIsolationBed.Devices - 1], s_proc, s_page, Gen.Int[0, 1]).Select((d, p, i, a) => new SvaOp(SvaOpKind.DmaNoPasid, d, p, i, a))));

    internal static Gen<(int Config, SvaOp[] Ops)> Sample { get; } = s_op.Array[20, 120].Select(ops => (0, ops));

    internal static string Print((int Config, SvaOp[] Ops) sample) =>
        string.Join(Environment.NewLine, sample.Ops.Select(o => o.ToString()));

    [Fact]
    public void Isolation_sva_dma_and_page_requests_follow_the_cpu_tables_of_the_bound_process()
    {
        // A quarter of the core budget: each sample builds a platform and every op can go through the PRQ and iopf worker.
        long budget = ReliabilityBudget.Ops / 4;
        long requests = 0, atsOk = 0;
        (int samples, long ops, TimeSpan elapsed) = IsolationSampler.Run(
            Sample,
            s =>
            {
                using var bed = new SvaIsolationBed();
                bed.Run(s.Ops);
                requests += bed.PageRequests;
                atsOk += bed.AtsOk;
                return bed.Executed;
            },
            Print,
            budget,
            ReliabilityBudget.Seed(0x21_05A));

        output.WriteLine($"SVA isolation: {ops} ops in {samples} samples, {requests} page requests answered and retried, {atsOk} ATS DMAs ok, {elapsed.TotalSeconds:F1} s");
        Assert.True(ops >= budget);
        Assert.True(requests > 0 && atsOk > 0, "no page request or no successful ATS DMA was ever made");
    }

    // The dev-TLB plant's shrunk counterexample: the ATC holds a writable translation; mprotect(PROT_NONE) must drop it.
    [Fact]
    public void An_ats_write_after_mprotect_none_does_not_reach_the_page_through_a_warmed_atc()
    {
        using var bed = new SvaIsolationBed();
        bed.Run(
        [
            new SvaOp(SvaOpKind.Bind, 0, 0, 0, 0),
            new SvaOp(SvaOpKind.Dma, 0, 0, 4, 3),
            new SvaOp(SvaOpKind.Mprotect, 0, 0, 4, 0),
            new SvaOp(SvaOpKind.Dma, 0, 0, 4, 3),
            new SvaOp(SvaOpKind.Mprotect, 0, 0, 4, 1),
            new SvaOp(SvaOpKind.Dma, 0, 0, 4, 2),
            new SvaOp(SvaOpKind.Dma, 0, 0, 4, 3),
            new SvaOp(SvaOpKind.Munmap, 0, 0, 4, 0),
            new SvaOp(SvaOpKind.Dma, 0, 0, 4, 2),
        ]);
        Assert.Equal(9, bed.Executed);
        Assert.True(bed.PageRequests >= 3 && bed.AtsOk >= 1);
    }
}
