using Iommu.Devices;
using Iommu.Domains;

namespace Iommu.VtD.Driver;

/// <summary>
/// An intel-iommu domain (<c>struct dmar_domain</c>): an <see cref="IommuDomain"/> with a VT-d
/// second-level or first-level page table, its address width, one DID per unit it is attached to, and the
/// default PASID used for auxiliary attachments.
/// </summary>
/// <remarks>Thread safety: attach state changes under the driver's device-domain lock; map/unmap/iova_to_phys go to the page table, which is safe for disjoint concurrent use.</remarks>
[KernelSymbol("struct dmar_domain")]
public sealed class DmarDomain : IommuDomain
{
    private DmaPageTable? _secondLevel;
    private PageTable<FirstLevelFormat> _firstLevel; // used in place (a mutable struct): only through FirstLevelTable
    private bool _hasIotlbDevice;

    // Map, unmap and iova_to_phys walk the table from its root and level count without a lock, so the drop of
    // top levels at an attach (prepare_domain_attach_device) waits for the walks in progress and holds off new
    // ones: a walk that mixed the old level count with the new root built tables one level off, and the old top
    // table was freed under it. Once no unit of the driver is narrower than the domain, no drop can come and
    // the walks skip this.
    private readonly Lock _levelDropLock = new();
    private volatile bool _levelsFinal;
    private int _tableWalkers;
    private int _levelDropping;

    internal DmarDomain(DmaPageTable pageTable, int gaw, int agaw, int units)
    {
        _secondLevel = pageTable;
        Gaw = gaw;
        Agaw = agaw;
        IommuRefcnt = new int[units];
        IommuDid = new ushort[units];
    }

    internal DmarDomain(PageTable<FirstLevelFormat> firstLevel, int gaw, int agaw, int units)
    {
        _firstLevel = firstLevel;
        UseFirstLevel = true;
        Gaw = gaw;
        Agaw = agaw;
        IommuRefcnt = new int[units];
        IommuDid = new ushort[units];
    }

    // A nested domain over parent (intel_nested_domain_alloc): first level (the guest's), no table here.
    internal DmarDomain(DmarDomain parent, IommuHwptVtdS1 stageOne, int units)
    {
        NestParent = parent;
        StageOne = stageOne;
        UseFirstLevel = true;
        Gaw = parent.Gaw;
        Agaw = parent.Agaw;
        IommuRefcnt = new int[units];
        IommuDid = new ushort[units];
    }

    /// <summary>No attach will drop levels (no unit is narrower than the domain, or it is an identity domain): walks need not count themselves.</summary>
    internal void MarkLevelsFinal() => _levelsFinal = true;

    /// <summary>Enters a walk of the page table (map, unmap, iova_to_phys); dispose the result when the walk ends.</summary>
    /// <returns>The walk, counted while a level drop is still possible.</returns>
    [System.Runtime.CompilerServices.MethodImpl(System.Runtime.CompilerServices.MethodImplOptions.AggressiveInlining)]
    internal TableWalk EnterTableWalk() => _levelsFinal ? default : new TableWalk(CountWalk());

    /// <summary>Whether the levels are final, so that page-table walks need not count themselves (<see cref="EnterTableWalk"/> returns an empty walk).</summary>
    internal bool LevelsFinal => _levelsFinal;

    // Out of line: only a domain not yet attached to a narrower unit comes here.
    [System.Runtime.CompilerServices.MethodImpl(System.Runtime.CompilerServices.MethodImplOptions.NoInlining)]
    private DmarDomain CountWalk()
    {
        while (true)
        {
            Interlocked.Increment(ref _tableWalkers);
            if (Volatile.Read(ref _levelDropping) == 0)
            {
                return this;
            }

            Interlocked.Decrement(ref _tableWalkers);
            var spin = default(SpinWait);
            while (Volatile.Read(ref _levelDropping) != 0)
            {
                spin.SpinOnce();
            }
        }
    }

    /// <summary>A page-table walk entered with <see cref="EnterTableWalk"/>; disposing it ends the walk.</summary>
    internal readonly ref struct TableWalk
    {
        private readonly DmarDomain? _counted;

        internal TableWalk(DmarDomain counted) => _counted = counted;

        /// <summary>Ends the walk.</summary>
        public void Dispose()
        {
            if (_counted is not null)
            {
                Interlocked.Decrement(ref _counted._tableWalkers);
            }
        }
    }

    /// <summary>
    /// Runs <paramref name="drop"/> (the drop of top levels) with no page-table walk in progress and none
    /// starting; afterwards, when <paramref name="final"/>, walks stop counting themselves.
    /// </summary>
    /// <param name="drop">The level drop; it re-checks the levels, as another attach may have dropped them.</param>
    /// <param name="final">Whether no unit of the driver walks fewer levels than the domain has after the drop.</param>
    internal void DropLevelsExclusive(Action drop, Func<bool> final)
    {
        lock (_levelDropLock)
        {
            Interlocked.Exchange(ref _levelDropping, 1);
            try
            {
                var spin = default(SpinWait);
                while (Volatile.Read(ref _tableWalkers) != 0)
                {
                    spin.SpinOnce();
                }

                drop();
                if (final())
                {
                    _levelsFinal = true;
                }
            }
            finally
            {
                Volatile.Write(ref _levelDropping, 0);
            }
        }
    }

    /// <summary>The second-level page table (<c>dmar_domain->pgd</c>).</summary>
    /// <exception cref="InvalidOperationException">The domain uses first-level tables (<see cref="UseFirstLevel"/>).</exception>
    public DmaPageTable PageTable => _secondLevel ?? throw new InvalidOperationException("This domain uses first-level page tables (UseFirstLevel); it has no second-level table.");

    /// <summary>
    /// Whether the domain's IOVA space lives in first-level (IA-32e) tables (<c>DOMAIN_FLAG_USE_FIRST_LEVEL</c>,
    /// <c>domain_use_first_level</c>), chosen at allocation by <see cref="IntelIommuOptions.FirstLevel"/>.
    /// </summary>
    /// <remarks>Since 5.7 (ddf09b6d43ec); 6.1's <c>first_level_by_default</c> keeps UNMANAGED domains on the second level.</remarks>
    [KernelSymbol("DOMAIN_FLAG_USE_FIRST_LEVEL")]
    public bool UseFirstLevel { get; private set; }

    /// <summary>Whether nested domains may be built on this second-level domain (<c>nested_parent</c>, iommufd's <c>IOMMU_HWPT_ALLOC_NEST_PARENT</c>).</summary>
    /// <remarks>6.7+ (iommufd nesting); not in 5.15.</remarks>
    [KernelSymbol("nested_parent", Version = "6.7")]
    public bool IsNestParent { get; internal set; }

    /// <summary>For a nested domain, the second-level domain its stage-1 table's addresses go through (<c>s2_domain</c>); otherwise null.</summary>
    /// <remarks>6.7+ (iommufd nesting). A nested domain has no table of its own: the guest owns the stage-1 table at <see cref="StageOne"/>'s address.</remarks>
    [KernelSymbol("s2_domain", Version = "6.7")]
    public DmarDomain? NestParent { get; }

    /// <summary>For a nested domain, the user's stage-1 description (<c>s1_cfg</c>).</summary>
    [KernelSymbol("s1_cfg", Version = "6.7")]
    public IommuHwptVtdS1 StageOne { get; }

    /// <summary>Nested domains built on this parent (<c>s1_domains</c>): a change to this table must flush their DIDs too.</summary>
    internal List<DmarDomain> NestedChildren { get; } = [];

    /// <summary>Physical address of the top-level table of whichever stage the domain uses (<c>dmar_domain->pgd</c>).</summary>
    public ulong Pgd => NestParent is not null ? StageOne.PgtblAddr : UseFirstLevel ? _firstLevel.Root : PageTable.Root;

    /// <summary>
    /// Moves a fresh first-level domain to the second level (5.15 <c>intel_iommu_enable_nesting</c> clears
    /// <c>DOMAIN_FLAG_USE_FIRST_LEVEL</c>; 6.7 allocates user domains on the second level): its empty table
    /// goes, <paramref name="table"/> takes its place.
    /// </summary>
    internal void SwitchToSecondLevel(DmaPageTable table)
    {
        if (UseFirstLevel)
        {
            _firstLevel.FreeAll();
            _firstLevel = default;
        }

        _secondLevel = table;
        UseFirstLevel = false;
    }

    /// <summary>The first-level table, in place; only for a domain with <see cref="UseFirstLevel"/>.</summary>
    internal ref PageTable<FirstLevelFormat> FirstLevelTable => ref _firstLevel;

    // The map/unmap/iova_to_phys paths, once they know UseFirstLevel is false: the public PageTable's
    // check and throw would keep its getter from being inlined there.
    internal DmaPageTable SecondLevelTable => _secondLevel!;

    /// <summary>Guest address width in bits (<c>gaw</c>): 57 at allocation, the unit's width after attach.</summary>
    public int Gaw { get; internal set; }

    /// <summary>Adjusted guest address width index (<c>agaw</c>): levels = agaw + 2.</summary>
    public int Agaw { get; internal set; }

    /// <summary>Highest mapped end address (<c>max_addr</c>), checked when attaching to a narrower unit.</summary>
    public ulong MaxAddr { get; internal set; }

    /// <summary>Superpage levels usable on every unit (<c>iommu_superpage</c>: 0 none, 1 = 2 MiB, 2 = 1 GiB).</summary>
    public int IommuSuperpage { get; internal set; }

    /// <summary>Whether snoop control can be forced on every unit (<c>iommu_snooping</c>).</summary>
    public bool IommuSnooping { get; internal set; }

    /// <summary>The static identity domain (<c>si_domain</c>): hardware pass-through, or a 1:1 table when some unit lacks ECAP.PT.</summary>
    public bool IsIdentity { get; internal init; }

    // The identity domain under hw_pass_through: no table, TT=10 / PGTT=100. Without it si_domain is a 1:1 table.
    internal bool PassThrough { get; init; }

    /// <summary>The PASID of this domain on every device it is aux-attached to (<c>default_pasid</c>; 0 = none).</summary>
    public uint DefaultPasid { get; internal set; }

    /// <summary>Attachments per unit (<c>iommu_refcnt[seq_id]</c>).</summary>
    internal int[] IommuRefcnt { get; }

    /// <summary>DID per unit (<c>iommu_did[seq_id]</c>; 0 = none).</summary>
    internal ushort[] IommuDid { get; }

    /// <summary>
    /// Whether a device that can use ATS was ever listed in the domain (<c>has_iotlb_device</c>, kept
    /// monotonic: see <c>IntelIommu.DomainUpdateIotlb</c>). Written before the device is listed, so an
    /// unmap that reads it unset flushes no device-TLB that could hold the domain's translations.
    /// </summary>
    internal bool HasIotlbDevice
    {
        get => Volatile.Read(ref _hasIotlbDevice);
        set => Volatile.Write(ref _hasIotlbDevice, value);
    }

    /// <summary>Normally (RID) attached devices (<c>devices</c>).</summary>
    internal List<DeviceDomainInfo> Devices { get; } = [];

    /// <summary>(physical device, users) of auxiliary attachments (<c>subdevices</c>, the ≥5.11 <c>subdev_domain_info</c>).</summary>
    internal List<SubdevInfo> Subdevices { get; } = [];

    /// <summary>
    /// (device, unit, PASID) of the domain's attachments made with <c>set_dev_pasid</c> (≈6.5
    /// <c>dev_pasids</c>). Changed and read under a lock of the list itself: an unmap's flush reads it
    /// and takes no driver lock.
    /// </summary>
    internal List<DevPasidInfo> DevPasids { get; } = [];

    /// <summary>The DID this domain uses on the unit with <paramref name="seqId"/>, or 0.</summary>
    /// <param name="seqId">Unit index.</param>
    /// <returns>The DID.</returns>
    public ushort DidOn(int seqId) => IommuDid[seqId];

    /// <summary>Aux attachments per physical device (<c>struct subdev_domain_info</c>).</summary>
    internal sealed class SubdevInfo(Device device, IntelIommuUnit unit)
    {
        public Device Device { get; } = device;

        /// <summary>The unit whose DID this attachment holds (the device's info may be gone by the time the domain is freed).</summary>
        public IntelIommuUnit Unit { get; } = unit;

        public int Users { get; set; }
    }

    /// <summary>One PASID attachment of the domain (≈6.5 <c>struct dev_pasid_info</c>).</summary>
    internal sealed record DevPasidInfo(Device Device, int UnitSeqId, uint Pasid);
}
