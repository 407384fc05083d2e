using System.Buffers.Binary;
using System.Globalization;
using Iommu.Devices;
using Iommu.Domains;
using Iommu.Memory;
using Iommu.VtD.Diagnostics;
using Iommu.VtD.Driver;
using Iommu.VtD.Hardware;

namespace Iommu.Reliability.Tests.Isolation;

/// <summary>
/// One sample of the core + driver isolation property: a platform with a PCI bus, VT-d unit(s) and
/// the intel-iommu driver, four devices, the reference model, and the executor that runs ops on
/// both and checks that every DMA does exactly what the model says.
/// </summary>
/// <remarks>
/// Devices: dev0 02.0 PASID 16 bits (a two-page PASID directory) + Scalable-IOV; dev1 03.0 PASID 10 bits + Scalable-IOV;
/// dev2 04.0 no PASID; dev3 05.0 PASID 8 bits, no Scalable-IOV DVSEC. All ACS: one group each.
/// The test never flushes a cache itself: a stale IOTLB/context/PASID-cache entry after an unmap
/// or a detach shows up as a DMA that succeeds where the model says fault, or lands elsewhere.
/// The DMA API runs on the default domains: in a DMA_FQ domain a lazily unmapped page may still be
/// reached through a stale IOTLB entry — at its old physical address, with its old rights — until the
/// flush the model predicts (a full queue, or the timer on the platform clock), and its IOVA must not be
/// handed out again before that flush; after it, the page faults like any other.
/// </remarks>
internal sealed partial class CoreIsolationBed : IDisposable
{
    public const int Devices = 4;

    /// <summary>Stage-1 leaves of the nested domain: IOVAs <see cref="Stage1Base"/> + i × 4K.</summary>
    public const int Stage1Pages = 8;

    /// <summary>Guest data pages a stage-1 leaf may point at: 8 read-write, 4 read-only in the parent, 1 the parent does not map.</summary>
    public const int Stage1Targets = 13;

    /// <summary>First IOVA of the stage-1 page table (PML4 0, PDPT 4, PD 0).</summary>
    public const ulong Stage1Base = 4 * Sizes.GiB;

    // Guest memory the property owns: the stage-1 tables (PML4, PDPT, PD, PT in four pages) and two data
    // regions, mapped by the nest parent from these GPAs to host memory at 7 GiB (no other op uses it).
    private const ulong TablesGpa = 0x10_0000, RwGpa = 0x20_0000, RoGpa = 0x40_0000, UnmappedGpa = 0x80_0000;
    private const ulong GuestPa = 7 * Sizes.GiB, TablesPa = GuestPa, RwPa = GuestPa + (2 * Sizes.MiB), RoPa = GuestPa + (4 * Sizes.MiB);
    private const ulong FlP = 1, FlRw = 2, FlUs = 4, FlA = 0x20, FlD = 0x40, FlXd = 1UL << 63, FlAddr = 0x000F_FFFF_FFFF_F000;
    public const uint NeverPasid = 1000;
    private const int DmaLength = 8;
    private const int HostAddressWidth = 46;

    private static readonly PciDeviceSpec[] s_specs =
    [
        new("0000:00:02.0") { PasidWidth = 16, ScalableIov = true, Acs = true },
        new("0000:00:03.0") { PasidWidth = 10, ScalableIov = true, Acs = true },
        new("0000:00:04.0") { Acs = true },
        new("0000:00:05.0") { PasidWidth = 8, Acs = true },
    ];

    private readonly Platform _platform;
    private readonly IommuCore _iommu;
    private readonly PciBus _pci;
    private readonly VtdUnit[] _units;
    private readonly bool _scalable;
    private readonly ModelDomain?[] _slots = new ModelDomain?[CoreOp.DomainSlots];
    private ModelDomain? _nested;
    private int _nestedProbes, _nestedOk, _nestedStale;
    private readonly ModelDevice[] _devs = new ModelDevice[Devices];
    private readonly List<uint> _seenPasids = [];
    private readonly List<ulong> _stale = [];
    private readonly List<(uint Pasid, int Dev)> _staleUser = []; // who reached the stale IOVA's domain (PASID 0: the RID; device -1: nobody)
    private readonly List<ulong> _removed = [];
    private ulong _pattern = 0x5A5A_0000_0000_0000;
    private TimeSpan _now;
    private (long Allocations, long Live) _framesChecked;

    public CoreIsolationBed(CoreIsolationConfig config)
    {
        Config = config;
        _platform = new Platform(new PlatformOptions
        {
            MemorySize = MemorySize,
            TableMemorySize = 16 * Sizes.MiB,
            DefaultDomainType = config.DefaultDomain,
        });
        _iommu = _platform.Iommu;
        _pci = _platform.AddPciBus();
        var units = new VtdUnit[config.Units];
        for (int i = 0; i < units.Length; i++)
        {
            units[i] = new VtdUnit(_platform.Memory, i == 1 && config.Vtd1 is not null ? config.Vtd1 : config.Vtd);
        }

        _units = units;

        if (units.Length == 1)
        {
            _pci.AddDmaRemapper(units[0], includeAll: true);
        }
        else
        {
            _pci.AddDmaRemapper(units[0], includeAll: false, s_specs[0].Address, s_specs[2].Address);
            _pci.AddDmaRemapper(units[1], includeAll: true);
        }

        Driver = new IntelIommu(_platform, new IntelIommuOptions { FirstLevel = config.Policy }, units);
        _pci.SetIommuOps(Driver).ThrowIfError();
        _scalable = config.Vtd.ScalableMode;
        for (int i = 0; i < Devices; i++)
        {
            PciDevice dev = _pci.AddDevice(s_specs[i]);
            IDomain def = dev.IommuGroup?.DefaultDomain ?? throw new InvalidOperationException($"{dev.Name} has no default domain");
            bool identity = def.Type == DomainType.Identity;
            if (def.Type != config.ExpectedDefault)
            {
                throw new InvalidOperationException($"{dev.Name}: default domain is {def.Type}, configured {config.DefaultDomain}, expected {config.ExpectedDefault}");
            }

            if (!identity && ((DmarDomain)def).UseFirstLevel != config.BothStages)
            {
                throw Fail($"{dev.Name}: the default domain is on the {(((DmarDomain)def).UseFirstLevel ? "first" : "second")} level");
            }

            _devs[i] = new ModelDevice(i, dev, new ModelDomain($"def(dev{i})", def, identity, superpages: true) { Levels = UnitLevels(i), Lazy = def.Type == DomainType.DmaFq });
        }
    }

    public static ulong MemorySize => 8 * Sizes.GiB;

    public CoreIsolationConfig Config { get; }

    public IntelIommu Driver { get; }

    /// <summary>Ops executed (not skipped for a failed precondition).</summary>
    public int Executed { get; private set; }

    /// <summary>DMA probes executed, and how many the model expected to succeed.</summary>
    public int Probes { get; private set; }

    public int ProbesOk { get; private set; }

    /// <summary>Nested-domain probes: executed, succeeded, and answered by a stale stage-1 translation (the old leaf, before the guest's invalidation).</summary>
    public (int Probes, int Ok, int Stale) NestedStats => (_nestedProbes, _nestedOk, _nestedStale);

    public void Dispose() => _platform.Dispose();

    /// <summary>Runs <paramref name="ops"/> in order; throws <see cref="IsolationViolationException"/> at the first disagreement with the model.</summary>
    public void Run(IReadOnlyList<CoreOp> ops)
    {
        for (int i = 0; i < ops.Count; i++)
        {
            try
            {
                if (Step(ops[i]))
                {
                    Executed++;
                    CheckNoFreedFrameReachable();
                }
            }
            catch (IsolationViolationException e)
            {
                throw new IsolationViolationException($"[{Config}] op #{i} {ops[i]}: {e.Message}");
            }
        }
    }

    private static IsolationViolationException Fail(string message) => new(message);

    private static string Hex(ulong v) => "0x" + v.ToString("x", CultureInfo.InvariantCulture);

    private static void Expect(Errno expected, Errno actual, string what)
    {
        if (expected != actual)
        {
            throw Fail($"{what}: expected {expected}, got {actual} ({ErrorDetail.LastMessage})");
        }
    }

    private bool Step(CoreOp op)
    {
        switch (op)
        {
            case DomainAllocOp a:
                if (_slots[a.Slot] is not null)
                {
                    return false;
                }

                IDomain d = _iommu.DomainAlloc(_pci) ?? throw Fail("iommu_domain_alloc returned null");
                if (((DmarDomain)d).UseFirstLevel != Config.UnmanagedFirstLevel)
                {
                    throw Fail($"iommu_domain_alloc: an UNMANAGED domain on the {(Config.UnmanagedFirstLevel ? "second" : "first")} level under {Config.Policy}");
                }

                _slots[a.Slot] = new ModelDomain($"d{a.Slot}", d, identity: false, superpages: false);
                return true;

            case DomainFreeOp f:
                return DomainFree(f.Slot);

            case AttachOp a:
                return Attach(a.Slot, a.Dev);

            case DetachOp a:
                return Detach(a.Slot, a.Dev);

            case AuxdOp a:
                return Auxd(a.Dev, a.Enable);

            case AuxAttachOp a:
                return AuxAttach(a.Slot, a.Dev);

            case AuxDetachOp a:
                return AuxDetach(a.Slot, a.Dev);

            case PasidAttachOp a:
                return PasidAttach(a);

            case PasidDetachOp a:
                return PasidDetach(a.Dev, a.Index);

            case MapOp m:
                return Map(m);

            case UnmapOp u:
                return Unmap(u);

            case DmaOp p:
                Dma(p);
                return true;

            case DmaMapOp m:
                DmaMap(_devs[m.Dev], m.Pa, m.Size, m.Dir);
                return true;

            case DmaUnmapOp u:
                return DmaUnmap(u);

            case NestAllocOp n:
                return NestAlloc(n);

            case NestAttachOp n:
                return NestAttach(n.Dev);

            case Stage1SetOp s:
                return Stage1Set(s);

            case Stage1InvalidateOp i:
                return _nested is not null && Stage1Invalidate(i.All ? -1 : i.Page);

            case DmaBurstOp b:
                DmaBurst(b);
                Executed += (2 * b.Count) - 1; // as many kernel calls as it makes
                return true;

            case ClockOp c:
                Advance(c.Ms);
                return true;

            default:
                throw new ArgumentException($"unknown op {op}", nameof(op));
        }
    }

    private ModelDomain? Target(int target) => target < CoreOp.DomainSlots ? _slots[target] : _devs[target - CoreOp.DomainSlots].Default;

    private bool DomainFree(int slot)
    {
        ModelDomain? d = _slots[slot];
        if (d is null || Array.Exists(_devs, x => x.Rid == d || x.PasidSlots.ContainsValue(d)))
        {
            return false; // freeing a domain a device or a PASID is attached to is a caller bug (BUG/WARN)
        }

        // An aux-attached domain may be freed (after AUXD_DISABLE it is the only cleanup left): the driver drops
        // every aux attachment as its last aux detach would, so the domain's PASID reaches nothing from here on.
        _iommu.DomainFree(d.Real);
        _slots[slot] = null;
        d.Links.Clear();
        d.Pasid = 0;
        NoteStale(d);
        return true;
    }

    private bool Attach(int slot, int dev)
    {
        ModelDomain? d = _slots[slot];
        if (d is null)
        {
            return false;
        }

        ModelDevice m = _devs[dev];
        if (m.Nested)
        {
            return false;
        }

        // -EBUSY also while PASIDs are attached (the model's stand-in for 6.x's DMA-ownership claim).
        Errno expected = m.Rid != m.Default || m.PasidSlots.Count != 0 ? Errno.EBUSY : m.AuxEnabled ? Errno.EPERM : TooManyLevels(d, dev) ? Errno.EINVAL : Errno.None;
        Expect(expected, _iommu.AttachDevice(d.Real, m.Real), $"attach {d.Name} to dev{dev}");
        if (expected == Errno.None)
        {
            d.Levels = Math.Min(d.Levels, UnitLevels(dev));
            ChangeRid(m, d);
        }

        return true;
    }

    private bool Detach(int slot, int dev)
    {
        ModelDomain? d = _slots[slot];
        if (d is null)
        {
            return false;
        }

        ModelDevice m = _devs[dev];
        if (m.Nested)
        {
            return false;
        }

        _iommu.DetachDevice(d.Real, m.Real);
        if (m.Rid != m.Default)
        {
            // __iommu_detach_group: back to the default domain, whatever domain was named.
            ChangeRid(m, m.Default);
        }

        return true;
    }

    // A new RID domain: a new device info, context entry and PASID table; aux entries and
    // auxd_enabled of the old info are gone (5.15 dmar_remove_one_dev_info frees the PASID table).
    private void ChangeRid(ModelDevice m, ModelDomain d)
    {
        if (m.Rid != d)
        {
            // The context entry changes: the driver invalidates the old domain's IOTLB entries on this
            // unit (domain_context_clear), lazily unmapped pages included.
            m.Rid.DropStale();
        }

        NoteStale(m.Rid);
        m.Rid = d;
        m.AuxEnabled = false;
        d.Superpages = true;
        foreach (ModelDomain? x in _slots)
        {
            if (x is not null && x.Links.TryGetValue(m.Index, out AuxLink? link) && link.Programmed)
            {
                link.Programmed = false;
                NoteStale(x);
            }
        }

        CheckIovaToPhysSample(d);
    }

    private bool Auxd(int dev, bool enable)
    {
        ModelDevice m = _devs[dev];
        if (m.Nested)
        {
            return false;
        }

        if (enable)
        {
            Errno expected = !_scalable ? Errno.EINVAL : m.Real.HasPasidCapability ? Errno.None : Errno.ENODEV;
            Expect(expected, _iommu.SetDevAttr(m.Real, IommuDevAttr.AuxdEnable), $"AUXD_ENABLE dev{dev}");
            m.AuxEnabled |= expected == Errno.None;
        }
        else
        {
            Expect(Errno.None, _iommu.SetDevAttr(m.Real, IommuDevAttr.AuxdDisable), $"AUXD_DISABLE dev{dev}");
            m.AuxEnabled = false; // aux entries stay programmed (5.15 has no -EBUSY check)
        }

        Expect(Errno.None, _iommu.GetDevAttr(m.Real, IommuDevAttr.AuxdEnabled, out bool on), $"AUXD_ENABLED dev{dev}");
        if (on != (_scalable && m.AuxEnabled))
        {
            throw Fail($"AUXD_ENABLED of dev{dev} reads {on}, model says {m.AuxEnabled}");
        }

        return true;
    }

    private bool AuxAttach(int slot, int dev)
    {
        ModelDomain? d = _slots[slot];
        if (d is null)
        {
            return false;
        }

        ModelDevice m = _devs[dev];
        if (m.Nested)
        {
            return false;
        }

        Errno expected = !_scalable || !m.AuxEnabled ? Errno.EPERM : TooManyLevels(d, dev) ? Errno.EINVAL
            : !d.Links.ContainsKey(dev) && d.Pasid != 0 && m.PasidSlots.ContainsKey(d.Pasid) ? Errno.EBUSY // the number is attached on this device
            : Errno.None;
        Expect(expected, _iommu.AttachDeviceAux(d.Real, m.Real), $"aux attach {d.Name} to dev{dev}");
        if (expected == Errno.None)
        {
            d.Levels = Math.Min(d.Levels, UnitLevels(dev));
            d.Superpages = true;
            if (!d.Links.TryGetValue(dev, out AuxLink? link))
            {
                // The first user of (domain, device) programs the PASID entry; a later one (even
                // after the entry was lost with the old PASID table) only counts (auxiliary_link_device).
                link = new AuxLink { Programmed = true };
                d.Links.Add(dev, link);
            }

            link.Users++;
            Expect(Errno.None, _iommu.DomainGetAttr(d.Real, DomainAttr.AuxdId, out uint pasid), $"AUXD_ID of {d.Name}");
            if (d.Pasid == 0)
            {
                if (pasid == 0 || pasid == NeverPasid || Array.Exists(_slots, x => x is not null && x != d && x.Pasid == pasid))
                {
                    throw Fail($"{d.Name} got aux PASID {pasid}, which is 0, reserved for the test, or another live domain's");
                }

                d.Pasid = pasid;
                if (!_seenPasids.Contains(pasid))
                {
                    _seenPasids.Add(pasid);
                }
            }
            else if (pasid != d.Pasid)
            {
                throw Fail($"{d.Name} AUXD_ID changed from {d.Pasid} to {pasid} while aux-attached");
            }
        }

        CheckAuxdId(d);
        return true;
    }

    private bool AuxDetach(int slot, int dev)
    {
        ModelDomain? d = _slots[slot];
        if (d is null)
        {
            return false;
        }

        ModelDevice m = _devs[dev];
        if (m.Nested)
        {
            return false;
        }

        _iommu.DetachDeviceAux(d.Real, m.Real);

        // intel_iommu_aux_detach_device does nothing once AUX is disabled on the device.
        if (_scalable && m.AuxEnabled && d.Links.TryGetValue(dev, out AuxLink? link))
        {
            if (--link.Users == 0)
            {
                d.Links.Remove(dev);
                NoteStale(d);
                if (d.Links.Count == 0)
                {
                    d.Pasid = 0;
                }
            }
        }

        CheckAuxdId(d);
        return true;
    }

    // Page-table levels of the unit in front of a device: dev0/dev2 on unit 0, dev1/dev3 on the last.
    private int UnitLevels(int dev)
    {
        VtdConfig c = dev % 2 == 0 || Config.Vtd1 is null ? Config.Vtd : Config.Vtd1;
        return c.Supports57BitTables && c.MaxGuestAddressWidth >= 57 ? 5 : c.Supports48BitTables && c.MaxGuestAddressWidth >= 48 ? 4 : 3;
    }

    // A domain in use (a device's RID domain, or aux-linked) with more levels than the device's unit
    // walks: refused with -EINVAL (later kernels; 5.15 frees the top level the wider unit still walks).
    // A nested domain's tables are the parent's (whose use is its nested domain's).
    private bool TooManyLevels(ModelDomain d, int dev) =>
        d.Nest is { } n ? UnitLevels(dev) < n.Parent.Levels && InUse(d)
        : UnitLevels(dev) < d.Levels && (d.Links.Count > 0 || InUse(d));

    private bool InUse(ModelDomain d) => Array.Exists(_devs, x => x.Rid == d || x.PasidSlots.ContainsValue(d));

    private bool PasidAttach(PasidAttachOp op)
    {
        ModelDomain? d = op.Slot == CoreOp.DomainSlots ? _nested : _slots[op.Slot];
        ModelDevice m = _devs[op.Dev];
        if (d is null || m.Nested)
        {
            return false;
        }

        uint pasid = op.Choice switch
        {
            PasidChoice.Known when _seenPasids.Count > 0 => _seenPasids[op.Index % _seenPasids.Count],
            PasidChoice.Known or PasidChoice.Global => _iommu.AllocGlobalPasid(m.Real), // PasidInvalid without a PASID capability
            PasidChoice.Zero => 0,
            _ => 1u << 20,
        };

        // The core's slot check, then intel-iommu's (≈6.5) checks in its order. Every device's PASID
        // table covers at least 2^15 PASIDs (2^16 for dev0), and known PASIDs stay far below that.
        bool auxEntryLive = Array.Exists(_slots, x => x is not null && x.Pasid == pasid && x.Links.TryGetValue(op.Dev, out AuxLink? l) && l.Programmed);
        // A nested domain has no set_dev_pasid before 6.12 (iommufd attaches it to the RID only): the
        // core refuses it before looking at the PASID.
        Errno expected = d.Nest is not null ? Errno.EOPNOTSUPP
            : m.PasidSlots.ContainsKey(pasid) ? Errno.EBUSY
            : !_scalable || !m.Real.HasPasidCapability ? Errno.EOPNOTSUPP
            : TooManyLevels(d, op.Dev) ? Errno.EINVAL
            : pasid >= 1u << 16 ? Errno.ENODEV
            : pasid == 0 || auxEntryLive ? Errno.EBUSY
            : Errno.None;
        Expect(expected, _iommu.AttachDevicePasid(d.Real, m.Real, pasid), $"attach {d.Name} to PASID {pasid} of dev{op.Dev}");
        if (expected == Errno.None)
        {
            d.Levels = Math.Min(d.Levels, UnitLevels(op.Dev));
            if (d.Nest is { } n)
            {
                n.Parent.Levels = Math.Min(n.Parent.Levels, UnitLevels(op.Dev));
            }

            d.Superpages = true;
            m.PasidSlots.Add(pasid, d);
            if (!_seenPasids.Contains(pasid))
            {
                _seenPasids.Add(pasid);
            }
        }

        Expect(Errno.None, _iommu.GetDomainForDevPasid(m.Real, pasid, DomainType.Blocked, out IDomain? held), $"get PASID {pasid} of dev{op.Dev}");
        if (!ReferenceEquals(held, m.PasidSlots.GetValueOrDefault(pasid)?.Real))
        {
            throw Fail($"PASID {pasid} of dev{op.Dev}: the core's slot holds {held?.GetHashCode()}, the model's {m.PasidSlots.GetValueOrDefault(pasid)?.Name ?? "nothing"}");
        }

        return true;
    }

    private bool PasidDetach(int dev, int index)
    {
        ModelDevice m = _devs[dev];
        if (m.PasidSlots.Count == 0)
        {
            return false;
        }

        (uint pasid, ModelDomain d) = m.PasidSlots.ElementAt(index % m.PasidSlots.Count);
        _iommu.DetachDevicePasid(d.Real, m.Real, pasid);
        m.PasidSlots.Remove(pasid);
        NoteStale(d);
        return true;
    }

    // After every op: no frame that a unit can reach (root, context, PASID directory and tables, page
    // tables, as the exported image walks them) is free in the frame allocator, or outside its region.
    private void CheckNoFreedFrameReachable()
    {
        // Nothing was freed or allocated since the last check: nothing to look at.
        FrameAllocator frames = _platform.Frames;
        (long, long) seen = (frames.TotalAllocations, frames.LiveFrames);
        if (seen == _framesChecked)
        {
            return;
        }

        _framesChecked = seen;
        for (int u = 0; u < _units.Length; u++)
        {
            foreach (VtdImageChunk c in _units[u].ExportImage().Chunks)
            {
                // The nested domain's stage-1 tables are guest memory (host pages at GuestPa), not table
                // frames.
                if (c.Address - GuestPa < 6 * Sizes.MiB)
                {
                    continue;
                }

                for (ulong pa = c.Address; pa < c.Address + (ulong)c.Size; pa += ModelDomain.Sz4K)
                {
                    if (pa - frames.RegionBase >= frames.RegionSize || !frames.IsAllocated(pa))
                    {
                        throw Fail($"unit {u} reaches {c.Kind} (level {c.Level}) at {Hex(pa)}, which is {(pa - frames.RegionBase >= frames.RegionSize ? "not a table frame" : "on the free list")}");
                    }
                }
            }
        }
    }

    private void CheckAuxdId(ModelDomain d)
    {
        Errno ret = _iommu.DomainGetAttr(d.Real, DomainAttr.AuxdId, out uint pasid);
        Expect(d.Pasid == 0 ? Errno.EINVAL : Errno.None, ret, $"AUXD_ID of {d.Name}");
        if (ret == Errno.None && pasid != d.Pasid)
        {
            throw Fail($"AUXD_ID of {d.Name} is {pasid}, model says {d.Pasid}");
        }
    }

    private bool Map(MapOp op)
    {
        ModelDomain? d = Target(op.Target);
        if (d is null || d.Intersects(op.Iova, op.Size) || d.DeferredIntersects(op.Iova, op.Size) || (!d.Superpages && op.Size >= ModelDomain.Sz1G))
        {
            // Callers never map over live mappings (the driver keeps old entries / replaces tables), nor
            // over IOVAs the DMA API still owns (waiting in its flush queue).
            // A 1 GiB range of 4 KiB leaves (a domain never attached) costs 512 tables: skipped.
            return false;
        }

        Errno expected = d.Identity || (op.Prot & (IommuProt.Read | IommuProt.Write)) == 0 ? Errno.EINVAL : Errno.None;
        Expect(expected, _iommu.Map(d.Real, op.Iova, op.Pa, op.Size, op.Prot), $"map {d.Name}");
        if (expected == Errno.None)
        {
            d.Map(op.Iova, op.Pa, op.Size, op.Prot);
            CheckIovaToPhys(d, op.Iova);
            CheckIovaToPhys(d, op.Iova + op.Size - ModelDomain.Sz4K);
        }

        return true;
    }

    private bool Unmap(UnmapOp op)
    {
        ModelDomain? d = Target(op.Target);
        if (d is null || d.DeferredIntersects(op.Iova, op.Size)
            || (op.Target >= CoreOp.DomainSlots && _devs[op.Target - CoreOp.DomainSlots].DmaMaps.Exists(x => op.Iova < x.Iova + x.Len && x.Iova < op.Iova + op.Size)))
        {
            // iommu_unmap of what the DMA API mapped is a caller bug (the DMA API would unmap it again).
            return false;
        }

        _removed.Clear();
        ulong expected = d.Identity ? 0 : d.Unmap(op.Iova, op.Size, _removed);
        ulong actual = _iommu.Unmap(d.Real, op.Iova, op.Size);
        if (actual != expected)
        {
            throw Fail($"unmap {d.Name} {Hex(op.Iova)}+{Hex(op.Size)} returned {Hex(actual)}, model {Hex(expected)}");
        }

        foreach (ulong iova in _removed)
        {
            AddStale(iova, UserOf(d));
            CheckIovaToPhys(d, iova);
        }

        return true;
    }

    private static IommuProt DmaProt(DmaDataDirection dir) => dir switch
    {
        DmaDataDirection.ToDevice => IommuProt.Read | IommuProt.Cache,
        DmaDataDirection.FromDevice => IommuProt.Write | IommuProt.Cache,
        _ => IommuProt.Read | IommuProt.Write | IommuProt.Cache,
    };

    // dma_map_page through the device's default domain. The model cannot name the IOVA the allocator
    // picks; it checks what must hold of it: the offset is kept, the range is aligned and lies below
    // 4 GiB (a PCI device with room there), outside the interrupt window, and overlaps nothing the
    // domain maps or still holds in its flush queue — an IOVA is never reused before its flush.
    private DmaMapping DmaMap(ModelDevice m, ulong pa, ulong size, DmaDataDirection dir)
    {
        ModelDomain d = m.Default;
        string what = $"dma_map_page(dev{m.Index}, pa {Hex(pa)}, {Hex(size)}, {dir})";
        ulong h = _iommu.DmaMapPage(m.Real, pa, size, dir);
        DmaMapping map;
        if (d.Identity)
        {
            if (h != pa)
            {
                throw Fail($"{what} on an IDENTITY default domain (dma-direct) returned {Hex(h)}, expected the physical address");
            }

            map = new DmaMapping(h, size, dir, pa, size, pa);
            m.DmaMaps.Add(map);
            return map;
        }

        if (h == IommuCore.DmaMappingError)
        {
            throw Fail($"{what} failed: {ErrorDetail.LastErrno} ({ErrorDetail.LastMessage})");
        }

        ulong offset = pa & (ModelDomain.Sz4K - 1);
        ulong iova = h - offset;
        ulong len = (size + offset + ModelDomain.Sz4K - 1) & ~(ModelDomain.Sz4K - 1);
        ulong pages = len / ModelDomain.Sz4K;
        ulong align = ModelDomain.Sz4K << (pages <= 1 ? 0 : 64 - System.Numerics.BitOperations.LeadingZeroCount(pages - 1));
        string where = $"{what} = {Hex(h)} (iova [{Hex(iova)}, {Hex(iova + len)}))";
        if ((h & (ModelDomain.Sz4K - 1)) != offset || iova == 0 || iova % align != 0 || iova + len > 1UL << 32)
        {
            throw Fail($"{where}: the offset is not kept, or the range is 0, not aligned to {Hex(align)}, or not below 4 GiB");
        }

        if (iova < 0xFEF0_0000 && iova + len > 0xFEE0_0000)
        {
            throw Fail($"{where}: overlaps the reserved interrupt window");
        }

        if (d.FindDeferred(iova) is not null || d.DeferredIntersects(iova, len))
        {
            throw Fail($"{where}: reuses an IOVA whose lazy unmap has not been flushed yet ({string.Join(", ", d.Deferred.Where(r => iova < r.Iova + r.Size && r.Iova < iova + len).Select(r => $"{Hex(r.Iova)}+{Hex(r.Size)}"))})");
        }

        if (d.Intersects(iova, len))
        {
            throw Fail($"{where}: overlaps a live mapping of {d.Name}");
        }

        d.Map(iova, pa - offset, len, DmaProt(dir));
        map = new DmaMapping(h, size, dir, iova, len, pa - offset);
        m.DmaMaps.Add(map);
        CheckIovaToPhys(d, iova);
        CheckIovaToPhys(d, iova + len - ModelDomain.Sz4K);
        return map;
    }

    private bool DmaUnmap(DmaUnmapOp op)
    {
        ModelDevice m = _devs[op.Dev];
        if (m.DmaMaps.Count == 0)
        {
            return false;
        }

        DmaUnmapOne(m, m.DmaMaps[op.Index % m.DmaMaps.Count]);
        return true;
    }

    // dma_unmap_page: strict domains unmap and flush at once; lazy ones queue the range (FqQueue says
    // when the queue flushes); dma-direct does nothing.
    private void DmaUnmapOne(ModelDevice m, DmaMapping map)
    {
        m.DmaMaps.Remove(map);
        _iommu.DmaUnmapPage(m.Real, map.Handle, map.Size, map.Dir);
        ModelDomain d = m.Default;
        if (d.Identity)
        {
            return;
        }

        _removed.Clear();
        ulong removed = d.Unmap(map.Iova, map.Len, _removed);
        if (removed != map.Len)
        {
            throw new InvalidOperationException($"model: dma_unmap of {Hex(map.Iova)}+{Hex(map.Len)} removed {Hex(removed)}");
        }

        if (d.Lazy && UnmapPieces(d, map.Iova, map.Len) == 1)
        {
            d.FqQueue(map.Iova, map.Len, map.Pa, DmaProt(map.Dir), _now);
        }

        foreach (ulong iova in _removed)
        {
            AddStale(iova, (0, m.Index));
            CheckIovaToPhys(d, iova);
        }
    }

    // The driver calls iommu_unmap_fast makes for the range (iommu_pgsize pieces). With two or more the
    // pieces have different sizes, so iommu_iotlb_gather_add_page syncs the gather part-way, which
    // clears its queued mark: 5.15 then finishes that unmap strictly (sync, IOVA freed at once).
    private static int UnmapPieces(ModelDomain d, ulong iova, ulong size)
    {
        int pieces = 0;
        while (size != 0)
        {
            ulong pgsize = IommuCore.PgSize(d.Bitmap, iova, iova, size, out ulong count);
            iova += pgsize * count;
            size -= pgsize * count;
            pieces++;
        }

        return pieces;
    }

    private void DmaBurst(DmaBurstOp op)
    {
        ModelDevice m = _devs[op.Dev];
        var maps = new DmaMapping[op.Count];
        for (int i = 0; i < maps.Length; i++)
        {
            maps[i] = DmaMap(m, (2 * Sizes.GiB) + ((ulong)i * ModelDomain.Sz4K), ModelDomain.Sz4K, DmaDataDirection.Bidirectional);
        }

        foreach (DmaMapping map in maps)
        {
            DmaUnmapOne(m, map);
        }
    }

    // The platform clock moves: every flush-queue timer that is due fires (a flush that frees its queue).
    private void Advance(int ms)
    {
        TimeSpan by = TimeSpan.FromMilliseconds(ms);
        _platform.Clock.Advance(by);
        _now += by;
        if (_platform.Clock.Now != _now)
        {
            throw Fail($"the clock reads {_platform.Clock.Now}, model {_now}");
        }

        foreach (ModelDevice m in _devs)
        {
            m.Default.FqTick(_now);
        }
    }

    private void CheckIovaToPhysSample(ModelDomain d)
    {
        if (d.Runs.Count > 0)
        {
            CheckIovaToPhys(d, d.Runs[0].Iova);
        }
    }

    private void CheckIovaToPhys(ModelDomain d, ulong iova)
    {
        if (d.Identity)
        {
            return;
        }

        ulong expected = d.TryFind(iova, out _, out _, out ulong pa, out _) ? pa : 0;
        ulong actual = _iommu.IovaToPhys(d.Real, iova);
        if (actual != expected)
        {
            throw Fail($"iova_to_phys({d.Name}, {Hex(iova)}) = {Hex(actual)}, model {Hex(expected)}");
        }
    }

    private void NoteStale(ModelDomain d)
    {
        (uint, int) user = UserOf(d);
        foreach (ModelDomain.Run r in d.Runs)
        {
            AddStale(r.Iova, user);
            if (_stale.Count > 64)
            {
                break;
            }
        }
    }

    private void AddStale(ulong iova, (uint Pasid, int Dev) user)
    {
        if (_stale.Count >= 64)
        {
            _stale.RemoveAt(0);
            _staleUser.RemoveAt(0);
        }

        _stale.Add(iova);
        _staleUser.Add(user);
    }

    // Half the stale probes aim at one of the last eight IOVAs that went stale (their IOTLB entries are the likeliest to survive a missing flush).
    private int StaleIndex(int index) => index % 2 == 0 ? _stale.Count - 1 - (index / 2 % Math.Min(8, _stale.Count)) : index % _stale.Count;

    private List<uint> LivePasids(ModelDevice m)
    {
        List<uint> live = [.. m.PasidSlots.Keys];
        foreach (ModelDomain? d in _slots)
        {
            if (d is not null && d.Pasid != 0 && d.Links.TryGetValue(m.Index, out AuxLink? link) && link.Programmed)
            {
                live.Add(d.Pasid);
            }
        }

        return live;
    }

    // A (PASID, device) a domain is reached through: its aux PASID, a PASID attached to it, or a device's
    // RID (PASID 0); device -1 when none. Stale probes of its IOVAs are sent by them, so that a missing
    // flush of exactly that PASID shows up.
    private (uint Pasid, int Dev) UserOf(ModelDomain d)
    {
        if (d.Pasid != 0 && d.Links.Count != 0)
        {
            return (d.Pasid, d.Links.Keys.First());
        }

        foreach (ModelDevice m in _devs)
        {
            foreach ((uint pasid, ModelDomain x) in m.PasidSlots)
            {
                if (x == d)
                {
                    return (pasid, m.Index);
                }
            }
        }

        ModelDevice? rid = Array.Find(_devs, x => x.Rid == d);
        return (0, rid?.Index ?? -1);
    }

    // The domain a DMA from (device, pasid) reaches, by the model: the RID domain without PASID; in
    // scalable mode with a PASID, the domain attached to it with iommu_attach_device_pasid, else the
    // aux domain with that PASID whose entry is live for the device.
    private ModelDomain? Reach(ModelDevice m, uint? pasid)
    {
        if (pasid is null)
        {
            return m.Rid;
        }

        if (!_scalable)
        {
            return null; // legacy mode: a request with PASID is a fault
        }

        if (m.PasidSlots.TryGetValue(pasid.Value, out ModelDomain? attached))
        {
            return attached;
        }

        foreach (ModelDomain? d in _slots)
        {
            if (d is not null && d.Pasid == pasid && d.Links.TryGetValue(m.Index, out AuxLink? link) && link.Programmed)
            {
                return d;
            }
        }

        return null;
    }

    private void Dma(DmaOp op)
    {
        ModelDevice m = _devs[op.Dev];
        uint? pasid = op.Pasid switch
        {
            ProbePasid.None => null,
            ProbePasid.Known when _seenPasids.Count > 0 => _seenPasids[op.PasidIndex % _seenPasids.Count],
            _ => NeverPasid,
        };
        // Half the known-PASID probes use a PASID that reaches a domain from this device.
        if (op.Pasid == ProbePasid.Known && op.PasidIndex % 2 == 0 && LivePasids(m) is { Count: > 0 } live)
        {
            pasid = live[op.PasidIndex / 2 % live.Count];
        }

        // A stale probe is sent by whoever reached the domain, through the same PASID or RID.
        if (op.Addr == ProbeAddr.Stale && op.Pasid != ProbePasid.Never && _stale.Count > 0 && _staleUser[StaleIndex(op.AddrIndex)] is { Dev: >= 0 } user
            && (user.Pasid != 0) == (op.Pasid == ProbePasid.Known))
        {
            m = _devs[user.Dev];
            pasid = user.Pasid == 0 ? null : user.Pasid;
        }

        ModelDomain? reach = Reach(m, pasid);
        ulong iova = ProbeAddress(op, reach);

        // PMR and ER travel in the PASID prefix: a request without PASID is a user read or write.
        DmaRequestAttributes attrs = pasid is null ? DmaRequestAttributes.None
            : op.Write ? op.Attrs & ~DmaRequestAttributes.Execute : op.Attrs;
        if (reach?.Nest is not null)
        {
            NestedDma(op, m, pasid, iova, attrs);
            return;
        }

        // The model's verdict. In the deferred window of a lazy unmap a stale hit is also right (staleOk).
        DmaStatus expected;
        ulong pa = 0;
        string why;
        bool staleOk = false;
        if (reach is null)
        {
            expected = DmaStatus.Fault;
            why = pasid is null ? "no domain" : $"PASID {pasid} reaches no domain";
        }
        else if (PasidGate(m, attrs) is string gate)
        {
            expected = DmaStatus.Fault;
            why = $"{reach.Name} reached through PASID {pasid}, but {gate}";
        }
        else if (reach.Identity)
        {
            pa = iova;
            expected = iova + DmaLength > 1UL << HostAddressWidth ? DmaStatus.Fault
                : iova + DmaLength > MemorySize ? DmaStatus.MemoryError : DmaStatus.Ok;
            why = $"identity {reach.Name}";
        }
        else if (reach.TryFind(iova, out ulong leafIova, out ulong leaf, out pa, out IommuProt prot))
        {
            // 5.15 intel-iommu sets the read bit on every leaf, so a write-only map is readable too
            // ("iommu/vt-d: Remove WO permissions on second-level paging entries", eea53c581688).
            bool allowed = (prot & (op.Write ? IommuProt.Write : IommuProt.Read | IommuProt.Write)) != 0;
            expected = allowed ? DmaStatus.Ok : DmaStatus.Fault;
            why = $"{reach.Name} maps {Hex(leafIova)}+{Hex(leaf)} -> pa {Hex(pa - (iova - leafIova))} {prot}";
        }
        else if (reach.FindDeferred(iova) is DeferredRange dr)
        {
            expected = DmaStatus.Fault;
            staleOk = dr.MayBeStale && (dr.Prot & (op.Write ? IommuProt.Write : IommuProt.Read | IommuProt.Write)) != 0;
            pa = dr.Pa + (iova - dr.Iova);
            why = $"{reach.Name} unmapped {Hex(dr.Iova)}+{Hex(dr.Size)} (pa {Hex(dr.Pa)}, {dr.Prot}) lazily; "
                + (dr.MayBeStale ? "no flush covered it yet, so a stale hit is allowed" : "its IOTLB entries were flushed, its IOVA still waits in the queue");
        }
        else
        {
            expected = DmaStatus.Fault;
            why = $"{reach.Name} does not map it";
        }

        Probes++;
        string what = $"dma_{(op.Write ? "write" : "read")} dev{m.Index} {attrs} pasid {(pasid is null ? "-" : pasid.Value.ToString(CultureInfo.InvariantCulture))} iova {Hex(iova)} (model: {expected}, {why})";
        Span<byte> buf = stackalloc byte[DmaLength];
        ulong pattern = ++_pattern;
        DmaResult r;
        if (op.Write)
        {
            BinaryPrimitives.WriteUInt64LittleEndian(buf, pattern);
            r = m.Real.DmaWrite(pasid, iova, buf, op.Attrs); // the device drops ER on a write
        }
        else
        {
            if (expected == DmaStatus.Ok || staleOk)
            {
                _platform.Memory.WriteUInt64(pa, pattern);
            }

            r = m.Real.DmaRead(pasid, iova, buf, op.Attrs);
        }

        if (r.Status != expected && !(staleOk && r.Status == DmaStatus.Ok))
        {
            throw Fail($"{what}: got {r.Status} (pa {Hex(r.Address)}, fault reason 0x{r.FaultReason:x})");
        }

        if (r.Status != DmaStatus.Ok)
        {
            return;
        }

        ProbesOk++;
        if (r.Address != pa || r.Transferred != DmaLength)
        {
            throw Fail($"{what}: reached pa {Hex(r.Address)} ({r.Transferred} bytes), model pa {Hex(pa)}");
        }

        ulong seen = op.Write ? _platform.Memory.ReadUInt64(pa) : BinaryPrimitives.ReadUInt64LittleEndian(buf);
        if (seen != pattern)
        {
            throw Fail($"{what}: {(op.Write ? "memory at the model's pa holds" : "read returned")} {Hex(seen)}, expected {Hex(pattern)}");
        }
    }

    // Resolves the probe's address selector against the model state (deterministic for a given op list).
    private ulong ProbeAddress(DmaOp op, ModelDomain? reach)
    {
        ProbeAddr kind = op.Addr;

        // The nested domain's pages: its own device's usual aim, and sometimes any device's (isolation).
        if (_nested is not null && ((kind == ProbeAddr.OwnLeaf && reach == _nested) || (kind == ProbeAddr.AnyLeaf && op.AddrIndex % 5 == 0)))
        {
            return Stage1Base + ((ulong)(op.AddrIndex % Stage1Pages) * ModelDomain.Sz4K) + Offset(op.Offset, ModelDomain.Sz4K, op.AddrIndex);
        }

        if (kind == ProbeAddr.OwnLeaf && (reach is null || reach.Identity || reach.Runs.Count == 0))
        {
            kind = ProbeAddr.AnyLeaf;
        }

        if (kind == ProbeAddr.Stale && _stale.Count == 0)
        {
            kind = ProbeAddr.AnyLeaf;
        }

        ulong leafIova, leafSize;
        switch (kind)
        {
            case ProbeAddr.OwnLeaf:
                (leafIova, leafSize) = Pick(reach!.Runs, op.AddrIndex);
                break;
            case ProbeAddr.AnyLeaf:
                int total = 0;
                foreach (ModelDomain d in LiveDomains())
                {
                    total += d.Runs.Count;
                }

                if (total == 0)
                {
                    return CoreIsolationGen.PoolIova(op.AddrIndex) + Offset(op.Offset, ModelDomain.Sz4K, op.AddrIndex);
                }

                int k = op.AddrIndex % total;
                foreach (ModelDomain d in LiveDomains())
                {
                    if (k < d.Runs.Count)
                    {
                        (leafIova, leafSize) = Pick(d.Runs, k);
                        return leafIova + Offset(op.Offset, leafSize, op.AddrIndex);
                    }

                    k -= d.Runs.Count;
                }

                throw new InvalidOperationException("unreachable");
            case ProbeAddr.Stale:
                leafIova = _stale[StaleIndex(op.AddrIndex)];
                leafSize = ModelDomain.Sz4K;
                break;
            default:
                return CoreIsolationGen.PoolIova(op.AddrIndex) + Offset(op.Offset, ModelDomain.Sz4K, op.AddrIndex);
        }

        return leafIova + Offset(op.Offset, leafSize, op.AddrIndex);
    }

    private static (ulong Iova, ulong Size) Pick(IReadOnlyList<ModelDomain.Run> runs, int index)
    {
        ModelDomain.Run r = runs[index % runs.Count];
        ulong leaves = r.Size / r.Leaf;
        ulong k = (ulong)(index / runs.Count) % leaves;
        if (index % 3 == 0)
        {
            k = leaves - 1; // the last leaf of the run
        }

        return (r.Iova + (k * r.Leaf), r.Leaf);
    }

    // Offset of the 8-byte probe inside a page: start, end, the middle, second 4K page (few distinct
    // 2 MiB chunks of physical memory per sample: backing a chunk is the costliest thing a probe does).
    private static ulong Offset(int sel, ulong size, int salt) => sel switch
    {
        0 => 0,
        1 => size - DmaLength,
        2 => (size / 2) + ((ulong)salt * 8 % ModelDomain.Sz4K),
        _ => size > ModelDomain.Sz4K ? ModelDomain.Sz4K + 0x10 : 0x10,
    };

    private IEnumerable<ModelDomain> LiveDomains()
    {
        foreach (ModelDomain? d in _slots)
        {
            if (d is not null)
            {
                yield return d;
            }
        }

        foreach (ModelDevice m in _devs)
        {
            yield return m.Default;
        }
    }
}
