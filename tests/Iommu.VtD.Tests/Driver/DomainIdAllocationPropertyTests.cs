using System.Globalization;
using System.Text;
using CsCheck;
using Iommu.Devices;
using Iommu.Domains;
using Iommu.VtD.Driver;
using Iommu.VtD.Hardware;
using static Iommu.VtD.Tests.Driver.DriverTestKit;

namespace Iommu.VtD.Tests.Driver;

/// <summary>
/// Domain-id allocation on one VT-d unit (spec kernel-api.md §2.4, §2.7; 5.15 <c>iommu_init_domains</c>,
/// <c>domain_attach_iommu</c>, <c>domain_detach_iommu</c>, <c>intel_iommu_attach_device</c>) over random sequences of
/// paging-domain allocation, attach, detach and free, on legacy, scalable second-level and scalable first-level units
/// with a small CAP.ND (16 or 64 ids) so the id space runs out. A reference model predicts the DID every attach takes,
/// and after each call the DID field of every device's legacy context entry, or of its RID2PASID (PASID 0) entry in
/// scalable mode, read from table memory the way the unit finds it, must be the model's (and no entry where the device
/// has no domain); the driver's own bookkeeping (ids in use, each id's owner, each domain's id) must agree too.
/// </summary>
/// <remarks>
/// The model: DID 0 is reserved, and in scalable mode DID 1 (<c>FLPT_DEFAULT_DID</c>) too; a domain's first reference
/// on the unit takes the lowest clear id below <c>cap_ndoms</c>, its last release frees it; attach first drops the
/// device's current domain (§2.7 step 3: a failed attach leaves the device with no domain), and with no id left the
/// attach fails with -EBUSY (<c>domain_add_dev_info</c> turns the allocator's -ENOSPC into it) and takes no id and no
/// reference; free detaches every device of the domain (<c>domain_exit</c>). Every domain takes an id, the identity
/// domain too; in scalable mode with hardware pass-through its entries carry DID 1 instead. Domains are allocated and
/// freed through the core (<c>iommu_domain_alloc</c>, <c>iommu_domain_free</c>); attach and detach call the driver's
/// ops directly, as the core's group code does, so the core's one-domain-per-group rule does not come into it. The
/// devices start on their default domain (DMA, one per device, or the identity domain), whose probe-time attaches the
/// model replays. Sampling is CsCheck's: a failure prints the case, the trace and the seed, which
/// <c>CsCheck_Seed</c> replays.
/// </remarks>
public sealed class DomainIdAllocationPropertyTests
{
    private const uint RtaddrReg = 0x20;
    private const ushort FlptDefaultDid = 1;

    // Mostly allocate and attach (domains pile up on distinct devices until the ids run out), or a mix with more
    // detaches and frees (ids released and reused).
    private static readonly Gen<Op> Fill = Ops(alloc: 45, attach: 50, detach: 2, fresh: 85, unused: 85), Churn = Ops(alloc: 30, attach: 45, detach: 12, fresh: 25, unused: 50);

    /// <summary>The unit's mode in a case.</summary>
    internal enum UnitMode
    {
        /// <summary>Legacy root and context tables: the context entry carries the DID.</summary>
        Legacy,

        /// <summary>Scalable mode, second-level paging domains: the RID2PASID entry carries it.</summary>
        Scalable,

        /// <summary>Scalable mode with ECAP.FLTS: 5.15 gives every paging domain a first-level table.</summary>
        ScalableFirstLevel,
    }

    /// <summary>One operation; its numbers pick among what exists when it runs, so every sub-list is a valid program.</summary>
    /// <param name="Kind">What to do.</param>
    /// <param name="Device">0–95: a device, modulo the device count; 96 and up: the first device on its default domain or on none (else modulo).</param>
    /// <param name="Domain">Attach: 0 the device's default domain, 1–63 a live paging domain (modulo), 64 and up the first live one on no device (else the newest); free: a live paging domain (modulo).</param>
    internal readonly record struct Op(OpKind Kind, int Device, int Domain)
    {
        /// <inheritdoc/>
        public override string ToString() => Kind switch
        {
            OpKind.Alloc => "alloc",
            OpKind.Attach => $"attach {Dev} to {(Domain == 0 ? "default" : Domain >= 64 ? "an unused domain" : $"live#{Domain - 1}")}",
            OpKind.Detach => $"detach {Dev}",
            _ => $"free live#{Domain}",
        };

        private string Dev => Device >= 96 ? "a fresh device" : $"dev{Device}";
    }

    /// <summary>Operation kinds.</summary>
    internal enum OpKind
    {
        /// <summary><c>iommu_domain_alloc</c>: a new UNMANAGED paging domain (no DID until attached).</summary>
        Alloc,

        /// <summary><c>intel_iommu_attach_device</c>.</summary>
        Attach,

        /// <summary><c>intel_iommu_detach_device</c>.</summary>
        Detach,

        /// <summary><c>iommu_domain_free</c> (<c>domain_exit</c>: detaches the domain's devices).</summary>
        Free,
    }

    /// <summary>One case: the unit, the default domain type, how many devices sit behind the unit, and the operations.</summary>
    internal sealed record Case(UnitMode Mode, int Nd, bool Identity, bool PassThrough, int Devices, Op[] Ops)
    {
        /// <inheritdoc/>
        public override string ToString()
        {
            var sb = new StringBuilder();
            sb.Append(CultureInfo.InvariantCulture, $"{Mode}, CAP.ND {Nd}, default {(Identity ? "identity" : "DMA")}, ECAP.PT {PassThrough}, {Devices} devices, {Ops.Length} ops:");
            for (int i = 0; i < Ops.Length; i++)
            {
                sb.Append(CultureInfo.InvariantCulture, $"\n  {i}: {Ops[i]}");
            }

            return sb.ToString();
        }
    }

    /// <summary>How often the runs reached the cases the property is for.</summary>
    internal sealed record Coverage
    {
        /// <summary>Legacy-mode runs where an attach was refused for want of a DID.</summary>
        public int ExhaustedLegacy { get; set; }

        /// <summary>Scalable-mode runs where an attach was refused for want of a DID.</summary>
        public int ExhaustedScalable { get; set; }

        /// <summary>Runs with CAP.ND 1 (64 ids) where an attach was refused for want of a DID.</summary>
        public int ExhaustedNd1 { get; set; }

        /// <summary>Attaches that took a DID below the highest in use (a released id reused).</summary>
        public int ReusedLower { get; set; }

        /// <summary>Attaches of a domain already holding a DID through another device (no new id).</summary>
        public int Shared { get; set; }

        /// <summary>Frees of a domain with devices still attached.</summary>
        public int FreedAttached { get; set; }

        /// <summary>Scalable-mode steps where the identity domain's entries carried FLPT_DEFAULT_DID.</summary>
        public int PassThroughDid { get; set; }
    }

    /// <summary>The DIDs the context / PASID entries carry are the model's after every call.</summary>
    [Fact]
    public void Property_attach_takes_the_lowest_free_did_and_the_last_detach_releases_it()
    {
        var seen = new Coverage();

        // CAP.ND 0 (16 ids: 15 usable legacy, 14 scalable) mostly; ND 1 (64 ids) with the identity default domain,
        // 62–72 devices and long runs, so that it too runs out (the ids in use never outnumber the devices plus
        // the reserved ones). With a DMA default domain every device holds a domain of its own from probe, so at
        // most as many devices as usable ids (a probe that fails for want of a DID is not this property's
        // subject): those cases never run out, they reuse.
        Gen<Case> cases = Gen.Select(Gen.Int[0, 2], Gen.FrequencyConst((4, 0), (1, 1)), Gen.Bool, Gen.Bool).SelectMany(t =>
        {
            (int mode, int nd, bool identity, bool pt) = t;
            Gen<int> devices = (nd, identity) switch
            {
                (0, false) => Gen.Int[3, 14],
                (0, true) => Gen.Int[15, 24],
                (_, false) => Gen.Int[8, 24],
                _ => Gen.Int[62, 72],
            };
            Gen<Op[]> ops = (nd, identity) switch
            {
                (0, true) => Gen.Frequency((1, Fill.Array[20, 120]), (1, Churn.Array[20, 120])),
                (1, true) => Fill.Array[300, 400],
                _ => Churn.Array[10, 90],
            };
            return Gen.Select(devices, ops, (n, o) => new Case((UnitMode)mode, nd, identity, pt, n, o));
        });

        cases.Sample(c => Run(c, seen), iter: 400, threads: 1, print: c => c.ToString());

        // The generator reaches the cases the property is for (summed over the runs).
        Assert.True(seen.ExhaustedLegacy > 0 && seen.ExhaustedScalable > 0 && seen.ExhaustedNd1 > 0 && seen.ReusedLower > 0 && seen.Shared > 0 && seen.FreedAttached > 0 && seen.PassThroughDid > 0, $"coverage: {seen}");
    }

    // Operations in the given proportions (percent; free takes the rest, and fresh is the share of ops on a device
    // still on its default domain, unused of the attaches that go to a paging domain on no device).
    private static Gen<Op> Ops(int alloc, int attach, int detach, int fresh, int unused) =>
        Gen.Select(Gen.Int[0, 99], Gen.Frequency((100 - fresh, Gen.Int[0, 95]), (fresh, Gen.Int[96, 127])), Gen.Frequency((100 - unused, Gen.Int[0, 63]), (unused, Gen.Int[64, 127])), (w, dev, dom) => new Op(
            w < alloc ? OpKind.Alloc : w < alloc + attach ? OpKind.Attach : w < alloc + attach + detach ? OpKind.Detach : OpKind.Free, dev, dom));

    internal static void Run(Case c, Coverage seen)
    {
        VtdConfig config = (c.Mode switch
        {
            UnitMode.Legacy => VtdConfig.Legacy48Bit,
            UnitMode.Scalable => VtdConfig.ScalableMode48Bit,
            _ => VtdConfig.ScalableModeFirstLevel48Bit,
        }) with { DomainIdEncoding = c.Nd, PassThrough = c.PassThrough };
        var options = new IntelIommuOptions { FirstLevel = FirstLevelPolicy.AllWhenEveryUnitHasFlts }; // 5.15: first level on FLTS units
        using var f = new DriverBed(config, options, memory: SmallMemory, defaultDomain: c.Identity ? DomainType.Identity : DomainType.Dma);
        IntelIommuUnit unit = f.Driver.Units[0];
        bool scalable = c.Mode != UnitMode.Legacy;
        Assert.Equal(scalable, unit.ScalableMode);
        Assert.Equal(16 << (2 * c.Nd), unit.NumDomains);

        var model = new Model(unit.NumDomains, scalable);
        var trace = new List<string>();
        var devices = new List<PciDevice>();
        var defaults = new List<DmarDomain>();
        var live = new List<DmarDomain>(); // paging domains allocated by the ops, not yet freed
        for (int i = 0; i < c.Devices; i++)
        {
            // Buses 0–2, 24 devices each: devfn 8..192, both halves of a scalable root entry.
            PciDevice dev = f.AddDevice(string.Create(CultureInfo.InvariantCulture, $"0000:{i / 24:x2}:{(i % 24) + 1:x2}.0"));
            var def = (DmarDomain)(f.Iommu.GetDmaDomain(dev) ?? throw new InvalidOperationException($"{dev.Name} has no default domain"));
            devices.Add(dev);
            defaults.Add(def);
            Assert.Equal(c.Identity, def.IsIdentity);
            model.Add(def, identity: c.Identity);
            Assert.Equal(Errno.None, model.Attach(def, dev)); // the probe's default-domain attach
        }

        Check("after probe");
        bool exhausted = false;
        for (int step = 0; step < c.Ops.Length; step++)
        {
            Op op = c.Ops[step];
            int di = op.Device % devices.Count;
            for (int i = 0; op.Device >= 96 && i < devices.Count; i++)
            {
                if (model.DomainOf(devices[i]) is null || model.DomainOf(devices[i]) == defaults[i])
                {
                    di = i;
                    break;
                }
            }

            PciDevice dev = devices[di];
            switch (op.Kind)
            {
                case OpKind.Alloc:
                {
                    var d = (DmarDomain)(f.Iommu.DomainAlloc(f.Pci) ?? throw new InvalidOperationException("domain alloc failed"));
                    Assert.Equal(c.Mode == UnitMode.ScalableFirstLevel, d.UseFirstLevel);
                    live.Add(d);
                    model.Add(d, identity: false);
                    trace.Add($"{step}: alloc -> live#{live.Count - 1}");
                    break;
                }

                case OpKind.Attach:
                {
                    DmarDomain d = op.Domain == 0 || live.Count == 0 ? defaults[di] : op.Domain >= 64 ? live.Find(x => model.Refcnt(x) == 0) ?? live[^1] : live[(op.Domain - 1) % live.Count];
                    int highest = model.HighestInUse;
                    bool held = model.Refcnt(d) > 0 && model.DomainOf(dev) != d;
                    Errno want = model.Attach(d, dev);
                    Errno got = f.Driver.AttachDev(d, dev);
                    trace.Add($"{step}: attach {dev.Name} to {Name(d)} -> {got} (model {want}, DID {model.Did(d)})");
                    Require(got == want, $"step {step}: attach returned {got}, the model {want}");
                    exhausted |= want == Errno.EBUSY;
                    seen.Shared += want == Errno.None && held ? 1 : 0;
                    seen.ReusedLower += want == Errno.None && !held && model.Did(d) < highest ? 1 : 0;
                    break;
                }

                case OpKind.Detach:
                {
                    // intel_iommu_detach_device ignores the domain (dmar_remove_one_dev_info(dev)).
                    DmarDomain d = model.DomainOf(dev) ?? defaults[di];
                    model.Detach(dev);
                    f.Driver.DetachDev(d, dev);
                    trace.Add($"{step}: detach {dev.Name}");
                    break;
                }

                default:
                {
                    if (live.Count == 0)
                    {
                        trace.Add($"{step}: free (none live)");
                        continue;
                    }

                    DmarDomain d = live[op.Domain % live.Count];
                    seen.FreedAttached += model.Refcnt(d) > 0 ? 1 : 0;
                    trace.Add($"{step}: free {Name(d)} (DID {model.Did(d)}, {model.Refcnt(d)} devices)");
                    model.Free(d);
                    live.Remove(d);
                    f.Iommu.DomainFree(d);
                    break;
                }
            }

            Check($"after step {step}");
        }

        seen.ExhaustedLegacy += exhausted && !scalable ? 1 : 0;
        seen.ExhaustedScalable += exhausted && scalable ? 1 : 0;
        seen.ExhaustedNd1 += exhausted && c.Nd == 1 ? 1 : 0;

        // The DID the device's entry carries, read the way the unit finds it from RTADDR: the legacy context
        // entry's DID (bits 87:72), or the scalable-mode RID2PASID PASID entry's (bits 79:64); null when absent.
        ushort? TableDid(PciDevice dev)
        {
            if (scalable)
            {
                ulong[]? pe = f.PasidEntry(dev, 0);
                return pe is null || (pe[0] & 1) == 0 ? null : (ushort)(pe[1] & 0xFFFF);
            }

            ulong root = f.Unit.Read64(RtaddrReg) & ~0xFFFUL;
            ulong re = f.Platform.Memory.ReadUInt64(root + (dev.BusNumber * 16UL));
            if ((re & 1) == 0)
            {
                return null;
            }

            ulong ce = (re & ~0xFFFUL) + (dev.DevFn * 16UL);
            return (f.Platform.Memory.ReadUInt64(ce) & 1) == 0 ? null : (ushort)((f.Platform.Memory.ReadUInt64(ce + 8) >> 8) & 0xFFFF);
        }

        void Check(string when)
        {
            foreach (PciDevice dev in devices)
            {
                DmarDomain? d = model.DomainOf(dev);
                ushort? want = d is null ? null
                    : scalable && model.IsIdentity(d) && c.PassThrough ? FlptDefaultDid
                    : (ushort)model.Did(d);
                seen.PassThroughDid += d is not null && scalable && want == FlptDefaultDid ? 1 : 0;
                ushort? got = TableDid(dev);
                Require(got == want, $"{when}: {dev.Name} on {(d is null ? "nothing" : Name(d))}: its entry carries DID {Show(got)}, the model says {Show(want)}");
            }

            // The allocator agrees: ids in use (reserved ones included), and who owns each.
            Require(unit.DomainIdsInUse == model.InUse, $"{when}: {unit.DomainIdsInUse} DIDs in use, the model {model.InUse}");
            foreach (DmarDomain d in model.Domains)
            {
                Require(d.DidOn(0) == model.Did(d), $"{when}: {Name(d)} holds DID {d.DidOn(0)}, the model {model.Did(d)}");
                Require(model.Did(d) == 0 || unit.DomainOf((ushort)model.Did(d)) == d, $"{when}: DID {model.Did(d)} is not {Name(d)}'s on the unit");
            }

            Require(unit.DomainOf(0) is null && (!scalable || unit.DomainOf(FlptDefaultDid) is null), $"{when}: a reserved DID names a domain");
        }

        string Name(DmarDomain d)
        {
            int i = live.IndexOf(d);
            return i >= 0 ? $"live#{i}" : model.IsIdentity(d) ? "si_domain" : $"default of dev{defaults.IndexOf(d)}";
        }

        void Require(bool ok, string what)
        {
            if (!ok)
            {
                Assert.Fail($"{what}\n{string.Join("\n", trace)}");
            }
        }
    }

    private static string Show(ushort? did) => did is ushort v ? v.ToString(CultureInfo.InvariantCulture) : "none (not present)";

    /// <summary>
    /// The reference: the unit's id bitmap, each domain's reference count and DID on the unit, and each device's
    /// domain, following §2.4 / §2.7 (5.15 <c>domain_attach_iommu</c> / <c>domain_detach_iommu</c>).
    /// </summary>
    private sealed class Model
    {
        private readonly bool[] _used;
        private readonly Dictionary<DmarDomain, (int Refcnt, int Did, bool Identity)> _domains = [];
        private readonly Dictionary<PciDevice, DmarDomain> _on = [];

        public Model(int ndoms, bool scalable)
        {
            _used = new bool[ndoms];
            _used[0] = true; // caching-mode tag of not-present entries, and "no DID"
            _used[FlptDefaultDid] = scalable; // first-level and pass-through PASID entries
        }

        public int InUse => _used.Count(u => u);

        public int HighestInUse => Array.LastIndexOf(_used, true);

        public IEnumerable<DmarDomain> Domains => _domains.Keys;

        public void Add(DmarDomain d, bool identity) => _domains.TryAdd(d, (0, 0, identity));

        public int Refcnt(DmarDomain d) => _domains[d].Refcnt;

        public int Did(DmarDomain d) => _domains[d].Did;

        public bool IsIdentity(DmarDomain d) => _domains[d].Identity;

        public DmarDomain? DomainOf(PciDevice dev) => _on.GetValueOrDefault(dev);

        // intel_iommu_attach_device: the current domain goes first; then domain_attach_iommu.
        public Errno Attach(DmarDomain d, PciDevice dev)
        {
            Detach(dev);
            (int refcnt, int did, bool identity) = _domains[d];
            if (refcnt == 0)
            {
                did = Array.IndexOf(_used, false); // find_first_zero_bit(domain_ids, cap_ndoms)
                if (did < 0)
                {
                    return Errno.EBUSY; // -ENOSPC, surfaced by domain_add_dev_info as -EBUSY; the count is undone
                }

                _used[did] = true;
            }

            _domains[d] = (refcnt + 1, did, identity);
            _on[dev] = d;
            return Errno.None;
        }

        // dmar_remove_one_dev_info: domain_detach_iommu; the last reference frees the id.
        public void Detach(PciDevice dev)
        {
            if (!_on.Remove(dev, out DmarDomain? d))
            {
                return;
            }

            (int refcnt, int did, bool identity) = _domains[d];
            if (--refcnt == 0)
            {
                _used[did] = false;
                did = 0;
            }

            _domains[d] = (refcnt, did, identity);
        }

        // domain_exit: domain_remove_dev_info, then the domain is gone.
        public void Free(DmarDomain d)
        {
            foreach (PciDevice dev in _on.Where(kv => kv.Value == d).Select(kv => kv.Key).ToList())
            {
                Detach(dev);
            }

            _domains.Remove(d);
        }
    }
}
