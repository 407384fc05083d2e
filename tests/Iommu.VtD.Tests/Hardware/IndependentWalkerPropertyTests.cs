using CsCheck;
using Iommu.Devices;
using Iommu.Domains;
using Iommu.Mm;
using Iommu.VtD.Driver;
using Iommu.VtD.Hardware;
using Iommu.VtD.Tests.Driver;
using Iommu.VtD.Tests.Infrastructure;

namespace Iommu.VtD.Tests.Hardware;

/// <summary>
/// The tables the driver builds, read by <see cref="IndependentWalker"/> (a walker written from the hardware
/// notes, sharing no code with the model or the driver), against the unit's translation and the core's
/// iova_to_phys, over random scenarios driven through the core API as a user drives it.
/// </summary>
public sealed class IndependentWalkerPropertyTests
{
    private const ulong K4 = 4096, M2 = 2UL << 20, G1 = 1UL << 30;
    private const IommuProt RW = IommuProt.Read | IommuProt.Write;

    private static readonly string[] ConfigNames = ["Legacy39", "Legacy48", "Sm48", "Sm57", "Fl48", "Fl57", "Fl48All", "Fl57All", "Sm48Cm", "Legacy39NoSp"];

    /// <summary>
    /// After every step of a random sequence (<see cref="RandomDriverScenario"/>: maps of 4 KiB to 1 GiB pages at
    /// random IOVAs up to the top of the aperture, with holes, unmaps, attach and detach, aux attach, PASID attach,
    /// DMA-API maps, SVA binds, domain free), every sampled request (requester, PASID or none, IOVA, read or write) gets the same answer from the
    /// unit and from the independent walker, and that answer is what iova_to_phys of the request's domain says.
    /// </summary>
    [Fact]
    public void Property_the_unit_and_an_independent_walker_agree_on_every_driver_built_table()
    {
        Gen.Select(Gen.Int[0, ConfigNames.Length - 1], Gen.Bool, Gen.UInt, Gen.Int[4, 14])
            .Sample((c, identity, seed, steps) => Run(ConfigNames[c], identity, seed, steps), iter: 250, threads: 1);
    }

    internal static void Run(string configName, bool identity, uint seed, int steps)
    {
        var rng = new Random((int)seed);
        using DriverBed f = RandomDriverScenario.Bed(configName, identity);
        bool scalable = f.Unit.Config.ScalableMode;
        var devs = new List<ScenarioDevice>
        {
            new(scalable ? DriverTestKit.AuxParent(f, "0000:00:02.0") : f.AddDevice("0000:00:02.0"), scalable),
            new(f.AddDevice("0000:00:03.0"), false),
            new(f.AddDevice("0000:01:10.1"), false), // devfn 0x81: the upper half of a scalable root entry
        };
        var scenario = new RandomDriverScenario(f, rng, identity, devs);
        scenario.Start();
        for (int step = 0; step < steps; step++)
        {
            scenario.Step();
            Check(f, rng, devs, scenario.Maps, scenario.Svas, scenario.Log);
        }

        scenario.UnbindAll();
    }

    private static void Check(DriverBed f, Random rng, List<ScenarioDevice> devs, Dictionary<IDomain, List<(ulong Iova, ulong Size)>> maps, List<(IommuSva Handle, ProcessAddressSpace Mm, ulong Va, ScenarioDevice Dev)> svas, List<string> log)
    {
        var walker = new IndependentWalker(f.Unit, f.Platform.Memory);
        foreach (ScenarioDevice d in devs)
        {
            var targets = new List<(uint? Pasid, IDomain? Domain)> { (null, d.Rid) };
            foreach (KeyValuePair<uint, IDomain> kv in d.Pasids)
            {
                targets.Add((kv.Key, kv.Value));
            }

            if (d.Aux)
            {
                targets.Add(((uint)rng.Next(1, 1 << 20), null)); // most likely a PASID nothing uses
            }

            foreach ((uint? pasid, IDomain? dom) in targets)
            {
                var iovas = new List<ulong>();
                if (dom is not null && maps.TryGetValue(dom, out List<(ulong Iova, ulong Size)>? list))
                {
                    foreach ((ulong iova, ulong size) in list)
                    {
                        iovas.Add(iova);
                        iovas.Add(iova + (size / 2));
                        iovas.Add(iova + size - 8);
                        iovas.Add(iova + size);
                        iovas.Add(iova - 8);
                    }
                }

                if (dom is DmarDomain { UseFirstLevel: false, NestParent: null } && dom.Type != DomainType.Identity)
                {
                    (dom as DmarDomain)?.PageTable.ForEachLeaf((i, _, s, _) => iovas.Add(i + (s / 3 & ~7UL)));
                }

                ulong top = dom?.Geometry.ApertureEnd ?? ((1UL << 48) - 1);
                iovas.Add(top & ~7UL);
                iovas.Add((top >> 1) & ~0xFFFUL);
                iovas.Add(((ulong)rng.NextInt64() & top) & ~7UL);
                iovas.Add((ulong)rng.Next(0, 1 << 30) & ~7UL);
                foreach (ulong iova in iovas.Distinct().Take(60))
                {
                    Compare(f, walker, d, pasid, dom, iova, log);
                }
            }
        }

        foreach ((IommuSva h, ProcessAddressSpace mm, ulong va, ScenarioDevice dev) in svas)
        {
            uint pasid = f.Iommu.SvaGetPasid(h);
            for (ulong off = 0x10; off < 5 * K4; off += K4)
            {
                Compare(f, walker, dev, pasid, null, va + off, log);

                // The process's own page tables: the walker must land where the CPU would.
                ReferenceWalk w = walker.Walk(dev.Pci.RequesterId, pasid, va + off, out _);
                if (w.Translated)
                {
                    Assert.True(mm.TryTranslate(va + off, out ulong pfn), $"SVA VA 0x{va + off:x} translated but the process has no page");
                    Assert.Equal((pfn << 12) | ((va + off) & 0xFFF), w.Pa);
                }
            }
        }
    }

    private static void Compare(DriverBed f, IndependentWalker walker, ScenarioDevice d, uint? pasid, IDomain? dom, ulong iova, List<string> log)
    {
        if (pasid is null && iova <= 0xFEEF_FFFF && iova + 8 > 0xFEE0_0000)
        {
            return; // an interrupt message, not DMA
        }

        ReferenceWalk w = walker.Walk(d.Pci.RequesterId, pasid, iova, out int? did);
        if (w.Undecided)
        {
            return;
        }

        foreach (DmaAccess access in new[] { DmaAccess.Read, DmaAccess.Write })
        {
            VtdTranslation t = f.Unit.Translate(d.Pci.RequesterId, pasid, iova, 1, access);
            bool want = w.Allows(access == DmaAccess.Write);
            string why = $"{d.Pci.Name} pasid {pasid?.ToString(System.Globalization.CultureInfo.InvariantCulture) ?? "-"} iova 0x{iova:x} {access}: walker {w}, unit {t}\n  " + string.Join("\n  ", log.TakeLast(12));
            Assert.True(want == (t.Status == VtdTranslationStatus.Translated), why);
            if (want)
            {
                Assert.True(w.Pa == t.PhysicalAddress, why);
            }
        }

        // What the core says the request's domain maps there (identity domains map nothing to read back).
        if (dom is DmarDomain dd && dom.Type != DomainType.Identity && iova <= dom.Geometry.ApertureEnd)
        {
            ulong phys = f.Iommu.IovaToPhys(dom, iova);
            if (w.Path.EndsWith("output in the interrupt window", StringComparison.Ordinal))
            {
                // The table maps it (a DMA API map of a page in 0xFEEx_xxxx, say), and the unit blocks the
                // output: iova_to_phys reads the table, so it names that page.
                Assert.True(phys is >= 0xFEE0_0000 and <= 0xFEEF_FFFF, $"iova_to_phys(0x{iova:x}) = 0x{phys:x}, but the unit blocked an output in the interrupt window");
                return;
            }

            bool mapped = w.Translated && (w.Read || w.Write);
            Assert.True(mapped ? phys == w.Pa : phys == 0, $"iova_to_phys(0x{iova:x}) = 0x{phys:x}, walker {w}\n  " + string.Join("\n  ", log.TakeLast(12)));
            if (did is int id)
            {
                Assert.True(dd.DidOn(0) == id, $"entry DID {id} but the domain's DID is {dd.DidOn(0)} ({w.Path})");
            }
        }
    }
}
