using CsCheck;
using Iommu.Devices;
using Iommu.Domains;
using Iommu.Mm;
using Iommu.VtD.Driver;
using Iommu.VtD.Hardware;
using Iommu.VtD.Tests.Driver;

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

    private static VtdConfig Config(string name) => name switch
    {
        "Legacy39" => VtdConfig.Legacy39Bit,
        "Legacy48" => VtdConfig.Legacy48Bit,
        "Sm48" => VtdConfig.ScalableMode48Bit,
        "Sm57" => VtdConfig.ScalableMode57Bit,
        "Fl48" or "Fl48All" => VtdConfig.ScalableModeFirstLevel48Bit,
        "Fl57" or "Fl57All" => VtdConfig.ScalableModeFirstLevel57Bit,
        "Sm48Cm" => VtdConfig.ScalableMode48Bit with { CachingMode = true, SecondLevel1GiBPages = false },
        "Legacy39NoSp" => VtdConfig.Legacy39Bit with { SecondLevel2MiBPages = false, SecondLevel1GiBPages = false },
        _ => throw new ArgumentOutOfRangeException(nameof(name)),
    };

    // Where a device's requests go, as the test drove the core: its RID domain and its PASID domains.
    private sealed class Dev(PciDevice pci, bool aux)
    {
        public PciDevice Pci { get; } = pci;

        public bool Aux { get; } = aux;

        public IDomain? Rid { get; set; }

        public Dictionary<uint, IDomain> Pasids { get; } = [];
    }

    /// <summary>
    /// After every step of a random sequence (maps of 4 KiB, 2 MiB and 1 GiB pages at random IOVAs up to the
    /// top of the aperture, unmaps, attach and detach, aux attach, PASID attach, DMA-API maps, SVA binds, domain
    /// free), every sampled request (requester, PASID or none, IOVA, read or write) gets the same answer from the
    /// unit and from the independent walker, and that answer is what iova_to_phys of the request's domain says.
    /// </summary>
    [Fact]
    public void Property_the_unit_and_an_independent_walker_agree_on_every_driver_built_table()
    {
        Gen.Select(Gen.Int[0, ConfigNames.Length - 1], Gen.Bool, Gen.UInt, Gen.Int[4, 14])
            .Sample((c, identity, seed, steps) => Run(ConfigNames[c], identity, seed, steps), iter: 250, threads: 1);
    }

    private static DriverBed Bed(string name, bool identity)
    {
        VtdConfig config = Config(name);
        // The "All" beds put UNMANAGED domains on the first level too (5.15's choice), so large first-level pages appear.
        var options = new IntelIommuOptions { FirstLevel = name.EndsWith("All", StringComparison.Ordinal) ? FirstLevelPolicy.AllWhenEveryUnitHasFlts : FirstLevelPolicy.FirstLevelByDefault };
        return new DriverBed(config, options, memory: 8 * Sizes.GiB, defaultDomain: identity ? DomainType.Identity : DomainType.Dma);
    }

    internal static void Run(string configName, bool identity, uint seed, int steps)
    {
        var rng = new Random((int)seed);
        using DriverBed f = Bed(configName, identity);
        bool scalable = f.Unit.Config.ScalableMode;
        var devs = new List<Dev>
        {
            new(scalable ? DriverTestKit.AuxParent(f, "0000:00:02.0") : f.AddDevice("0000:00:02.0"), scalable),
            new(f.AddDevice("0000:00:03.0"), false),
            new(f.AddDevice("0000:01:10.1"), false), // devfn 0x81: the upper half of a scalable root entry
        };
        foreach (Dev d in devs)
        {
            d.Rid = f.Iommu.GetDomainForDev(d.Pci);
        }

        var domains = new List<IDomain>();
        var maps = new Dictionary<IDomain, List<(ulong Iova, ulong Size)>>();
        var svas = new List<(IommuSva Handle, ProcessAddressSpace Mm, ulong Va, Dev Dev)>();
        HostPageAllocator? pages = null;
        ulong nextPa = 4 * G1;
        var log = new List<string>();

        IDomain NewDomain()
        {
            IDomain d = f.Iommu.DomainAlloc(f.Pci) ?? throw new InvalidOperationException("domain alloc failed");
            domains.Add(d);
            maps[d] = [];
            return d;
        }

        bool Attached(IDomain d) => devs.Any(x => x.Rid == d || x.Pasids.ContainsValue(d));

        void MapRandom(IDomain d)
        {
            ulong size = rng.Next(4) switch { 0 => K4, 1 => M2, 2 => G1, _ => K4 * (ulong)rng.Next(2, 9) };
            ulong align = size >= G1 ? G1 : size >= M2 ? M2 : K4;
            ulong end = d.Geometry.ApertureEnd;
            ulong slots = (end / align) - 1;
            ulong iova = rng.Next(3) switch
            {
                0 => (end + 1 - (size * (ulong)rng.Next(1, 4))) & ~(align - 1), // near the top of the width
                1 => (ulong)rng.Next(1, 64) * align,
                _ => ((ulong)rng.NextInt64(1, (long)Math.Min(slots, long.MaxValue / 2)) * align) & ~(align - 1),
            };
            if (iova + size - 1 > end || maps[d].Any(m => iova < m.Iova + m.Size && m.Iova < iova + size))
            {
                return;
            }

            ulong pa = nextPa;
            nextPa += Math.Max(size, G1);
            if (nextPa >= 7 * G1)
            {
                nextPa = 4 * G1;
            }

            pa = (pa + size - 1) & ~(align - 1);
            IommuProt prot = rng.Next(4) switch { 0 => IommuProt.Read, 1 => IommuProt.Write, _ => RW };
            Errno e = f.Iommu.Map(d, iova, pa, size, prot);
            log.Add($"map {iova:x}+{size:x} -> {pa:x} {prot}: {e}");
            if (e == Errno.None)
            {
                maps[d].Add((iova, size));
            }
        }

        for (int step = 0; step < steps; step++)
        {
            int op = rng.Next(11);
            Dev dev = devs[rng.Next(devs.Count)];
            IDomain? target = domains.Count > 0 && rng.Next(3) != 0 ? domains[rng.Next(domains.Count)] : null;
            switch (op)
            {
                case 0 or 1 or 2:
                    MapRandom(target ?? NewDomain());
                    break;
                case 3:
                    if (target is not null && maps[target].Count > 0)
                    {
                        (ulong iova, ulong size) = maps[target][rng.Next(maps[target].Count)];
                        ulong got = f.Iommu.Unmap(target, iova, size);
                        log.Add($"unmap {iova:x}+{size:x}: {got:x}");
                        maps[target].RemoveAll(m => m.Iova == iova);
                    }

                    break;
                case 4:
                    {
                        IDomain d = target ?? NewDomain();
                        if (dev.Rid is IDomain cur && domains.Contains(cur))
                        {
                            f.Iommu.DetachDevice(cur, dev.Pci);
                            log.Add($"detach {dev.Pci.Name}");
                        }

                        Errno e = f.Iommu.AttachDevice(d, dev.Pci);
                        log.Add($"attach {dev.Pci.Name} to {domains.IndexOf(d)}: {e}");

                        // 5.15 detaches the current domain before it checks the new one: a refused attach
                        // leaves the device on no domain at all, whatever the core still reports.
                        dev.Rid = e == Errno.None ? f.Iommu.GetDomainForDev(dev.Pci) : null;
                        break;
                    }

                case 5:
                    if (dev.Rid is IDomain rid && domains.Contains(rid))
                    {
                        f.Iommu.DetachDevice(rid, dev.Pci);
                        dev.Rid = f.Iommu.GetDomainForDev(dev.Pci);
                        log.Add($"detach {dev.Pci.Name}");
                    }

                    break;
                case 6:
                    if (dev.Aux)
                    {
                        IDomain d = target ?? NewDomain();
                        if (Attached(d) || dev.Pasids.ContainsValue(d))
                        {
                            break;
                        }

                        Errno e = f.Iommu.AttachDeviceAux(d, dev.Pci);
                        log.Add($"aux attach {domains.IndexOf(d)}: {e}");
                        if (e == Errno.None)
                        {
                            dev.Pasids[(uint)f.Iommu.AuxGetPasid(d, dev.Pci)] = d;
                        }
                    }

                    break;
                case 7:
                    if (dev.Aux && dev.Pasids.Count > 0)
                    {
                        KeyValuePair<uint, IDomain> kv = dev.Pasids.ElementAt(rng.Next(dev.Pasids.Count));
                        if (f.Iommu.AuxGetPasid(kv.Value, dev.Pci) == (int)kv.Key)
                        {
                            f.Iommu.DetachDeviceAux(kv.Value, dev.Pci);
                            log.Add($"aux detach {kv.Key}");
                        }
                        else
                        {
                            f.Iommu.DetachDevicePasid(kv.Value, dev.Pci, kv.Key);
                            log.Add($"pasid detach {kv.Key}");
                        }

                        dev.Pasids.Remove(kv.Key);
                    }

                    break;
                case 8:
                    if (dev.Aux)
                    {
                        IDomain d = target ?? NewDomain();
                        uint pasid = f.Iommu.AllocGlobalPasid(dev.Pci);
                        if (pasid == IommuCore.PasidInvalid)
                        {
                            break;
                        }

                        Errno e = f.Iommu.AttachDevicePasid(d, dev.Pci, pasid);
                        log.Add($"pasid attach {pasid} to {domains.IndexOf(d)}: {e}");
                        if (e == Errno.None)
                        {
                            dev.Pasids[pasid] = d;
                        }
                    }

                    break;
                case 9:
                    if (!identity || rng.Next(2) == 0)
                    {
                        ulong pa = (ulong)rng.Next(1, 1 << 20) * K4;
                        ulong handle = f.Iommu.DmaMapPage(dev.Pci, pa, K4 * (ulong)rng.Next(1, 4), (DmaDataDirection)rng.Next(3));
                        log.Add($"dma map {pa:x} for {dev.Pci.Name}: {handle:x}");
                    }

                    break;
                default:
                    if (rng.Next(2) == 0 && domains.FirstOrDefault(d => !Attached(d)) is IDomain idle)
                    {
                        domains.Remove(idle);
                        maps.Remove(idle);
                        f.Iommu.DomainFree(idle);
                        log.Add("domain free");
                    }
                    else if (dev.Aux && f.Unit.Config.FirstLevelTranslation && svas.Count < 2)
                    {
                        pages ??= HostPageAllocator.ForPlatform(f.Platform);
                        var mm = new ProcessAddressSpace(pages, "p");
                        ulong va = mm.Mmap(4 * K4);
                        Assert.Equal(Errno.None, mm.Write(va, [1]));
                        Assert.Equal(Errno.None, mm.Write(va + (2 * K4), [1]));
                        Errno e = f.Iommu.SvaBindDevice(dev.Pci, mm, null, out IommuSva? h);
                        log.Add($"sva bind: {e}");
                        if (e == Errno.None)
                        {
                            svas.Add((h!, mm, va, dev));
                        }
                        else
                        {
                            mm.Dispose();
                        }
                    }

                    break;
            }

            Check(f, rng, devs, maps, svas, log);
        }

        foreach ((IommuSva h, ProcessAddressSpace mm, _, _) in svas)
        {
            f.Iommu.SvaUnbindDevice(h);
            mm.Dispose();
        }
    }

    private static void Check(DriverBed f, Random rng, List<Dev> devs, Dictionary<IDomain, List<(ulong Iova, ulong Size)>> maps, List<(IommuSva Handle, ProcessAddressSpace Mm, ulong Va, Dev Dev)> svas, List<string> log)
    {
        var walker = new IndependentWalker(f.Unit, f.Platform.Memory);
        foreach (Dev d in devs)
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

        foreach ((IommuSva h, ProcessAddressSpace mm, ulong va, Dev dev) in svas)
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

    private static void Compare(DriverBed f, IndependentWalker walker, Dev d, uint? pasid, IDomain? dom, ulong iova, List<string> log)
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
            bool mapped = w.Translated && (w.Read || w.Write);
            Assert.True(mapped ? phys == w.Pa : phys == 0, $"iova_to_phys(0x{iova:x}) = 0x{phys:x}, walker {w}\n  " + string.Join("\n  ", log.TakeLast(12)));
            if (did is int id)
            {
                Assert.True(dd.DidOn(0) == id, $"entry DID {id} but the domain's DID is {dd.DidOn(0)} ({w.Path})");
            }
        }
    }
}
