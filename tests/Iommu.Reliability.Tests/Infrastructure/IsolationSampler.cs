using System.Diagnostics;
using CsCheck;

namespace Iommu.Reliability.Tests.Infrastructure;

/// <summary>
/// Runs a model-based property over (configuration, op list) samples deterministically until an
/// operation budget is spent, and shrinks a failure to a short op list.
/// </summary>
/// <remarks>
/// CsCheck's <c>Sample</c> draws a fresh random seed per iteration, so one CI run would differ from
/// the next. Here sample <c>k</c> is generated from <c>PCG(1, seed × φ + k)</c> (φ = 0x9E3779B97F4A7C15, odd): the
/// same seed replays the same op lists, and neighbouring seeds start far apart in PCG's stream space (with
/// <c>seed + k</c>, seed 1002 replayed seed 1001's samples shifted by one). On the first failure, CsCheck first gets a short time to shrink by size from the
/// failing PCG state (its seed string is printed so <c>CsCheck_Seed</c> replays it), then the op list
/// is minimised by deleting chunks and single ops while the same property still fails (ddmin; the
/// ops name slots and skip themselves when their precondition does not hold, so any sub-list is a
/// valid program). The exception prints the minimal list one op a line.
/// </remarks>
internal static class IsolationSampler
{
    /// <summary>Runs samples until <paramref name="budget"/> operations were executed.</summary>
    /// <typeparam name="TOp">Op type (its ToString is the printed form).</typeparam>
    /// <param name="gen">The generator.</param>
    /// <param name="run">Runs one sample; returns operations executed; throws on a violation.</param>
    /// <param name="print">Prints a sample.</param>
    /// <param name="budget">Operations to execute at least.</param>
    /// <param name="seed">Base seed.</param>
    /// <returns>Samples and operations executed, and the elapsed time.</returns>
    public static (int Samples, long Ops, TimeSpan Elapsed) Run<TOp>(
        Gen<(int Config, TOp[] Ops)> gen, Func<(int Config, TOp[] Ops), long> run, Func<(int Config, TOp[] Ops), string> print, long budget, ulong seed)
    {
        var sw = Stopwatch.StartNew();
        long executed = 0;
        int samples = 0;
        while (executed < budget)
        {
            var pcg = new PCG(1, (seed * 0x9E37_79B9_7F4A_7C15UL) + (ulong)samples);
            string seedString = pcg.ToString();
            (int Config, TOp[] Ops) input = gen.Generate(pcg, null, out _);
            try
            {
                executed += run(input);
            }
            catch (Exception first)
            {
                throw Shrink(gen, run, print, input, seedString, samples, first);
            }

            samples++;
        }

        return (samples, executed, sw.Elapsed);
    }

    private static InvalidOperationException Shrink<TOp>(
        Gen<(int Config, TOp[] Ops)> gen, Func<(int Config, TOp[] Ops), long> run, Func<(int Config, TOp[] Ops), string> print,
        (int Config, TOp[] Ops) input, string seedString, int sample, Exception first)
    {
        // 1. CsCheck: rerun from the failing state and look for smaller sizes for a few seconds.
        (int Config, TOp[] Ops) best = input;
        try
        {
            gen.Sample(t => { run(t); }, seed: seedString, iter: 1_000_000, time: 5, threads: 1, print: print);
        }
        catch (CsCheckException)
        {
            // CsCheck's message holds its own (truncated) print; we shrink further below.
        }

        // 2. ddmin over the op list of the original failure.
        bool Fails((int Config, TOp[] Ops) s)
        {
            try
            {
                run(s);
                return false;
            }
            catch (Exception)
            {
                return true;
            }
        }

        List<TOp> ops = [.. best.Ops];
        for (int chunk = Math.Max(1, ops.Count / 2); chunk >= 1;)
        {
            bool removed = false;
            for (int at = 0; at < ops.Count;)
            {
                List<TOp> candidate = [.. ops[..at], .. ops[Math.Min(ops.Count, at + chunk)..]];
                if (candidate.Count > 0 && Fails((best.Config, [.. candidate])))
                {
                    ops = candidate;
                    removed = true;
                }
                else
                {
                    at += chunk;
                }
            }

            // Halve the chunk; at single ops, repeat until a pass removes nothing (removing one op
            // can make another removable, because probes resolve their addresses against the state).
            chunk = chunk > 1 ? chunk / 2 : removed ? 1 : 0;
        }

        (int Config, TOp[] Ops) minimal = (best.Config, [.. ops]);
        string message;
        try
        {
            run(minimal);
            message = "(the minimal list passed on rerun)";
        }
        catch (Exception e)
        {
            message = e.Message;
        }

        return new InvalidOperationException(
            $"Isolation property failed at sample {sample} (CsCheck seed {seedString}, {input.Ops.Length} ops); minimal counterexample:{Environment.NewLine}"
            + $"{print(minimal)}{Environment.NewLine}failure: {message}",
            first);
    }
}
