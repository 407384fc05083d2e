using System.Globalization;
using Iommu.Conformance.Tests.Qemu;
using Iommu.Conformance.Tests.Scenarios;
using Iommu.VtD.Diagnostics;
using Iommu.VtD.Hardware;

namespace Iommu.Conformance.Tests;

/// <summary>Counts of one scenario's run against QEMU.</summary>
internal sealed class ConformanceReport
{
    public int Probes { get; set; }

    public int Passed { get; set; }

    public int DataVerified { get; set; }

    public int FaultsCompared { get; set; }

    public int WithQemuDifference { get; set; }

    public List<string> Mismatches { get; } = [];

    public HashSet<string> DifferencesUsed { get; } = [];
}

/// <summary>Loads each phase's image into a QEMU machine and runs every probe as a real edu DMA.</summary>
internal static class ConformanceRunner
{
    private const ulong Sentinel = 0xA5A5_A5A5_A5A5_A5A5;
    private const int ReadOffset = 0x100;

    public static ConformanceReport Run(EduMachine m, IReadOnlyList<ScenarioPhase> phases)
    {
        var report = new ConformanceReport();
        var loaded = new Dictionary<ulong, byte[]>();
        ulong pattern = 0x1234_0000_0000_0000;
        bool enabled = false;
        foreach (ScenarioPhase phase in phases)
        {
            VtdImage image = phase.Image;

            // Load what differs from the previous phase (guest RAM starts zeroed).
            foreach (VtdImageChunk c in image.Chunks)
            {
                byte[] data = c.Data.ToArray();
                if (loaded.TryGetValue(c.Address, out byte[]? old) && old.AsSpan().SequenceEqual(data))
                {
                    continue;
                }

                for (int off = 0; off < data.Length; off += 4096)
                {
                    m.Qtest.Write(c.Address + (ulong)off, data.AsSpan(off, Math.Min(4096, data.Length - off)));
                }

                loaded[c.Address] = data;
            }

            if (!enabled)
            {
                m.EnableTranslation(image.RtAddr);
                enabled = true;
            }

            for (int i = 0; i < image.Probes.Count; i++)
            {
                VtdProbeResult r = image.Probes[i];
                QemuExpectation e = QemuExpectation.For(r, image);
                report.Probes++;
                if (e.Difference is not null)
                {
                    report.WithQemuDifference++;
                    report.DifferencesUsed.Add(e.Difference);
                }

                string? problem = e.OutsideRam
                    ? RunOutsideRam(m, r, e, report)
                    : r.Probe.Access == DmaAccess.Write
                    ? RunWrite(m, r, e, report)
                    : RunRead(m, r, e, image.Probes, ++pattern, report);
                if (problem is null)
                {
                    report.Passed++;
                }
                else
                {
                    report.Mismatches.Add(string.Create(CultureInfo.InvariantCulture,
                        $"[{phase.Name}] {ConformanceScenario.Bdf(r.Probe.RequesterId)} {r.Probe.Access} iova 0x{r.Probe.Iova:x}: model {Describe(r)}; expected from QEMU: {e}{(e.Difference is null ? "" : " (" + e.Difference + ")")}; QEMU: {problem}"));
                }
            }
        }

        return report;
    }

    // Drops the translated probes that would land outside the RAM the maps use (a 1 GiB page at PA 0 whose edge a
    // probe hits, identity domains' global points: QEMU would DMA into nothing there) and runs the rest in QEMU.
    public static ConformanceReport RunScenario(string qemu, ConformanceScenario s, ref int dropped)
    {
        var phases = new List<ScenarioPhase>();
        foreach (ScenarioPhase p in s.Build())
        {
            // Again until stable: dropping a probe can turn the next one from an IOTLB hit into a fresh walk.
            VtdImage image = p.Image;
            while (image.Probes.Any(x => !RandomConformanceScenario.Runnable(x)))
            {
                VtdProbeResult[] keep = [.. image.Probes.Where(RandomConformanceScenario.Runnable)];
                dropped += image.Probes.Count - keep.Length;
                image = image.Probe(s.Config, keep.Select(x => x.Probe), EduMachine.RamSize);
            }

            phases.Add(p with { Image = image, Driver = [] });
        }

        using var m = new EduMachine(qemu, s.Scalable, s.Requesters, TimeSpan.FromSeconds(20), s.Config.CachingMode);
        return ConformanceRunner.Run(m, phases);
    }

    public static string Describe(VtdProbeResult r) => r.Status switch
    {
        VtdTranslationStatus.Translated => $"→ 0x{r.PhysicalAddress:x} ({(r.Writable ? "rw" : "ro")}, page 0x{r.PageSize:x})",
        VtdTranslationStatus.Fault => $"fault 0x{(byte)r.Reason:x2} {r.Reason}{(r.FaultRecorded ? "" : " (not recorded: FPD)")}",
        _ => r.Status.ToString(),
    };

    // QEMU 7.2 returns the cached permissions of an IOTLB hit without a permission check (a write that
    // hits a read-only entry is dropped with no fault record): invalidate before every DMA so each
    // probe is a fresh walk, as our model's answer is.
    private static string? RunWrite(EduMachine m, VtdProbeResult r, QemuExpectation e, ConformanceReport report)
    {
        ulong pa = e.PhysicalAddress;
        if (e.Translated)
        {
            if (pa < 8 || pa + 16 > EduMachine.RamSize)
            {
                return $"scenario error: 0x{pa:x} is outside the guest's RAM";
            }

            m.Qtest.Writeq(pa - 8, Sentinel);
            m.Qtest.Writeq(pa, Sentinel);
            m.Qtest.Writeq(pa + 8, Sentinel);
        }

        m.InvalidateAll();
        m.Dma(r.Probe.RequesterId, r.Probe.Iova, EduMachine.ZeroOffset, r.Probe.Size, toRam: true);
        string? fault = CheckFault(m, r, e, report);
        if (fault is not null)
        {
            return fault;
        }

        if (e.Translated)
        {
            ulong at = m.Qtest.Readq(pa), before = m.Qtest.Readq(pa - 8), after = m.Qtest.Readq(pa + 8);
            if (at != 0 || before != Sentinel || after != Sentinel)
            {
                return $"the 8 bytes did not land exactly at 0x{pa:x} (RAM there 0x{at:x}, before 0x{before:x}, after 0x{after:x})";
            }

            report.DataVerified++;
        }

        return null;
    }

    // Nothing in RAM to look at: the DMA must only not fault.
    private static string? RunOutsideRam(EduMachine m, VtdProbeResult r, QemuExpectation e, ConformanceReport report)
    {
        m.InvalidateAll();
        m.Dma(r.Probe.RequesterId, r.Probe.Iova, r.Probe.Access == DmaAccess.Write ? EduMachine.ZeroOffset : ReadOffset, r.Probe.Size, toRam: r.Probe.Access == DmaAccess.Write);
        return CheckFault(m, r, e, report);
    }

    private static string? RunRead(EduMachine m, VtdProbeResult r, QemuExpectation e, IReadOnlyList<VtdProbeResult> all, ulong pattern, ConformanceReport report)
    {
        if (e.Translated)
        {
            m.Qtest.Writeq(e.PhysicalAddress, pattern);
        }

        m.InvalidateAll();
        m.Dma(r.Probe.RequesterId, r.Probe.Iova, ReadOffset, r.Probe.Size, toRam: false);
        string? fault = CheckFault(m, r, e, report);
        if (fault is not null || !e.Translated)
        {
            return fault;
        }

        // Bring the bytes back out through a writable mapping of the same requester that the model (and
        // its own write probe) vouch for, and check they are the pattern placed at the predicted address.
        VtdProbeResult? back = all.FirstOrDefault(x => x.Probe.RequesterId == r.Probe.RequesterId && x.Probe.Access == DmaAccess.Write
            && x.IsTranslated && x.Writable && x.PhysicalAddress != e.PhysicalAddress && x.Probe.Pasid == r.Probe.Pasid);
        if (back is null)
        {
            return null; // checked for faults only
        }

        m.Qtest.Writeq(back.PhysicalAddress, Sentinel);
        m.InvalidateAll();
        m.Dma(r.Probe.RequesterId, back.Probe.Iova, ReadOffset, r.Probe.Size, toRam: true);
        if (m.TakeFault() is { } f)
        {
            return $"read-back write to iova 0x{back.Probe.Iova:x} faulted (FRCD 0x{f.Q1:x16})";
        }

        ulong got = m.Qtest.Readq(back.PhysicalAddress);
        if (got != pattern)
        {
            return $"read returned 0x{got:x}, not the pattern 0x{pattern:x} placed at 0x{e.PhysicalAddress:x}";
        }

        report.DataVerified++;
        return null;
    }

    private static string? CheckFault(EduMachine m, VtdProbeResult r, QemuExpectation e, ConformanceReport report)
    {
        (ulong Q0, ulong Q1)? f = m.TakeFault();
        if (e.FaultReason is null)
        {
            return f is { } got ? $"recorded fault 0x{(byte)(got.Q1 >> 32):x2} (FRCD 0x{got.Q1:x16}_{got.Q0:x16})" : null;
        }

        if (f is not { } rec)
        {
            return "no fault recorded";
        }

        byte fr = (byte)(rec.Q1 >> 32);
        ushort sid = (ushort)rec.Q1;
        bool read = (rec.Q1 & (1UL << 62)) != 0;
        ulong fi = rec.Q0 & ~0xFFFUL;
        if (fr != e.FaultReason || sid != r.Probe.RequesterId || read != (r.Probe.Access == DmaAccess.Read) || fi != (r.Probe.Iova & ~0xFFFUL))
        {
            return $"fault 0x{fr:x2} sid {ConformanceScenario.Bdf(sid)} {(read ? "read" : "write")} at 0x{fi:x}";
        }

        report.FaultsCompared++;
        return null;
    }
}
