using CsCheck;
using Iommu.Devices;
using Iommu.Domains;
using Iommu.Mm;
using Iommu.VtD.Driver;
using Iommu.VtD.Driver.Format;
using Iommu.VtD.Hardware;

namespace Iommu.VtD.Tests.Driver;

/// <summary>
/// One UNMANAGED domain (or two) attached to devices behind two or three DMA-remapping units whose
/// capabilities differ (table widths and MGAW, SLLPS, ECAP.SC, ECAP.C, caching mode, legacy or scalable,
/// and both modes on one platform: 5.15's <c>sm_supported</c> is per unit), driven by random attach /
/// detach / map / unmap and, behind scalable-mode units, AUX enable / aux attach / aux detach (PASID-granular,
/// <c>intel_iommu_aux_attach_device</c>) through the core API. After every call the errno, the domain's
/// width, aperture, DIDs and the leaves written (page size, SNP) are checked against a transcription of the
/// 5.15 rules (<see cref="Ref"/>), and every device's DMA, through its own unit, with its RID and with each
/// domain's aux PASID, must reach exactly what iova_to_phys says (or fault where it has no such attachment),
/// also just unmapped ranges: a unit the driver forgot to flush, in its own style (register or queued
/// invalidation; DID-based IOTLB covers the aux PASID entries), or a table one unit cannot walk, shows up there.
/// </summary>
public sealed class MultiUnitDomainPropertyTests
{
    private const ulong K4 = 4096, M2 = 2UL << 20, G1 = 1UL << 30;
    private const ulong Memory = 8 * Sizes.GiB;

    // (SAGAW 39, 48, 57; MGAW): unit agaw is the highest SAGAW bit (__iommu_calculate_agaw(57)), its width
    // min(agaw_to_width, MGAW) (prepare_domain_attach_device). "48, MGAW 39" walks 4 levels but takes 39 bits.
    // "48 only" (SAGAW 0x4): 5.15 (and 6.3, and 6.12's paging_domain_compatible, which checks only
    // agaw > iommu->agaw) attaches it to a domain already dropped to 3 levels and programs the context or
    // PASID entry with the domain's agaw, which the unit does not support: every DMA there faults. No
    // isolation break, so the model keeps 5.15's behaviour and the property expects the faults.
    private static readonly (bool S39, bool S48, bool S57, int Mgaw)[] Widths =
        [(true, false, false, 39), (true, true, false, 48), (true, true, false, 39), (true, true, true, 57), (false, true, false, 48)];

    /// <summary>The 5.15 rules hold after every call of a random multi-unit sequence.</summary>
    [Fact]
    public void Property_a_domain_on_units_with_different_capabilities_follows_the_5_15_rules()
    {
        var seen = new Coverage();
        Gen.Select(Gen.UInt, Gen.Int[10, 40]).Sample((seed, steps) => Run(seed, steps, seen), iter: 2000, threads: 1);

        // The generator reaches the cases the property is for (counts summed over the runs).
        Assert.True(seen.AuxOnLaterUnit > 0 && seen.MixedModes > 0 && seen.PasidDmaTranslated > 0 && seen.FirstLevelMultiUnit > 0 && seen.FirstLevelAuxOnLaterUnit > 0 && seen.UnsupportedAgaw > 0 && seen.IdentityTableOnPtUnit > 0 && seen.IdentityPassThrough > 0 && seen.SvaMmOnTwoUnits > 0 && seen.SvaDmaTranslated > 0 && seen.PasidAttachOnTwoUnits > 0, $"coverage: {seen}");
    }

    internal static void Run(uint seed, int steps, Coverage? seen = null)
    {
        using var run = new MultiRun((int)seed) { Seen = seen ?? new Coverage() };
        for (int i = 0; i < steps; i++)
        {
            run.Step(i);
        }
    }

    /// <summary>How often the runs reached the multi-unit cases.</summary>
    internal sealed record Coverage
    {
        /// <summary>Aux attaches that took a reference on a unit other than the first.</summary>
        public int AuxOnLaterUnit { get; set; }

        /// <summary>Steps after which one domain was on a legacy-mode and a scalable-mode unit at once.</summary>
        public int MixedModes { get; set; }

        /// <summary>Aux-PASID DMA that reached a page.</summary>
        public int PasidDmaTranslated { get; set; }

        /// <summary>Aux attaches of a first-level domain on a unit other than the first.</summary>
        public int FirstLevelAuxOnLaterUnit { get; set; }

        /// <summary>Probes through a unit whose SAGAW lacks the domain's (dropped) agaw.</summary>
        public int UnsupportedAgaw { get; set; }

        /// <summary>Identity-domain DMA through si_domain's 1:1 table on a unit with ECAP.PT (another unit lacks it).</summary>
        public int IdentityTableOnPtUnit { get; set; }

        /// <summary>Steps after which one domain was attached at the global PASID on devices behind two units.</summary>
        public int PasidAttachOnTwoUnits { get; set; }

        /// <summary>Steps after which one process was bound to devices behind two units or more.</summary>
        public int SvaMmOnTwoUnits { get; set; }

        /// <summary>PASID DMA of a bound device that reached the process's page.</summary>
        public int SvaDmaTranslated { get; set; }

        /// <summary>Identity-domain DMA passed through (every unit has ECAP.PT).</summary>
        public int IdentityPassThrough { get; set; }

        /// <summary>Steps after which a first-level domain was on two units or more.</summary>
        public int FirstLevelMultiUnit { get; set; }
    }

    /// <summary>One unit as the test sees it: its config and what 5.15 derives from it.</summary>
    internal sealed record UnitInfo(int SeqId, VtdConfig Config, VtdUnit Hw)
    {
        public int Agaw => Config.Supports57BitTables ? 3 : Config.Supports48BitTables ? 2 : 1;

        public int AddrWidth => Math.Min(30 + (9 * Agaw), Config.MaxGuestAddressWidth);

        // cap_super_page_val: SLLPS (bit 0 = 2 MiB, bit 1 = 1 GiB).
        public int Sllps => (Config.SecondLevel2MiBPages ? 1 : 0) | (Config.SecondLevel1GiBPages ? 2 : 0);

        public bool Flts => Config.ScalableMode && Config.FirstLevelTranslation;

        // SAGAW: whether the unit walks second-level tables of agaw's levels.
        public bool WalksAgaw(int agaw) => agaw switch { 1 => Config.Supports39BitTables, 2 => Config.Supports48BitTables, _ => Config.Supports57BitTables };
    }

    /// <summary>The transcription of 5.15's per-domain state (<c>struct dmar_domain</c>) the checks compare with.</summary>
    internal sealed class Ref
    {
        public bool FirstLevel; // domain_use_first_level
        public bool CapUpdated; // domain_update_iommu_cap has run (it sets the first-level aperture)
        public int Agaw = 3; // md_domain_init(DEFAULT_DOMAIN_ADDRESS_WIDTH = 57)
        public int Gaw = 57;
        public ulong MaxAddr;
        public int Superpage; // iommu_superpage: 0 until the first domain_attach_iommu
        public bool Snooping; // iommu_snooping: false until then
        public ulong PgsizeBitmap = K4; // intel_iommu_ops.pgsize_bitmap; superpages are ORed in, never taken out
        public int[] Refcnt = [];
        public List<(ulong Iova, ulong Size, ulong Pa, bool Snp)> Leaves = [];
        public List<(ulong Iova, ulong Size)> Maps = [];
        public Dictionary<PciDevice, int> AuxUsers = []; // auxiliary_link_device: users per (domain, device)
        public HashSet<PciDevice> PasidDevs = []; // attached at the run's global PASID (set_dev_pasid)
    }

    internal sealed class MultiRun : IDisposable
    {
        private readonly Random _rng;
        private readonly int _seed;
        private readonly List<string> _trace = [];
        private readonly Dictionary<PciDevice, UnitInfo> _unitOf = [];
        private readonly Dictionary<PciDevice, IDomain?> _attached = [];
        private readonly Dictionary<IDomain, Ref> _ref = [];
        private readonly List<PciDevice> _auxEnabled = []; // a list: picks from it must follow the seed
        private readonly HashSet<PciDevice> _noDomain = [];
        private readonly bool _firstLevel;
        private readonly HashSet<PciDevice> _noGroup = []; // lost its default domain to a failed attach
        private readonly List<(ulong Iova, ulong Size)> _unmapped = [];
        private readonly bool _identity; // iommu_def_domain_type IDENTITY: devices start on si_domain
        private readonly DmarDomain? _si;
        private readonly List<uint> _pasidsSeen = [];

        // SVA (iommu_sva_bind_device) on all-scalable platforms, drawn from its own generator so the other
        // steps' sequence stays what it was: processes, their pages, and the live binds (device, process, users).
        private readonly Random? _svaRng;
        private readonly List<ProcessAddressSpace> _mms = [];
        private readonly List<ulong> _vas = [];
        private readonly List<(PciDevice Dev, ProcessAddressSpace Mm, IommuSva Handle)> _binds = [];
        private readonly HashSet<PciDevice> _svaEnabled = [];
        private readonly Dictionary<ProcessAddressSpace, uint> _mmPasid = [];
        private readonly List<(PciDevice Dev, uint Pasid)> _svaGone = []; // unbound: DMA with that PASID must fault // a domain's aux PASID, once released, must reach nothing // recently unmapped: DMA there must fault

        public MultiRun(int seed)
        {
            _seed = seed;
            _rng = new Random(seed);
            _identity = _rng.Next(3) == 0;
            Platform = new Platform(new PlatformOptions { MemorySize = Memory, TableMemorySize = 128 * Sizes.MiB, DefaultDomainType = _identity ? DomainType.Identity : DomainType.Dma });
            Pci = Platform.AddPciBus();
            // All legacy, all scalable, or each unit its own (5.15's sm_supported(iommu) is per unit).
            // All scalable: half the platforms run 5.15's domain_alloc rule, first level when every unit has
            // ECAP.FLTS (intel_cap_flts_sanity), with FLTS, FL1GP, FL5LP and SRS random per unit.
            int mode = _rng.Next(4);
            _svaRng = mode == 3 && (seed & 1) == 0 ? new Random(seed ^ 0x5A5A) : null;
            bool fl = mode == 3;
            int n = _rng.Next(2, 4);
            var units = new List<UnitInfo>();
            var devices = new List<(PciDevice? Dev, int Unit, string Bdf)>();
            for (int u = 0; u < n; u++)
            {
                (bool s39, bool s48, bool s57, int mgaw) = Widths[_rng.Next(Widths.Length)];
                bool sp2 = _rng.Next(3) != 0;
                bool scalable = mode is 1 or 3 || (mode == 2 && _rng.Next(2) == 0);
                if (fl && !s48 && _rng.Next(4) != 0)
                {
                    (s39, s48, s57, mgaw) = Widths[1 + _rng.Next(Widths.Length - 1)]; // mostly widths first level can walk
                }

                VtdConfig c = (scalable ? VtdConfig.ScalableMode48Bit : VtdConfig.Legacy48Bit) with
                {
                    Supports39BitTables = s39,
                    Supports48BitTables = s48,
                    Supports57BitTables = s57,
                    MaxGuestAddressWidth = mgaw,
                    SecondLevel2MiBPages = sp2,
                    SecondLevel1GiBPages = sp2 && _rng.Next(2) == 0, // no unit has 1 GiB without 2 MiB
                    SnoopControl = _rng.Next(3) != 0,
                    PageWalkCoherency = _rng.Next(2) == 0,
                    CachingMode = _rng.Next(3) == 0,
                    PassThrough = !_identity || _rng.Next(3) != 0, // init_dmars: one unit without PT clears hw_pass_through for all
                };
                if (fl)
                {
                    bool flts = _rng.Next(5) != 0;
                    c = c with
                    {
                        FirstLevelTranslation = flts,
                        FirstLevel1GiBPages = flts && _rng.Next(2) == 0,
                        FirstLevel5LevelPaging = flts && s57 && _rng.Next(4) != 0,
                        SupervisorRequests = flts && _rng.Next(4) != 0,
                    };
                }

                if (_svaRng is not null && _svaRng.Next(5) != 0)
                {
                    // SVM-capable (intel_svm_check: FL1GP for the CPU's 1 GiB pages) with ATS and page requests.
                    c = c with { FirstLevelTranslation = true, FirstLevel1GiBPages = true, DeviceTlb = true, PageRequests = true, PageRequestDrain = _svaRng.Next(2) == 0 };
                }

                units.Add(new UnitInfo(u, c, new VtdUnit(Platform.Memory, c)));
                for (int j = 0; j < 2; j++)
                {
                    devices.Add((null, u, string.Create(System.Globalization.CultureInfo.InvariantCulture, $"0000:00:{0x10 + (u * 4) + j:x2}.0")));
                }
            }

            // Unit 0 takes everything else (INCLUDE_PCI_ALL); the others list their devices.
            for (int u = 1; u < n; u++)
            {
                Pci.AddDmaRemapper(units[u].Hw, includeAll: false, [.. devices.Where(d => d.Unit == u).Select(d => PciAddress.Parse(d.Bdf, null))]);
            }

            Pci.AddDmaRemapper(units[0].Hw, includeAll: true);
            Units = units;
            _firstLevel = fl && units.All(x => x.Flts); // 5.15 domain_alloc: every domain, DMA and UNMANAGED
            Driver = new IntelIommu(Platform, new IntelIommuOptions { FirstLevel = fl ? FirstLevelPolicy.AllWhenEveryUnitHasFlts : FirstLevelPolicy.FirstLevelByDefault }, [.. units.Select(x => x.Hw)]);
            Pci.SetIommuOps(Driver).ThrowIfError();
            foreach ((_, int u, string bdf) in devices)
            {
                // Most devices can carry PASIDs (aux domains); the rest get -ENODEV from AUX enable.
                bool pasid = _rng.Next(4) != 0;
                PciDevice dev = Pci.AddDevice(new PciDeviceSpec(bdf) { Acs = true, PasidWidth = pasid ? 20 : 0, ScalableIov = pasid, Ats = pasid && _sva, Pri = pasid && _sva });
                _unitOf[dev] = units[u];
                _attached[dev] = null;
                if (DefaultDomainFails(units[u]))
                {
                    _noGroup.Add(dev); // iommu_probe_device failed: no group, so no attach (-ENODEV)
                    _noDomain.Add(dev);
                }
            }

            Devices = [.. _unitOf.Keys];
            if (_sva)
            {
                var pages = HostPageAllocator.ForPlatform(Platform);
                for (int m = 0; m < 2; m++)
                {
                    var mm = new ProcessAddressSpace(pages, $"p{m}");
                    ulong va = mm.Mmap(4 * K4);
                    for (int pg = 0; pg < 3; pg++)
                    {
                        mm.Write(va + (ulong)pg * K4, [1]).ThrowIfError(); // fault in three of the four pages
                    }

                    _mms.Add(mm);
                    _vas.Add(va);
                }
            }
            for (int i = 0, domains = _rng.Next(1, 3); i < domains; i++)
            {
                IDomain d = Iommu.DomainAlloc(Pci) ?? throw new InvalidOperationException("domain alloc failed");
                _ref[d] = new Ref { Refcnt = new int[n], FirstLevel = _firstLevel };
            }

            Domains = [.. _ref.Keys];
            _si = _identity ? (DmarDomain?)Driver.DomainAlloc(DomainType.Identity) : null;
            if (mode != 0 && seed % 3 == 1)
            {
                // The PASID comes from a device whose unit offers PASIDs (max_pasids); it is global, so every device uses it.
                _gp = Devices.Select(Iommu.AllocGlobalPasid).FirstOrDefault(x => x != IommuCore.PasidInvalid, IommuCore.PasidInvalid);
                _paRng = _gp != IommuCore.PasidInvalid ? new Random(seed ^ 0x3C3C) : null;
            }
            _trace.Add($"units: {string.Join("; ", units.Select(x => $"#{x.SeqId} {(x.Config.ScalableMode ? "sm" : "legacy")} agaw {x.Agaw} width {x.AddrWidth} sllps {x.Sllps} sc {x.Config.SnoopControl} cm {x.Config.CachingMode}{(x.Flts ? $" flts fl1gp {x.Config.FirstLevel1GiBPages} fl5lp {x.Config.FirstLevel5LevelPaging} srs {x.Config.SupervisorRequests}" : "")}"))}; domains {(_ref.Values.First().FirstLevel ? "first" : "second")} level{(_identity ? $"; identity default, pt {string.Join("/", units.Select(x => x.Config.PassThrough))}" : "")}");
        }

        public Coverage Seen { get; init; } = new();

        public Platform Platform { get; }

        public IommuCore Iommu => Platform.Iommu;

        public PciBus Pci { get; }

        public IReadOnlyList<UnitInfo> Units { get; }

        public IntelIommu Driver { get; }

        public IReadOnlyList<PciDevice> Devices { get; }

        public IReadOnlyList<IDomain> Domains { get; }

        private bool _sva => _svaRng is not null;

        // PASID attach (iommu_attach_device_pasid / intel_iommu_set_dev_pasid, 6.x) of the domains at one
        // global PASID on devices behind any unit, from its own generator; devices with such an attachment
        // stay on their default domain, without AUX or SVA.
        private readonly Random? _paRng;
        private readonly uint _gp;
        private readonly Dictionary<PciDevice, IDomain> _pasidAttached = [];

        private void PasidStep()
        {
            Random r = _paRng!;
            IDomain dom = Domains[r.Next(Domains.Count)];
            PciDevice dev = Devices[r.Next(Devices.Count)];
            if (_attached[dev] is not null || _auxEnabled.Contains(dev) || _svaEnabled.Contains(dev))
            {
                return;
            }

            if (_pasidAttached.TryGetValue(dev, out IDomain? cur) && r.Next(2) == 0)
            {
                // iommu_detach_device_pasid -> intel_iommu_remove_dev_pasid: entry torn down, the unit reference dropped.
                Iommu.DetachDevicePasid(cur, dev, _gp);
                _trace.Add($"detach pasid {_gp} d{Index(cur)} {dev.Name} (unit {_unitOf[dev].SeqId})");
                _pasidAttached.Remove(dev);
                _ref[cur].PasidDevs.Remove(dev);
                DetachIommu(_ref[cur], _unitOf[dev]);
                return;
            }

            Ref rf = _ref[dom];
            UnitInfo u = _unitOf[dev];
            Errno want = _noGroup.Contains(dev) ? Errno.ENODEV // iommu_attach_device_pasid: no group
                : _pasidAttached.ContainsKey(dev) ? Errno.EBUSY // the group's pasid_array holds it
                : !u.Config.ScalableMode || !u.Config.PasidSupport ? Errno.EOPNOTSUPP
                : _noDomain.Contains(dev) ? Errno.ENODEV // no device info, no PASID table
                : !dev.HasPasidCapability ? Errno.EOPNOTSUPP
                : Prepare(rf, u);
            bool setupFails = want == Errno.None && FirstLevelSetup(rf, u, aux: true) != Errno.None; // SUPERVISOR for PASID != 0
            want = setupFails ? Errno.EINVAL : want;
            Errno got = Iommu.AttachDevicePasid(dom, dev, _gp);
            _trace.Add($"attach pasid {_gp} d{Index(dom)} {dev.Name} (unit {u.SeqId}) -> {got}");
            Require(want == got, () => $"attach pasid: want {want}, got {got}");
            if (setupFails)
            {
                ApplyPrepare(rf, u);
                SetupFailed(rf, u);
            }

            if (got != Errno.None)
            {
                return;
            }

            ApplyPrepare(rf, u);
            AttachIommu(rf, u);
            rf.PasidDevs.Add(dev);
            _pasidAttached[dev] = dom;
        }

        public void Step(int i)
        {
            if (_paRng is not null && _paRng.Next(4) == 0)
            {
                PasidStep();
                Check(i);
                return;
            }

            if (_svaRng is not null && _svaRng.Next(4) == 0)
            {
                SvaStep();
                Check(i);
                return;
            }

            IDomain dom = Domains[_rng.Next(Domains.Count)];
            PciDevice dev = Devices[_rng.Next(Devices.Count)];
            switch (_rng.Next(14))
            {
                case 0 or 1 or 2:
                    Attach(dom, dev);
                    break;
                case 3:
                    Detach(dev);
                    break;
                case 4 or 5 or 6 or 7:
                    Map(dom);
                    break;
                case 8 or 9:
                    Unmap(dom);
                    break;
                case 10:
                    EnableAux(dev);
                    break;
                case 11 or 12:
                    AuxAttach(dom, AuxCandidate(dev));
                    break;
                default:
                    AuxDetach(dom, AuxCandidate(dev));
                    break;
            }

            Check(i);
        }

        private void Attach(IDomain dom, PciDevice dev)
        {
            if (_svaEnabled.Contains(dev) || _pasidAttached.ContainsKey(dev))
            {
                return; // SVA devices stay on their default domain: RID attach under live binds is not transcribed
            }

            Ref r = _ref[dom];
            UnitInfo u = _unitOf[dev];
            Errno want;
            if (_noGroup.Contains(dev))
            {
                want = Errno.ENODEV; // iommu_attach_device: no group
            }
            else if (_attached[dev] is not null)
            {
                want = Errno.EBUSY; // __iommu_attach_group: the group is not on its default domain
            }
            else if (_auxEnabled.Contains(dev))
            {
                want = Errno.EPERM; // intel_iommu_attach_device: is_aux_domain
            }
            else
            {
                want = Prepare(r, u);

                // dmar_insert_one_dev_info: a failed RID2PASID setup surfaces as -EBUSY.
                want = want == Errno.None && FirstLevelSetup(r, u, aux: false) != Errno.None ? Errno.EBUSY : want;
            }

            Errno got = Iommu.AttachDevice(dom, dev);
            _trace.Add($"attach d{Index(dom)} {dev.Name} (unit {u.SeqId}) -> {got}");
            Require(want == got, () => ($"attach: want {want}, got {got}"));
            if (got == Errno.EBUSY && want == Errno.EBUSY && _attached[dev] is null)
            {
                ApplyPrepare(r, u); // the levels dropped and the gaw set stay; the device lost its info
                SetupFailed(r, u);
                _noDomain.Add(dev);
            }

            if (got == Errno.EFAULT)
            {
                // intel_iommu_attach_device removed the old domain's info before prepare_domain_attach_device
                // failed: the device is on no domain, though the group still names its default domain.
                _noDomain.Add(dev);
            }

            if (got != Errno.None)
            {
                return;
            }

            _noDomain.Remove(dev);

            ApplyPrepare(r, u);
            AttachIommu(r, u);
            _attached[dev] = dom;
        }

        // A (fresh, 5-level) first-level default domain cannot be set up on the unit: the device has no
        // domain after probe, nor after it leaves an UNMANAGED one.
        private bool DefaultDomainFails(UnitInfo u) => !_identity &&
            FirstLevelSetup(new Ref { FirstLevel = _firstLevel }, u, aux: false) != Errno.None;

        // domain_setup_first_level after prepare_domain_attach_device: the levels left must be 4 or 5
        // (-EINVAL); intel_pasid_setup_first_level: SUPERVISOR (every PASID but RID2PASID) needs ECAP.SRS,
        // FL5LP needs CAP.FL5LP (-EINVAL). Second level: nothing fails here.
        private static Errno FirstLevelSetup(Ref r, UnitInfo u, bool aux)
        {
            int levels = Math.Min(r.Agaw, u.Agaw) + 2;
            return !r.FirstLevel ? Errno.None
                : levels is not 4 and not 5 || (aux && !u.Config.SupervisorRequests) || (levels == 5 && !u.Config.FirstLevel5LevelPaging) ? Errno.EINVAL
                : Errno.None;
        }

        // The PASID entry failed after domain_attach_iommu: a first reference on the unit came and went,
        // each running domain_update_iommu_cap (pgsize_bitmap keeps what it gained, the aperture is reset).
        private void SetupFailed(Ref r, UnitInfo u)
        {
            if (r.Refcnt[u.SeqId] == 0)
            {
                UpdateIommuCap(r);
            }
        }

        // The errno of prepare_domain_attach_device (after the checks before it).
        private static Errno Prepare(Ref r, UnitInfo u)
        {
            if (r.Refcnt.Any(c => c > 0) && u.Agaw < r.Agaw)
            {
                // 5.15 would drop the top level under the units already walking it; the model refuses as
                // 6.12's paging_domain_compatible does (see IntelIommu.AttachDev).
                return Errno.EINVAL;
            }

            return r.MaxAddr > 1UL << u.AddrWidth ? Errno.EFAULT : Errno.None;
        }

        // prepare_domain_attach_device: levels above the unit's agaw go; gaw is the unit's width in 5.15,
        // but the model keeps it within the levels and, while in use, never raises it (see MultiUnitGawTests).
        private static void ApplyPrepare(Ref r, UnitInfo u)
        {
            r.Agaw = Math.Min(r.Agaw, u.Agaw);
            int gaw = Math.Min(u.AddrWidth, 30 + (9 * r.Agaw));
            r.Gaw = r.Refcnt.Any(c => c > 0) ? Math.Min(gaw, r.Gaw) : gaw;
        }

        // domain_attach_iommu: the first reference on a unit takes a DID and recomputes the caps.
        private void AttachIommu(Ref r, UnitInfo u)
        {
            if (++r.Refcnt[u.SeqId] == 1)
            {
                UpdateIommuCap(r);
            }
        }

        // domain_detach_iommu: the last reference on a unit releases its DID and recomputes the caps; gaw
        // and agaw stay where the narrowest attach left them.
        private void DetachIommu(Ref r, UnitInfo u)
        {
            if (--r.Refcnt[u.SeqId] == 0)
            {
                UpdateIommuCap(r);
            }
        }

        // Mostly a device with AUX on (else aux attach is mostly -EPERM).
        private PciDevice AuxCandidate(PciDevice dev) =>
            _auxEnabled.Count != 0 && _rng.Next(4) != 0 ? _auxEnabled[_rng.Next(_auxEnabled.Count)] : dev;

        // intel_iommu_enable_auxd (5.15 checks the device's own unit): -EINVAL unless that unit is in
        // scalable mode with PASID support; -ENODEV when PASID cannot be enabled (no PASID capability).
        // Only on devices on their default domain: AUX on a device attached to an UNMANAGED domain is
        // legal in 5.15 but makes the RID detach path (aux entries lost with the old info) part of the
        // property, which it does not transcribe.
        private void EnableAux(PciDevice dev)
        {
            if (_attached[dev] is not null || _svaEnabled.Contains(dev) || _pasidAttached.ContainsKey(dev))
            {
                return;
            }

            UnitInfo u = _unitOf[dev];
            Errno want = !u.Config.ScalableMode || !u.Config.PasidSupport ? Errno.EINVAL
                : !dev.HasPasidCapability || _noDomain.Contains(dev) ? Errno.ENODEV // intel_iommu_enable_pasid: no info
                : Errno.None;
            Errno got = Iommu.DevEnableFeature(dev, IommuDevFeature.Aux);
            _trace.Add($"enable aux {dev.Name} (unit {u.SeqId}) -> {got}");
            Require(want == got, () => $"enable aux: want {want}, got {got}");
            if (got == Errno.None && !_auxEnabled.Contains(dev))
            {
                _auxEnabled.Add(dev);
            }
        }

        // intel_iommu_aux_attach_device: is_aux_domain (-EPERM), prepare_domain_attach_device, then
        // aux_domain_add_dev: the first user of (domain, device) takes a reference on the unit (DID) and
        // programs the domain's default PASID; later users only count.
        private void AuxAttach(IDomain dom, PciDevice dev)
        {
            Ref r = _ref[dom];
            UnitInfo u = _unitOf[dev];
            Errno want = _auxEnabled.Contains(dev) ? Prepare(r, u) : Errno.EPERM;
            bool setupFails = want == Errno.None && FirstLevelSetup(r, u, aux: true) != Errno.None && !r.AuxUsers.ContainsKey(dev);
            want = setupFails ? Errno.EINVAL : want;
            Errno got = Iommu.AuxAttachDevice(dom, dev);
            _trace.Add($"aux attach d{Index(dom)} {dev.Name} (unit {u.SeqId}) -> {got} pasid {Iommu.AuxGetPasid(dom, dev)}");
            Require(want == got, () => $"aux attach: want {want}, got {got}");
            if (setupFails)
            {
                ApplyPrepare(r, u); // aux_domain_add_dev failed after prepare_domain_attach_device
                SetupFailed(r, u);
            }

            if (got != Errno.None)
            {
                return;
            }

            ApplyPrepare(r, u);
            uint pasid = (uint)Iommu.AuxGetPasid(dom, dev);
            if (!_pasidsSeen.Contains(pasid))
            {
                _pasidsSeen.Add(pasid);
            }

            int users = r.AuxUsers.GetValueOrDefault(dev) + 1;
            r.AuxUsers[dev] = users;
            if (users == 1)
            {
                AttachIommu(r, u);
                Seen.AuxOnLaterUnit += u.SeqId > 0 ? 1 : 0;
                Seen.FirstLevelAuxOnLaterUnit += u.SeqId > 0 && r.FirstLevel ? 1 : 0;
            }
        }

        // intel_iommu_aux_detach_device: nothing unless aux-attached; the last user tears the PASID
        // entry down and drops the unit reference; the last aux attachment frees the domain's PASID.
        private void AuxDetach(IDomain dom, PciDevice dev)
        {
            Ref r = _ref[dom];
            _trace.Add($"aux detach d{Index(dom)} {dev.Name}");
            Iommu.AuxDetachDevice(dom, dev);
            if (!r.AuxUsers.TryGetValue(dev, out int users))
            {
                return;
            }

            if (users > 1)
            {
                r.AuxUsers[dev] = users - 1;
                return;
            }

            r.AuxUsers.Remove(dev);
            DetachIommu(r, _unitOf[dev]);
        }

        // domain_update_iommu_cap: snooping and superpage are over every active unit (for_each_active_iommu),
        // not only the domain's, so they do not change with attach or detach; pgsize_bitmap only grows.
        private void UpdateIommuCap(Ref r)
        {
            // 5.15 counts scalable-mode units as snooping (PGSNP); the model follows later kernels: ECAP.SC everywhere.
            r.Snooping = Units.All(u => u.Config.SnoopControl);
            r.CapUpdated = true;
            int mask = 3;
            foreach (UnitInfo u in Units)
            {
                // domain_update_iommu_superpage: first level, 2 MiB always and 1 GiB with CAP.FL1GP everywhere.
                mask = !r.FirstLevel ? mask & u.Sllps : u.Config.FirstLevel1GiBPages ? mask : mask & 1;
            }

            r.Superpage = mask == 0 ? 0 : 32 - System.Numerics.BitOperations.LeadingZeroCount((uint)mask);
            r.PgsizeBitmap |= r.Superpage switch { 1 => M2, >= 2 => M2 | G1, _ => 0 };
        }

        private void Detach(PciDevice dev)
        {
            IDomain? dom = _attached[dev];
            _trace.Add($"detach {dev.Name} from d{(dom is null ? -1 : Index(dom))}");
            if (dom is null)
            {
                return;
            }

            Iommu.DetachDevice(dom, dev);
            DetachIommu(_ref[dom], _unitOf[dev]);
            _attached[dev] = null;
            if (DefaultDomainFails(_unitOf[dev]))
            {
                _noDomain.Add(dev);
            }
        }

        private void Map(IDomain dom)
        {
            Ref r = _ref[dom];

            // Sizes: a few 4 KiB pages, 2 MiB, 4 MiB, 1 GiB; IOVAs low, just below or straddling a unit's
            // width (or 2^57), and PAs aligned to the size so a superpage can be chosen.
            // 1 GiB only once it maps as one leaf: 262144 4 KiB leaves would make the checks slow.
            ulong size = _rng.Next(5) switch { 0 => M2, 1 => 2 * M2, 2 when r.Superpage >= 2 => G1, _ => (ulong)_rng.Next(1, 5) * K4 };
            ulong align = size >= G1 ? G1 : size >= M2 ? M2 : K4;
            ulong iova;
            int pick = _rng.Next(4);
            if (pick == 0)
            {
                iova = (ulong)_rng.Next(4, 3 * 512) * M2; // 8 MiB .. 3 GiB
            }
            else
            {
                int width = pick == 3 ? 57 : Units[_rng.Next(Units.Count)].AddrWidth;
                ulong top = 1UL << width;
                iova = _rng.Next(3) switch
                {
                    0 => top - size, // ends exactly at the width
                    1 => top - (align * (ulong)_rng.Next(2, 6)) - size,
                    _ => top - align, // straddles (or, for one page, is the last page)
                };
            }

            if (r.Maps.Any(m => iova < m.Iova + m.Size && m.Iova < iova + size) || (iova < 0x1_0000_0000 && iova + size > 0xFEE0_0000))
            {
                return; // no overlaps (5.15 only WARNs); stay out of the interrupt window
            }

            ulong pa = (ulong)_rng.Next(1, (int)((Memory - size) / align)) * align;
            if (pa < 0x1_0000_0000 && pa + size > 0xFEE0_0000)
            {
                return; // DMA never reaches the interrupt window's addresses
            }

            IommuProt prot = IommuProt.Read | IommuProt.Write | (_rng.Next(2) == 0 ? IommuProt.Cache : 0);

            Errno want = Errno.None;
            var chunks = new List<(ulong Iova, ulong Size)>();
            for (ulong at = iova, left = size; left != 0;)
            {
                // __iommu_map splits with iommu_pgsize; intel_iommu_map checks each piece against gaw.
                ulong pgsize = IommuCore.PgSize(r.PgsizeBitmap, at, pa + (at - iova), left, out ulong count);
                ulong end = at + (pgsize * count);
                if (r.MaxAddr < end && end > 1UL << r.Gaw)
                {
                    want = Errno.EFAULT;
                    break;
                }

                chunks.Add((at, end - at));
                r.MaxAddr = Math.Max(r.MaxAddr, end);
                left -= end - at;
                at = end;
            }

            Errno got = Iommu.Map(dom, iova, pa, size, prot);
            _trace.Add($"map d{Index(dom)} [0x{iova:x}, +0x{size:x}) -> 0x{pa:x} {prot} (gaw {r.Gaw}, agaw {r.Agaw}) -> {got}");
            Require(want == got, () => ($"map: want {want}, got {got}"));
            if (got != Errno.None)
            {
                // The core unmaps what it mapped: one unmap, which lowers max_addr if it ends there.
                if (chunks.Count != 0 && r.MaxAddr == chunks[^1].Iova + chunks[^1].Size)
                {
                    r.MaxAddr = iova;
                }

                return;
            }

            r.Maps.Add((iova, size));

            // __domain_mapping: hardware_largepage_caps picks the largest level up to iommu_superpage
            // that iova and pa are aligned to and the rest covers.
            for (ulong at = iova, left = size; left != 0;)
            {
                ulong p = pa + (at - iova);
                ulong leaf = K4;
                for (int lvl = 1; lvl <= r.Superpage; lvl++)
                {
                    ulong s = K4 << (9 * lvl);
                    if (((at | p) & (s - 1)) != 0 || left < s)
                    {
                        break;
                    }

                    leaf = s;
                }

                r.Leaves.Add((at, leaf, p, (prot & IommuProt.Cache) != 0 && r.Snooping && !r.FirstLevel)); // first level: no SNP bit
                at += leaf;
                left -= leaf;
            }
        }

        private void Unmap(IDomain dom)
        {
            Ref r = _ref[dom];
            if (r.Maps.Count == 0)
            {
                return;
            }

            (ulong iova, ulong size) = r.Maps[_rng.Next(r.Maps.Count)];
            ulong got = Iommu.Unmap(dom, iova, size);
            _trace.Add($"unmap d{Index(dom)} [0x{iova:x}, +0x{size:x}) -> 0x{got:x}");
            Require(got == size, () => ($"unmap returned 0x{got:x}"));
            r.Maps.Remove((iova, size));
            _unmapped.Add((iova, size));
            if (_unmapped.Count > 6)
            {
                _unmapped.RemoveAt(0);
            }

            r.Leaves.RemoveAll(l => l.Iova >= iova && l.Iova < iova + size);
            if (r.MaxAddr == iova + size)
            {
                r.MaxAddr = iova; // intel_iommu_unmap
            }
        }

        private void Check(int step)
        {
            foreach (IDomain dom in Domains)
            {
                Ref r = _ref[dom];
                var d = (DmarDomain)dom;
                Require(d.Gaw == r.Gaw && d.Agaw == r.Agaw, () => ($"step {step}: d{Index(dom)} gaw/agaw {d.Gaw}/{d.Agaw}, want {r.Gaw}/{r.Agaw}"));
                Require(d.MaxAddr == r.MaxAddr, () => ($"step {step}: d{Index(dom)} max_addr 0x{d.MaxAddr:x}, want 0x{r.MaxAddr:x}"));
                Require(dom.PgsizeBitmap == r.PgsizeBitmap, () => ($"step {step}: d{Index(dom)} pgsize_bitmap 0x{dom.PgsizeBitmap:x}, want 0x{r.PgsizeBitmap:x}"));

                // domain_update_iommu_cap: aperture_end = __DOMAIN_MAX_ADDR(gaw) (intel_iommu_domain_alloc: gaw 57).
                // First level: __DOMAIN_MAX_ADDR(gaw - 1), the lower canonical half, once domain_update_iommu_cap
                // ran (intel_iommu_domain_alloc sets __DOMAIN_MAX_ADDR(gaw) for both).
                ulong aperture = (1UL << (r.FirstLevel && r.CapUpdated ? r.Gaw - 1 : r.Gaw)) - 1;
                Require(d.UseFirstLevel == r.FirstLevel, () => ($"d{Index(dom)} first level {d.UseFirstLevel}, want {r.FirstLevel}"));
                Require(dom.Geometry.ApertureEnd == aperture && dom.Geometry.ForceAperture, () => ($"step {step}: d{Index(dom)} aperture_end 0x{dom.Geometry.ApertureEnd:x}, want 0x{aperture:x}"));
                for (int u = 0; u < Units.Count; u++)
                {
                    Require(d.DidOn(u) != 0 == (r.Refcnt[u] > 0), () => ($"step {step}: d{Index(dom)} DID on unit {u} is {d.DidOn(u)} with {r.Refcnt[u]} references"));

                    // One DID per (domain, unit): two domains on one unit never share it.
                    Require(d.DidOn(u) == 0 || Domains.All(o => o == dom || ((DmarDomain)o).DidOn(u) != d.DidOn(u)), () => ($"step {step}: d{Index(dom)} shares DID {d.DidOn(u)} on unit {u}"));
                }

                bool legacy = false, sm = false;
                for (int u = 0; u < Units.Count; u++)
                {
                    legacy |= r.Refcnt[u] > 0 && !Units[u].Config.ScalableMode;
                    sm |= r.Refcnt[u] > 0 && Units[u].Config.ScalableMode;
                }

                Seen.MixedModes += legacy && sm ? 1 : 0;
                Seen.PasidAttachOnTwoUnits += r.PasidDevs.Select(x => _unitOf[x].SeqId).Distinct().Count() >= 2 ? 1 : 0;
                Seen.FirstLevelMultiUnit += r.FirstLevel && r.Refcnt.Count(c => c > 0) >= 2 ? 1 : 0;

                // The default PASID exists exactly while the domain is aux-attached somewhere.
                int pasid = Iommu.AuxGetPasid(dom, Devices[0]);
                Require(pasid > 0 == (r.AuxUsers.Count > 0), () => ($"step {step}: d{Index(dom)} aux PASID {pasid} with {r.AuxUsers.Count} aux devices"));

                // The leaves written: sizes, addresses and SNP.
                var leaves = new List<(ulong Iova, ulong Size, ulong Pa, bool Snp)>();
                if (r.FirstLevel)
                {
                    d.FirstLevelTable.ForEachLeaf((iova, pa, size, pte) => leaves.Add((iova, size, pa, false)));
                }
                else
                {
                    d.PageTable.ForEachLeaf((iova, pa, size, pte) => leaves.Add((iova, size, pa, (pte & DmaPte.Snoop) != 0)));
                }

                leaves.Sort();
                var want = r.Leaves.OrderBy(l => l).ToList();
                Require(want.SequenceEqual(leaves), () => ($"step {step}: d{Index(dom)} leaves\n  got  {string.Join(", ", leaves.Select(L))}\n  want {string.Join(", ", want.Select(L))}"));
            }

            if (_identity)
            {
                CheckIdentity(step);
            }

            if (_sva)
            {
                CheckSva(step);
            }

            // Every device, through its own unit, reaches what iova_to_phys says: with its RID when attached
            // to one of the domains, with a domain's aux PASID when aux-attached to it (and nowhere with the
            // PASID of a domain it is not aux-attached to), at each map's (of either domain) first and last
            // page, just past it, and in ranges just unmapped (stale IOTLB entries).
            var probes = _ref.Values.SelectMany(x => x.Maps).Concat(_unmapped)
                .SelectMany(m => (ulong[])[m.Iova, m.Iova + m.Size - K4, m.Iova + m.Size]).Distinct().ToArray();
            foreach (PciDevice dev in Devices)
            {
                UnitInfo u = _unitOf[dev];
                if (_attached[dev] is IDomain dom)
                {
                    ProbeAll(step, dev, u, null, dom, probes);
                }

                var live = new List<uint>();
                foreach (IDomain aux in Domains)
                {
                    int pasid = Iommu.AuxGetPasid(aux, dev);
                    if (pasid > 0)
                    {
                        live.Add((uint)pasid);
                        ProbeAll(step, dev, u, (uint)pasid, _ref[aux].AuxUsers.ContainsKey(dev) ? aux : null, probes);
                    }
                }

                // The global PASID: the domain attached there on this device (set_dev_pasid), else nothing.
                if (_paRng is not null)
                {
                    ProbeAll(step, dev, u, _gp, _pasidAttached.GetValueOrDefault(dev), probes);
                }

                // A PASID no domain holds any more: its entries are gone from every unit (and its caches).
                foreach (uint pasid in _pasidsSeen.Except(live))
                {
                    ProbeAll(step, dev, u, pasid, null, probes);
                }
            }
        }

        // A bind (iommu_sva_bind_device: the mm's one PASID, iommu_sva_alloc_pasid) or an unbind of a live
        // one. Devices behind any unit; SVA enabled once per device (IOPF then SVA); a device whose enable
        // fails is left alone (the enable's errno is not part of this property).
        private void SvaStep()
        {
            Random r = _svaRng!;
            if (_binds.Count != 0 && r.Next(3) == 0)
            {
                (PciDevice d0, ProcessAddressSpace m0, IommuSva h) = _binds[r.Next(_binds.Count)];
                Iommu.SvaUnbindDevice(h);
                _binds.Remove((d0, m0, h));
                _trace.Add($"sva unbind {d0.Name} (unit {_unitOf[d0].SeqId}) from {m0.Name}");
                if (!_binds.Any(b => b.Dev == d0 && b.Mm == m0))
                {
                    _svaGone.Add((d0, _mmPasid[m0]));
                }

                if (!_binds.Any(b => b.Mm == m0))
                {
                    _mmPasid.Remove(m0); // the mm's last bind frees its PASID (iommu_sva_free_pasid)
                }

                return;
            }

            PciDevice dev = Devices[r.Next(Devices.Count)];
            ProcessAddressSpace mm = _mms[r.Next(_mms.Count)];
            if (_attached[dev] is not null || _auxEnabled.Contains(dev) || _noDomain.Contains(dev) || !dev.HasPasidCapability || _pasidAttached.ContainsKey(dev))
            {
                return;
            }

            if (!_svaEnabled.Contains(dev))
            {
                if (Iommu.DevEnableFeature(dev, IommuDevFeature.Iopf) != Errno.None || Iommu.DevEnableFeature(dev, IommuDevFeature.Sva) != Errno.None)
                {
                    return;
                }

                _svaEnabled.Add(dev);
            }

            Errno got = Iommu.SvaBindDevice(dev, mm, null, out IommuSva? handle);
            _trace.Add($"sva bind {dev.Name} (unit {_unitOf[dev].SeqId}) to {mm.Name} -> {got} pasid {(handle is null ? 0 : Iommu.SvaGetPasid(handle))}");
            Require(got == Errno.None, () => $"sva bind: {got}");
            uint pasid = Iommu.SvaGetPasid(handle!);

            // One PASID per mm for every device on every unit (global PASIDs), kept while any bind of it lives.
            Require(!_mmPasid.TryGetValue(mm, out uint had) || had == pasid, () => $"sva bind: {mm.Name} got PASID {pasid}, its binds hold {had}");
            _mmPasid[mm] = pasid;
            _binds.Add((dev, mm, handle!));
            _svaGone.RemoveAll(g => g.Dev == dev && g.Pasid == pasid);
        }

        // PASIDs of live processes differ from each other and from every aux PASID; a bound device's DMA
        // with its process's PASID, through its own unit, reaches the process's page (CPU page tables) and
        // faults on the page not faulted in; a device not bound with that PASID (never, or any more: entry
        // torn down and PASID-IOTLB / device TLB flushed on its unit) faults, as every device does with a
        // PASID no process holds.
        private void CheckSva(int step)
        {
            var pasids = _mmPasid.Values.ToList();
            Require(pasids.Distinct().Count() == pasids.Count, () => $"step {step}: two processes share a PASID: {string.Join(",", pasids)}");
            foreach (IDomain aux in Domains)
            {
                int ap = Iommu.AuxGetPasid(aux, Devices[0]);
                Require(ap <= 0 || !pasids.Contains((uint)ap), () => $"step {step}: aux PASID {ap} is also a process's");
            }

            Seen.SvaMmOnTwoUnits += _mms.Count(m => _binds.Where(b => b.Mm == m).Select(b => _unitOf[b.Dev].SeqId).Distinct().Count() >= 2);
            foreach (PciDevice dev in Devices)
            {
                UnitInfo u = _unitOf[dev];
                for (int m = 0; m < _mms.Count; m++)
                {
                    ProcessAddressSpace mm = _mms[m];
                    if (!_mmPasid.TryGetValue(mm, out uint pasid))
                    {
                        continue;
                    }

                    bool bound = _binds.Any(b => b.Dev == dev && b.Mm == mm);
                    for (ulong pg = 0; pg < 4; pg++)
                    {
                        ulong va = _vas[m] + (pg * K4);
                        ulong want = bound && mm.TryTranslate(va, out ulong pfn) ? pfn << 12 : 0;
                        VtdTranslation t = u.Hw.Translate(dev.RequesterId, pasid, va, 1, DmaAccess.Read);
                        bool ok = t.Status == VtdTranslationStatus.Translated;
                        Seen.SvaDmaTranslated += ok ? 1 : 0;
                        Require(ok == (want != 0) && (!ok || t.PhysicalAddress == want), () => $"step {step}: sva {dev.Name} on unit {u.SeqId} {mm.Name} pasid {pasid} (bound {bound}) at 0x{va:x}: want 0x{want:x}, DMA {t.Status} 0x{t.PhysicalAddress:x} {t.Reason}");
                    }
                }
            }

            foreach ((PciDevice dev, uint pasid) in _svaGone)
            {
                if (_binds.Any(b => b.Dev == dev && _mmPasid.GetValueOrDefault(b.Mm) == pasid))
                {
                    continue;
                }

                foreach (ulong va in _vas)
                {
                    VtdTranslation t = _unitOf[dev].Hw.Translate(dev.RequesterId, pasid, va, 1, DmaAccess.Read);
                    Require(t.Status != VtdTranslationStatus.Translated, () => $"step {step}: {dev.Name} unbound from PASID {pasid} still reaches 0x{t.PhysicalAddress:x} at 0x{va:x} on unit {_unitOf[dev].SeqId}");
                }
            }
        }

        // The identity default domain (5.15): one si_domain for the system; hw_pass_through is one global,
        // cleared by init_dmars when any unit lacks ECAP.PT. With it, RID DMA of a device on its default
        // domain passes through (any address); without it, on every unit (also those with PT) it goes
        // through si_domain's table, which si_domain_init fills with every RAM range 1:1: RAM is reached,
        // nothing else (iova_to_phys, the core's identity answer, says iova everywhere). si_domain has a DID
        // on a unit exactly while a device behind it is on it (legacy or table: its own; scalable
        // pass-through: FLPT_DEFAULT_DID), never another domain's.
        private void CheckIdentity(int step)
        {
            bool hwPt = Units.All(x => x.Config.PassThrough);
            Require(_si is not null && _si.Type == DomainType.Identity, () => $"step {step}: no si_domain");
            DmarDomain si = _si!;
            int siAgaw = Units.Min(x => x.Agaw);
            ulong[] probes = [0, K4, 0x8000_0000, Memory - K4, Memory, Memory + M2, 1UL << 38];
            for (int u = 0; u < Units.Count; u++)
            {
                bool used = Devices.Any(dv => _unitOf[dv] == Units[u] && _attached[dv] is null && !_noDomain.Contains(dv));
                ushort did = si.DidOn(u);
                Require(did != 0 == used, () => $"step {step}: si_domain DID on unit {u} is {did}, devices on it: {used}");
                Require(did == 0 || Domains.All(o => ((DmarDomain)o).DidOn(u) != did), () => $"step {step}: si_domain shares DID {did} on unit {u}");
            }

            foreach (PciDevice dev in Devices)
            {
                UnitInfo u = _unitOf[dev];
                if (_attached[dev] is not null)
                {
                    continue;
                }

                bool onSi = !_noDomain.Contains(dev);
                Require(!onSi || Iommu.GetDomainForDev(dev) == si, () => $"step {step}: {dev.Name} default domain is not si_domain");
                foreach (ulong probe in probes)
                {
                    bool reach = onSi && (hwPt || (probe + K4 <= Memory && u.WalksAgaw(siAgaw)));
                    VtdTranslation t = u.Hw.Translate(dev.RequesterId, null, probe, 1, DmaAccess.Read);
                    bool ok = t.Status == VtdTranslationStatus.Translated;
                    Seen.IdentityPassThrough += ok && hwPt ? 1 : 0;
                    Seen.IdentityTableOnPtUnit += ok && !hwPt && u.Config.PassThrough ? 1 : 0;
                    Require(ok == reach && (!ok || t.PhysicalAddress == probe), () => $"step {step}: identity {dev.Name} on unit {u.SeqId} (hw_pass_through {hwPt}, on si_domain {onSi}) at 0x{probe:x}: want {(reach ? "1:1" : "fault")}, DMA {t.Status} 0x{t.PhysicalAddress:x} {t.Reason}");
                }
            }
        }

        // DMA by dev through its unit (RID, or RID + PASID) reaches iova_to_phys(dom), or faults everywhere without dom.
        private void ProbeAll(int step, PciDevice dev, UnitInfo u, uint? pasid, IDomain? dom, ulong[] probes)
        {
            foreach (ulong probe in probes)
            {
                ulong phys = dom is null ? 0 : Iommu.IovaToPhys(dom, probe);

                // First level: intel_iommu_map checks gaw, not the aperture, so a map may reach into the upper
                // half of the first-level walk's input range; DMA there is non-canonical and faults.
                if (dom is not null && _ref[dom] is { FirstLevel: true } fr && probe >= 1UL << (29 + (9 * fr.Agaw)))
                {
                    phys = 0;
                }

                // A second-level table with fewer levels than the unit's SAGAW offers (see Widths): all DMA faults.
                if (dom is not null && _ref[dom] is { FirstLevel: false } sr && !u.WalksAgaw(sr.Agaw))
                {
                    phys = 0;
                    Seen.UnsupportedAgaw++;
                }

                VtdTranslation t = u.Hw.Translate(dev.RequesterId, pasid, probe, 1, DmaAccess.Read);
                bool ok = t.Status == VtdTranslationStatus.Translated;
                Seen.PasidDmaTranslated += ok && pasid is not null ? 1 : 0;
                Require(ok == (phys != 0) && (!ok || t.PhysicalAddress == phys), () => ($"step {step}: {dev.Name} on unit {u.SeqId} pasid {pasid?.ToString(System.Globalization.CultureInfo.InvariantCulture) ?? "-"} (d{(dom is null ? -1 : Index(dom))}) at 0x{probe:x}: iova_to_phys 0x{phys:x}, DMA {t.Status} 0x{t.PhysicalAddress:x} {t.Reason}"));
            }
        }

        private void Require(bool ok, Func<string> what)
        {
            if (!ok)
            {
                Assert.Fail(Fail(what()));
            }
        }

        private static string L((ulong Iova, ulong Size, ulong Pa, bool Snp) l) => $"0x{l.Iova:x}+0x{l.Size:x}->0x{l.Pa:x}{(l.Snp ? " snp" : "")}";

        private int Index(IDomain d) => Domains is null ? -1 : ((List<IDomain>)[.. Domains]).IndexOf(d);

        private string Fail(string what) => $"seed {_seed}: {what}\n{string.Join("\n", _trace)}";

        public void Dispose()
        {
            foreach ((_, _, IommuSva h) in _binds)
            {
                Iommu.SvaUnbindDevice(h);
            }

            foreach (ProcessAddressSpace mm in _mms)
            {
                mm.Dispose();
            }

            Platform.Dispose();
        }
    }
}
