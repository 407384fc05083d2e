using Iommu.Devices;
using Iommu.Domains;
using Iommu.Faults;
using Iommu.Groups;
using Iommu.Memory;
using Iommu.VtD.Driver.Format;
using Iommu.VtD.Hardware;
using Microsoft.Extensions.Logging;

namespace Iommu.VtD.Driver;

/// <summary>
/// The intel-iommu driver (<c>drivers/iommu/intel/iommu.c</c>, 5.15 with the seed's attribute
/// callbacks) over one or more <see cref="VtdUnit"/>s, as an <see cref="IIommuOps"/>.
/// </summary>
/// <remarks>
/// <para>The driver touches the hardware only through MMIO registers and the structures it writes
/// into <see cref="PhysicalMemory"/>: root and context tables, PASID directories and tables, page
/// tables and invalidation descriptors. Which unit serves a device is read from the PCI bus's
/// remapping-unit scopes (<see cref="PciBus.AddDmaRemapper"/>), as the kernel reads the ACPI DMAR table.</para>
/// <para>Metrics: each unit's IOTLB hits and misses, invalidations and faults by reason are published on
/// the platform's <c>Iommu.VtD</c> meter (<see cref="Platform.GetMeter"/>), tagged <c>unit</c> = <c>dmar&lt;index&gt;</c>.</para>
/// <para>Device-TLBs (5.15 <c>iommu_enable_dev_iotlb</c>): a PCI device with ATS behind a unit with ECAP.DT gets PASID,
/// then PRI (with ECAP.PRS in scalable mode), then ATS enabled once its context entry is programmed (DTE and PRE in
/// scalable mode, TT = 01 in legacy mode), and disabled when it leaves its domain; every IOTLB invalidation of a removed
/// mapping, a PASID tear-down and an SVA notifier flush is followed by a device-TLB invalidation. Decisions where the
/// specification is silent: every device is covered by an ATSR (the model has no DMAR table; SATC is 5.17+); a PASID-capable
/// device requires PASID-tagged page group responses, so PRI follows PASID; the ATS invalidate queue depth reads 0 (= 32,
/// sent as 0); no VFs, so PFSID with ECAP.DIT is the device's own ID. Aux and PASID-attached domains' unmaps also
/// invalidate their devices' TLBs, which 5.15 missed (fixed by the later "DevTLB invalidation for subdevices").</para>
/// <para>Thread safety: attach/detach/aux/attribute changes take the driver's device-domain lock
/// (<c>device_domain_lock</c>); map/unmap/iova_to_phys take none (the page tables are safe for
/// disjoint concurrent use); invalidations are serialised per unit.</para>
/// <para>Dispose: these are driver callbacks. <see cref="IommuCore"/> calls them inside the platform's
/// access scope (<see cref="PhysicalMemory.EnterAccess"/>), so each only checks the disposed flag (one
/// volatile read) and throws <see cref="ObjectDisposedException"/> after <see cref="Platform.Dispose"/>;
/// the map path does not pay for a second scope. A caller that invokes a callback directly while another
/// thread may dispose the platform holds <c>platform.Memory.EnterAccess()</c> around the call.</para>
/// </remarks>
[KernelSymbol("intel_iommu_ops")]
public sealed partial class IntelIommu : IIommuOps, IIommuAttachOps, IIommuMapPagesOps, IIommuIotlbOps, IIommuCapableOps,
    IIommuResvRegionsOps, IIommuDomainAttrOps, IIommuAuxOps, IIommuDevFeatureOps
{
    private const ulong Sz4K = 4096, Sz2M = 2UL << 20, Sz1G = 1UL << 30;
    private readonly Platform _platform;
    private readonly PhysicalMemory _memory;
    private readonly FrameAllocator _frames;
    private readonly ILogger _log;
    private readonly IntelIommuUnit[] _units;
    private readonly IVtdDiagnostics[] _diagnostics; // handed on to ExportImage only; the driver never reads them
    private readonly Lock _deviceDomainLock = new();
    private int _auxPasids; // aux-domain PASIDs taken from the platform's PASID namespace
    private readonly List<DmarFaultRecord> _faults = [];
    private readonly bool _mapNeedsFlush;
    private DmarDomain? _siDomain;
    private readonly HashSet<(ulong First, ulong Last)> _siRmrrsMapped = []; // RMRRs mapped into _siDomain (SiDomainMapRmrrs), under _deviceDomainLock

    // init_dmars: 1 until a unit without ECAP.PT clears it, for every unit (one global, not per unit).
    [KernelSymbol("hw_pass_through")]
    private readonly bool _hwPassThrough;

    /// <summary>Brings up the driver on <paramref name="units"/> with default options.</summary>
    /// <param name="platform">The platform whose memory holds the translation structures.</param>
    /// <param name="units">The remapping hardware, in DRHD order.</param>
    public IntelIommu(Platform platform, params VtdUnit[] units)
        : this(platform, new IntelIommuOptions(), units)
    {
    }

    /// <summary>Brings up the driver (<c>intel_iommu_init</c>): every unit gets a root table, queued invalidation and translation enabled.</summary>
    /// <param name="platform">The platform whose memory holds the translation structures.</param>
    /// <param name="options">Driver options.</param>
    /// <param name="units">
    /// The remapping hardware, in DRHD order. The driver programs each only through its registers, its
    /// fault interrupt and the tables it writes into memory; each unit's <see cref="IVtdDiagnostics"/> is
    /// handed on, unread, to the platform's meter and to <c>ExportImage</c>.
    /// </param>
    /// <exception cref="IommuException">A unit could not be initialised (no frames left).</exception>
    public IntelIommu(Platform platform, IntelIommuOptions options, params VtdUnit[] units)
    {
        ArgumentNullException.ThrowIfNull(platform);
        using PhysicalMemory.AccessScope guard = platform.Memory.EnterAccess();
        ArgumentNullException.ThrowIfNull(options);
        ArgumentNullException.ThrowIfNull(units);
        if (units.Length == 0)
        {
            throw new ArgumentException("The driver needs at least one remapping unit.", nameof(units));
        }

        _platform = platform;
        _memory = platform.Memory;
        _frames = platform.Frames;
        _log = platform.LoggerFactory.CreateLogger("Iommu.VtD.IntelIommu");
        Options = options;
        _units = new IntelIommuUnit[units.Length];
        _diagnostics = [.. units];
        for (int i = 0; i < units.Length; i++)
        {
            var unit = new IntelIommuUnit(units[i], i, _memory, _frames, options.ScalableMode, _log);
            unit.Init().ThrowIfError($"init of DMAR unit {i}");
            _units[i] = unit;
            int seq = i;
            units[i].FaultEvent += (_, _) => DmarFault(_units[seq]);
            units[i].Write32(Dmar.FectlReg, 0); // unmask the fault event (dmar_set_interrupt)
            IntelSvmEnablePrq(units[i], unit, units.Length);
            Log.UnitUp(_log, i, unit.ScalableMode ? "scalable" : "legacy", unit.Agaw, unit.NumDomains, unit.QueuedInvalidation ? "queued" : "register-based");
            _mapNeedsFlush |= unit.CachingMode || DmarCap.Rwbf(unit.Cap);

            // The flush queue does only domain-wide flushes, which a virtual IOMMU (caching mode) turns
            // into costly shadow-table syncs: 5.15 intel_iommu_init makes DMA domains strict.
            if (unit.CachingMode)
            {
                Log.BatchingDisallowed(_log, i);
                platform.Iommu.SetDmaStrict();
            }
        }

        _hwPassThrough = Array.TrueForAll(_units, u => DmarCap.EcapPassThrough(u.Ecap));

        PublishMetrics(platform, _diagnostics);
    }

    // Every unit publishes its caches, invalidations and faults on the platform's meter, tagged dmar%d as the kernel names it.
    private static void PublishMetrics(Platform platform, IVtdDiagnostics[] units)
    {
        var tagged = new (IVtdDiagnostics, System.Diagnostics.TagList)[units.Length];
        for (int i = 0; i < units.Length; i++)
        {
            System.Diagnostics.TagList tags = platform.MetricTags;
            tags.Add("unit", $"dmar{i}");
            tagged[i] = (units[i], tags);
        }

        VtdMetrics.AddInstruments(platform.GetMeter(VtdMetrics.MeterName), tagged, () => !platform.IsDisposed);
    }

    /// <summary>The options the driver runs with.</summary>
    public IntelIommuOptions Options { get; }

    /// <summary>The driver's view of each unit.</summary>
    public IReadOnlyList<IntelIommuUnit> Units => _units;

    /// <summary>Faults the fault handler has read and cleared (what the kernel prints with <c>dmar_fault</c>).</summary>
    public IReadOnlyList<DmarFaultRecord> Faults
    {
        get
        {
            lock (_faults)
            {
                return [.. _faults];
            }
        }
    }

    /// <summary>PASIDs currently allocated for this driver's aux domains (from the platform's PASID namespace, the 5.15 <c>ioasid</c> set).</summary>
    public int PasidsInUse => Volatile.Read(ref _auxPasids);

    /// <summary>4 KiB (<c>INTEL_IOMMU_PGSIZES</c> in 5.15); 2 MiB and 1 GiB are added per domain on attach.</summary>
    public ulong PgsizeBitmap => Sz4K;

    /// <summary>Every unit in scalable mode (<c>scalable_mode_support</c>).</summary>
    [KernelSymbol("scalable_mode_support")]
    public bool ScalableModeSupport => Array.TrueForAll(_units, u => u.ScalableMode);

    /// <summary>Every unit in scalable mode with PASID (<c>pasid_mode_support</c>).</summary>
    [KernelSymbol("pasid_mode_support")]
    public bool PasidModeSupport => Array.TrueForAll(_units, u => u.PasidSupported);

    /// <inheritdoc/>
    /// <remarks>
    /// <c>IOMMU_CAP_CACHE_COHERENCY</c> when every unit has ECAP.SC; <c>IOMMU_CAP_INTR_REMAP</c> when every
    /// unit has ECAP.IR (5.15 answers <c>irq_remapping_enabled</c>, which the IR driver sets only when every
    /// DRHD supports it; the remapping table is not modelled); nothing else.
    /// </remarks>
    [KernelSymbol("intel_iommu_capable")]
    public bool Capable(IommuCap cap)
    {
        _memory.ThrowIfDisposed();
        return cap switch
        {
            IommuCap.CacheCoherency => SnoopingSupport(),

            // irq_remapping_enabled: intel_prepare_irq_remapping turns IR on only when every DRHD has ECAP.IR.
            IommuCap.IntrRemap => Array.TrueForAll(_units, u => DmarCap.EcapIrSupport(u.Ecap)),
            _ => false,
        };
    }

    /// <inheritdoc/>
    [KernelSymbol("intel_iommu_domain_alloc")]
    public IDomain? DomainAlloc(DomainType type)
    {
        _memory.ThrowIfDisposed();
        switch (type)
        {
            case DomainType.Unmanaged or DomainType.Dma or DomainType.DmaFq:
                return NewDomain(firstLevel: UseFirstLevelFor(type));
            case DomainType.Identity:
                // The one static identity domain of the system (si_domain), on every unit.
                lock (_deviceDomainLock)
                {
                    return _siDomain ??= SiDomainInit();
                }

            default:
                return null;
        }
    }

    /// <inheritdoc/>
    /// <remarks>Freeing a nest parent (<see cref="DomainAllocNestParent"/>) first detaches every device from the nested domains built on it (iommufd would keep the parent alive instead).</remarks>
    [KernelSymbol("intel_iommu_domain_free")]
    public void DomainFree(IDomain domain)
    {
        _memory.ThrowIfDisposed();
        DmarDomain d = AsDmar(domain);
        if (d == _siDomain)
        {
            return;
        }

        lock (_deviceDomainLock)
        {
            foreach (DeviceDomainInfo info in d.Devices.ToArray())
            {
                RemoveDevInfo(info);
            }

            AuxRemoveAllOnFree(d);
            RemoveDevPasidsOnFree(d);

            // iommufd keeps a nest parent alive while nested domains use it; here freeing the parent first
            // detaches every device from them, so no PASID entry keeps pointing at its freed table.
            // The children list has its own lock (a nested domain is allocated and freed without this one).
            DmarDomain[] children;
            lock (d.NestedChildren)
            {
                children = [.. d.NestedChildren];
            }

            foreach (DmarDomain child in children)
            {
                foreach (DeviceDomainInfo info in child.Devices.ToArray())
                {
                    RemoveDevInfo(info);
                }
            }
        }

        if (d.NestParent is { } parent)
        {
            lock (parent.NestedChildren)
            {
                parent.NestedChildren.Remove(d); // no table of its own
            }
        }
        else if (d.UseFirstLevel)
        {
            d.FirstLevelTable.FreeAll();
        }
        else
        {
            d.PageTable.FreeAll();
        }
    }

    /// <inheritdoc/>
    [KernelSymbol("intel_iommu_probe_device")]
    public Errno AddDevice(Device device)
    {
        _memory.ThrowIfDisposed();
        return DeviceToIommu(device) is null
            ? ErrorDetail.Fail(Errno.ENODEV, $"{device?.Name} is not behind a VT-d unit of this driver")
            : Errno.None;
    }

    /// <inheritdoc/>
    [KernelSymbol("intel_iommu_release_device")]
    public void RemoveDevice(Device device)
    {
        _memory.ThrowIfDisposed();
        ArgumentNullException.ThrowIfNull(device); // was a NullReferenceException (bad-input matrix)
        lock (_deviceDomainLock)
        {
            if (device.IommuPriv is DeviceDomainInfo info)
            {
                RemoveDevInfo(info);
            }

            ForgetDevPasids(device);
        }
    }

    /// <inheritdoc/>
    [KernelSymbol("intel_iommu_device_group")]
    public Errno DeviceGroup(Device device, out IommuGroup? group)
    {
        _memory.ThrowIfDisposed();
        return device is PciDevice ? _platform.Iommu.PciDeviceGroup(device, out group) : _platform.Iommu.GenericDeviceGroup(device, out group);
    }

    [KernelSymbol("PCI_CLASS_BRIDGE_ISA")]
    private const uint PciClassBridgeIsa = 0x0601;

    /// <inheritdoc/>
    [KernelSymbol("intel_iommu_get_resv_regions")]
    public void GetResvRegions(Device device, IList<IommuResvRegion> regions)
    {
        _memory.ThrowIfDisposed();
        ArgumentNullException.ThrowIfNull(regions);

        // The RMRRs naming the device or a bridge above it: firmware DMA that must keep working, so identity
        // mapped; relaxable for USB and graphics devices, whose firmware use ends when their driver loads.
        if (device is PciDevice { Bus: PciBus bus } pdev)
        {
            IommuResvType type = pdev.RmrrRelaxable ? IommuResvType.DirectRelaxable : IommuResvType.Direct;
            foreach ((ulong b, ulong e) in bus.RmrrsOf(pdev))
            {
                regions.Add(new IommuResvRegion(b, e - b + 1, IommuProt.Read | IommuProt.Write, type));
            }

            // CONFIG_INTEL_IOMMU_FLOPPY_WA (default y in 5.15; gone in 6.x): the floppy controller behind an ISA
            // bridge DMAs below 16 MiB through the bridge's requester id.
            if ((pdev.ClassCode >> 8) == PciClassBridgeIsa)
            {
                regions.Add(new IommuResvRegion(0, 1UL << 24, IommuProt.Read | IommuProt.Write, IommuResvType.DirectRelaxable));
            }
        }

        // The interrupt window (IOAPIC_RANGE_START..END): DMA there is an MSI, never translated.
        regions.Add(new IommuResvRegion(0xFEE0_0000, 0x10_0000, IommuProt.None, IommuResvType.Msi));
    }

    /// <summary>The diagnostics of unit <paramref name="unitIndex"/> as the platform's builder handed it over (for <c>ExportImage</c>).</summary>
    internal IVtdDiagnostics HardwareDiagnostics(int unitIndex)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(unitIndex);
        ArgumentOutOfRangeException.ThrowIfGreaterThanOrEqual(unitIndex, _diagnostics.Length);
        return _diagnostics[unitIndex];
    }

    // device_to_iommu: the unit whose DRHD scope covers the device, matched by identity (no downcast).
    internal IntelIommuUnit? DeviceToIommu(Device? device)
    {
        if (device is not PciDevice pci || pci.Bus is not PciBus bus || bus.FindDmaRemapper(pci) is not { } remapper)
        {
            return null;
        }

        foreach (IntelIommuUnit u in _units)
        {
            if (ReferenceEquals(u.Remapper, remapper))
            {
                u.Segment = bus.Segment;
                return u;
            }
        }

        return null;
    }

    private static DmarDomain AsDmar(IDomain domain)
    {
        ArgumentNullException.ThrowIfNull(domain);
        return domain as DmarDomain ?? throw new ArgumentException("Not a domain of the intel-iommu driver.", nameof(domain));
    }

    /// <summary>
    /// Whether a new domain of <paramref name="type"/> gets first-level tables under
    /// <see cref="IntelIommuOptions.FirstLevel"/> (6.1 <c>first_level_by_default</c>, or 5.15's
    /// <c>scalable_mode_support() &amp;&amp; intel_cap_flts_sanity()</c>).
    /// </summary>
    /// <param name="type">A paging domain type (DMA, DMA_FQ or UNMANAGED).</param>
    /// <returns>True for first level.</returns>
    [KernelSymbol("first_level_by_default", Version = "6.1")]
    internal bool UseFirstLevelFor(DomainType type)
    {
        if (!ScalableModeSupport)
        {
            return false; // only the second level exists in legacy mode
        }

        bool flts = Array.TrueForAll(_units, u => DmarCap.EcapFlts(u.Ecap));
        if (Options.FirstLevel == FirstLevelPolicy.AllWhenEveryUnitHasFlts)
        {
            return flts;
        }

        bool slts = Array.TrueForAll(_units, u => DmarCap.EcapSlts(u.Ecap));
        return flts ^ slts ? flts : type != DomainType.Unmanaged;
    }

    // md_domain_init(57): gaw 57, agaw 3 (5 levels), aperture [0, 2^57 − 1] (first level: the
    // aperture shrinks to the lower canonical half on attach, domain_update_iommu_cap). A narrower width
    // only for si_domain's 1:1 table (SiDomainInit).
    internal DmarDomain? NewDomain(bool identity = false, bool firstLevel = false, bool passThrough = true, int width = 57)
    {
        int agaw = Dmar.WidthToAgaw(Dmar.GuestWidthToAdjustWidth(width));
        DmarDomain d;
        if (firstLevel)
        {
            if (!_frames.TryAllocate(out ulong root))
            {
                return null;
            }

            d = new DmarDomain(new PageTable<FirstLevelFormat>(_memory, _frames, root, agaw + 2), width, agaw, _units.Length)
            {
                Geometry = new IommuDomainGeometry(0, (1UL << width) - 1, true),
            };
        }
        else
        {
            if (DmaPageTable.Create(_memory, _frames, agaw + 2, out DmaPageTable? pt) != Errno.None)
            {
                return null;
            }

            d = new DmarDomain(pt!, width, agaw, _units.Length)
            {
                Geometry = new IommuDomainGeometry(0, (1UL << width) - 1, true),
                IsIdentity = identity,
                PassThrough = identity && passThrough,
            };
        }

        // No attach can drop levels (prepare_domain_attach_device): map, unmap and iova_to_phys skip the
        // walker count from the start, as on units that walk 5 levels.
        if (identity || Array.TrueForAll(_units, u => u.Agaw >= agaw))
        {
            d.MarkLevelsFinal();
        }

        return d;
    }

    // si_domain_init: with hw_pass_through the identity domain has no table (TT=10 / PGTT=100 on every
    // unit); without it (some unit lacks ECAP.PT, which clears the global for all of them) it is a
    // second-level table mapping every RAM range 1:1 (iommu_domain_identity_map), read and write, which
    // every unit walks: DMA reaches RAM only, not MMIO or addresses beyond memory. Two departures, same
    // reach: 5.15 builds it 5-level (md_domain_init(57)) and prepare_domain_attach_device then drops the
    // top level under the units already walking it (the freed root stays in their context entries); the
    // model builds it at the narrowest unit's agaw and width from the start. 5.15 maps 4 KiB leaves
    // (iommu_superpage is still 0 in si_domain_init); the model uses the common superpage size, so
    // 8 GiB is not two million PTEs. The RMRRs go in when their devices attach (SiDomainMapRmrrs).
    [KernelSymbol("si_domain_init")]
    private DmarDomain? SiDomainInit()
    {
        if (_hwPassThrough)
        {
            return NewDomain(identity: true);
        }

        int agaw = _units.Min(u => u.Agaw);
        DmarDomain? d = NewDomain(identity: true, passThrough: false, width: Dmar.AgawToWidth(agaw));
        if (d is null)
        {
            return null;
        }

        // The levels are the narrowest unit's SAGAW (what 5.15's level drops end at), not its MGAW.
        d.Gaw = Math.Min(d.Gaw, _units.Min(u => DmarCap.Mgaw(u.Cap)));

        // for_each_mem_pfn_range: adjacent RAM ranges are mapped as one run so a superpage may straddle them.
        int sp = SuperpageSupport(firstLevel: false);
        IReadOnlyList<HostMemoryRange> ram = RamRanges();
        for (int i = 0; i < ram.Count;)
        {
            ulong start = ram[i].PhysicalAddress, end = start + ram[i].Length;
            for (i++; i < ram.Count && ram[i].PhysicalAddress == end; i++)
            {
                end += ram[i].Length;
            }

            if (d.PageTable.Map(start, start, end - start, DmaPte.Read | DmaPte.Write, sp, out _) != Errno.None)
            {
                return null;
            }
        }

        return d;
    }

    // for_each_mem_pfn_range: owned memory is RAM throughout; caller-owned memory is its ranges (sorted, 4 KiB-aligned).
    private IReadOnlyList<HostMemoryRange> RamRanges() => _memory.HostRanges ?? [new HostMemoryRange(0, _memory.Size, 0)];

    // si_domain_init's RMRR loop, per device: the RMRRs naming a PCI device that attaches to si_domain (no
    // hw_pass_through), read-write, each once. 5.15 maps those of every device present at boot when it builds
    // si_domain; the model cannot tell boot from hot-add, so it maps a device's RMRRs when the device first
    // attaches, which also covers devices added after si_domain was built. 5.15's iommu_domain_identity_map
    // clears the range and maps it again with the same bits, so only the part outside RAM is mapped here
    // (clearing would drop the RAM superpages around it). An RMRR ending beyond the domain's width is skipped, as
    // 5.15's WARN_ON does; one whose map fails (no table memory) is left unmapped and tried again at the next
    // attach (5.15 fails si_domain_init). Under _deviceDomainLock.
    private void SiDomainMapRmrrs(DmarDomain d, PciDevice device)
    {
        if (d != _siDomain || d.PassThrough || device.Bus is not PciBus bus)
        {
            return;
        }

        IReadOnlyList<HostMemoryRange> ram = RamRanges();
        int sp = SuperpageSupport(firstLevel: false);
        foreach ((ulong first, ulong last) in bus.RmrrsOf(device))
        {
            if ((d.Gaw < 64 && (last >> d.Gaw) != 0) || !_siRmrrsMapped.Add((first, last)))
            {
                continue;
            }

            // [first, last] minus the RAM ranges (sorted by address).
            bool ok = true;
            ulong start = first;
            foreach (HostMemoryRange r in ram)
            {
                ulong rEnd = r.PhysicalAddress + r.Length;
                if (rEnd <= start || r.PhysicalAddress > last)
                {
                    continue;
                }

                ok &= r.PhysicalAddress <= start || SiDomainMap(d, start, r.PhysicalAddress - start, sp);
                start = rEnd;
                if (start == 0 || start > last)
                {
                    break;
                }
            }

            ok &= start == 0 || start > last || SiDomainMap(d, start, last - start + 1, sp);
            if (!ok)
            {
                _siRmrrsMapped.Remove((first, last));
            }
        }
    }

    // The units already walk si_domain: a caching-mode unit may hold the range as not present (iotlb_sync_map).
    // A page already mapped (RMRRs may overlap) stays as it is; a superpage that replaces a table of an
    // overlapping RMRR's 4 KiB leaves maps the same pages 1:1, and the flush frees that table, as in MapSuperpages.
    private bool SiDomainMap(DmarDomain d, ulong start, ulong size, int sp)
    {
        long before = d.PageTable.ReplacedTables;
        bool ok = d.PageTable.Map(start, start, size, DmaPte.Read | DmaPte.Write, sp, out ulong mapped) == Errno.None;
        if (mapped != 0)
        {
            IotlbSyncMap(d, start, mapped);
            if (d.PageTable.ReplacedTables != before)
            {
                FlushReplacedTables(d, start, mapped);
            }
        }

        return ok;
    }

    // domain_update_iommu_snooping: every unit has snoop control. 5.15 also counted scalable-mode
    // units (it forces snooping through PGSNP in the PASID entry) and then set DMA_PTE_SNP in
    // second-level leaves, a bit that hardware without ECAP.SC treats as reserved (fault 0x7A on a
    // spec-compliant unit; QEMU ignores it). We follow the later kernels' rule: ECAP.SC everywhere.
    private bool SnoopingSupport() => Array.TrueForAll(_units, u => DmarCap.EcapSc(u.Ecap));

    // domain_update_iommu_superpage: smallest common superpage support over all units. First level:
    // 2 MiB always, 1 GiB only if every unit has CAP.FL1GP (SLLPS does not apply).
    private int SuperpageSupport(bool firstLevel)
    {
        if (!Options.Superpages)
        {
            return 0;
        }

        if (firstLevel)
        {
            return Array.TrueForAll(_units, u => DmarCap.Fl1gp(u.Cap)) ? 2 : 1;
        }

        int mask = 0x3; // 2 MiB and 1 GiB, as 5.15 starts: SLLPS bits 2-3 are reserved
        foreach (IntelIommuUnit u in _units)
        {
            mask &= DmarCap.SuperPageVal(u.Cap);
        }

        return mask == 0 ? 0 : 32 - System.Numerics.BitOperations.LeadingZeroCount((uint)mask);
    }

    // dmar_fault (5.15), under the unit's register lock: with PPF set, from the record FSTS.FRI names, read, log and
    // clear each record while its F is set, wrapping around; then clear PFO/PPF. The fault event fires on the thread
    // whose DMA raised it, so two devices' faults can run this on two threads at once: the lock keeps a record from
    // being read twice, and walking on while F is set (not once over the registers) finds a record the unit added
    // meanwhile, which raised no event of its own while PPF was still set.
    private void DmarFault(IntelIommuUnit unit)
    {
        uint fro = DmarCap.FaultRegOffset(unit.Cap);
        int nfr = DmarCap.NumFaultRegs(unit.Cap);
        lock (unit.RegisterLock)
        {
            uint fsts = unit.ReadReg32(Dmar.FstsReg);
            if ((fsts & Dmar.FstsPpf) != 0)
            {
                int index = (int)((fsts >> Dmar.FstsFriShift) & 0xFF) % nfr;
                // Unbounded, as 5.15's while (1): records added during the walk raise no event, so stopping after
                // one lap would leave them, and every later fault, unreported.
                for (; ; index = (index + 1) % nfr)
                {
                    uint at = fro + (uint)(index * 16);
                    ulong hi = unit.ReadReg64(at + 8);
                    if ((hi & FaultRecord.Fault) == 0)
                    {
                        break;
                    }

                    ulong lo = unit.ReadReg64(at);
                    var record = new DmarFaultRecord(
                        unit.SeqId,
                        FaultRecord.SourceId(hi),
                        FaultRecord.PasidPresent(hi) ? FaultRecord.PasidValue(hi) : null,
                        FaultRecord.PageAddr(lo),
                        !FaultRecord.IsRead(hi),
                        (VtdFaultReason)FaultRecord.FaultReason(hi));
                    unit.WriteReg32(at + 12, FaultRecord.FaultClearDword); // clear F (RW1C)
                    lock (_faults)
                    {
                        _faults.Add(record);
                    }

                    Log.DmaFault(_log, unit.SeqId, record.Write ? "Write" : "Read", PciAddress.FromRequesterId(unit.Segment, record.SourceId).ToString(), record.Pasid?.ToString(System.Globalization.CultureInfo.InvariantCulture) ?? "-", record.Address, (byte)record.Reason, record.Reason.ToString());
                }
            }

            unit.WriteReg32(Dmar.FstsReg, Dmar.FstsPfo | Dmar.FstsPpf);
        }
    }
}
