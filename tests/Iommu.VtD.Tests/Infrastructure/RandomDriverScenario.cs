using Iommu.Devices;
using Iommu.Domains;
using Iommu.Mm;
using Iommu.VtD.Driver;
using Iommu.VtD.Hardware;
using Iommu.VtD.Tests.Driver;

namespace Iommu.VtD.Tests.Infrastructure;

/// <summary>Where a scenario device's requests go, as the scenario drove the core: its RID domain and its PASID domains.</summary>
internal sealed class ScenarioDevice(PciDevice pci, bool aux)
{
    public PciDevice Pci { get; } = pci;

    public bool Aux { get; } = aux;

    public IDomain? Rid { get; set; }

    public Dictionary<uint, IDomain> Pasids { get; } = [];
}

/// <summary>
/// Random steps through the core API as a user drives it, for the property tests that then read the tables the
/// driver built (the independent walker's, the exported image's): maps of 4 KiB, 2 MiB, 1 GiB, 6 MiB and small
/// runs at random IOVAs up to the top of the width with holes punched in some, unmaps, attach and detach, aux
/// domains, PASID attach (small PASIDs, beyond the first PASID table and beyond the first directory page), DMA API
/// maps, domain frees, SVA binds, and (when <see cref="Nested"/> is set and the unit nests) nested domains.
/// </summary>
internal sealed class RandomDriverScenario(DriverBed f, Random rng, bool identity, IReadOnlyList<ScenarioDevice> devices)
{
    private const ulong K4 = 4096, M2 = 2UL << 20, G1 = 1UL << 30;
    private const IommuProt RW = IommuProt.Read | IommuProt.Write;
    private ulong _nextPa = 4 * G1;

    /// <summary>The unit presets the scenario properties run on, by name.</summary>
    public static VtdConfig Preset(string name) => name switch
    {
        "Legacy39" => VtdConfig.Legacy39Bit,
        "Legacy48" => VtdConfig.Legacy48Bit,
        "Sm48" => VtdConfig.ScalableMode48Bit,
        "Sm57" => VtdConfig.ScalableMode57Bit,
        "Fl48" or "Fl48All" => VtdConfig.ScalableModeFirstLevel48Bit,
        "Fl57" or "Fl57All" => VtdConfig.ScalableModeFirstLevel57Bit,
        "Sm48Cm" => VtdConfig.ScalableMode48Bit with { CachingMode = true, SecondLevel1GiBPages = false },
        "Qemu48" => VtdConfig.Qemu72AwBits48,
        "QemuSm48" => VtdConfig.Qemu72ScalableAwBits48,
        "Legacy39NoSp" => VtdConfig.Legacy39Bit with { SecondLevel2MiBPages = false, SecondLevel1GiBPages = false },
        "Legacy48NoPt" => VtdConfig.Legacy48Bit with { PassThrough = false }, // identity domains get tables (si_domain)
        "Sm48NoPt" => VtdConfig.ScalableMode48Bit with { PassThrough = false },
        _ => throw new ArgumentOutOfRangeException(nameof(name)),
    };

    /// <summary>
    /// A platform of 8 GiB on preset <paramref name="name"/>, default domains DMA or identity; the "All" presets put
    /// UNMANAGED domains on the first level too (5.15's choice), so large first-level pages appear.
    /// </summary>
    public static DriverBed Bed(string name, bool identity)
    {
        var options = new IntelIommuOptions { FirstLevel = name.EndsWith("All", StringComparison.Ordinal) ? FirstLevelPolicy.AllWhenEveryUnitHasFlts : FirstLevelPolicy.FirstLevelByDefault };
        return new DriverBed(Preset(name), options, memory: 8 * G1, defaultDomain: identity ? DomainType.Identity : DomainType.Dma);
    }

    /// <summary>Whether a step may put a device on a nested domain (a nest parent mapping a guest's first-level table).</summary>
    public bool Nested { get; init; }

    public IReadOnlyList<ScenarioDevice> Devices => devices;

    public List<IDomain> Domains { get; } = [];

    public Dictionary<IDomain, List<(ulong Iova, ulong Size)>> Maps { get; } = new(ReferenceEqualityComparer.Instance);

    public List<(IommuSva Handle, ProcessAddressSpace Mm, ulong Va, ScenarioDevice Dev)> Svas { get; } = [];

    /// <summary>Host pages of nested guests' first-level tables.</summary>
    public List<ulong> ExtraTables { get; } = [];

    /// <summary>Addresses worth probing besides the maps: DMA API handles and nested guests' VAs.</summary>
    public List<(ScenarioDevice Dev, ulong Va)> ExtraVas { get; } = [];

    /// <summary>The SVA processes' page allocator, once a bind was tried.</summary>
    public HostPageAllocator? Pages { get; private set; }

    public List<string> Log { get; } = [];

    /// <summary>Records every device's current RID domain (before the first step).</summary>
    public void Start()
    {
        foreach (ScenarioDevice d in devices)
        {
            d.Rid = f.Iommu.GetDomainForDev(d.Pci);
        }
    }

    /// <summary>Unbinds the SVA binds the steps made.</summary>
    public void UnbindAll()
    {
        foreach ((IommuSva h, ProcessAddressSpace mm, _, _) in Svas)
        {
            f.Iommu.SvaUnbindDevice(h);
            mm.Dispose();
        }

        Svas.Clear();
    }

    /// <summary>One random step.</summary>
    public void Step()
    {
        int op = rng.Next(13);
        ScenarioDevice dev = devices[rng.Next(devices.Count)];
        IDomain? target = Domains.Count > 0 && rng.Next(3) != 0 ? Domains[rng.Next(Domains.Count)] : null;
        switch (op)
        {
            case 0 or 1 or 2:
                MapRandom(target ?? NewDomain());
                break;
            case 3:
                if (target is not null && Maps[target].Count > 0)
                {
                    (ulong iova, ulong size) = Maps[target][rng.Next(Maps[target].Count)];
                    ulong got = f.Iommu.Unmap(target, iova, size);
                    Log.Add($"unmap {iova:x}+{size:x}: {got:x}");
                    Maps[target].RemoveAll(m => m.Iova == iova);
                }

                break;
            case 4:
                {
                    IDomain d = target ?? NewDomain();
                    if (dev.Rid is IDomain cur && Domains.Contains(cur))
                    {
                        f.Iommu.DetachDevice(cur, dev.Pci);
                        Log.Add($"detach {dev.Pci.Name}");
                    }

                    Errno e = f.Iommu.AttachDevice(d, dev.Pci);
                    Log.Add($"attach {dev.Pci.Name} to {Domains.IndexOf(d)}: {e}");

                    // 5.15 detaches the current domain before it checks the new one: a refused attach
                    // leaves the device on no domain at all, whatever the core still reports.
                    dev.Rid = e == Errno.None ? f.Iommu.GetDomainForDev(dev.Pci) : null;
                    break;
                }

            case 5:
                if (dev.Rid is IDomain rid && Domains.Contains(rid))
                {
                    f.Iommu.DetachDevice(rid, dev.Pci);
                    dev.Rid = f.Iommu.GetDomainForDev(dev.Pci);
                    Log.Add($"detach {dev.Pci.Name}");
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
                    Log.Add($"aux attach {Domains.IndexOf(d)}: {e}");
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
                        Log.Add($"aux detach {kv.Key}");
                    }
                    else
                    {
                        f.Iommu.DetachDevicePasid(kv.Value, dev.Pci, kv.Key);
                        Log.Add($"pasid detach {kv.Key}");
                    }

                    dev.Pasids.Remove(kv.Key);
                }

                break;
            case 8:
                if (dev.Aux)
                {
                    IDomain d = target ?? NewDomain();

                    // Small, beyond the first PASID table (> 63) and beyond the first 4 KiB of directory (> 4095).
                    uint pasid = rng.Next(4) switch
                    {
                        0 => f.Iommu.AllocGlobalPasid(dev.Pci),
                        1 => (uint)rng.Next(64, 4096),
                        2 => (uint)rng.Next(4096, 1 << 20),
                        _ => (uint)rng.Next(1, 64),
                    };
                    if (pasid == IommuCore.PasidInvalid || dev.Pasids.ContainsKey(pasid))
                    {
                        break;
                    }

                    Errno e = f.Iommu.AttachDevicePasid(d, dev.Pci, pasid);
                    Log.Add($"pasid attach {pasid} to {Domains.IndexOf(d)}: {e}");
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
                    Log.Add($"dma map {pa:x} for {dev.Pci.Name}: {handle:x}");
                    ExtraVas.Add((dev, handle));
                }

                break;
            case 10:
                if (Nested && f.Unit.Config.NestedTranslation && !dev.Aux)
                {
                    Nest(dev);
                    dev.Rid = null;
                }

                break;
            default:
                if (rng.Next(2) == 0 && Domains.FirstOrDefault(d => !Attached(d)) is IDomain idle)
                {
                    Domains.Remove(idle);
                    Maps.Remove(idle);
                    f.Iommu.DomainFree(idle);
                    Log.Add("domain free");
                }
                else if (dev.Aux && f.Unit.Config.FirstLevelTranslation && Svas.Count < 3)
                {
                    Pages ??= HostPageAllocator.ForPlatform(f.Platform, 7 * G1, 256 * Sizes.MiB); // clear of the nested guests' memory
                    var mm = new ProcessAddressSpace(Pages, "p");
                    ulong va = mm.Mmap(4 * K4);
                    Assert.Equal(Errno.None, mm.Write(va, [1]));
                    Assert.Equal(Errno.None, mm.Write(va + (2 * K4), [1]));
                    Errno e = f.Iommu.SvaBindDevice(dev.Pci, mm, null, out IommuSva? h);
                    Log.Add($"sva bind: {e}");
                    if (e == Errno.None)
                    {
                        Svas.Add((h!, mm, va, dev));
                    }
                    else
                    {
                        mm.Dispose();
                    }
                }

                break;
        }
    }

    private IDomain NewDomain()
    {
        IDomain d = f.Iommu.DomainAlloc(f.Pci) ?? throw new InvalidOperationException("domain alloc failed");
        Domains.Add(d);
        Maps[d] = [];
        return d;
    }

    private bool Attached(IDomain d) => devices.Any(x => x.Rid == d || x.Pasids.ContainsValue(d) || f.Iommu.GetDomainForDev(x.Pci) == d);

    private void MapRandom(IDomain d)
    {
        ulong size = rng.Next(5) switch { 0 => K4, 1 => M2, 2 => G1, 3 => 3 * M2, _ => K4 * (ulong)rng.Next(2, 9) };
        ulong align = size >= G1 ? G1 : size >= M2 ? M2 : K4;
        ulong end = d.Geometry.ApertureEnd;
        ulong slots = (end / align) - 1;
        ulong iova = rng.Next(3) switch
        {
            0 => (end + 1 - (size * (ulong)rng.Next(1, 4))) & ~(align - 1), // near the top of the width
            1 => (ulong)rng.Next(1, 64) * align,
            _ => ((ulong)rng.NextInt64(1, (long)Math.Min(slots, long.MaxValue / 2)) * align) & ~(align - 1),
        };
        if (iova + size - 1 > end || Maps[d].Any(m => iova < m.Iova + m.Size && m.Iova < iova + size))
        {
            return;
        }

        ulong pa = _nextPa;
        _nextPa += Math.Max(size, G1);
        if (_nextPa >= 7 * G1)
        {
            _nextPa = 4 * G1;
        }

        pa = (pa + align - 1) & ~(align - 1);
        IommuProt prot = rng.Next(4) switch { 0 => IommuProt.Read, 1 => IommuProt.Write, _ => RW };
        Errno e = f.Iommu.Map(d, iova, pa, size, prot);
        Log.Add($"map {iova:x}+{size:x} -> {pa:x} {prot}: {e}");
        if (e == Errno.None)
        {
            Maps[d].Add((iova, size));
            if (size > K4 && rng.Next(3) == 0)
            {
                // A hole inside the run: unmap may take the whole superpage it falls in.
                ulong hole = iova + ((ulong)rng.Next(0, (int)Math.Min(size / K4, 1 << 20)) * K4);
                ulong got = f.Iommu.Unmap(d, hole, K4);
                Log.Add($"hole {hole:x}: {got:x}");
            }
        }
    }

    // A nest parent mapping guest memory GPA [0, 8 MiB) to host pages, a guest first-level table in it and
    // the nested domain on the device's requester ID.
    private void Nest(ScenarioDevice dev)
    {
        if (f.Driver.DomainAllocNestParent(f.Pci, out DmarDomain? parent) != Errno.None)
        {
            return;
        }

        ulong hostBase = (ulong)rng.Next(2, 6) * G1;
        Assert.Equal(Errno.None, f.Iommu.Map(parent!, 0, hostBase, 8 * Sizes.MiB, RW));
        Assert.Equal(Errno.None, f.Iommu.Map(parent!, 0x80_0000, hostBase + G1 / 2, K4, IommuProt.Read));
        const ulong Table = 0x7UL; // P | R/W | U/S
        for (ulong t = 1; t <= 4; t++)
        {
            f.Platform.Memory.Write(hostBase + (t * K4), new byte[K4]);
            ExtraTables.Add(hostBase + (t * K4));
        }

        ulong va = (ulong)rng.Next(0, 512) * K4;
        f.Platform.Memory.WriteUInt64(hostBase + 0x1000, 0x2000 | Table);
        f.Platform.Memory.WriteUInt64(hostBase + 0x2000, 0x3000 | Table);
        f.Platform.Memory.WriteUInt64(hostBase + 0x3000, 0x4000 | Table);
        f.Platform.Memory.WriteUInt64(hostBase + 0x4000 + ((va >> 12) * 8), 0x80_0000 | Table);
        f.Platform.Memory.WriteUInt64(hostBase + 0x4000 + ((((va >> 12) + 1) & 511) * 8), 0x1000_0000 | Table); // GPA the parent leaves unmapped
        Errno e = f.Driver.DomainAllocNested(parent!, new IommuHwptVtdS1(IommuVtdS1.None, 0x1000, 48), out DmarDomain? nested);
        if (e == Errno.None)
        {
            e = f.Driver.AttachNestedDev(nested!, dev.Pci);
        }

        Log.Add($"nested on {dev.Pci.Name} (host 0x{hostBase:x}, va 0x{va:x}): {e}");
        ExtraVas.Add((dev, va + 0x10));
        ExtraVas.Add((dev, ((va + K4) & 0x1F_FFFF) + 0x10));
    }
}
