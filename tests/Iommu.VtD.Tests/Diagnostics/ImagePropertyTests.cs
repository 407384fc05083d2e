using System.Globalization;
using CsCheck;
using Iommu.Devices;
using Iommu.Domains;
using Iommu.Memory;
using Iommu.Mm;
using Iommu.VtD.Diagnostics;
using Iommu.VtD.Driver;
using Iommu.VtD.Hardware;
using Iommu.VtD.Tests.Driver;
using Iommu.VtD.Tests.Hardware;
using Iommu.VtD.Tests.Infrastructure;

namespace Iommu.VtD.Tests.Diagnostics;

/// <summary>
/// The memory image outside checkers load: random driver-built scenarios are exported, relocated into a
/// random window and sent through JSON, and then every sampled request must get the same answer from a
/// cold unit over the live memory, from <see cref="VtdImage.Probe"/> over the relocated image alone, and
/// from <see cref="IndependentWalker"/> over the relocated image's bytes. The test lives beside the
/// independent walker (it is internal to this project) rather than in the conformance project.
/// </summary>
public sealed class ImagePropertyTests
{
    private const ulong K4 = 4096, M2 = 2UL << 20, G1 = 1UL << 30;
    private const IommuProt RW = IommuProt.Read | IommuProt.Write;
    private const ulong MemorySize = 8 * G1;

    private static readonly string[] ConfigNames = ["Legacy39", "Legacy48", "Sm48", "Sm57", "Fl48", "Fl57", "Fl48All", "Fl57All", "Qemu48", "QemuSm48", "Legacy39NoSp", "Legacy48NoPt", "Sm48NoPt"];

    /// <summary>
    /// Random scenarios on random unit presets agree on translated/fault, output address and fault reason
    /// between the live memory, the relocated JSON round-tripped image and the independent walker, and the
    /// image holds only structures the unit reaches.
    /// </summary>
    [Fact]
    public void Property_the_relocated_image_translates_as_the_live_unit_does()
    {
        Gen.Select(Gen.Int[0, ConfigNames.Length - 1], Gen.Bool, Gen.UInt, Gen.Int[4, 16])
            .Sample((c, identity, seed, steps) => Run(ConfigNames[c], identity, seed, steps), iter: 500, threads: 1);
    }

    internal static void Run(string configName, bool identity, uint seed, int steps)
    {
        string tag = string.Create(CultureInfo.InvariantCulture, $"Run(\"{configName}\", {(identity ? "true" : "false")}, {seed}u, {steps})");
        var rng = new Random((int)seed);
        using DriverBed f = RandomDriverScenario.Bed(configName, identity);
        var devs = new List<ScenarioDevice>
        {
            Parent(f, "0000:00:02.0"),
            new(f.Pci.AddDevice(new PciDeviceSpec("0000:00:03.0") { Ats = rng.Next(2) == 0, Acs = true, DmaAliases = [0x1a, 0x85] }), false), // aliases 00:03.2 and 00:10.5

            new(f.AddDevice("0000:01:10.1"), false), // devfn 0x81: the upper half of a scalable root entry
            Parent(f, "0000:03:1f.7", rng.Next(1, 21)), // devfn 0xff, a PASID directory of any size
        };
        var scenario = new RandomDriverScenario(f, rng, identity, devs) { Nested = true };
        scenario.Start();
        for (int step = 0; step < steps; step++)
        {
            scenario.Step();
        }

        Check(tag, f, rng, devs, scenario.Maps, scenario.Svas, scenario.Pages, scenario.ExtraTables, scenario.ExtraVas, scenario.Log);
        scenario.UnbindAll();
    }

    // A PASID-capable device that takes aux domains where the unit allows it (scalable mode with PASID support).
    private static ScenarioDevice Parent(DriverBed f, string bdf, int pasidWidth = 20)
    {
        PciDevice dev = f.AddDevice(bdf, pasidWidth: pasidWidth, siov: true);
        return new ScenarioDevice(dev, f.Unit.Config.ScalableMode && f.Iommu.SetDevAttr(dev, IommuDevAttr.AuxdEnable) == Errno.None);
    }

    private static void Check(
        string tag, DriverBed f, Random rng, List<ScenarioDevice> devs, Dictionary<IDomain, List<(ulong Iova, ulong Size)>> maps,
        List<(IommuSva Handle, ProcessAddressSpace Mm, ulong Va, ScenarioDevice Dev)> svas, HostPageAllocator? pages,
        List<ulong> extraTables, List<(ScenarioDevice Dev, ulong Va)> extraVas, List<string> log)
    {
        VtdConfig config = f.Unit.Config;
        VtdImage exported = f.Unit.ExportImage();
        string Why(string what) => $"{tag}: {what}\n  " + string.Join("\n  ", log.TakeLast(16));

        // Reachability: every chunk but the root (and nested first-level tables, reached through guest-physical
        // addresses) is named by some 64-bit word of another chunk; every chunk lies in memory the driver
        // allocated tables from, a process page table of an SVA bind, or a nested guest's table page.
        var named = new HashSet<ulong>();
        foreach (VtdImageChunk c in exported.Chunks)
        {
            for (int off = 0; off + 8 <= c.Size; off += 8)
            {
                named.Add(c.Word(off) & 0x000F_FFFF_FFFF_F000UL);
            }
        }

        FrameAllocator frames = f.Platform.Frames;
        foreach (VtdImageChunk c in exported.Chunks)
        {
            bool inFrames = c.Address >= frames.RegionBase && c.Address + (ulong)c.Size <= frames.RegionBase + frames.RegionSize;
            bool processTable = c.Kind == VtdImageChunkKind.FirstLevelTable && pages is not null && svas.Count > 0 && c.Address >= pages.Base && c.Address < pages.Base + (256 * Sizes.MiB);
            bool guestTable = c.Kind == VtdImageChunkKind.NestedFirstLevelTable && extraTables.Contains(c.Address);
            Assert.True(inFrames || processTable || guestTable, Why($"chunk {c.Kind} L{c.Level} at 0x{c.Address:x} is not a table the driver, a process or a guest built"));
            // A table frame the driver freed while an entry still names it would be reused under the unit.
            for (ulong pa = c.Address; inFrames && pa < c.Address + (ulong)c.Size; pa += K4)
            {
                Assert.True(frames.IsAllocated(pa), Why($"chunk {c.Kind} L{c.Level} at 0x{c.Address:x}: frame 0x{pa:x} is free"));
            }

            if (c.Kind is not (VtdImageChunkKind.RootTable or VtdImageChunkKind.NestedFirstLevelTable))
            {
                Assert.True(named.Contains(c.Address), Why($"chunk {c.Kind} at 0x{c.Address:x} is named by no entry"));
            }
        }

        Assert.True(exported.Chunks.Count(c => c.Address >= frames.RegionBase && c.Address < frames.RegionBase + frames.RegionSize) <= frames.LiveFrames, Why("more chunks than live table frames"));

        // Relocate into a random window below 4 GiB, then through JSON.
        ulong need = exported.Chunks.Aggregate(0UL, (s, c) => s + (((ulong)c.Size + 0xFFF) & ~0xFFFUL));
        ulong windowSize = need + ((ulong)rng.Next(0, 64) * K4);
        ulong windowBase = (ulong)rng.NextInt64(1, (long)((4 * G1) - windowSize) / (long)K4) * K4;
        VtdImage moved = exported.Relocate(windowBase, windowSize);
        string json = moved.ToJson();
        VtdImage image = VtdImageJson.FromJson(json);
        Assert.True(json == image.ToJson(), Why("JSON does not round-trip"));
        Assert.All(image.Chunks.Where(c => c.Kind != VtdImageChunkKind.NestedFirstLevelTable), c => Assert.InRange(c.Address, windowBase, windowBase + windowSize - (ulong)c.Size));

        // Probes: every address space of every device at interesting and random addresses.
        var probes = new List<VtdProbe>();
        foreach (ScenarioDevice d in devs)
        {
            var targets = new List<(uint? Pasid, IDomain? Domain)> { (null, d.Rid) };
            foreach (KeyValuePair<uint, IDomain> kv in d.Pasids)
            {
                targets.Add((kv.Key, kv.Value));
            }

            if (config.ScalableMode)
            {
                targets.Add(((uint)rng.Next(1, 1 << 20), null));
                targets.Add((0, d.Rid));
            }

            foreach ((uint? pasid, IDomain? dom) in targets)
            {
                var iovas = new List<ulong>();
                if (dom is not null && maps.TryGetValue(dom, out List<(ulong Iova, ulong Size)>? list))
                {
                    foreach ((ulong iova, ulong size) in list)
                    {
                        iovas.AddRange([iova, iova + (size / 2), iova + size - 8, iova + size, iova - 8, iova + ((ulong)rng.NextInt64(0, (long)size) & ~7UL)]);
                    }
                }

                if (dom is DmarDomain { UseFirstLevel: false, NestParent: null } dd && dom.Type != DomainType.Identity)
                {
                    dd.PageTable.ForEachLeaf((i, _, s, _) => iovas.Add(i + (s / 3 & ~7UL)));
                }

                iovas.AddRange(extraVas.Where(x => x.Dev == d).Select(x => x.Va & ~7UL));
                ulong top = dom?.Geometry.ApertureEnd ?? ((1UL << 48) - 1);
                iovas.Add(top & ~7UL);
                iovas.Add(((ulong)rng.NextInt64() & top) & ~7UL);
                iovas.Add((ulong)rng.Next(0, 1 << 30) & ~7UL);
                iovas.Add((ulong)rng.NextInt64(0, (long)MemorySize) & ~7UL); // identity / pass-through
                foreach (ulong iova in iovas.Distinct().Take(50))
                {
                    if (pasid is null && iova <= 0xFEEF_FFFF && iova + 8 > 0xFEE0_0000)
                    {
                        continue; // an interrupt message, not DMA
                    }

                    foreach (ushort rid in d.Pci.Spec.DmaAliases.Select(a => (ushort)((d.Pci.RequesterId & 0xFF00) | a)).Prepend(d.Pci.RequesterId))
                    {
                        probes.Add(new VtdProbe(rid, pasid, iova, DmaAccess.Read));
                        probes.Add(new VtdProbe(rid, pasid, iova, DmaAccess.Write));
                    }
                }
            }
        }

        foreach ((IommuSva h, ProcessAddressSpace _, ulong va, ScenarioDevice dev) in svas)
        {
            uint pasid = f.Iommu.SvaGetPasid(h);
            for (ulong off = 0x10; off < 5 * K4; off += K4)
            {
                probes.Add(new VtdProbe(dev.Pci.RequesterId, pasid, va + off, DmaAccess.Read));
                probes.Add(new VtdProbe(dev.Pci.RequesterId, pasid, va + off, DmaAccess.Write));
            }
        }

        // (1) a cold unit over the live memory, from the root table the live unit latched; (2) the relocated image.
        var live = new VtdUnit(f.Platform.Memory, config);
        Program(live, exported.RtAddr, exported.TranslationEnabled);
        VtdImage probed = image.Probe(config, probes, MemorySize);

        // (3) the independent walker over the relocated image's bytes.
        using var imageMemory = new PhysicalMemory(MemorySize);
        image.LoadInto(imageMemory);
        var cold = new VtdUnit(imageMemory, config);
        Program(cold, image.RtAddr, image.TranslationEnabled);
        var walker = new IndependentWalker(cold, imageMemory);

        foreach (VtdProbeResult r in probed.Probes)
        {
            VtdProbe p = r.Probe;
            VtdTranslation l = live.Translate(p.RequesterId, p.Pasid, p.Iova, (ulong)p.Size, p.Access);
            string what = Why(string.Create(CultureInfo.InvariantCulture, $"{p.RequesterId:x4} pasid {p.Pasid?.ToString(CultureInfo.InvariantCulture) ?? "-"} 0x{p.Iova:x} {p.Access}: live {l}, image {r.Status} 0x{r.PhysicalAddress:x} {r.Reason}"));
            Assert.True(l.Status == r.Status, what);
            Assert.True(l.PhysicalAddress == r.PhysicalAddress, what);
            Assert.True(l.Reason == r.Reason, what);

            ReferenceWalk w = walker.Walk(p.RequesterId, p.Pasid, p.Iova, out _);
            if (!w.Undecided)
            {
                bool allow = w.Allows(p.Access == DmaAccess.Write);
                Assert.True(allow == r.IsTranslated, what + $"\n  walker {w}");
                Assert.True(!allow || w.Pa == r.PhysicalAddress, what + $"\n  walker {w}");
            }
            else if (config.ScalableMode)
            {
                ReferenceOutcome o = walker.Request(p.RequesterId, p.Pasid, p.Iova, new ReferenceRequestKind(p.Access == DmaAccess.Write, false, false));
                if (!o.Undecided)
                {
                    Assert.True(o.Translated == r.IsTranslated, what + $"\n  walker {o}");
                    Assert.True(o.Translated ? o.Pa == r.PhysicalAddress : o.Accepts((int)r.Reason), what + $"\n  walker {o}");
                }
            }
        }

    }

    // What VtdImage.Probe does to a cold unit: latch the root table, invalidate globally, enable translation.
    private static void Program(VtdUnit unit, ulong rtaddr, bool enable)
    {
        unit.Write64(VtdRegister.Rtaddr, rtaddr);
        unit.Write32(VtdRegister.Gcmd, VtdRegister.GcmdSrtp);
        unit.Write64(VtdRegister.Ccmd, VtdRegister.CcmdIcc | (1UL << VtdRegister.CcmdCirgShift));
        unit.Write64(VtdConfig.IotlbRegisterOffset + VtdRegister.IotlbInPair, (1UL << 63) | (1UL << 60));
        if (enable)
        {
            unit.Write32(VtdRegister.Gcmd, VtdRegister.GcmdTe);
        }
    }
}
