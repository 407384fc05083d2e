using Iommu.Devices;
using Iommu.Domains;
using Iommu.VtD.Driver;
using Iommu.VtD.Hardware;
using static Iommu.VtD.Tests.Driver.DriverTestKit;

namespace Iommu.VtD.Tests.Driver;

/// <summary>
/// Under caching mode an emulator shadows the guest's mappings from the invalidations alone
/// (<see cref="ShadowingEmulator"/>). Random sequences of public calls — domain alloc/free, attach/detach,
/// aux attach, iommu_map/unmap of 4 KiB runs and superpages, DMA API map/unmap — and after each call the
/// shadow must equal the tables read fresh and agree with iommu_iova_to_phys: a stale or missing shadow entry
/// is an invalidation the driver did not issue.
/// </summary>
/// <remarks>
/// Caching mode makes every DMA domain strict (5.15 <c>intel_iommu_init</c>), so there is no flush-queue lag to
/// allow for: the device must see the new state when each call returns.
/// </remarks>
public sealed class CachingModeShadowPropertyTests
{
    private const ulong Window = 16 * Sizes.GiB;

    /// <summary>Configurations with caching mode: legacy and scalable, the model's and QEMU 7.2's shape.</summary>
    /// <returns>Names.</returns>
    public static TheoryData<string> CmConfigs() => ["Legacy39Cm", "Legacy48Cm", "Sm48Cm", "Sm57Cm", "Qemu72Sm48Cm", "Legacy39NoPsi", "Sm48CmNoQi"];

    private static VtdConfig ConfigOf(string name) => name switch
    {
        "Qemu72Sm48Cm" => VtdConfig.Qemu72ScalableAwBits48 with { CachingMode = true },
        _ => Config(name),
    };

    /// <summary>The shadow built from invalidations equals the tables after every call.</summary>
    /// <param name="config">Configuration name.</param>
    [Theory]
    [MemberData(nameof(CmConfigs))]
    public void Property_the_shadow_built_from_invalidations_matches_the_tables_after_every_call(string config)
    {
        int seeds = 6;
        for (int seed = 0; seed < seeds; seed++)
        {
            Run(ConfigOf(config), seed, steps: 60);
        }
    }

    internal static void Run(VtdConfig config, int seed, int steps)
    {
        var run = new ShadowRun(config, seed);
        try
        {
            for (int i = 0; i < steps; i++)
            {
                run.Step(i);
            }
        }
        finally
        {
            run.Dispose();
        }
    }

    /// <summary>One platform with the emulator watching its unit, and the bookkeeping of what the test did.</summary>
    internal sealed class ShadowRun : IDisposable
    {
        private readonly Random _rng;
        private readonly int _seed;
        private readonly List<string> _trace = [];
        private readonly List<IDomain> _domains = [];
        private readonly Dictionary<IDomain, List<(ulong Iova, ulong Size, ulong Phys)>> _maps = [];
        private readonly Dictionary<PciDevice, IDomain> _attached = [];
        private readonly Dictionary<PciDevice, List<(IDomain Domain, uint Pasid)>> _aux = [];
        private readonly Dictionary<PciDevice, List<(ulong Handle, ulong Size, ulong Phys)>> _dma = [];

        public ShadowRun(VtdConfig config, int seed, IntelIommuOptions? options = null)
        {
            _seed = seed;
            _rng = new Random(seed);
            Platform = new Platform(new PlatformOptions { MemorySize = SmallMemory, TableMemorySize = 256 * Sizes.MiB });
            Pci = Platform.AddPciBus();
            Unit = new VtdUnit(Platform.Memory, config);
            Emulator = new ShadowingEmulator(Platform.Memory);
            Unit.InvalidationObserver = Emulator; // before the driver boots: the emulator sees everything
            Pci.AddDmaRemapper(Unit, includeAll: true);
            Driver = new IntelIommu(Platform, options ?? new IntelIommuOptions(), Unit);
            Pci.SetIommuOps(Driver).ThrowIfError();
            Scalable = config.ScalableMode && (options?.ScalableMode ?? true);
            Devices =
            [
                Pci.AddDevice(new PciDeviceSpec("0000:00:02.0") { PasidWidth = Scalable ? 20 : 0, ScalableIov = Scalable, Acs = true }),
                Pci.AddDevice(new PciDeviceSpec("0000:00:03.0") { Acs = true }),
                Pci.AddDevice(new PciDeviceSpec("0000:01:00.0") { Acs = true }),
            ];
            // Scalable mode without PASID support (QEMU 7.2) or without QI (the driver falls back to legacy) has no aux.
            Scalable = Emulator.IsScalable;
            AuxEnabled = Scalable && Iommu.SetDevAttr(Devices[0], IommuDevAttr.AuxdEnable) == Errno.None;

            foreach (PciDevice d in Devices)
            {
                _dma[d] = [];
                _aux[d] = [];
            }

            Check("boot");
        }

        public Platform Platform { get; }

        public IommuCore Iommu => Platform.Iommu;

        public PciBus Pci { get; }

        public VtdUnit Unit { get; }

        public IntelIommu Driver { get; }

        public ShadowingEmulator Emulator { get; }

        public bool Scalable { get; }

        public bool AuxEnabled { get; }

        public PciDevice[] Devices { get; }

        private uint RidKey => Scalable ? 0u : ShadowingEmulator.NoPasid;

        public void Dispose() => Platform.Dispose();

        public void Step(int i)
        {
            int op = _rng.Next(100);
            string what = op switch
            {
                < 8 => AllocDomain(),
                < 12 => FreeDomain(),
                < 24 => Attach(),
                < 32 => Detach(),
                < 36 => AuxAttach(),
                < 40 => AuxDetach(),
                < 65 => MapRandom(),
                < 80 => UnmapRandom(),
                < 92 => DmaMap(),
                _ => DmaUnmap(),
            };
            _trace.Add($"{i}: {what}");
            Check(what);
        }

        private T Pick<T>(IReadOnlyList<T> list) => list[_rng.Next(list.Count)];

        private string AllocDomain()
        {
            if (_domains.Count >= 3)
            {
                return "alloc: skipped";
            }

            IDomain d = Iommu.DomainAlloc(Pci) ?? throw new InvalidOperationException("domain alloc failed");
            _domains.Add(d);
            _maps[d] = [];
            return $"alloc D{_domains.Count - 1}";
        }

        private string FreeDomain()
        {
            IDomain[] free = [.. _domains.Where(d => !_attached.ContainsValue(d) && !_aux.Values.Any(l => l.Any(a => a.Domain == d)))];
            if (free.Length == 0)
            {
                return "free: skipped";
            }

            IDomain dom = Pick(free);
            string name = Name(dom);
            Iommu.DomainFree(dom);
            _domains.Remove(dom);
            _maps.Remove(dom);
            return $"free {name}";
        }

        private string Attach()
        {
            PciDevice[] idle = [.. Devices.Where(d => !_attached.ContainsKey(d) && _dma[d].Count == 0)];
            if (idle.Length == 0 || _domains.Count == 0)
            {
                return "attach: skipped";
            }

            PciDevice dev = Pick(idle);
            IDomain dom = Pick(_domains);
            Errno e = Iommu.AttachDevice(dom, dev);
            if (e == Errno.None)
            {
                _attached[dev] = dom;
            }

            return $"attach {Name(dom)} {dev.Name} -> {e}";
        }

        private string Detach()
        {
            if (_attached.Count == 0)
            {
                return "detach: skipped";
            }

            PciDevice dev = Pick(_attached.Keys.ToList());
            IDomain dom = _attached[dev];
            Iommu.DetachDevice(dom, dev);
            _attached.Remove(dev);
            return $"detach {Name(dom)} {dev.Name}";
        }

        private string AuxAttach()
        {
            if (!AuxEnabled || _domains.Count == 0)
            {
                return "aux attach: skipped";
            }

            PciDevice dev = Devices[0];
            IDomain dom = Pick(_domains);
            if (_aux[dev].Any(a => a.Domain == dom) || _attached.ContainsValue(dom))
            {
                return "aux attach: skipped";
            }

            Errno e = Iommu.AttachDeviceAux(dom, dev);
            if (e == Errno.None)
            {
                _aux[dev].Add((dom, (uint)Iommu.AuxGetPasid(dom, dev)));
            }

            return $"aux attach {Name(dom)} {dev.Name} -> {e}";
        }

        private string AuxDetach()
        {
            PciDevice dev = Devices[0];
            if (_aux[dev].Count == 0)
            {
                return "aux detach: skipped";
            }

            (IDomain dom, uint pasid) = Pick(_aux[dev]);
            Iommu.DetachDeviceAux(dom, dev);
            _aux[dev].Remove((dom, pasid));
            return $"aux detach {Name(dom)} pasid {pasid}";
        }

        private string MapRandom()
        {
            if (_domains.Count == 0)
            {
                return "map: skipped";
            }

            IDomain dom = Pick(_domains);
            (ulong size, ulong align) = _rng.Next(10) switch
            {
                < 5 => ((ulong)_rng.Next(1, 9) * K4, K4),
                < 7 => (M2 * (ulong)_rng.Next(1, 3), M2),
                < 8 => (M2 + (K4 * (ulong)_rng.Next(1, 4)), K4), // a superpage-sized run off alignment
                < 9 => (G1, G1),
                _ => ((ulong)_rng.Next(1, 600) * K4, K4),
            };
            ulong iova = (ulong)_rng.NextInt64(0, (long)((Window - size) / align)) * align;
            if (_rng.Next(3) == 0)
            {
                iova = (ulong)_rng.NextInt64(0, 64) * align; // crowd the low addresses so maps share tables
            }

            ulong phys = (ulong)_rng.NextInt64(0, (long)((SmallMemory - size) / align)) * align;
            if (_maps[dom].Any(m => iova < m.Iova + m.Size && m.Iova < iova + size))
            {
                return "map: overlap, skipped";
            }

            Errno e = Iommu.Map(dom, iova, phys, size, RW);
            if (e == Errno.None)
            {
                _maps[dom].Add((iova, size, phys));
            }

            return $"map {Name(dom)} iova {iova:X} size {size:X} phys {phys:X} -> {e}";
        }

        private string UnmapRandom()
        {
            IDomain[] withMaps = [.. _domains.Where(d => _maps[d].Count != 0)];
            if (withMaps.Length == 0)
            {
                return "unmap: skipped";
            }

            IDomain dom = Pick(withMaps);
            (ulong iova, ulong size, ulong phys) = Pick(_maps[dom]);
            ulong done = Iommu.Unmap(dom, iova, size);
            _maps[dom].Remove((iova, size, phys));
            return $"unmap {Name(dom)} iova {iova:X} size {size:X} -> {done:X}";
        }

        private string DmaMap()
        {
            PciDevice[] onDefault = [.. Devices.Where(d => !_attached.ContainsKey(d))];
            if (onDefault.Length == 0)
            {
                return "dma map: skipped";
            }

            PciDevice dev = Pick(onDefault);
            ulong size = _rng.Next(4) == 0 ? (ulong)_rng.Next(1, 1024) * K4 : (ulong)_rng.Next(1, 9000);
            ulong phys = (ulong)_rng.NextInt64(0, (long)(SmallMemory - size - K4));
            ulong handle = Iommu.DmaMapPage(dev, phys, size, DmaDataDirection.Bidirectional);
            _dma[dev].Add((handle, size, phys));
            return $"dma map {dev.Name} phys {phys:X} size {size:X} -> {handle:X}";
        }

        private string DmaUnmap()
        {
            PciDevice[] with = [.. Devices.Where(d => _dma[d].Count != 0)];
            if (with.Length == 0)
            {
                return "dma unmap: skipped";
            }

            PciDevice dev = Pick(with);
            (ulong handle, ulong size, ulong phys) = Pick(_dma[dev]);
            Iommu.DmaUnmapPage(dev, handle, size, DmaDataDirection.Bidirectional);
            _dma[dev].Remove((handle, size, phys));
            return $"dma unmap {dev.Name} {handle:X}";
        }

        private string Name(IDomain d) => $"D{_domains.IndexOf(d)}";

        /// <summary>Compares the shadow with the tables read fresh and with iommu_iova_to_phys.</summary>
        public void Check(string what)
        {
            var errors = new List<string>();
            foreach (string m in Emulator.Malformed)
            {
                errors.Add($"malformed invalidation: {m}");
            }

            Dictionary<(ushort Sid, uint Pasid), ShadowingEmulator.Space> truth = Emulator.Truth();
            foreach ((ushort Sid, uint Pasid) key in truth.Keys.Concat(Emulator.Shadow.Keys).Distinct())
            {
                truth.TryGetValue(key, out ShadowingEmulator.Space? t);
                Emulator.Shadow.TryGetValue(key, out ShadowingEmulator.Space? s);
                string at = $"sid {key.Sid:X4} pasid {(key.Pasid == ShadowingEmulator.NoPasid ? "-" : key.Pasid)}";
                if (t?.Kind == ShadowingEmulator.SpaceKind.Other || s?.Kind == ShadowingEmulator.SpaceKind.Other)
                {
                    continue;
                }

                if (t is null || s is null)
                {
                    bool empty = (t ?? s)!.Kind == ShadowingEmulator.SpaceKind.Translated && (t ?? s)!.Leaves.Count == 0;
                    if (!empty)
                    {
                        errors.Add($"{at}: {(t is null ? "shadow keeps a space the tables no longer have" : "tables have a space the shadow never learned")} ({(t ?? s)!.Kind}, {(t ?? s)!.Leaves.Count} leaves)");
                    }

                    continue;
                }

                if (t.Kind != s.Kind)
                {
                    errors.Add($"{at}: shadow is {s.Kind}, tables say {t.Kind}");
                    continue;
                }

                foreach (ShadowingEmulator.Leaf l in s.Leaves.Values.Except(t.Leaves.Values).Take(3))
                {
                    errors.Add($"{at}: stale shadow leaf {l}");
                }

                foreach (ShadowingEmulator.Leaf l in t.Leaves.Values.Except(s.Leaves.Values).Take(3))
                {
                    errors.Add($"{at}: shadow lacks leaf {l}");
                }
            }

            // iommu_iova_to_phys and the test's own record: each attached device reaches each mapping.
            foreach ((PciDevice dev, IDomain dom) in _attached)
            {
                CheckMaps(errors, dev, RidKey, dom);
            }

            foreach ((PciDevice dev, List<(IDomain Domain, uint Pasid)> list) in _aux)
            {
                foreach ((IDomain dom, uint pasid) in list)
                {
                    CheckMaps(errors, dev, pasid, dom);
                }
            }

            foreach ((PciDevice dev, List<(ulong Handle, ulong Size, ulong Phys)> list) in _dma)
            {
                if (_attached.ContainsKey(dev))
                {
                    continue;
                }

                foreach ((ulong handle, ulong size, ulong phys) in list)
                {
                    foreach (ulong off in new ulong[] { 0, size / 2, size - 1 })
                    {
                        ulong? sh = Emulator.ShadowTranslate(dev.RequesterId, RidKey, handle + off);
                        if (sh != phys + off)
                        {
                            errors.Add($"{dev.Name} DMA handle {handle:X}+{off:X}: shadow {sh:X}, expected {phys + off:X}");
                        }
                    }
                }
            }

            if (errors.Count != 0)
            {
                var sb = new List<string> { $"seed {_seed} ({(Unit.Config.ScalableMode ? "scalable" : "legacy")}): after '{what}':" };
                sb.AddRange(errors.Take(12).Select(e => "  " + e));
                sb.Add("trace:");
                sb.AddRange(_trace.TakeLast(15).Select(t => "  " + t));
                sb.Add("last invalidations:");
                sb.AddRange(Emulator.Log.TakeLast(12).Select(t => "  " + t));
                Assert.Fail(string.Join(Environment.NewLine, sb));
            }
        }

        private void CheckMaps(List<string> errors, PciDevice dev, uint pasid, IDomain dom)
        {
            foreach ((ulong iova, ulong size, ulong phys) in _maps[dom])
            {
                foreach (ulong off in new ulong[] { 0, size / 2, size - 1 })
                {
                    ulong hw = Iommu.IovaToPhys(dom, iova + off);
                    ulong? sh = Emulator.ShadowTranslate(dev.RequesterId, pasid, iova + off);
                    if (hw != phys + off || sh != phys + off)
                    {
                        errors.Add($"{dev.Name} pasid {pasid:X} {Name(dom)} iova {iova + off:X}: iova_to_phys {hw:X}, shadow {sh:X}, expected {phys + off:X}");
                    }
                }
            }
        }
    }
}
