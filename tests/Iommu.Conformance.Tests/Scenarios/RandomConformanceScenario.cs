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
        bool identity = rng.Next(4) == 0;
        var s = new ConformanceScenario(string.Create(CultureInfo.InvariantCulture, $"random-{config}-{seed}"), ScenarioCatalog.Config(config), defaultDomain: identity ? DomainType.Identity : DomainType.Dma);
        try
        {
            var r = new RandomConformanceScenario(s, rng);
            r.Log.Add($"default domains {(identity ? "identity" : "DMA")}");
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

    /// <summary>Whether the model's answer to a probe can be run as a DMA: faults always; translations only into the guest RAM the maps use.</summary>
    public static bool Runnable(VtdProbeResult r) =>
        !r.IsTranslated || (r.PhysicalAddress >= SafeLow && r.PhysicalAddress + 16 <= EduMachine.RamSize);

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
        PciDevice dev = _devices[_rng.Next(_devices.Count)];
        IDomain? target = _domains.Count > 0 && _rng.Next(3) != 0 ? _domains[_rng.Next(_domains.Count)] : null;
        switch (_rng.Next(10))
        {
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

                    Errno e = dev.IommuGroup!.DeviceCount > 1 ? _s.Iommu.AttachGroup(d, dev.IommuGroup) : _s.Iommu.AttachDevice(d, dev);
                    Log.Add($"attach {dev.Name} to domain {_domains.IndexOf(d)}: {e}");
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
        if (!_maps.TryGetValue(d, out List<(ulong Iova, ulong Size)>? maps))
        {
            _maps[d] = maps = [];
        }

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
        if (handle != IommuCore.DmaMappingError && _s.Iommu.GetDmaDomain(dev) is IDomain def)
        {
            _s.AddPoint(def, handle);
            _s.AddPoint(def, handle + size - 8);
            _s.AddPoint(def, handle + size);
        }
    }

    // A few IOVAs nothing chose: anywhere below the width, and in low memory.
    private void AddRandomPoints()
    {
        foreach (IDomain d in _domains)
        {
            ulong end = Math.Min(d.Geometry.ApertureEnd, (1UL << 48) - 1);
            _s.AddPoint(d, (ulong)_rng.NextInt64(0, (long)(end >> 3)) << 3);
            _s.AddPoint(d, (ulong)_rng.Next(0, 1 << 20) << 12);
        }
    }
}
