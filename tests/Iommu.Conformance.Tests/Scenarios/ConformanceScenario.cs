using System.Globalization;
using Iommu.Conformance.Tests.Qemu;
using Iommu.Devices;
using Iommu.Domains;
using Iommu.VtD.Diagnostics;
using Iommu.VtD.Driver;
using Iommu.VtD.Hardware;

namespace Iommu.Conformance.Tests.Scenarios;

/// <summary>One image the conformance test loads into QEMU, with the probes our model evaluated on it.</summary>
/// <param name="Name">What the phase checks.</param>
/// <param name="Image">The (relocated, possibly patched) image, with <see cref="VtdImage.Probes"/> evaluated by the model.</param>
/// <param name="Driver">For each probe, what the driver's own view (iova_to_phys, mapped permissions) says, or null where the phase patched the image.</param>
internal sealed record ScenarioPhase(string Name, VtdImage Image, IReadOnlyList<DriverView?> Driver);

/// <summary>What the driver says about an IOVA of a domain: its physical address (0 = unmapped) and whether it is writable.</summary>
internal readonly record struct DriverView(ulong PhysicalAddress, bool Readable, bool Writable);

/// <summary>
/// Builds conformance scenarios from the real stack: a platform with a VT-d unit model, the
/// intel-iommu driver and PCI devices, driven through <see cref="IommuCore"/> (domains, attach,
/// aux attach, map, unmap). The builder remembers interesting IOVAs per domain ("points"); at
/// <see cref="Build"/> it exports the unit's structures, relocates them into a small window of the
/// QEMU guest's RAM, and turns every point of every address space (requester, PASID) into a read
/// and a write probe evaluated by the model. Aux domains become extra phases whose image sets the
/// parent's context-entry RID_PASID to the aux PASID (QEMU 7.2 honours it for requests without
/// PASID); patches (FPD, corrupt PTEs) are extra phases too.
/// </summary>
/// <remarks>
/// Another front end (e.g. VFIO type1 containers) only needs <see cref="Platform"/>,
/// <see cref="Device"/>, <see cref="Points"/> registration via <see cref="AddPoint"/> and, for the
/// driver cross-check, <see cref="TrackMap"/>/<see cref="TrackUnmap"/>.
/// </remarks>
internal sealed class ConformanceScenario : IDisposable
{
    /// <summary>Guest-physical window (16–48 MiB) the image is relocated into.</summary>
    public const ulong WindowBase = 16UL << 20, WindowSize = 32UL << 20;

    private readonly List<PciLocation> _requesters = [];
    private readonly Dictionary<ushort, PciDevice> _devices = [];
    private readonly Dictionary<IDomain, List<ulong>> _points = new(ReferenceEqualityComparer.Instance);
    private readonly Dictionary<IDomain, List<(ulong Iova, ulong Size, IommuProt Prot)>> _maps = new(ReferenceEqualityComparer.Instance);
    private readonly List<(ushort Rid, uint Pasid, IDomain Domain)> _aux = [];
    private readonly List<(string Name, Func<VtdImage, VtdImage> Patch, ushort[] Requesters)> _patches = [];
    private readonly List<ulong> _globalPoints = [];
    private readonly Dictionary<ushort, (PciDeviceSpec Spec, bool AuxParent)> _specs = [];
    private readonly Dictionary<ushort, IDomain?> _removed = [];
    private readonly Dictionary<ushort, bool> _orphaned = [];

    /// <param name="name">Scenario name.</param>
    /// <param name="config">The unit QEMU's walk is compared with (catch-all for the segment).</param>
    /// <param name="secondUnit">Another unit of the platform (not exported), covering 05:00.0 and 05:01.0, or none.</param>
    /// <param name="defaultDomain">The type devices' default domains get (Identity: pass-through context or PASID entries).</param>
    public ConformanceScenario(string name, VtdConfig config, VtdConfig? secondUnit = null, DomainType defaultDomain = DomainType.Dma)
    {
        Name = name;
        Config = config;
        Platform = new Platform(new PlatformOptions { MemorySize = 8 * Sizes.GiB, TableMemorySize = 16 * Sizes.MiB, DefaultDomainType = defaultDomain });
        Pci = Platform.AddPciBus();
        Unit = new VtdUnit(Platform.Memory, config);
        VtdUnit[] units = [Unit];
        if (secondUnit is not null)
        {
            var other = new VtdUnit(Platform.Memory, secondUnit);
            Pci.AddDmaRemapper(other, includeAll: false, PciAddress.Parse("05:00.0", CultureInfo.InvariantCulture), PciAddress.Parse("05:01.0", CultureInfo.InvariantCulture));
            units = [Unit, other];
        }

        Pci.AddDmaRemapper(Unit, includeAll: true);
        Driver = new IntelIommu(Platform, new IntelIommuOptions(), units);
        Pci.SetIommuOps(Driver).ThrowIfError();
        int width = config.Supports48BitTables && config.MaxGuestAddressWidth >= 48 ? 48 : 39;
        _globalPoints.Add(0x1_2345_6000);        // never mapped anywhere
        _globalPoints.Add(1UL << width);         // beyond the address width
    }

    public string Name { get; }

    public VtdConfig Config { get; }

    public bool Scalable => Config.ScalableMode;

    public Platform Platform { get; }

    public IommuCore Iommu => Platform.Iommu;

    public PciBus Pci { get; }

    public VtdUnit Unit { get; }

    public IntelIommu Driver { get; }

    /// <summary>Every requester the QEMU machine gets an edu device for.</summary>
    public IReadOnlyList<PciLocation> Requesters => _requesters;

    /// <summary>Points registered per domain.</summary>
    public IReadOnlyDictionary<IDomain, List<ulong>> Points => _points;

    /// <summary>A device in the model and an edu in QEMU at <paramref name="bdf"/> ("bb:ss.f").</summary>
    public PciDevice Device(string bdf, bool auxParent = false)
    {
        PciLocation loc = PciLocation.Parse(bdf);
        var spec = new PciDeviceSpec("0000:" + bdf) { PasidWidth = auxParent ? 20 : 0, ScalableIov = auxParent, Acs = true };
        PciDevice dev = Pci.AddDevice(spec);
        if (auxParent)
        {
            Check(Iommu.SetDevAttr(dev, IommuDevAttr.AuxdEnable), "enable aux");
        }

        _requesters.Add(loc);
        _devices[loc.RequesterId] = dev;
        _specs[loc.RequesterId] = (spec, auxParent);
        return dev;
    }

    /// <summary>
    /// Hot-removes <paramref name="dev"/> from the model's bus (<c>device_del</c>); its edu stays in QEMU and keeps
    /// issuing DMA with its requester ID, probed at the points of the domain it was in (the driver cleared its context
    /// entries, so they must all fault).
    /// </summary>
    public void HotRemove(PciDevice dev)
    {
        ushort rid = dev.DmaRequesterId;
        if (!_devices.TryGetValue(rid, out PciDevice? known) || !ReferenceEquals(known, dev))
        {
            throw new InvalidOperationException($"{dev.Name} is not a requester of this scenario");
        }

        _removed[rid] = Iommu.GetDomainForDev(dev);
        Pci.RemoveDevice(dev);
    }

    /// <summary>
    /// Records that an attach of <paramref name="dev"/> failed after 5.15's <c>intel_iommu_attach_device</c> had already
    /// removed its RID domain (<c>dmar_remove_one_dev_info</c> before <c>prepare_domain_attach_device</c>): its context
    /// entry is gone although the group still names its old domain. <paramref name="known"/> false: a group attach
    /// failed part-way, so which of its requesters lost the entry is not tracked (the driver cross-check skips it).
    /// </summary>
    public void Orphan(PciDevice dev, bool known) => _orphaned[dev.DmaRequesterId] = known && !(_orphaned.TryGetValue(dev.DmaRequesterId, out bool was) && !was);

    /// <summary>The device was attached (or re-attached to its default domain) again: the driver's view holds.</summary>
    public void Adopted(PciDevice dev) => _orphaned.Remove(dev.DmaRequesterId);

    /// <summary>Whether the requester's device was hot-removed and not plugged back.</summary>
    public bool IsRemoved(ushort rid) => _removed.ContainsKey(rid);

    /// <summary>Plugs a device back in at a hot-removed requester's place (same spec): probed into a default domain again, its context entry rewritten.</summary>
    public PciDevice Replug(ushort rid)
    {
        if (!_removed.Remove(rid) || !_specs.TryGetValue(rid, out var spec))
        {
            throw new InvalidOperationException($"{Bdf(rid)} was not hot-removed here");
        }

        PciDevice dev = Pci.AddDevice(spec.Spec);
        if (spec.AuxParent)
        {
            Check(Iommu.SetDevAttr(dev, IommuDevAttr.AuxdEnable), "enable aux");
        }

        _devices[rid] = dev;
        _orphaned.Remove(rid);
        return dev;
    }

    /// <summary>
    /// A conventional device in the model and an edu in QEMU at <see cref="PciLocation.BridgedBus"/>:<paramref name="slot"/>.0
    /// behind a PCIe-to-PCI bridge at 10:00.0 under root port 00:1c.0; its DMA carries the bridge's (11:00.0) requester ID.
    /// </summary>
    public PciDevice BridgedDevice(byte slot)
    {
        PciDevice port = Pci.AddDevice(new PciDeviceSpec("0000:00:1c.0") { IsBridge = true, Acs = true });
        PciDevice bridge = Pci.AddDevice(new PciDeviceSpec(string.Create(CultureInfo.InvariantCulture, $"0000:{PciLocation.BridgedBus - 1:x2}:00.0")) { IsPcieToPciBridge = true, Upstream = port.Address });
        var loc = new PciLocation(PciLocation.BridgedBus, slot, 0, Bridged: true);
        var spec = new PciDeviceSpec("0000:" + loc) { Upstream = bridge.Address };
        PciDevice dev = Pci.AddDevice(spec);
        _specs[loc.DmaRequesterId] = (spec, false);
        if (dev.DmaRequesterId != loc.DmaRequesterId)
        {
            throw new InvalidOperationException($"the model's DMA requester ID {Bdf(dev.DmaRequesterId)} is not QEMU's alias {Bdf(loc.DmaRequesterId)}");
        }

        _requesters.Add(loc);
        _devices[loc.DmaRequesterId] = dev;
        return dev;
    }

    /// <summary>An edu in QEMU with no device in the model (so the driver wrote no context entry for it).</summary>
    public void StrayRequester(string bdf) => _requesters.Add(PciLocation.Parse(bdf));

    /// <summary>A device behind the second unit: not a requester of the exported image.</summary>
    public PciDevice OtherUnitDevice(string bdf) => Pci.AddDevice(new PciDeviceSpec(bdf) { Acs = true });

    /// <summary>Checks an errno the scenario expects.</summary>
    public static void Expect(Errno expected, Errno actual, string what)
    {
        if (actual != expected)
        {
            throw new InvalidOperationException($"{what}: expected -{expected}, got -{actual}");
        }
    }

    public IDomain NewDomain() => Iommu.DomainAlloc(Pci) ?? throw new InvalidOperationException("domain alloc failed");

    public IDomain DefaultDomain(PciDevice dev) => Iommu.GetDmaDomain(dev) ?? throw new InvalidOperationException("no default domain");

    public void Attach(IDomain domain, PciDevice dev) => Check(Iommu.AttachDevice(domain, dev), $"attach {dev.RequesterId:x4}");

    public uint AttachAux(IDomain domain, PciDevice dev)
    {
        Check(Iommu.AttachDeviceAux(domain, dev), "aux attach");
        return RegisterAux(domain, dev);
    }

    /// <summary>Adds the phase that probes aux domain <paramref name="domain"/> of <paramref name="dev"/> through its RID_PASID (after an aux attach made elsewhere).</summary>
    public uint RegisterAux(IDomain domain, PciDevice dev)
    {
        uint pasid = (uint)Iommu.AuxGetPasid(domain, dev);
        _aux.Add((dev.RequesterId, pasid, domain));
        return pasid;
    }

    /// <summary>Maps through <see cref="IommuCore.Map"/> and registers points: the given offsets, or the first and last 8 bytes (and the middle of large runs).</summary>
    public void Map(IDomain domain, ulong iova, ulong pa, ulong size, IommuProt prot, params ulong[] offsets)
    {
        Check(Iommu.Map(domain, iova, pa, size, prot), string.Create(CultureInfo.InvariantCulture, $"map 0x{iova:x}→0x{pa:x} size 0x{size:x}"));
        TrackMap(domain, iova, size, prot);
        if (offsets.Length == 0)
        {
            offsets = size >= (2UL << 20) ? [0, (size / 2) + 0x1238, size - 8] : [0, size - 8];
        }

        foreach (ulong o in offsets)
        {
            AddPoint(domain, iova + o);
        }
    }

    /// <summary>Unmaps through <see cref="IommuCore.Unmap"/> (the points stay, and must now fault).</summary>
    /// <param name="domain">The domain.</param>
    /// <param name="iova">First IOVA.</param>
    /// <param name="size">Bytes asked.</param>
    /// <param name="removedIova">Where the leaves that overlap the range start (default <paramref name="iova"/>).</param>
    /// <param name="removedSize">Their total, which unmap must return (default <paramref name="size"/>).</param>
    public void Unmap(IDomain domain, ulong iova, ulong size, ulong? removedIova = null, ulong? removedSize = null)
    {
        ulong done = Iommu.Unmap(domain, iova, size);
        ulong from = removedIova ?? iova, expected = removedSize ?? size;
        if (done != expected)
        {
            throw new InvalidOperationException($"unmap 0x{iova:x} size 0x{size:x} removed 0x{done:x}, expected the leaves [0x{from:x}, 0x{from + expected:x})");
        }

        TrackUnmap(domain, from, done);
        AddPoint(domain, iova);
    }

    public void AddPoint(IDomain domain, ulong iova)
    {
        if (!_points.TryGetValue(domain, out List<ulong>? list))
        {
            _points[domain] = list = [];
        }

        if (!list.Contains(iova))
        {
            list.Add(iova);
        }
    }

    public void TrackMap(IDomain domain, ulong iova, ulong size, IommuProt prot)
    {
        if (!_maps.TryGetValue(domain, out var list))
        {
            _maps[domain] = list = [];
        }

        list.Add((iova, size, prot));
    }

    public void TrackUnmap(IDomain domain, ulong iova, ulong size)
    {
        if (_maps.TryGetValue(domain, out var list))
        {
            var hit = list.Where(m => m.Iova < iova + size && iova < m.Iova + m.Size).ToList();
            list.RemoveAll(hit.Contains);
            foreach ((ulong mi, ulong ms, IommuProt prot) in hit)
            {
                if (mi < iova)
                {
                    list.Add((mi, iova - mi, prot));         // the part below the hole
                }

                if (mi + ms > iova + size)
                {
                    list.Add((iova + size, mi + ms - (iova + size), prot)); // the part above it
                }
            }
        }
    }

    /// <summary>A phase whose image is the base image with <paramref name="patch"/> applied; probes come from <paramref name="requesters"/>' RID address spaces.</summary>
    public void Patch(string name, Func<VtdImage, VtdImage> patch, params PciDevice[] requesters) =>
        _patches.Add((name, patch, [.. requesters.Select(d => d.RequesterId)]));

    /// <summary>Exports, relocates and evaluates every phase.</summary>
    public IReadOnlyList<ScenarioPhase> Build()
    {
        VtdImage exported = Driver.ExportImage();
        VtdImage image = exported.Relocate(WindowBase, WindowSize);
        var phases = new List<ScenarioPhase>();

        // Base: every requester's RID address space (untagged requests; scalable mode: RID_PASID 0).
        var probes = new List<VtdProbe>();
        var views = new List<DriverView?>();
        foreach (PciLocation r in _requesters)
        {
            if (_removed.TryGetValue(r.DmaRequesterId, out IDomain? former))
            {
                AddProbes(probes, views, r.DmaRequesterId, former, removed: true);
                continue;
            }

            IDomain? dom = _devices.TryGetValue(r.DmaRequesterId, out PciDevice? dev) ? Iommu.GetDomainForDev(dev) : null;
            AddProbes(probes, views, r.DmaRequesterId, dom);
        }

        phases.Add(Evaluate("base", image, probes, views));

        foreach ((ushort rid, uint pasid, IDomain dom) in _aux)
        {
            if (_removed.ContainsKey(rid))
            {
                continue;
            }

            ulong ctx = image.ContextEntryAddress(rid) ?? throw new InvalidOperationException("no context entry for an aux parent");
            ulong q1 = image.ReadUInt64(ctx + 8);
            VtdImage patched = image.WithUInt64(ctx + 8, (q1 & ~VtdFormat.ScalableContextRidPasidMask) | pasid);
            var p = new List<VtdProbe>();
            var v = new List<DriverView?>();
            AddProbes(p, v, rid, dom);
            phases.Add(Evaluate(string.Create(CultureInfo.InvariantCulture, $"aux {Bdf(rid)} PASID {pasid} via RID_PASID"), patched, p, v));
        }

        foreach ((string name, Func<VtdImage, VtdImage> patch, ushort[] rids) in _patches)
        {
            var p = new List<VtdProbe>();
            var v = new List<DriverView?>();
            foreach (ushort rid in rids)
            {
                AddProbes(p, v, rid, Iommu.GetDomainForDev(_devices[rid]));
            }

            phases.Add(Evaluate(name, patch(image), p, [.. v.Select(_ => (DriverView?)null)]));
        }

        return phases;
    }

    public static string Bdf(ushort rid) => string.Create(CultureInfo.InvariantCulture, $"{rid >> 8:x2}:{(rid >> 3) & 0x1F:x2}.{rid & 7:x}");

    public void Dispose() => Platform.Dispose();

    private ScenarioPhase Evaluate(string name, VtdImage image, List<VtdProbe> probes, List<DriverView?> views) =>
        new(name, image.Probe(Config, probes, EduMachine.RamSize), views);

    private void AddProbes(List<VtdProbe> probes, List<DriverView?> views, ushort rid, IDomain? dom, bool removed = false)
    {
        IEnumerable<ulong> points = _globalPoints;
        if (dom is not null && _points.TryGetValue(dom, out List<ulong>? list))
        {
            points = list.Concat(_globalPoints);
        }

        foreach (ulong iova in points)
        {
            DriverView? view = _orphaned.TryGetValue(rid, out bool known) && !removed ? (known ? new DriverView(0, false, false) : null)
                : dom is null || removed ? new DriverView(0, false, false) : DriverSays(dom, iova);
            probes.Add(new VtdProbe(rid, null, iova, DmaAccess.Write));
            views.Add(view);
            probes.Add(new VtdProbe(rid, null, iova, DmaAccess.Read));
            views.Add(view);
        }
    }

    private DriverView DriverSays(IDomain dom, ulong iova)
    {
        ulong pa = iova >> 48 == 0 ? Iommu.IovaToPhys(dom, iova) : 0;
        if (pa == 0 || !_maps.TryGetValue(dom, out var maps))
        {
            return new DriverView(pa, pa != 0, pa != 0);
        }

        IommuProt prot = maps.FirstOrDefault(m => iova >= m.Iova && iova < m.Iova + m.Size).Prot;
        // 5.15 intel-iommu sets the read bit on every leaf, so a write-only map is readable too
        // ("iommu/vt-d: Remove WO permissions on second-level paging entries", eea53c581688).
        return new DriverView(pa, (prot & (IommuProt.Read | IommuProt.Write)) != 0, prot.HasFlag(IommuProt.Write));
    }

    private static void Check(Errno e, string what)
    {
        if (e != Errno.None)
        {
            throw new InvalidOperationException($"{what}: {e}");
        }
    }
}
