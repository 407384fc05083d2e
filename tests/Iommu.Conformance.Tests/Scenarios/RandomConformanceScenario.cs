using System.Globalization;
using Iommu.Conformance.Tests.Qemu;
using Iommu.Devices;
using Iommu.Domains;
using Iommu.VtD.Diagnostics;
using Iommu.VtD.Hardware;

namespace Iommu.Conformance.Tests.Scenarios;

/// <summary>
/// Random driver-built scenarios for QEMU: a <see cref="ConformanceScenario"/> driven by random steps through the
/// public core API (maps and unmaps of 4 KiB, 2 MiB and 1 GiB pages at random IOVAs up to the top of the aperture,
/// holes punched into superpages, attach, detach and re-attach, domains shared by devices, DMA-API maps, aux
/// domains in scalable mode, identity default domains), devices on bus 0, behind root ports and behind a PCIe-to-PCI bridge. Unlike the
/// VtD tests' RandomDriverScenario, every physical address stays inside the QEMU guest's RAM and clear of the
/// table window, so every translated probe can be a real DMA.
/// </summary>
internal sealed class RandomConformanceScenario
{
    private const ulong K4 = ScenarioCatalog.K4, M2 = ScenarioCatalog.M2, G1 = ScenarioCatalog.G1;

    /// <summary>Guest RAM the random maps point at: above the table window, below the end of RAM.</summary>
    private const ulong SafeLow = ConformanceScenario.WindowBase + ConformanceScenario.WindowSize, SafeHigh = EduMachine.RamSize - M2;

    private readonly ConformanceScenario _s;
    private readonly Random _rng;
    private readonly List<PciDevice> _devices = [];
    private readonly List<IDomain> _domains = [];
    private readonly Dictionary<IDomain, List<(ulong Iova, ulong Size)>> _maps = new(ReferenceEqualityComparer.Instance);
    private readonly bool _scalable;
    private readonly HashSet<PciDevice> _auxParents = [];
    private readonly HashSet<PciDevice> _narrow = [];
    private readonly List<ushort> _unplugged = [];
    private readonly List<(PciDevice Dev, ulong Handle, ulong Size, DmaDataDirection Dir)> _dmaMaps = [];

    private RandomConformanceScenario(ConformanceScenario s, Random rng)
    {
        _s = s;
        _rng = rng;
        _scalable = s.Scalable;
    }

    /// <summary>What the steps did, for a failure message.</summary>
    public List<string> Log { get; } = [];

    /// <summary>Builds the scenario of <paramref name="seed"/> on the QEMU-compatible unit <paramref name="config"/> (a <see cref="ScenarioCatalog.Config"/> name).</summary>
    public static (ConformanceScenario Scenario, List<string> Log) Build(string config, int seed, int steps)
    {
        var rng = new Random(seed);
        DomainType def = rng.Next(4) switch { 0 => DomainType.Identity, 1 => DomainType.DmaFq, _ => DomainType.Dma };

        // QEMU's caching-mode=on (CAP.CM: the driver flushes not-present to present changes too), and on a 4-level
        // unit sometimes a second, 3-level unit (model only: 05:00.0) whose domains keep 3 levels when they are later
        // attached behind the exported unit (a 39-bit AW context entry on a 48-bit unit).
        bool cm = rng.Next(3) == 0;
        bool narrowUnit = config.EndsWith("4level", StringComparison.Ordinal) && rng.Next(2) == 0;
        VtdConfig unit = ScenarioCatalog.Config(config) with { CachingMode = cm };
        VtdConfig? second = narrowUnit ? ScenarioCatalog.Config(config.Replace("4level", "3level", StringComparison.Ordinal)) : null;
        var s = new ConformanceScenario(string.Create(CultureInfo.InvariantCulture, $"random-{config}-{seed}"), unit, second, defaultDomain: def);
        try
        {
            var r = new RandomConformanceScenario(s, rng);
            r.Log.Add($"default domains {def}{(cm ? ", caching mode" : "")}{(narrowUnit ? ", a 3-level unit for 05:00.0" : "")}");
            if (narrowUnit)
            {
                PciDevice narrow = s.OtherUnitDevice("05:00.0");
                r._devices.Add(narrow);
                r._narrow.Add(narrow);
            }

            r.AddDevices();
            for (int i = 0; i < steps; i++)
            {
                r.Step();
            }

            r.AddRandomPoints();
            return (s, r.Log);
        }
        catch
        {
            s.Dispose();
            throw;
        }
    }

    /// <summary>The scenario classes a build's log shows (for the run's summary: which of them the seeds reached).</summary>
    public static IEnumerable<string> Classes(List<string> log)
    {
        ArgumentNullException.ThrowIfNull(log);
        string head = log.Count > 0 ? log[0] : "";
        (string Name, bool Hit)[] classes =
        [
            ("identity", head.Contains("Identity", StringComparison.Ordinal)),
            ("DMA_FQ", head.Contains("DmaFq", StringComparison.Ordinal)),
            ("caching mode", head.Contains("caching mode", StringComparison.Ordinal)),
            ("domain attached behind the 3-level unit", head.Contains("3-level unit", StringComparison.Ordinal) && log.Any(l => l.StartsWith("attach ", StringComparison.Ordinal) && l.Contains("05:00.0 to domain", StringComparison.Ordinal) && l.EndsWith(": None", StringComparison.Ordinal))),
            ("hot-remove", log.Any(l => l.StartsWith("hot-remove", StringComparison.Ordinal))),
            ("replug", log.Any(l => l.StartsWith("replug", StringComparison.Ordinal))),
            ("dma unmap", log.Any(l => l.StartsWith("dma unmap", StringComparison.Ordinal))),
            ("1 GiB map", log.Any(l => l.StartsWith("map ", StringComparison.Ordinal) && l.Contains("+0x40000000 ", StringComparison.Ordinal) && l.EndsWith(": None", StringComparison.Ordinal))),
            ("aux", log.Any(l => l.StartsWith("aux attach", StringComparison.Ordinal) && l.EndsWith(": None", StringComparison.Ordinal))),
        ];
        return classes.Where(c => c.Hit).Select(c => c.Name);
    }

    /// <summary>
    /// Whether the model's answer to a probe can be run as a DMA: faults always; translations only into the guest RAM
    /// the maps use; never a request without PASID to 0xFEEx_xxxx, which the unit takes as an interrupt message, not a
    /// DMA (a random IOVA, or an identity domain's point at a page mapped to the interrupt range, can land there).
    /// </summary>
    public static bool Runnable(VtdProbeResult r) =>
        r.Status != VtdTranslationStatus.InterruptRange
        && (!r.IsTranslated || (r.PhysicalAddress >= SafeLow && r.PhysicalAddress + 16 <= EduMachine.RamSize));

    // Two to four devices: bus 0 (devfn 0x20..0x7F or 0x80.. for the upper scalable context table) and alone behind root ports.
    private void AddDevices()
    {
        int n = _rng.Next(2, 5);
        var bdfs = new List<string>();
        int[] slots = [0x04, 0x06, 0x0A, 0x10, 0x13];
        foreach (int slot in slots.OrderBy(_ => _rng.Next()).Take(_rng.Next(1, n)))
        {
            bdfs.Add(string.Create(CultureInfo.InvariantCulture, $"00:{slot:x2}.0"));
        }

        for (int bus = 1; bdfs.Count < n; bus++)
        {
            bdfs.Add(string.Create(CultureInfo.InvariantCulture, $"{bus:x2}:00.0"));
        }

        if (_rng.Next(3) == 0)
        {
            // Behind a PCIe-to-PCI bridge: a group of bridge and device, attached as a group.
            PciDevice bridged = _s.BridgedDevice((byte)_rng.Next(1, 32));
            _devices.Add(bridged);
            Log.Add($"device {bridged.Name} behind a PCIe-to-PCI bridge (requester {ConformanceScenario.Bdf(bridged.DmaRequesterId)})");
        }

        foreach (string bdf in bdfs)
        {
            bool aux = _scalable && _rng.Next(2) == 0;
            PciDevice dev = _s.Device(bdf, auxParent: aux);
            _devices.Add(dev);
            if (aux)
            {
                _auxParents.Add(dev);
            }

            Log.Add($"device {bdf}{(aux ? " (aux parent)" : "")}");
        }
    }

    private void Step()
    {
        if (_devices.Count == 0)
        {
            HotPlug(); // every device was hot-removed: plug one back
            return;
        }

        PciDevice dev = _devices[_rng.Next(_devices.Count)];
        IDomain? target = _domains.Count > 0 && _rng.Next(3) != 0 ? _domains[_rng.Next(_domains.Count)] : null;
        switch (_rng.Next(13))
        {
            case 10:
                HotPlug();
                break;
            case 11:
                DmaUnmap();
                break;
            case 12:
                if (target is not null && _maps[target].Count > 0)
                {
                    // Unmap the whole 2 MiB / 1 GiB block around a map: the driver frees the page tables the range
                    // covers, and a map right after reuses their frames.
                    (ulong iova, _) = _maps[target][_rng.Next(_maps[target].Count)];
                    ulong block = _rng.Next(2) == 0 ? M2 : G1;
                    ulong from = iova & ~(block - 1);
                    Unmap(target, from, block);
                    if (_rng.Next(2) == 0)
                    {
                        MapAt(target, from + ((ulong)_rng.Next(0, 512) * K4), K4 * (ulong)_rng.Next(1, 3), K4);
                    }
                }

                break;
            case 0 or 1 or 2:
                MapRandom(target ?? NewDomain());
                break;
            case 3:
                if (target is not null && _maps[target].Count > 0)
                {
                    (ulong iova, ulong size) = _maps[target][_rng.Next(_maps[target].Count)];
                    Unmap(target, iova, size);
                }

                break;
            case 4 or 5:
                {
                    // Attach, moving the device off an unmanaged domain first (5.15 refuses a busy group).
                    IDomain d = target ?? NewDomain();
                    IDomain? cur = _s.Iommu.GetDomainForDev(dev);
                    if (cur is not null && _domains.Contains(cur))
                    {
                        Detach(cur, dev);
                        Log.Add($"detach {dev.Name}");
                    }

                    bool group = dev.IommuGroup!.DeviceCount > 1;
                    Errno e = group ? _s.Iommu.AttachGroup(d, dev.IommuGroup) : _s.Iommu.AttachDevice(d, dev);
                    Log.Add($"attach {dev.Name} to domain {_domains.IndexOf(d)}: {e}");
                    if (e == Errno.None)
                    {
                        _s.Adopted(dev);
                    }
                    else if (e is Errno.EFAULT or Errno.EBUSY or Errno.ENODEV && !_narrow.Contains(dev))
                    {
                        _s.Orphan(dev, known: !group); // 5.15 removed its RID domain before the check that failed
                    }
                    break;
                }

            case 6:
                {
                    IDomain? cur = _s.Iommu.GetDomainForDev(dev);
                    if (cur is not null && _domains.Contains(cur))
                    {
                        Detach(cur, dev);
                        Log.Add($"detach {dev.Name} (back to its default domain)");
                    }

                    break;
                }

            case 7:
                DmaMap(dev);
                break;
            case 8:
                if (_auxParents.Contains(dev) && _rng.Next(2) == 0)
                {
                    IDomain d = target ?? NewDomain();
                    if (_s.Iommu.GetDomainForDev(dev) != d && _s.Iommu.AuxGetPasid(d, dev) < 0)
                    {
                        Errno e = _s.Iommu.AttachDeviceAux(d, dev);
                        Log.Add($"aux attach domain {_domains.IndexOf(d)} to {dev.Name}: {e}");
                        if (e == Errno.None)
                        {
                            _s.RegisterAux(d, dev);
                        }
                    }
                }
                else
                {
                    MapRandom(target ?? NewDomain());
                }

                break;
            default:
                // Map into the device's current unmanaged domain, or through the DMA API into its default one.
                if (_s.Iommu.GetDomainForDev(dev) is IDomain now && _domains.Contains(now))
                {
                    MapRandom(now);
                }
                else
                {
                    DmaMap(dev);
                }

                break;
        }
    }

    private void Detach(IDomain d, PciDevice dev)
    {
        if (!_narrow.Contains(dev))
        {
            _s.Adopted(dev); // back on its default domain (__iommu_detach_group re-attaches it)
        }

        if (dev.IommuGroup!.DeviceCount > 1)
        {
            _s.Iommu.DetachGroup(d, dev.IommuGroup);
        }
        else
        {
            _s.Iommu.DetachDevice(d, dev);
        }
    }

    private IDomain NewDomain()
    {
        IDomain d = _s.NewDomain();
        _domains.Add(d);
        _maps[d] = [];
        return d;
    }

    private void MapRandom(IDomain d)
    {
        int kind = _rng.Next(6);
        ulong size = kind switch { 0 or 1 => K4 * (ulong)_rng.Next(1, 5), 2 or 3 => M2 * (ulong)_rng.Next(1, 3), 4 => G1, _ => M2 + (K4 * (ulong)_rng.Next(1, 4)) };
        ulong align = size >= G1 ? G1 : size >= M2 ? M2 : K4;
        ulong end = Math.Min(d.Geometry.ApertureEnd, (1UL << 48) - 1);
        ulong iova = _rng.Next(3) switch
        {
            0 => (end + 1 - (size * (ulong)_rng.Next(1, 3))) & ~(align - 1), // near the top of the width
            1 => (ulong)_rng.Next(1, 64) * align,
            _ => (ulong)_rng.NextInt64(1, (long)((end + 1 - size) / align)) * align,
        };
        MapAt(d, iova, size, align);
    }

    private void MapAt(IDomain d, ulong iova, ulong size, ulong align)
    {
        if (!_maps.TryGetValue(d, out List<(ulong Iova, ulong Size)>? maps))
        {
            _maps[d] = maps = [];
        }

        ulong end = Math.Min(d.Geometry.ApertureEnd, (1UL << 48) - 1);
        if (iova + size - 1 > end || maps.Any(m => iova < m.Iova + m.Size && m.Iova < iova + size))
        {
            return;
        }

        // A 1 GiB page can only start at PA 0 inside QEMU's 256 MiB; its probes stay in the safe part.
        ulong pa = size >= G1 ? 0
            : _rng.Next(12) == 0 && size == K4 ? 0xFEE0_0000 + (K4 * (ulong)_rng.Next(0, 16)) // output in the interrupt range
            : SafeLow + ((ulong)_rng.NextInt64(0, (long)((SafeHigh - SafeLow - size) / align)) * align);
        IommuProt prot = _rng.Next(4) switch { 0 => IommuProt.Read, 1 => IommuProt.Write, _ => ScenarioCatalog.RW };
        Errno e = _s.Iommu.Map(d, iova, pa, size, prot);
        Log.Add($"map domain {_domains.IndexOf(d)} 0x{iova:x}+0x{size:x} -> 0x{pa:x} {prot}: {e}");
        if (e != Errno.None)
        {
            return;
        }

        maps.Add((iova, size));
        _s.TrackMap(d, iova, size, prot);
        if (size >= G1)
        {
            ulong inRam = SafeLow + ((ulong)_rng.NextInt64(0, (long)((SafeHigh - SafeLow) / K4)) * K4);
            _s.AddPoint(d, iova + inRam);
            _s.AddPoint(d, iova + inRam + K4 - 8);
        }
        else
        {
            _s.AddPoint(d, iova);
            _s.AddPoint(d, iova + size - 8);
            _s.AddPoint(d, iova + ((ulong)_rng.NextInt64(0, (long)(size / 8)) * 8));
        }

        // Just outside the run on both sides.
        if (iova >= 8)
        {
            _s.AddPoint(d, iova - 8);
        }

        _s.AddPoint(d, iova + size);

        if (size > K4 && _rng.Next(3) == 0)
        {
            // A hole inside the run: unmap may take the whole superpage it falls in.
            ulong hole = iova + ((ulong)_rng.NextInt64(0, (long)(size / K4)) * K4);
            Unmap(d, hole, K4);
        }
    }

    private void Unmap(IDomain d, ulong iova, ulong size)
    {
        ulong got = _s.Iommu.Unmap(d, iova, size);
        Log.Add($"unmap domain {_domains.IndexOf(d)} 0x{iova:x}+0x{size:x}: 0x{got:x}");

        // Unmap removes whole leaves: the ones overlapping [iova, iova+size) may start below it.
        ulong from = iova;
        if (got > size)
        {
            ulong page = got >= G1 ? G1 : M2;
            from = iova & ~(page - 1);
        }

        _s.TrackUnmap(d, from, got);
        _maps[d].RemoveAll(m => m.Iova < from + got && from < m.Iova + m.Size);
        _s.AddPoint(d, iova);
    }

    private void DmaMap(PciDevice dev)
    {
        ulong pa = SafeLow + ((ulong)_rng.NextInt64(0, (long)((SafeHigh - SafeLow) / K4)) * K4);
        ulong size = K4 * (ulong)_rng.Next(1, 4);
        var dir = (DmaDataDirection)_rng.Next(3);
        ulong handle = _s.Iommu.DmaMapPage(dev, pa, size, dir);
        Log.Add($"dma map 0x{pa:x}+0x{size:x} {dir} for {dev.Name}: 0x{handle:x}");
        if (handle != IommuCore.DmaMappingError)
        {
            _dmaMaps.Add((dev, handle, size, dir));
            if (_s.Iommu.GetDmaDomain(dev) is IDomain paging && paging.Type != DomainType.Identity)
            {
                // dma_info_to_prot: to the device the page is read, from it written (5.15 sets R on every leaf).
                _s.TrackMap(paging, handle, size, dir switch { DmaDataDirection.ToDevice => IommuProt.Read, DmaDataDirection.FromDevice => IommuProt.Write, _ => ScenarioCatalog.RW });
            }
        }

        if (handle != IommuCore.DmaMappingError && _s.Iommu.GetDmaDomain(dev) is IDomain def)
        {
            _s.AddPoint(def, handle);
            _s.AddPoint(def, handle + size - 8);
            _s.AddPoint(def, handle + size);
        }
    }

    // dma_unmap_page of an earlier dma_map_page (DMA_FQ: the IOTLB flush and the IOVA's reuse are deferred; the PTEs go at once).
    private void DmaUnmap()
    {
        if (_dmaMaps.Count == 0)
        {
            return;
        }

        int i = _rng.Next(_dmaMaps.Count);
        (PciDevice dev, ulong handle, ulong size, DmaDataDirection dir) = _dmaMaps[i];
        _dmaMaps.RemoveAt(i);
        if (dev.IommuGroup is null || _s.Iommu.GetDmaDomain(dev) is not IDomain def)
        {
            return; // hot-removed since
        }

        _s.Iommu.DmaUnmapPage(dev, handle, size, dir);
        _s.TrackUnmap(def, handle, size);
        Log.Add($"dma unmap 0x{handle:x}+0x{size:x} for {dev.Name}");
        _s.AddPoint(def, handle);
    }

    // device_del of a requester (its edu stays in QEMU and keeps DMAing: its context entries must be gone), or the
    // device plugged back at the same place (probed into a new default domain, its context entry rewritten).
    private void HotPlug()
    {
        if (_unplugged.Count > 0 && _rng.Next(2) == 0)
        {
            ushort rid = _unplugged[_rng.Next(_unplugged.Count)];
            _unplugged.Remove(rid);
            PciDevice dev = _s.Replug(rid);
            _devices.Add(dev);
            Log.Add($"replug {dev.Name}");
            return;
        }

        PciDevice[] removable = [.. _devices.Where(x => !_narrow.Contains(x) && !_auxParents.Contains(x))];
        if (removable.Length == 0)
        {
            return;
        }

        PciDevice victim = removable[_rng.Next(removable.Length)];
        _s.HotRemove(victim);
        _devices.Remove(victim);
        _unplugged.Add(victim.DmaRequesterId);
        Log.Add($"hot-remove {victim.Name}");
    }

    // A few IOVAs nothing chose: anywhere below the width, and in low memory.
    private void AddRandomPoints()
    {
        foreach (IDomain d in _domains)
        {
            ulong end = Math.Min(d.Geometry.ApertureEnd, (1UL << 48) - 1);
            _s.AddPoint(d, (ulong)_rng.NextInt64(0, (long)(end >> 3)) << 3);
            _s.AddPoint(d, (ulong)_rng.Next(0, 1 << 20) << 12);
            _s.AddPoint(d, 1UL << 39); // beyond a 3-level domain's width, inside a 4-level one's
        }
    }
}
