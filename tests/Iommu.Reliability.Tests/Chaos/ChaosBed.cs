using System.Globalization;
using Iommu.Devices;
using Iommu.Dma;
using Iommu.Domains;
using Iommu.Groups;
using Iommu.Mm;
using Iommu.Reliability.Tests.Infrastructure;
using Iommu.Reliability.Tests.Isolation;
using Iommu.VtD.Diagnostics;
using Iommu.VtD.Driver;
using Iommu.VtD.Hardware;
using Mtty;
using SiovAccel;
using Uacce;
using Vfio.Mdev;
using Vfio.Type1;
using Vfio.Type1.Uapi;
using Iommu.Tests.Shared;

namespace Iommu.Reliability.Tests.Chaos;

/// <summary>A platform preset of the chaos property.</summary>
internal sealed record ChaosConfig(string Name, VtdConfig Vtd, int Units, DomainType DefaultDomain, FirstLevelPolicy Policy = FirstLevelPolicy.FirstLevelByDefault)
{
    private static readonly VtdConfig s_fl = VtdConfig.ScalableModeSva48Bit;

    public static IReadOnlyList<ChaosConfig> All { get; } =
    [
        new("legacy-1unit-dma", VtdConfig.Legacy48Bit, 1, DomainType.Dma),
        new("legacy-2units-dmafq", VtdConfig.Legacy48Bit, 2, DomainType.DmaFq),
        new("scalable-1unit-dmafq", VtdConfig.ScalableMode48Bit, 1, DomainType.DmaFq),
        new("scalable-2units-dma", VtdConfig.ScalableMode48Bit, 2, DomainType.Dma),
        new("fl-1unit-dma-515", s_fl, 1, DomainType.Dma, FirstLevelPolicy.AllWhenEveryUnitHasFlts),
        new("fl-2units-dmafq-6x", s_fl, 2, DomainType.DmaFq),
    ];

    public override string ToString() => Name;
}

/// <summary>
/// One platform where every layer is in use at once: PCI devices (two PASID + Scalable-IOV + ATS/PRI ones, two plain
/// ones), unmanaged domains, aux and PASID attach, the DMA API on the default domains, processes with SVA binds, VFIO
/// type1 containers and groups, IOMMU-aware mdevs (samples/SiovAccel on dev0) and vendor-isolated ones (samples/Mtty,
/// pinning through VFIO), uacce queues, hot-remove / re-add, fault reading and image export. Steps pick their targets
/// among every object the run ever made — freed, detached, closed and removed ones too — and every call is checked by
/// <see cref="Call{T}"/> (no exception its XML docs do not list, errno a defined value) and by <see cref="CheckDma"/>
/// (every live device's DMA reaches only what its current domain maps).
/// </summary>
internal sealed class ChaosBed : IDisposable
{
    public const int Devices = 8;
    private const ulong Page = 4096;
    private const int ProbeIovas = 6;

    /// <summary>What <see cref="Call{T}"/> returns for an Errno member that threw a documented exception.</summary>
    private const Errno Threw = (Errno)(-1);

    private static readonly PciDeviceSpec[] s_specs =
    [
        new("0000:00:02.0") { PasidWidth = 16, ScalableIov = true, Ats = true, Pri = true, Acs = true },
        new("0000:00:03.0") { PasidWidth = 10, ScalableIov = true, Ats = true, Pri = true, Acs = true },
        new("0000:00:04.0") { Acs = true },
        new("0000:00:05.0") { Acs = true },
        // Two functions of a multifunction device without ACS: one group of two (no AttachDevice, only group-wide attach).
        new("0000:00:06.0") { Multifunction = true },
        new("0000:00:06.1") { Multifunction = true },
        // Conventional PCI behind a PCIe-to-PCI bridge: their DMA carries the bridge's (02, 00.0) requester ID (aliasing).
        new("0000:02:01.0") { Upstream = new PciAddress(0, 1, 0, 0) },
        new("0000:02:02.0") { Upstream = new PciAddress(0, 1, 0, 0) },
    ];

    // The root port and the PCIe-to-PCI bridge the devices at 02:xx sit behind; never removed (no step picks them).
    private static readonly PciDeviceSpec[] s_bridges =
    [
        new("0000:00:1c.0") { IsBridge = true, Acs = true },
        new("0000:01:00.0") { IsPcieToPciBridge = true, Upstream = new PciAddress(0, 0, 0x1c, 0), Acs = true },
    ];

    // DMA masks DmaSetMask picks from: 64, 36, 32, 30 bits and ZONE_DMA's 24 (refused by dma-direct unless it covers RAM).
    private static readonly ulong[] s_masks = [ulong.MaxValue, 0xF_FFFF_FFFF, 0xFFFF_FFFF, 0x3FFF_FFFF, 0xFF_FFFF];

    // Unmanaged-domain IOVAs and the physical pages they map (below the host page pool at 4 GiB).
    private static readonly ulong[] s_iovas = [0x10_0000, 0x10_1000, 0x20_0000, 0x4000_0000, 0x4000_1000, 0x8000_0000];
    private static readonly ulong[] s_pas = [0x1000_0000, 0x1000_1000, 0x1020_0000, 0x2000_0000];
    private static readonly ulong[] s_vfioIovas = [0x7000_0000, 0x7000_1000, 0x7010_0000];
    private static readonly uint[] s_pasids = [0x40, 0x41];

    private readonly Platform _platform;
    private readonly IommuCore _iommu;
    private readonly PciBus _pci;
    private readonly IntelIommu _driver;
    private readonly VtdUnit[] _units;
    private readonly HostPageAllocator _pages;
    private readonly VfioCore _vfio;
    private readonly MdevCore _mdev;
    private readonly MttyDriver _mtty;
    private readonly UacceCore _uacce;
    private readonly Dictionary<ChaosKind, long> _coverage;

    // How often the steps reached the states the oracle needs (a pin that took, a PASID handed to a new owner).
    private readonly Dictionary<string, long> _events;

    // Every object the run made; nothing is ever removed from these lists.
    private readonly List<PciDevice> _devs = [];
    private readonly List<IDomain> _domains = [];
    private readonly HashSet<IDomain> _freed = new(ReferenceEqualityComparer.Instance);
    // The user's side of the DMA API: handles, lists and buffers it holds (with the mapping each named when made; null:
    // dma-direct). An entry goes once the user unmapped it or its mapping is gone (another device's unmap, a freed domain).
    private readonly List<(PciDevice Dev, ulong Handle, ulong Pa, DmaRange? Range)> _dmaHandles = [];

    // The DMA API's side as the property's own calls made it: the live mappings of each DMA/DMA_FQ domain by first IOVA
    // frame, the pages unmapped there since (nothing may translate them any more), and per device the DMA domains it
    // mapped in, newest first (dma_unmap_page/sg look for the device's live mapping there after its current domain).
    private readonly Dictionary<IDomain, Dictionary<ulong, DmaRange>> _dmaLive = new(ReferenceEqualityComparer.Instance);
    private readonly Dictionary<IDomain, List<ulong>> _dmaUnmapped = new(ReferenceEqualityComparer.Instance);
    private readonly Dictionary<Device, List<IDomain>> _dmaSeen = new(ReferenceEqualityComparer.Instance);
    private readonly Dictionary<ulong, DmaRange?> _coherentRange = [];

    // Live devices the property took out of their group with iommu_group_remove_device (their PASID entries stay).
    private readonly HashSet<Device> _leftGroup = new(ReferenceEqualityComparer.Instance);
    // DMA_FQ: pages the DMA API unmapped, by (default domain, IOVA): the group's devices may reach them until the queue is flushed.
    private readonly Dictionary<(IDomain, ulong), ulong> _lazyStale = [];
    private readonly List<(PciDevice Dev, Scatterlist[] Sg, DmaRange? Range)> _sgLists = [];
    private readonly List<(PciDevice Dev, ulong Cpu, ulong Size, ulong Handle)> _coherent = [];
    private readonly Dictionary<ulong, IDomain?> _coherentDomain = [];
    private readonly Dictionary<IommuSva, ProcessAddressSpace> _svaMm = new(ReferenceEqualityComparer.Instance);
    private readonly List<(ProcessAddressSpace Mm, ulong Buf)> _procs = [];
    private readonly List<IommuSva> _sva = [];
    private readonly List<VfioContainer> _containers = [];
    private readonly Dictionary<VfioContainer, ulong> _containerBuf = new(ReferenceEqualityComparer.Instance);
    private readonly List<VfioGroup> _groups = [];
    private readonly List<VfioDeviceFile> _deviceFiles = [];
    private readonly List<MdevDevice> _mdevs = [];
    private readonly List<MdevDeviceFile> _mdevFiles = [];
    private readonly HashSet<MdevDeviceFile> _mdevClosed = [];
    private readonly List<(UacceDevice Dev, ProcessAddressSpace Mm, int Fd)> _queues = [];
    private readonly List<UacceDevice> _uacceDevs = [];
    private readonly List<UacceQueue> _uacceQueues = []; // their SVA binds (uacce_fops_open binds the opener's mm)
    private readonly List<uint> _seenPasids = [];
    private readonly List<IommuGroup> _seenGroups = [];
    private readonly Dictionary<PciDevice, IDomain> _partial = new(ReferenceEqualityComparer.Instance);

    // Bridge-owned requester IDs whose context entry a removed device cleared while others behind the bridge still use it.
    // 5.15 does the same (drivers/iommu/intel/iommu.c:4467, domain_context_clear: "intel-iommu lacks any sort of reference
    // counting for the users of dependent devices ... unbinding the driver from any one of them will possibly leave the
    // others unable to operate"); the entry is written again when a device behind the bridge is probed.
    private readonly HashSet<ushort> _aliasCleared = [];
    private readonly List<ulong> _probeIovas = [];

    // What the property's own successful calls made each container's backend hold (the accounting oracle).
    private readonly Dictionary<VfioContainer, VfioShadow> _vfioShadow = new(ReferenceEqualityComparer.Instance);

    // Vendor pins a released backend kept (5.15 vfio_remove_dma WARNs and never puts them), and the locked_vm they keep.
    private long _leakedPins;

    // The backends the property, as the mdevs' vendor driver, registered its DMA-unmap notifier with.
    private readonly HashSet<(MdevDevice, VfioIommuType1)> _vendorNotifiers = [];
    private readonly Dictionary<ProcessAddressSpace, long> _leakedLocked = new(ReferenceEqualityComparer.Instance);
    private readonly Dictionary<ProcessAddressSpace, long> _ambiguousLocked = new(ReferenceEqualityComparer.Instance);
    private MdevType? _siovType;

    public ChaosBed(ChaosConfig config, Dictionary<ChaosKind, long> coverage, Dictionary<string, long>? events = null)
    {
        Config = config;
        _coverage = coverage;
        _events = events ?? [];
        _platform = new Platform(new PlatformOptions { MemorySize = 8 * Sizes.GiB, TableMemorySize = 32 * Sizes.MiB, DefaultDomainType = config.DefaultDomain });
        _iommu = _platform.Iommu;
        _pci = _platform.AddPciBus();
        _units = new VtdUnit[config.Units];
        for (int i = 0; i < _units.Length; i++)
        {
            _units[i] = new VtdUnit(_platform.Memory, config.Vtd);
        }

        if (_units.Length == 1)
        {
            _pci.AddDmaRemapper(_units[0], includeAll: true);
        }
        else
        {
            _pci.AddDmaRemapper(_units[0], includeAll: false, s_specs[0].Address, s_specs[2].Address);
            _pci.AddDmaRemapper(_units[1], includeAll: true);
        }

        _driver = new IntelIommu(_platform, new IntelIommuOptions { FirstLevel = config.Policy }, _units);
        _pci.SetIommuOps(_driver).ThrowIfError();
        _pages = HostPageAllocator.ForPlatform(_platform, 4 * Sizes.GiB, 64 * Sizes.MiB);
        _vfio = new VfioCore(_platform, new VfioType1Options { AllowUnsafeInterrupts = true });
        _mdev = new MdevCore(_platform);
        _mtty = new MttyDriver(_platform.Memory, _vfio);
        _mtty.Register(_mdev).ThrowIfError();
        _uacce = new UacceCore(_platform);
        foreach (PciDeviceSpec b in s_bridges)
        {
            _ = _pci.AddDevice(b);
        }

        for (int i = 0; i < Devices; i++)
        {
            AddDevice(i);
        }

        _probeIovas.AddRange(s_iovas[..3]);
        _probeIovas.AddRange(s_vfioIovas[..1]);
        SpawnProcess();
    }

    public ChaosConfig Config { get; }

    public Platform Platform => _platform;

    /// <summary>Steps run.</summary>
    public int Executed { get; private set; }

    public void Dispose() => _platform.Dispose();

    /// <summary>Runs the steps, checking DMA isolation after each; throws <see cref="IsolationViolationException"/> at the first violation.</summary>
    public void Run(IReadOnlyList<ChaosOp> ops)
    {
        for (int i = 0; i < ops.Count; i++)
        {
            try
            {
                List<PciDevice> behindBridge = _devs.FindAll(x => x.Bus is not null && x.DmaRequesterId != x.RequesterId && x.IommuPriv is DeviceDomainInfo);
                Step(ops[i]);
                Executed++;
                NoteAliasClears(behindBridge);
                CheckDma();
                CheckDmaBookkeeping();
                CheckGroups();
                CheckPinAccounting();
            }
            catch (Exception e) when (e is IsolationViolationException or UndocumentedException)
            {
                throw new IsolationViolationException($"[{Config}] step #{i} {ops[i]}: {e.Message}", e);
            }
        }
    }

    // A device behind the bridge that the step took out of the driver while it stayed on the bus (iommu_domain_free of a
    // domain it still held, directly or inside VFIO's group close; domain_exit → dmar_remove_one_dev_info) cleared the
    // bridge's requester ID too: domain_context_clear clears every DMA alias, as on a hot removal (see _aliasCleared).
    private void NoteAliasClears(List<PciDevice> attachedBefore)
    {
        foreach (PciDevice x in attachedBefore)
        {
            if (x.Bus is not null && x.IommuPriv is not DeviceDomainInfo)
            {
                _ = _aliasCleared.Add(x.DmaRequesterId);
            }
        }
    }

    /// <summary>Closes, unbinds, detaches, frees and removes everything, then counts the frames still allocated.</summary>
    public long TearDown()
    {
        foreach ((UacceDevice _, ProcessAddressSpace mm, int fd) in _queues)
        {
            _ = Call("Iommu.Mm.ProcessAddressSpace.Close", () => mm.Close(fd));
        }

        foreach (MdevDeviceFile f in _mdevFiles)
        {
            Call("Vfio.Mdev.MdevDeviceFile.Dispose", f.Dispose);
        }

        foreach (VfioDeviceFile f in _deviceFiles)
        {
            _ = Call("Vfio.Type1.VfioDeviceFile.Close", f.Close);
        }

        foreach (VfioGroup g in _groups)
        {
            _ = Call("Vfio.Type1.VfioGroup.Close", g.Close);
            CheckPinAccounting(); // one group leaves at a time: which domain left last decides what a leaked pin keeps
        }

        foreach (VfioContainer c in _containers)
        {
            _ = Call("Vfio.Type1.VfioContainer.Close", c.Close);
        }

        foreach (MdevDevice m in _mdevs)
        {
            _ = Call("Vfio.Mdev.MdevCore.Remove", () => _mdev.Remove(m));
        }

        foreach (UacceDevice u in _uacceDevs)
        {
            Call("Uacce.UacceCore.Remove", () => _uacce.Remove(u));
        }

        foreach (IommuSva h in _sva)
        {
            Call("Iommu.IommuCore.SvaUnbindDevice", () => _iommu.SvaUnbindDevice(h));
        }

        foreach ((PciDevice dev, ulong handle, ulong _, DmaRange? _) in _dmaHandles)
        {
            Call("Iommu.IommuCore.DmaUnmapPage", () => _iommu.DmaUnmapPage(dev, handle, Page, DmaDataDirection.Bidirectional));
        }

        foreach ((PciDevice dev, Scatterlist[] sg, _) in _sgLists)
        {
            Call("Iommu.IommuCore.DmaUnmapSg", () => _iommu.DmaUnmapSg(dev, sg, DmaDataDirection.Bidirectional));
        }

        foreach ((PciDevice dev, ulong cpu, ulong size, ulong handle) in _coherent)
        {
            Call("Iommu.IommuCore.DmaFreeCoherent", () => _iommu.DmaFreeCoherent(dev, size, cpu, handle));
        }

        // With every container, device file and mdev closed no page is pinned and no process has locked memory left, but
        // for the vendor pins the property's mdevs never unpinned (5.15 keeps them, see Shadow).
        foreach (VfioContainer c in _containers)
        {
            _ = Shadow(c);
        }

        if (_pages.TotalPins != _leakedPins)
        {
            throw new IsolationViolationException($"[{Config}] after closing every container and mdev {_pages.TotalPins} page pins are left, {_leakedPins} leaked vendor pins expected");
        }

        foreach ((ProcessAddressSpace mm, ulong _) in _procs)
        {
            long want = _leakedLocked.GetValueOrDefault(mm);
            if (!mm.Exited && (mm.LockedVm < want || mm.LockedVm > want + _ambiguousLocked.GetValueOrDefault(mm)))
            {
                throw new IsolationViolationException($"[{Config}] after closing every container and mdev {mm.Name} has {mm.LockedVm} locked pages");
            }
        }

        _platform.Clock.Advance(TimeSpan.FromSeconds(1)); // the flush queues' timers
        foreach (IDomain d in _domains)
        {
            if (_freed.Contains(d))
            {
                continue;
            }

            foreach (PciDevice dev in _devs)
            {
                foreach (uint p in s_pasids)
                {
                    Call("Iommu.IommuCore.DetachDevicePasid", () => _iommu.DetachDevicePasid(d, dev, p));
                }

                Call("Iommu.IommuCore.DetachDeviceAux", () => _iommu.DetachDeviceAux(d, dev));
                Call("Iommu.IommuCore.DetachDevice", () => _iommu.DetachDevice(d, dev));

                // iommu_detach_device refuses a group of several devices (a function re-added to a group attached to d).
                if (dev.IommuGroup is { } group && ReferenceEquals(group.Domain, d))
                {
                    Call("Iommu.IommuCore.DetachGroup", () => _iommu.DetachGroup(d, group));
                }
            }

            // A group none of the property's devices is in any more can still use d: the bridges' group, attached with
            // iommu_attach_group before both devices behind the bridge left it. iommu_domain_free refuses a domain a
            // group uses (a caller bug in the kernel), so it goes back to its default domain first.
            foreach (IommuGroup g in _iommu.Groups)
            {
                if (ReferenceEquals(g.Domain, d))
                {
                    Call("Iommu.IommuCore.DetachGroup", () => _iommu.DetachGroup(d, g));
                }
            }

            Call("Iommu.IommuCore.DomainFree", () => _iommu.DomainFree(d));
            _freed.Add(d);
        }

        foreach (PciDevice dev in _devs)
        {
            if (dev.Bus is not null)
            {
                Call("Iommu.Devices.Bus.RemoveDevice", () => _pci.RemoveDevice(dev));
            }
        }

        // The bridge last, then its port: the group the bridge shares with its children (and its default domain's tables) goes with it.
        foreach (PciDeviceSpec b in s_bridges.Reverse())
        {
            if (_pci.Find(b.Address) is PciDevice bd)
            {
                Call("Iommu.Devices.Bus.RemoveDevice", () => _pci.RemoveDevice(bd));
            }
        }

        foreach ((ProcessAddressSpace mm, ulong _) in _procs)
        {
            if (!mm.Exited)
            {
                Call("Iommu.Mm.ProcessAddressSpace.Exit", mm.Exit);
            }
        }

        _platform.Clock.Advance(TimeSpan.FromSeconds(1));
        return _platform.Frames.LiveFrames;
    }

    private static T Pick<T>(List<T> list, int index) => list[index % list.Count];

    private void Step(ChaosOp op)
    {
        CollectionsMarshalCount(op.Kind);
        PciDevice dev = Pick(_devs, op.A);
        switch (op.Kind)
        {
            case ChaosKind.DomainAlloc:
                if (Call("Iommu.IommuCore.DomainAlloc", () => _iommu.DomainAlloc(_pci)) is IDomain nd)
                {
                    _domains.Add(nd);
                }

                break;
            case ChaosKind.DomainFree when _domains.Count > 0:
            {
                IDomain d = Pick(_domains, op.B);
                if (Try("Iommu.IommuCore.DomainFree", () => _iommu.DomainFree(d)))
                {
                    _freed.Add(d);
                }

                break;
            }

            case ChaosKind.Attach when _domains.Count > 0:
                _ = Call("Iommu.IommuCore.AttachDevice", () => _iommu.AttachDevice(Pick(_domains, op.B), dev));
                break;
            case ChaosKind.Detach when _domains.Count > 0:
                Call("Iommu.IommuCore.DetachDevice", () => _iommu.DetachDevice(Pick(_domains, op.B), dev));
                break;
            case ChaosKind.Map when _domains.Count > 0:
            {
                // A 2 MiB map may land over live 4K maps (a caller bug the driver must still flush: switch_to_super_page).
                ulong iova = s_iovas[op.A % s_iovas.Length];
                ulong size = Page;
                if (op.C % 4 == 3)
                {
                    (iova, size) = (iova & ~(2 * Sizes.MiB - 1), 2 * Sizes.MiB);
                }

                ulong pa = s_pas[op.C % s_pas.Length] & ~(size - 1);
                _ = Call("Iommu.IommuCore.Map", () => _iommu.Map(Pick(_domains, op.B), iova, pa, size, IommuProt.Read | IommuProt.Write));
                NoteIova(iova);
                break;
            }

            case ChaosKind.Unmap when _domains.Count > 0:
                _ = Call("Iommu.IommuCore.Unmap", () => _iommu.Unmap(Pick(_domains, op.B), s_iovas[op.A % s_iovas.Length], op.C % 2 == 0 ? Page : 2 * Sizes.MiB));
                break;
            case ChaosKind.IovaToPhys when _domains.Count > 0:
                _ = Call("Iommu.IommuCore.IovaToPhys", () => _iommu.IovaToPhys(Pick(_domains, op.B), s_iovas[op.C % s_iovas.Length]));
                break;
            case ChaosKind.AuxEnable:
                _ = Call("Iommu.IommuCore.SetDevAttr", () => _iommu.SetDevAttr(dev, IommuDevAttr.AuxdEnable));
                break;
            case ChaosKind.AuxDisable:
                _ = Call("Iommu.IommuCore.SetDevAttr", () => _iommu.SetDevAttr(dev, IommuDevAttr.AuxdDisable));
                break;
            case ChaosKind.AuxAttach when _domains.Count > 0:
            {
                IDomain d = Pick(_domains, op.B);
                if (Call("Iommu.IommuCore.AttachDeviceAux", () => _iommu.AttachDeviceAux(d, dev)) == Errno.None)
                {
                    int p = Call("Iommu.IommuCore.AuxGetPasid", () => _iommu.AuxGetPasid(d, dev));
                    if (p <= 0)
                    {
                        throw new IsolationViolationException($"aux attach succeeded, aux_get_pasid = {p}");
                    }

                    NotePasid((uint)p);
                }

                break;
            }

            case ChaosKind.AuxDetach when _domains.Count > 0:
                Call("Iommu.IommuCore.DetachDeviceAux", () => _iommu.DetachDeviceAux(Pick(_domains, op.B), dev));
                break;
            case ChaosKind.PasidAttach when _domains.Count > 0:
            {
                uint p = s_pasids[op.C % s_pasids.Length];
                if (Call("Iommu.IommuCore.AttachDevicePasid", () => _iommu.AttachDevicePasid(Pick(_domains, op.B), dev, p)) == Errno.None)
                {
                    NotePasid(p);
                }

                break;
            }

            case ChaosKind.PasidDetach when _domains.Count > 0:
                Call("Iommu.IommuCore.DetachDevicePasid", () => _iommu.DetachDevicePasid(Pick(_domains, op.B), dev, s_pasids[op.C % s_pasids.Length]));
                break;
            case ChaosKind.DmaMap:
                _ = DmaMapPage(dev, s_pas[op.C % s_pas.Length] + 0x10_0000);
                break;
            case ChaosKind.DmaUnmap when _dmaHandles.Count > 0:
            {
                int i = op.B % _dmaHandles.Count;
                DmaUnmapPage(i, op.C % 4 == 0 ? dev : _dmaHandles[i].Dev); // sometimes another device's handle
                break;
            }

            case ChaosKind.ClockAdvance:
                _platform.Clock.Advance(TimeSpan.FromMilliseconds(1 + (op.C % 20)));
                break;
            case ChaosKind.Spawn:
                if (_procs.Count < 6)
                {
                    SpawnProcess();
                }

                break;
            case ChaosKind.Mmap:
            {
                ProcessAddressSpace mm = Pick(_procs, op.B).Mm;
                if (!mm.Exited)
                {
                    _ = Call("Iommu.Mm.ProcessAddressSpace.Mmap", () => mm.Mmap(Page * 4));
                }

                break;
            }

            case ChaosKind.Munmap:
            {
                (ProcessAddressSpace mm, ulong buf) = Pick(_procs, op.B);
                if (!mm.Exited)
                {
                    Call("Iommu.Mm.ProcessAddressSpace.Munmap", () => mm.Munmap(buf + ((ulong)(op.C % 8) * Page), Page));
                }

                break;
            }

            case ChaosKind.Exit:
            {
                ProcessAddressSpace mm = Pick(_procs, op.B).Mm;
                if (!mm.Exited)
                {
                    Call("Iommu.Mm.ProcessAddressSpace.Exit", mm.Exit);
                }

                break;
            }

            case ChaosKind.SvaBind:
            {
                // Half the time a live device that can bind at all (the others only show the refusals).
                List<PciDevice> capable = op.C % 2 == 0 ? _devs.FindAll(d => d.Bus is not null && d.PasidWidth > 0) : [];
                BindSva(capable.Count > 0 ? Pick(capable, op.A) : dev, Pick(_procs, op.B).Mm);
                break;
            }

            case ChaosKind.SvaUnbind when _sva.Count > 0:
            {
                // Half the time a handle still bound (most handles of a long run are unbound already).
                List<IommuSva> bound = op.A % 2 == 0 ? _sva.FindAll(x => SvaPasid(x) is not 0 and not IommuCore.PasidInvalid) : [];
                UnbindSva(bound.Count > 0 ? Pick(bound, op.B) : Pick(_sva, op.B), op);
                break;
            }

            case ChaosKind.VfioRegister:
            {
                Device target = op.C % 3 == 0 && _mdevs.Count > 0 ? Pick(_mdevs, op.B) : dev;
                _ = Call("Vfio.Type1.VfioCore.RegisterDevice", () => _vfio.RegisterDevice(target));
                break;
            }

            case ChaosKind.ContainerOpen:
                if (_containers.Count < 6)
                {
                    (ProcessAddressSpace mm, ulong buf) = Pick(_procs, op.B);
                    if (Call("Vfio.Type1.VfioCore.OpenContainer", () => _vfio.OpenContainer(mm, out _)) is VfioContainer c)
                    {
                        _containers.Add(c);
                        _containerBuf[c] = buf;
                    }
                }

                break;
            case ChaosKind.GroupOpen:
            {
                Device target = op.C % 3 == 0 && _mdevs.Count > 0 ? Pick(_mdevs, op.B) : dev;
                int id = target.IommuGroup?.Id ?? 0;
                ProcessAddressSpace mm = Pick(_procs, op.B).Mm;
                VfioGroup? g = null;
                if (Call("Vfio.Type1.VfioCore.OpenGroup", () => _vfio.OpenGroup(mm, id, out g, out _)) == Errno.None)
                {
                    _groups.Add(g!);
                }

                break;
            }

            case ChaosKind.GroupSetContainer when _groups.Count > 0 && _containers.Count > 0:
                _ = Call("Vfio.Type1.VfioGroup.SetContainer", () => Pick(_groups, op.B).SetContainer(Pick(_containers, op.C)));
                break;
            case ChaosKind.GroupUnset when _groups.Count > 0 && !MdevOpenOutsideVfio(Pick(_groups, op.B)):
                _ = Call("Vfio.Type1.VfioGroup.UnsetContainer", Pick(_groups, op.B).UnsetContainer);
                break;
            case ChaosKind.GroupClose when _groups.Count > 0 && !MdevOpenOutsideVfio(Pick(_groups, op.B)):
                _ = Call("Vfio.Type1.VfioGroup.Close", Pick(_groups, op.B).Close);
                break;
            case ChaosKind.SetIommu when _containers.Count > 0:
                _ = Call("Vfio.Type1.VfioContainer.SetIommu", () => Pick(_containers, op.B).SetIommu(op.C % 2 == 0 ? VfioUapi.VFIO_TYPE1v2_IOMMU : VfioUapi.VFIO_TYPE1_IOMMU));
                break;
            case ChaosKind.MapDma when _containers.Count > 0:
                MapDma(Pick(_containers, op.B), s_vfioIovas[op.C % s_vfioIovas.Length], op.A % 8);
                break;
            case ChaosKind.UnmapDma when _containers.Count > 0:
            {
                ulong iova = s_vfioIovas[op.C % s_vfioIovas.Length];
                var u = new VfioIommuType1DmaUnmap(24, 0, iova, Page);
                VfioContainer c = Pick(_containers, op.B);
                VfioShadow shadow = Shadow(c);
                if (Call("Vfio.Type1.VfioContainer.UnmapDma", () => c.UnmapDma(ref u)) == Errno.None && u.Size != 0)
                {
                    _ = shadow.Maps.Remove(iova);
                    _ = shadow.ExternalPins.Remove(iova); // the vendor driver unpinned them when notified, or the unmap failed
                }
                break;
            }

            case ChaosKind.ContainerClose when _containers.Count > 0:
                _ = Call("Vfio.Type1.VfioContainer.Close", Pick(_containers, op.B).Close);
                break;
            case ChaosKind.DeviceFdOpen when _groups.Count > 0:
            {
                VfioGroup g = Pick(_groups, op.B);
                Device target = op.C % 2 == 0 && _mdevs.Count > 0 ? Pick(_mdevs, op.A) : dev;
                ProcessAddressSpace mm = Pick(_procs, op.C).Mm;
                VfioDeviceFile? f = null;
                if (Call("Vfio.Type1.VfioGroup.GetDeviceFd", () => g.GetDeviceFd(mm, target.Name, out f, out _)) == Errno.None)
                {
                    _deviceFiles.Add(f!);
                }

                break;
            }

            case ChaosKind.DeviceFdClose when _deviceFiles.Count > 0:
                _ = Call("Vfio.Type1.VfioDeviceFile.Close", Pick(_deviceFiles, op.B).Close);
                break;
            case ChaosKind.MdevCreate:
                if (_mdevs.Count < 8)
                {
                    MdevType? type = op.C % 2 == 0 ? SiovType() : _mdev.FindParent(_mtty.ParentDevice)!.SupportedTypes[0];
                    MdevDevice? m = null;
                    if (type is not null && Call("Vfio.Mdev.MdevCore.Create", () => _mdev.Create(type, Guid.NewGuid(), out m)) == Errno.None)
                    {
                        _mdevs.Add(m!);
                    }
                }

                break;
            case ChaosKind.MdevRemove when _mdevs.Count > 0:
            {
                // 5.15's remove waits until the device's files are closed (vfio_unregister_group_dev) and its group has
                // left its container (wait_event(group->container_q, !group->container)): user space must let go
                // first, and this property runs one thread, so it does not start a remove that would wait forever.
                MdevDevice m = Pick(_mdevs, op.B);
                if (m.OpenCount == 0 && _groups.Find(g => ReferenceEquals(g.IommuGroup, m.IommuGroup))?.Container is null)
                {
                    _ = Call("Vfio.Mdev.MdevCore.Remove", () => _mdev.Remove(m));
                }

                break;
            }

            case ChaosKind.MdevOpen when _mdevs.Count > 0:
            {
                MdevDevice m = Pick(_mdevs, op.B);
                MdevDeviceFile? f = null;
                if (Call("Vfio.Mdev.MdevDevice.Open", () => m.Open(out f)) == Errno.None)
                {
                    _mdevFiles.Add(f!);
                    if (m.GetIommuDomain() is IDomain ad && m.GetIommuDevice() is Device parent && Call("Iommu.IommuCore.AuxGetPasid", () => _iommu.AuxGetPasid(ad, parent)) is int p and > 0)
                    {
                        NotePasid((uint)p);
                    }
                }

                break;
            }

            case ChaosKind.MdevClose when _mdevFiles.Count > 0:
            {
                MdevDeviceFile f = Pick(_mdevFiles, op.B);
                Call("Vfio.Mdev.MdevDeviceFile.Dispose", f.Dispose);
                _ = _mdevClosed.Add(f);
                break;
            }

            case ChaosKind.MdevPin when _mdevs.Count > 0:
                PinPage(Pick(_mdevs, op.B), s_vfioIovas[op.C % s_vfioIovas.Length]);
                break;
            case ChaosKind.VendorSetup:
                VendorSetup(op);
                break;
            case ChaosKind.MdevUnpin when _mdevs.Count > 0:
            {
                MdevDevice m = Pick(_mdevs, op.B);
                ulong[] user = [(s_vfioIovas[op.C % s_vfioIovas.Length] >> 12)];
                VfioShadow? shadow = PinShadow(m);
                int n = Call("Vfio.Type1.VfioCore.UnpinPages", () => _vfio.UnpinPages(m, user, 1));
                CheckRet(n, "vfio_unpin_pages");
                if (n == 1 && shadow is not null && shadow.ExternalPins.TryGetValue(user[0] << 12, out int refs))
                {
                    // vfio_unpin_page_external: one reference; the page goes (and its charge) with the last.
                    if (refs == 1)
                    {
                        _ = shadow.ExternalPins.Remove(user[0] << 12);
                    }
                    else
                    {
                        shadow.ExternalPins[user[0] << 12] = refs - 1;
                    }
                }
                break;
            }

            case ChaosKind.UacceOpen:
            {
                UacceDevice? u = _uacceDevs.Find(x => x.Parent == dev);
                if (u is null)
                {
                    if (Call("Uacce.UacceCore.Alloc", () => _uacce.Alloc(dev, new UacceInterface("chaos" + _uacceDevs.Count.ToString(CultureInfo.InvariantCulture), op.C % 2 == 0 ? UacceDeviceFlags.Sva : UacceDeviceFlags.None, new BadInputUacceOps()), out u)) != Errno.None)
                    {
                        break;
                    }

                    _uacceDevs.Add(u!);
                    _ = Call("Uacce.UacceCore.Register", () => _uacce.Register(u));
                }

                ProcessAddressSpace mm = Pick(_procs, op.B).Mm;
                int fd = -1;
                if (Call("Uacce.UacceCore.Open", () => _uacce.Open(u!, mm, out fd)) == Errno.None)
                {
                    _queues.Add((u!, mm, fd));
                    if (mm.GetFile(fd) is UacceQueue q && q.Handle is IommuSva qh)
                    {
                        _uacceQueues.Add(q);
                        _svaMm[qh] = mm;
                        NotePasid(q.Pasid);
                    }
                }

                break;
            }

            case ChaosKind.UacceStart when _queues.Count > 0:
            {
                (UacceDevice _, ProcessAddressSpace mm, int fd) = Pick(_queues, op.B);
                if (mm.GetFile(fd) is UacceQueue q)
                {
                    _ = Call("Uacce.UacceQueue.Ioctl", () => q.Ioctl(UacceCommands.StartQ, default));
                }

                break;
            }

            case ChaosKind.UacceClose when _queues.Count > 0:
            {
                (UacceDevice _, ProcessAddressSpace mm, int fd) = Pick(_queues, op.B);
                _ = Call("Iommu.Mm.ProcessAddressSpace.Close", () => mm.Close(fd));
                break;
            }

            case ChaosKind.HotRemove:
                HotRemove(dev);
                break;
            case ChaosKind.ReAdd:
            {
                int slot = op.A % Devices;
                if (_pci.Find(s_specs[slot].Address) is null)
                {
                    AddDevice(slot);
                }

                break;
            }

            case ChaosKind.ReadFaults:
                foreach (DmarFaultRecord r in Call("Iommu.VtD.Driver.IntelIommu.Faults", () => _driver.Faults))
                {
                    _ = r.Reason;
                }

                break;
            case ChaosKind.Export:
                _ = Call("Iommu.VtD.Diagnostics.VtdImageExporter.ExportImage", () => _driver.ExportImage(op.C % _units.Length));
                break;
            case ChaosKind.DmaMapSg:
            {
                // One to three entries, some not page-aligned, some longer than a page; physically apart or adjacent.
                int n = 1 + (op.C % 3);
                var sg = new Scatterlist[n];
                ulong phys = s_pas[op.C % s_pas.Length] + 0x30_0000 + ((ulong)(op.B % 4) * 0x200);
                for (int i = 0; i < n; i++)
                {
                    uint len = (op.B + i) % 3 == 0 ? 0x1800u : 0x1000u - (uint)((op.B % 4) * 0x200);
                    sg[i] = new Scatterlist(phys, len);
                    phys += (op.A + i) % 2 == 0 ? len : 0x5000;
                }

                IDomain? sgDomain = DmaDomainOf(dev);
                int segs = Call("Iommu.IommuCore.DmaMapSg", () => _iommu.DmaMapSg(dev, sg, DmaDataDirection.Bidirectional));
                if (segs <= 0)
                {
                    break;
                }

                CheckDmaAddresses(dev, sg[0].DmaAddress, sg[segs - 1].DmaAddress + sg[segs - 1].DmaLength - sg[0].DmaAddress, dev.DmaMask ?? 0, "dma_map_sg");
                for (int i = 0; i < segs; i++)
                {
                    ForgetStale(dev, sg[i].DmaAddress & ~(Page - 1), ((sg[i].DmaAddress & (Page - 1)) + sg[i].DmaLength + Page - 1) & ~(Page - 1));
                    NoteIova(sg[i].DmaAddress);
                }

                // The first segment starts with the first entry's buffer, wherever the device's DMA goes.
                ExpectDmaAt(dev, sg[0].DmaAddress, sg[0].Phys, "dma_map_sg segment 0");
                _sgLists.Add((dev, sg, sgDomain is null ? null : NoteDmaMap(dev, sgDomain, sg[0].DmaAddress & ~(Page - 1), SgLayout(sg[0].DmaAddress & ~(Page - 1), sg), "dma_map_sg")));
                break;
            }

            case ChaosKind.DmaUnmapSg when _sgLists.Count > 0:
            {
                int i = op.B % _sgLists.Count;
                DmaUnmapSg(i, op.C % 4 == 0 ? dev : _sgLists[i].Dev); // sometimes another device: refused unless the list names one of its mappings
                break;
            }

            case ChaosKind.DmaAllocCoherent when _coherent.Count < 8:
            {
                ulong size = op.C % 3 == 0 ? 0x1800 : Page * (ulong)(1 + (op.C % 2));
                ulong handle = 0;
                IDomain? cd = DmaDomainOf(dev);
                ulong cpu = Call("Iommu.IommuCore.DmaAllocCoherent", () => _iommu.DmaAllocCoherent(dev, size, out handle));
                if (cpu == 0)
                {
                    break;
                }

                if (_platform.Memory.ReadUInt64(cpu) != 0 || _platform.Memory.ReadUInt64(cpu + size - 8) != 0)
                {
                    throw new IsolationViolationException($"{dev.Name}: dma_alloc_coherent returned a buffer at {Hex(cpu)} that is not zeroed");
                }

                CheckDmaAddresses(dev, handle, size, dev.CoherentDmaMask, "dma_alloc_coherent");
                ExpectDmaAt(dev, handle, cpu, "dma_alloc_coherent");
                ForgetStale(dev, handle, size);
                NoteIova(handle);
                _coherent.Add((dev, cpu, size, handle));
                _coherentDomain[cpu] = dev.IommuGroup?.DefaultDomain; // freed later, perhaps after dev left its group
                _coherentRange[cpu] = cd is null ? null : NoteDmaMap(dev, cd, handle, [.. Enumerable.Range(0, (int)((size + Page - 1) / Page)).Select(k => (handle + ((ulong)k * Page), cpu + ((ulong)k * Page)))], "dma_alloc_coherent");
                break;
            }

            case ChaosKind.DmaFreeCoherent when _coherent.Count > 0:
            {
                int i = op.B % _coherent.Count;
                (PciDevice owner, ulong cpu, ulong size, ulong handle) = _coherent[i];
                PciDevice target = op.C % 4 == 0 ? dev : owner; // another device's buffer: refused (ArgumentException), nothing freed
                if (Try("Iommu.IommuCore.DmaFreeCoherent", () => _iommu.DmaFreeCoherent(target, size, cpu, handle)))
                {
                    if (target != owner)
                    {
                        throw new IsolationViolationException($"dma_free_coherent freed {owner.Name}'s buffer {Hex(cpu)} when {target.Name} named it");
                    }

                    // dma_free_coherent unmaps the buffer in the domain it was mapped in, also after owner left it; when a
                    // misdirected unmap took the buffer's range already, only the pages go back (whatever maps that IOVA
                    // now, another mapping that reused it, stays).
                    if (_coherentRange[cpu] is DmaRange own && IsLive(own))
                    {
                        RemoveRange(own);
                    }

                    _coherentDomain.Remove(cpu);
                    _coherentRange.Remove(cpu);
                    _coherent.RemoveAt(i);
                }

                break;
            }

            case ChaosKind.DmaSetMask:
            {
                Device target = op.C % 5 == 4 && _mdevs.Count > 0 ? Pick(_mdevs, op.B) : dev;
                ulong mask = s_masks[op.B % s_masks.Length];
                _ = op.C % 2 == 0
                    ? Call("Iommu.IommuCore.DmaSetMask", () => _iommu.DmaSetMask(target, mask))
                    : Call("Iommu.IommuCore.DmaSetMaskAndCoherent", () => _iommu.DmaSetMaskAndCoherent(target, mask));
                break;
            }

            case ChaosKind.GroupRemove:
                // iommu_group_remove_device of a live device (now and then one in no group: a no-op).
                if (dev.Bus is not null && (dev.IommuGroup is not null || op.C % 4 == 0))
                {
                    Call("Iommu.IommuCore.GroupRemoveDevice", () => _iommu.GroupRemoveDevice(dev));
                    _ = _leftGroup.Add(dev);
                }

                break;
            case ChaosKind.GroupAdd:
                GroupAdd(dev, op);
                break;
            case ChaosKind.DmaMove:
                DmaMove(op);
                break;
            case ChaosKind.GroupAttach when _domains.Count > 0:
                GroupAttach(Pick(_domains, op.B), PickGroup(dev, op));
                break;
            case ChaosKind.GroupDetach when _domains.Count > 0:
                if (PickGroup(dev, op) is IommuGroup dg)
                {
                    // iommu_detach_group does not check that the domain is the group's (nor does iommu_detach_device).
                    Call("Iommu.IommuCore.DetachGroup", () => _iommu.DetachGroup(Pick(_domains, op.B), dg));
                }

                break;
            case ChaosKind.UnmapFast when _domains.Count > 0:
                UnmapFast(Pick(_domains, op.B), op);
                break;
            default:
                break; // a step with no candidate target yet
        }
    }

    // The group a group-wide step names: the device's own, now and then one the run saw before (released ones too).
    private IommuGroup? PickGroup(PciDevice dev, ChaosOp op)
    {
        if (dev.IommuGroup is IommuGroup g && !_seenGroups.Contains(g))
        {
            _seenGroups.Add(g);
        }

        return op.C % 4 == 0 && _seenGroups.Count > 0 ? Pick(_seenGroups, op.C / 4) : dev.IommuGroup;
    }

    /// <summary>
    /// iommu_attach_group: once it succeeds every device of the group uses the domain, in the core and in the driver
    /// (CheckDma then checks their DMA reaches only what it maps). Groups of several devices (the multifunction pair,
    /// the bridge's) reach an unmanaged domain only this way.
    /// </summary>
    private void GroupAttach(IDomain d, IommuGroup? g)
    {
        if (g is null)
        {
            return;
        }

        if (Call("Iommu.IommuCore.AttachGroup", () => _iommu.AttachGroup(d, g)) != Errno.None)
        {
            // 5.15 __iommu_attach_group (drivers/iommu/iommu.c:2323) does not unwind: the devices attached before the one
            // that refused (an aux-enabled device takes no unmanaged domain: intel/iommu.c:4828, -EPERM) stay attached to
            // d in the driver while group->domain is unchanged (later kernels unwind). Their DMA goes through d from then on.
            foreach (Device m in g.Devices)
            {
                if (m is PciDevice pm && !ReferenceEquals(g.Domain, d) && pm.IommuPriv is DeviceDomainInfo info && ReferenceEquals(info.Domain, d))
                {
                    _partial[pm] = d;
                    Event("iommu_attach_group failed part way");
                }
            }

            return;
        }

        // A group whose last device left: 5.15 __iommu_attach_group walks no device and succeeds (on a group freed
        // meanwhile that would be a use after free; the model's object stays and nothing uses it). Vacuous, harmless.
        if (g.IsReleased && g.Devices.Count != 0)
        {
            throw new IsolationViolationException($"{g} was released but still lists {g.Devices.Count} devices");
        }

        Event(g.Devices.Count > 1 ? "iommu_attach_group of a group of several devices" : "iommu_attach_group");
        foreach (Device m in g.Devices)
        {
            if (!ReferenceEquals(_iommu.GetDomainForDev(m), d) || (m.IommuPriv is DeviceDomainInfo info && !ReferenceEquals(info.Domain, d)))
            {
                throw new IsolationViolationException($"iommu_attach_group of {g} succeeded, but {m.Name} is not attached to the domain");
            }
        }
    }

    /// <summary>
    /// iommu_unmap_fast of one or two ranges into one gather, then iommu_iotlb_sync: what was unmapped translates no
    /// more in the page table, and (CheckDma, after this step) no device reaches it through a stale IOTLB entry.
    /// </summary>
    private void UnmapFast(IDomain d, ChaosOp op)
    {
        var gather = default(IommuIotlbGather);
        var ranges = new List<(ulong Iova, ulong Size)>();
        foreach (int k in op.C % 3 == 0 ? new[] { op.A, op.C } : [op.A])
        {
            ulong iova = s_iovas[k % s_iovas.Length];
            ulong size = op.C % 2 == 0 ? Page : 2 * Sizes.MiB;
            ulong n = Call("Iommu.IommuCore.UnmapFast", () => _iommu.UnmapFast(d, iova, size, ref gather));
            if (n > 0)
            {
                ranges.Add((iova, n));
            }
        }

        Call("Iommu.IommuCore.IotlbSync", () => _iommu.IotlbSync(d, ref gather));
        foreach ((ulong iova, ulong n) in ranges)
        {
            if (!_freed.Contains(d) && Call("Iommu.IommuCore.IovaToPhys", () => _iommu.IovaToPhys(d, iova)) is ulong pa and not 0)
            {
                throw new IsolationViolationException($"iommu_unmap_fast unmapped {Hex(n)} bytes at {Hex(iova)}, iova_to_phys still gives {Hex(pa)}");
            }
        }
    }

    private void CollectionsMarshalCount(ChaosKind kind) => _coverage[kind] = _coverage.GetValueOrDefault(kind) + 1;

    private void Event(string what) => _events[what] = _events.GetValueOrDefault(what) + 1;

    private IommuSva? BindSva(PciDevice dev, ProcessAddressSpace mm)
    {
        _ = Call("Iommu.IommuCore.DevEnableFeature", () => _iommu.DevEnableFeature(dev, IommuDevFeature.Iopf));
        _ = Call("Iommu.IommuCore.DevEnableFeature", () => _iommu.DevEnableFeature(dev, IommuDevFeature.Sva));
        IommuSva? handle = null;
        if (Call("Iommu.IommuCore.SvaBindDevice", () => _iommu.SvaBindDevice(dev, mm, null, out handle)) != Errno.None)
        {
            return null;
        }

        _sva.Add(handle!);
        _svaMm[handle!] = mm;
        NotePasid(_iommu.SvaGetPasid(handle!));
        return handle;
    }

    /// <summary>
    /// iommu_sva_unbind_device, with the device's DMA through the bind's PASID just before (so the IOTLB holds the
    /// process's translations under that PASID) and after: once no bind of the device holds the PASID, its DMA with it
    /// reaches none of the old process's pages. Half the time another process is bound to the device at once: 5.15's
    /// allocator hands the lowest free PASID out again, so the new bind usually gets the same number, and the oracle
    /// (<see cref="CheckSvaDma"/>) then finds any translation the unbind left in the IOTLB (intel_pasid_tear_down_entry's
    /// PASID-based IOTLB flush, drivers/iommu/intel/pasid.c).
    /// </summary>
    private void UnbindSva(IommuSva h, ChaosOp op)
    {
        uint pasid = SvaPasid(h);
        var dev = (PciDevice)h.Device;
        ProcessAddressSpace mm = _svaMm[h];
        bool live = pasid is not 0 and not IommuCore.PasidInvalid && dev.Bus is not null && !mm.Exited;
        ulong buf = _procs.Find(p => p.Mm == mm).Buf;
        Span<byte> b = stackalloc byte[8];
        var old = new List<ulong>();
        if (live)
        {
            for (ulong va = buf; va < buf + (2 * Page); va += Page)
            {
                _ = dev.DmaRead(pasid, va, b); // warm the IOTLB (and the device TLB) with the process's translation
                if (mm.TryTranslate(va, out ulong pfn))
                {
                    old.Add(pfn << 12);
                }
            }
        }

        Call("Iommu.IommuCore.SvaUnbindDevice", () => _iommu.SvaUnbindDevice(h));
        if (!live || _sva.Concat(_uacceQueues.Select(q => q.Handle).OfType<IommuSva>()).Any(x => x.Device == dev && SvaPasid(x) == pasid))
        {
            return; // another bind of the same process and device still holds the PASID
        }

        foreach (ulong va in SvaProbeVas())
        {
            DmaResult r = dev.DmaRead(pasid, va, b);
            if (r.IsOk && old.Contains(r.Address & ~(Page - 1)))
            {
                throw new IsolationViolationException($"{dev.Name}: after unbinding {mm.Name}, DMA with its PASID {pasid} at {Hex(va)} still reached its page {Hex(r.Address)}");
            }
        }

        if (op.C % 2 == 0)
        {
            // Another live process binds the device: the PASID's new owner, whose pages the next CheckDma expects. One
            // with no PASID yet gets the lowest free number, the one just freed when no other bind of mm holds it.
            IommuSva[] binds = [.. _sva.Concat(_uacceQueues.Select(q => q.Handle).OfType<IommuSva>()).Where(x => SvaPasid(x) is not 0 and not IommuCore.PasidInvalid)];
            (ProcessAddressSpace Mm, ulong Buf) next = _procs.Find(p => p.Mm != mm && !p.Mm.Exited && !binds.Any(x => x.Mm == p.Mm));
            if (next.Mm is null && _procs.Count < 6)
            {
                SpawnProcess();
                next = _procs[^1];
            }

            if (next.Mm is not null && BindSva(dev, next.Mm) is IommuSva nh && _iommu.SvaGetPasid(nh) == pasid)
            {
                Event(old.Count > 0 ? "SVA PASID handed to another process after DMA" : "SVA PASID handed to another process");
            }
        }
    }

    /// <summary>What the property's calls made one container's backend hold: its MAP_DMA pages and its vendor pins.</summary>
    private sealed class VfioShadow
    {
        public VfioIommuType1? Backend { get; set; }

        public HashSet<ulong> Maps { get; } = [];

        /// <summary>vfio_pin_pages references by IOVA (one page pin per IOVA, however many references).</summary>
        public Dictionary<ulong, int> ExternalPins { get; } = [];

        /// <summary>Whether the backend had an IOMMU domain when last checked (then every mapped page is pinned and charged).</summary>
        public bool PinsAll { get; set; }

        /// <summary>Whether it also had the external (vendor-isolated mdev) domain then.</summary>
        public bool HadExternal { get; set; }
    }

    // The container's shadow, started anew when its backend changed: a released backend (its last group left) unmapped
    // and unpinned everything; vendor pins it still had stay pinned (5.15 vfio_remove_dma: WARN_ON(!RB_EMPTY_ROOT(&dma->
    // pfn_list)), never put), and their locked_vm charge stays unless an IOMMU domain's unpin took it (vfio_unmap_unpin).
    private VfioShadow Shadow(VfioContainer c)
    {
        if (!_vfioShadow.TryGetValue(c, out VfioShadow? shadow))
        {
            _vfioShadow[c] = shadow = new VfioShadow { Backend = c.Backend };
        }
        else if (!ReferenceEquals(shadow.Backend, c.Backend))
        {
            int leaked = shadow.ExternalPins.Keys.Count(shadow.Maps.Contains);
            _leakedPins += leaked;
            if (!shadow.PinsAll && leaked > 0)
            {
                _leakedLocked[c.Owner] = _leakedLocked.GetValueOrDefault(c.Owner) + leaked;
            }
            else if (shadow.HadExternal && leaked > 0)
            {
                // Both kinds of group left in one step (a process exit closes all its files): whether the IOMMU domain
                // left first (vfio_iommu_unmap_unpin_reaccount charges the vendor pins, and locked_vm keeps them) or last
                // is not visible here, so either count is right from now on.
                _ambiguousLocked[c.Owner] = _ambiguousLocked.GetValueOrDefault(c.Owner) + leaked;
            }

            shadow.Backend = c.Backend;
            shadow.Maps.Clear();
            shadow.ExternalPins.Clear();
            shadow.PinsAll = false;
        }

        return shadow;
    }

    // The shadow of the container an mdev's vfio_pin_pages goes to: its VFIO group's container (null: none, the call fails).
    private VfioShadow? PinShadow(MdevDevice m)
    {
        VfioContainer? c = _groups.Find(g => ReferenceEquals(g.IommuGroup, m.IommuGroup))?.Container;
        return c is null ? null : Shadow(c);
    }

    /// <summary>
    /// The pinned pages and each live process's locked_vm, derived from what the property did, against what the
    /// library reports, after every step. Per container (vfio_iommu_type1.c, 5.15): with an IOMMU domain every mapped
    /// page is pinned once for the domains and charged once (vfio_pin_pages_remote skips a page a vfio_pfn already
    /// charged); without one a mapping pins nothing and each externally pinned page is charged once
    /// (vfio_pin_page_external, do_accounting); each externally pinned page holds one more page pin however many
    /// references vfio_pin_pages took. The backend's mappings are the IOVAs the property mapped and did not unmap.
    /// </summary>
    private void CheckPinAccounting()
    {
        foreach (VfioContainer c in _containers)
        {
            _ = Shadow(c); // a backend released by this step: its leaked vendor pins first
        }

        long pins = _leakedPins;
        var locked = new Dictionary<ProcessAddressSpace, long>(_leakedLocked, ReferenceEqualityComparer.Instance);
        foreach (VfioContainer c in _containers)
        {
            VfioShadow shadow = Shadow(c);
            if (shadow.Backend is not VfioIommuType1 backend)
            {
                continue;
            }

            shadow.PinsAll = backend.Domains.Count > 0;
            shadow.HadExternal = backend.HasExternalDomain;
            IReadOnlyList<VfioDma> dmas = backend.Mappings;
            if (dmas.Count != shadow.Maps.Count || dmas.Any(d => d.Size != Page || !shadow.Maps.Contains(d.Iova)))
            {
                throw new IsolationViolationException($"container {c.Id}: the backend maps [{string.Join(", ", dmas.Select(d => Hex(d.Iova) + "+" + Hex(d.Size)))}], the property mapped [{string.Join(", ", shadow.Maps.Select(Hex))}]");
            }

            foreach (ulong iova in shadow.Maps)
            {
                bool external = shadow.ExternalPins.ContainsKey(iova);
                pins += (shadow.PinsAll ? 1 : 0) + (external ? 1 : 0);
                if (shadow.PinsAll || external)
                {
                    locked[c.Owner] = locked.GetValueOrDefault(c.Owner) + 1;
                }
            }
        }

        if (_pages.TotalPins != pins)
        {
            throw new IsolationViolationException($"{_pages.TotalPins} page pins, the property's maps and vfio_pin_pages account for {pins}" + string.Concat(_containers.Select(c => $"; container {c.Id} (backend {(c.Backend is null ? "none" : c.Backend.Domains.Count + " domains, " + c.Backend.Mappings.Count + " maps, " + c.Backend.Mappings.Sum(d => d.ExternalPinCount) + " vendor-pinned")}): shadow maps {Shadow(c).Maps.Count}, vendor pins {Shadow(c).ExternalPins.Count}")));
        }

        foreach ((ProcessAddressSpace mm, ulong _) in _procs)
        {
            long want = locked.GetValueOrDefault(mm);
            if (!mm.Exited && (mm.LockedVm < want || mm.LockedVm > want + _ambiguousLocked.GetValueOrDefault(mm)))
            {
                throw new IsolationViolationException($"{mm.Name}: locked_vm {mm.LockedVm} pages, the property's maps and vfio_pin_pages account for {locked.GetValueOrDefault(mm)}");
            }
        }
    }

    private void MapDma(VfioContainer c, ulong iova, int page)
    {
        ulong vaddr = FindProcBuf(c) + ((ulong)page * Page);
        VfioShadow shadow = Shadow(c);
        if (Call("Vfio.Type1.VfioContainer.MapDma", () => c.MapDma(new VfioIommuType1DmaMap(32, VfioUapi.VFIO_DMA_MAP_FLAG_READ | VfioUapi.VFIO_DMA_MAP_FLAG_WRITE, vaddr, iova, Page))) == Errno.None)
        {
            _ = shadow.Maps.Add(iova);
        }

        NoteIova(iova);
    }

    // vfio_pin_pages of one IOVA, as a vendor driver calls it for its mdev.
    private void PinPage(MdevDevice m, ulong iova)
    {
        ulong[] user = [iova >> 12];
        ulong[] phys = new ulong[1];
        VfioShadow? shadow = PinShadow(m);
        if (shadow?.Backend is VfioIommuType1 backend && _vendorNotifiers.Add((m, backend)))
        {
            // A vendor driver must unpin what it pinned when notified of an unmap (5.15 BUG_ONs after ten retries).
            VfioShadow s = shadow;
            _ = Call("Vfio.Type1.VfioCore.RegisterNotifier", () => _vfio.RegisterNotifier(m, Vfio.Mdev.Pinning.VfioNotifyType.Iommu, Vfio.Mdev.Pinning.VfioIommuNotifyEvents.DmaUnmap, (action, unmap) => OnVendorUnmap(m, s, unmap)));
        }

        int n = Call("Vfio.Type1.VfioCore.PinPages", () => _vfio.PinPages(m, user, 1, IommuProt.Read | IommuProt.Write, phys));
        CheckRet(n, "vfio_pin_pages");
        if (n == 1)
        {
            if (shadow is null)
            {
                throw new IsolationViolationException($"vfio_pin_pages({m.Name}) pinned a page though its group is in no container with a backend");
            }

            // vfio_iommu_type1_pin_pages: a page pinned again only takes a reference on its vfio_pfn.
            Event(shadow.ExternalPins.ContainsKey(iova) ? "vendor pin taken again" : "vendor pin");
            shadow.ExternalPins[iova] = shadow.ExternalPins.GetValueOrDefault(iova) + 1;
        }
    }

    // The property's vendor notifier: unpin every reference it holds in the unmapped range. An unpin can fail: the
    // notifier stays on the container's IOMMU after the mdev's group left the container (5.15 only drops it when the
    // vendor unregisters), and vfio_unpin_pages of a device whose group has no container is -EINVAL, so the page stays
    // pinned (and the unmap then gives up, as 5.15's BUG_ON).
    private int OnVendorUnmap(MdevDevice m, VfioShadow shadow, Vfio.Mdev.Pinning.VfioDmaUnmapEvent unmap)
    {
        foreach ((ulong iova, int refs) in shadow.ExternalPins.Where(p => p.Key >= unmap.Iova && p.Key < unmap.Iova + unmap.Size).ToList())
        {
            int left = refs;
            for (int i = 0; i < refs; i++)
            {
                int n = Call("Vfio.Type1.VfioCore.UnpinPages", () => _vfio.UnpinPages(m, [iova >> 12], 1));
                CheckRet(n, "vfio_unpin_pages");
                if (n == 1)
                {
                    left--;
                }
            }

            if (left == 0)
            {
                _ = shadow.ExternalPins.Remove(iova);
            }
            else
            {
                shadow.ExternalPins[iova] = left;
            }
        }

        return Vfio.Mdev.Pinning.NotifyResult.Ok;
    }

    /// <summary>
    /// What a user of a vendor-isolated mdev does before its driver can pin (each call only when its state is not
    /// there yet, each a valid call through the oracle): the mdev is created and registered with VFIO, its group opened
    /// and put in a container with a TYPE1v2 backend, the IOVA mapped, the mdev opened (the driver registers its
    /// DMA-unmap notifier); then the driver pins the page. Random steps alone almost never line all of these up.
    /// </summary>
    // 5.15 opens an mdev only through VFIO_GROUP_GET_DEVICE_FD, whose file holds the group's container (UNSET_CONTAINER is
    // then -EBUSY, and the group's release waits for the file). The property also opens mdev files with MdevDevice.Open,
    // outside VFIO, so it does not unset or close a group while one of its mdevs has such a file open: the kernel cannot
    // get there, and the vendor could no longer unpin from its DMA-unmap notifier (UNMAP_DMA then gives up as 5.15's
    // BUG_ON, a documented InvalidOperationException; found at seed 7, 500k ops).
    private bool MdevOpenOutsideVfio(VfioGroup g) =>
        _mdevFiles.Exists(f => !_mdevClosed.Contains(f) && ReferenceEquals(f.Device.IommuGroup, g.IommuGroup));

    private void VendorSetup(ChaosOp op)
    {
        MdevDevice? m = _mdevs.Where(x => x.ParentDevice == _mtty.ParentDevice && x.IommuGroup is not null).Skip(op.A % 2).FirstOrDefault()
            ?? _mdevs.Find(x => x.ParentDevice == _mtty.ParentDevice && x.IommuGroup is not null);
        if (m is null)
        {
            if (_mdevs.Count >= 8 || Call("Vfio.Mdev.MdevCore.Create", () => _mdev.Create(_mdev.FindParent(_mtty.ParentDevice)!.SupportedTypes[0], Guid.NewGuid(), out m)) != Errno.None)
            {
                return;
            }

            _mdevs.Add(m!);
        }

        _ = Call("Vfio.Type1.VfioCore.RegisterDevice", () => _vfio.RegisterDevice(m!));
        VfioGroup? g = _groups.Find(x => ReferenceEquals(x.IommuGroup, m!.IommuGroup));
        if (g is null || g.Owner is null)
        {
            (ProcessAddressSpace mm, ulong _) = Pick(_procs, op.B);
            if (mm.Exited || Call("Vfio.Type1.VfioCore.OpenGroup", () => _vfio.OpenGroup(mm, m!.IommuGroup!.Id, out g, out _)) != Errno.None)
            {
                return;
            }

            if (!_groups.Contains(g!))
            {
                _groups.Add(g!);
            }
        }

        if (g!.Container is null)
        {
            VfioContainer? c = _containers.Find(x => x.IsOpen && x.Owner == g.Owner);
            if (c is null)
            {
                if (_containers.Count >= 6 || Call("Vfio.Type1.VfioCore.OpenContainer", () => _vfio.OpenContainer(g.Owner!, out _)) is not VfioContainer nc)
                {
                    return;
                }

                _containers.Add(c = nc);
                _containerBuf[nc] = _procs.Find(p => p.Mm == g.Owner).Buf;
            }

            if (Call("Vfio.Type1.VfioGroup.SetContainer", () => g.SetContainer(c)) != Errno.None)
            {
                return;
            }
        }

        VfioContainer container = g.Container!;
        if (container.Backend is null && Call("Vfio.Type1.VfioContainer.SetIommu", () => container.SetIommu(VfioUapi.VFIO_TYPE1v2_IOMMU)) != Errno.None)
        {
            return;
        }

        ulong iova = s_vfioIovas[op.C % s_vfioIovas.Length];
        if (!Shadow(container).Maps.Contains(iova))
        {
            MapDma(container, iova, op.A % 8);
        }

        MdevDeviceFile? f = null;
        if (Call("Vfio.Mdev.MdevDevice.Open", () => m!.Open(out f)) == Errno.None)
        {
            _mdevFiles.Add(f!);
        }

        PinPage(m!, iova);
    }

    private MdevType? SiovType()
    {
        if (_siovType is null && _devs[0].Bus is not null)
        {
            // The IOMMU-aware parent: dev0 as first added (a re-added dev0 is another device; the parent stays the old one).
            _ = Call("Vfio.Mdev.MdevCore.RegisterDevice", () => _mdev.RegisterDevice(_devs[0], new SiovAccelDriver(_iommu, _devs[0], adiCount: 4)));
            _siovType = _mdev.FindParent(_devs[0])?.FindType("siov_accel-wq");
        }

        return _siovType;
    }

    private ulong FindProcBuf(VfioContainer c)
    {
        return _containerBuf.TryGetValue(c, out ulong buf) ? buf : _procs[0].Buf;
    }

    private void AddDevice(int slot)
    {
        PciDevice d = Call("Iommu.Devices.PciBus.AddDevice", () => _pci.AddDevice(s_specs[slot]));
        _devs.Add(d);
        _ = _aliasCleared.Remove(d.DmaRequesterId);
    }

    private void SpawnProcess()
    {
        var mm = new ProcessAddressSpace(_pages, "p" + _procs.Count.ToString(CultureInfo.InvariantCulture));
        ulong buf = mm.Mmap(8 * Page);
        for (ulong i = 0; i < 8; i++)
        {
            mm.Write(buf + (i * Page), BitConverter.GetBytes(0xC0DE_0000UL + i)).ThrowIfError();
        }

        _procs.Add((mm, buf));
    }

    private void NoteIova(ulong iova)
    {
        if (!_probeIovas.Contains(iova))
        {
            if (_probeIovas.Count >= ProbeIovas)
            {
                _probeIovas.RemoveAt(0);
            }

            _probeIovas.Add(iova);
        }
    }

    private void NotePasid(uint pasid)
    {
        if (!_seenPasids.Contains(pasid))
        {
            if (_seenPasids.Count >= 4)
            {
                _seenPasids.RemoveAt(0);
            }

            _seenPasids.Add(pasid);
        }
    }

    // ---- the DMA API's IOVA bookkeeping (what the property's calls made, by the domain each map was made in) ----

    // The DMA/DMA_FQ domain the device's DMA API calls map in now (its group's default domain), or null (dma-direct).
    private static IDomain? DmaDomainOf(Device dev) =>
        dev.IommuGroup?.DefaultDomain is IDomain d && d.Type is DomainType.Dma or DomainType.DmaFq ? d : null;

    private static IovaDomain? CookieOf(IDomain d) => (d as IommuDomain)?.IovaCookie;

    private bool IsLive(DmaRange r) => _dmaLive.TryGetValue(r.Domain, out Dictionary<ulong, DmaRange>? m) && m.TryGetValue(r.Pfn, out DmaRange? x) && ReferenceEquals(x, r);

    // A successful map: its range is live in the domain, its pages are no longer "unmapped" there.
    private DmaRange NoteDmaMap(PciDevice dev, IDomain domain, ulong iova, (ulong Iova, ulong Pa)[] pages, string what)
    {
        var r = new DmaRange(dev, domain, iova >> 12, (ulong)pages.Length, pages, what);
        if (!_dmaLive.TryGetValue(domain, out Dictionary<ulong, DmaRange>? live))
        {
            _dmaLive[domain] = live = [];
        }

        if (live.TryGetValue(r.Pfn, out DmaRange? old) || live.Values.Any(x => x.Pfn < r.Pfn + r.PageCount && r.Pfn < x.Pfn + x.PageCount))
        {
            throw new IsolationViolationException($"{dev.Name}: {what} gave {Hex(iova)} (+{r.PageCount} pages) in its {domain.Type} domain, which overlaps a live mapping ({old?.What ?? "another"})");
        }

        live[r.Pfn] = r;
        if (_dmaUnmapped.TryGetValue(domain, out List<ulong>? gone))
        {
            _ = gone.RemoveAll(p => p >= iova && p < iova + (r.PageCount * Page));
        }

        // iommu-dma remembers the domains a device mapped in, newest first, dropping freed ones when it adds one.
        List<IDomain> seen = _dmaSeen.GetValueOrDefault(dev) ?? [];
        if (!seen.Contains(domain))
        {
            _dmaSeen[dev] = [domain, .. seen.Where(d => CookieOf(d) is not null)];
        }

        return r;
    }

    // An unmap took the range: its pages must translate nowhere (DMA_FQ: the group's devices may reach them until the flush).
    private void RemoveRange(DmaRange r)
    {
        _ = _dmaLive[r.Domain].Remove(r.Pfn);
        if (!_dmaUnmapped.TryGetValue(r.Domain, out List<ulong>? gone))
        {
            _dmaUnmapped[r.Domain] = gone = [];
        }

        foreach ((ulong iova, ulong pa) in r.Pages)
        {
            if (!gone.Contains(iova))
            {
                gone.Add(iova);
            }

            if (r.Domain.Type == DomainType.DmaFq)
            {
                _lazyStale[(r.Domain, iova)] = pa;
            }
        }

        if (gone.Count > 32)
        {
            gone.RemoveRange(0, gone.Count - 32);
        }
    }

    /// <summary>
    /// The domain a streaming unmap of <paramref name="handle"/> by <paramref name="target"/> goes to (the documented rule
    /// of dma_unmap_page/sg, a deliberate difference from 5.15): the domain where a live range mapped for that device
    /// starts at the handle's page, its current DMA domain first, then the others it mapped in, newest first; else its
    /// current DMA domain; null (dma-direct, nothing happens) when it has none.
    /// </summary>
    private IDomain? PredictUnmapDomain(PciDevice target, ulong handle)
    {
        IDomain? cur = DmaDomainOf(target);
        ulong pfn = handle >> 12;
        bool Owns(IDomain d) => _dmaLive.TryGetValue(d, out Dictionary<ulong, DmaRange>? m) && m.TryGetValue(pfn, out DmaRange? r) && r.Dev == target;
        if (cur is not null && Owns(cur))
        {
            return cur;
        }

        foreach (IDomain d in _dmaSeen.GetValueOrDefault(target) ?? [])
        {
            if (!ReferenceEquals(d, cur) && CookieOf(d) is not null && Owns(d))
            {
                return d;
            }
        }

        return cur;
    }

    // Runs a streaming unmap and checks it against the model: it succeeds exactly when the predicted domain holds a live
    // mapping of that size at the handle (any device's: the kernel unmaps whatever the address names), which then goes.
    private void StreamingUnmap(PciDevice target, ulong start, ulong size, string member, Action call)
    {
        IDomain? dr = PredictUnmapDomain(target, start);
        ulong pages = ((start & (Page - 1)) + size + Page - 1) / Page;
        DmaRange? hit = dr is not null && _dmaLive.TryGetValue(dr, out Dictionary<ulong, DmaRange>? m) ? m.GetValueOrDefault(start >> 12) : null;
        bool expect = dr is null || (hit is not null && hit.Pages.Length == (int)pages);
        bool ok = Try(member, call);
        if (ok != expect)
        {
            throw new IsolationViolationException($"{member}({target.Name}, {Hex(start)}, +{pages} pages) {(ok ? "succeeded" : "was refused")}; in {(dr is null ? "no DMA domain" : "the " + dr.Type + " domain it should go to")} {(hit is null ? "no mapping starts there" : $"{hit.Dev.Name}'s {hit.What} of {hit.Pages.Length} pages starts there")}");
        }

        if (ok && hit is not null)
        {
            RemoveRange(hit);
        }
    }

    private int DmaMapPage(PciDevice dev, ulong pa)
    {
        IDomain? d = DmaDomainOf(dev);
        ulong h = Call("Iommu.IommuCore.DmaMapPage", () => _iommu.DmaMapPage(dev, pa, Page, DmaDataDirection.Bidirectional));
        if (h == IommuCore.DmaMappingError)
        {
            return -1;
        }

        _dmaHandles.Add((dev, h, pa, d is null ? null : NoteDmaMap(dev, d, h, [(h & ~(Page - 1), pa & ~(Page - 1))], "dma_map_page")));
        ForgetStale(dev, h, Page);
        NoteIova(h);
        return _dmaHandles.Count - 1;
    }

    private void DmaUnmapPage(int i, PciDevice target)
    {
        (PciDevice owner, ulong h, ulong _, DmaRange? range) = _dmaHandles[i];
        StreamingUnmap(target, h, Page, "Iommu.IommuCore.DmaUnmapPage", () => _iommu.DmaUnmapPage(target, h, Page, DmaDataDirection.Bidirectional));
        if (range is null ? target == owner : !IsLive(range))
        {
            _dmaHandles.RemoveAt(i);
        }
    }

    private void DmaUnmapSg(int i, PciDevice target)
    {
        (PciDevice owner, Scatterlist[] sg, DmaRange? range) = _sgLists[i];
        int last = 0;
        for (int k = 1; k < sg.Length && sg[k].DmaLength != 0; k++)
        {
            last = k;
        }

        ulong start = sg[0].DmaAddress, end = sg[last].DmaAddress + sg[last].DmaLength;
        StreamingUnmap(target, start, end - start, "Iommu.IommuCore.DmaUnmapSg", () => _iommu.DmaUnmapSg(target, sg, DmaDataDirection.Bidirectional));
        if (range is null ? target == owner : !IsLive(range))
        {
            _sgLists.RemoveAt(i);
        }
    }

    // iommu_dma_map_sg's layout, from the list alone: the entries one after another in one IOVA range from start, each
    // from its buffer's page, rounded out to whole pages (no segment-boundary padding for lists this small).
    private static (ulong Iova, ulong Pa)[] SgLayout(ulong start, Scatterlist[] sg)
    {
        var pages = new List<(ulong, ulong)>();
        ulong off = 0;
        foreach (Scatterlist e in sg)
        {
            ulong len = (e.Length + (e.Phys & (Page - 1)) + Page - 1) & ~(Page - 1);
            for (ulong k = 0; k < len; k += Page)
            {
                pages.Add((start + off + k, (e.Phys & ~(Page - 1)) + k));
            }

            off += len;
        }

        return [.. pages];
    }

    private void HotRemove(PciDevice dev)
    {
        if (dev.Bus is not null)
        {
            Call("Iommu.Devices.Bus.RemoveDevice", () => _pci.RemoveDevice(dev));
            if (dev.DmaRequesterId != dev.RequesterId)
            {
                _ = _aliasCleared.Add(dev.DmaRequesterId);
            }
        }
    }

    // iommu_group_add_device of a live device in no group: into another live device's group (or its own again). Now and
    // then a device already in a group (refused: InvalidOperationException) or a released group (the same).
    private void GroupAdd(PciDevice dev, ChaosOp op)
    {
        if (dev.Bus is null)
        {
            return;
        }

        // A device whose DMA carries another's requester ID (behind the PCIe-to-PCI bridge) only goes back to a group of
        // that ID: the context entry is the alias's, so in another group its attach would redirect its group mates' DMA
        // (pci_device_group never splits aliases; iommu_group_add_device is the IOMMU driver's call, not a user's).
        List<IommuGroup> groups = [.. _devs.Where(d => d.Bus is not null && d.IommuGroup is not null && (dev.DmaRequesterId == dev.RequesterId || d.DmaRequesterId == dev.DmaRequesterId)).Select(d => d.IommuGroup!).Distinct()];
        if (dev.IommuGroup is not null && op.C % 4 != 0)
        {
            return;
        }

        if (groups.Count == 0)
        {
            return;
        }

        IommuGroup g = Pick(groups, op.B);
        if (Call("Iommu.IommuCore.GroupAddDevice", () => _iommu.GroupAddDevice(g, dev)) == Errno.None)
        {
            Event("device moved to another group");
        }
    }

    /// <summary>
    /// The moves the DMA API must survive, lined up in one step (random steps rarely do): a DMA-API device maps a page
    /// (and now and then a scatterlist), then leaves its group (iommu_group_remove_device), moves to another device's
    /// group, or is hot-removed (and its slot re-added: a new device), then unmaps with the old handles.
    /// </summary>
    private void DmaMove(ChaosOp op)
    {
        List<PciDevice> candidates = _devs.FindAll(d => d.Bus is not null && DmaDomainOf(d) is not null);
        if (candidates.Count == 0)
        {
            return;
        }

        PciDevice dev = Pick(candidates, op.A);
        int page = DmaMapPage(dev, s_pas[op.C % s_pas.Length] + 0x18_0000);
        int sg = -1;
        if (op.C % 2 == 0)
        {
            var list = new[] { new Scatterlist(s_pas[op.B % s_pas.Length] + 0x38_0000, 0x1000), new Scatterlist(s_pas[op.B % s_pas.Length] + 0x3A_0000, 0x800) };
            IDomain? d = DmaDomainOf(dev);
            if (Call("Iommu.IommuCore.DmaMapSg", () => _iommu.DmaMapSg(dev, list, DmaDataDirection.Bidirectional)) > 0)
            {
                _sgLists.Add((dev, list, d is null ? null : NoteDmaMap(dev, d, list[0].DmaAddress & ~(Page - 1), SgLayout(list[0].DmaAddress & ~(Page - 1), list), "dma_map_sg")));
                sg = _sgLists.Count - 1;
            }
        }

        switch (op.B % 3)
        {
            case 0:
                Call("Iommu.IommuCore.GroupRemoveDevice", () => _iommu.GroupRemoveDevice(dev));
                _ = _leftGroup.Add(dev);
                break;
            case 1:
                Call("Iommu.IommuCore.GroupRemoveDevice", () => _iommu.GroupRemoveDevice(dev));
                _ = _leftGroup.Add(dev);
                GroupAdd(dev, op with { C = 1 });
                break;
            default:
                HotRemove(dev);
                int slot = Array.FindIndex(s_specs, s => s.Address == dev.Address);
                if (op.C % 3 != 0 && _pci.Find(s_specs[slot].Address) is null)
                {
                    AddDevice(slot);
                }

                break;
        }

        // Unmap with the old handles, the list first (its index shifts when the page entry goes).
        if (sg >= 0)
        {
            DmaUnmapSg(sg, dev);
        }

        if (page >= 0 && op.A % 4 != 0)
        {
            DmaUnmapPage(page, dev);
            Event("DMA unmap after the device moved");
        }
    }

    /// <summary>
    /// For a live device whose DMA carries a requester ID another live device's DMA carries too (behind a PCIe-to-PCI
    /// bridge, the bridge's alias): the domains those devices use. One context entry serves that ID, and attaching any
    /// of them (iommu_attach_group of the bridge's group) rewrites it — 5.15 domain_context_mapping programs every DMA
    /// alias (pci_for_each_dma_alias, drivers/iommu/intel/iommu.c:2266) — so the device translates through whichever
    /// domain was attached there last: devices that share a requester ID cannot be isolated from one another, which is
    /// why they share a group. That holds for a device out of every group (iommu_group_remove_device), and for one in a
    /// group whose mate sharing its ID an iommu_attach_group that failed part way left on another domain (5.15 does not
    /// unwind; see GroupAttach). Empty otherwise (a device in a group whose mates on its ID all use its domain).
    /// </summary>
    private List<IDomain> SharedRidDomains(PciDevice dev)
    {
        List<IDomain> shared = [];
        foreach (PciDevice o in _devs)
        {
            if (o != dev && o.Bus is not null && o.DmaRequesterId == dev.DmaRequesterId && RidDomain(o) is IDomain d && !_freed.Contains(d) && !shared.Contains(d))
            {
                shared.Add(d);
            }
        }

        return dev.IommuGroup is null || shared.Exists(d => !ReferenceEquals(d, RidDomain(dev))) ? shared : [];
    }

    // Where the device's DMA goes now: its group's domain, or for a live device the property took out of every group,
    // the domain the driver still has it attached to (iommu_group_remove_device does not detach, as in 5.15).
    // A device an iommu_attach_group that failed part way left attached in the driver to the new domain uses that one
    // (see GroupAttach), or none once that domain was freed (domain_exit detached it).
    private IDomain? RidDomain(PciDevice dev)
    {
        IDomain? driver = (dev.IommuPriv as DeviceDomainInfo)?.Domain;
        return dev.IommuGroup is not IommuGroup g ? driver
            : _partial.ContainsKey(dev) && !ReferenceEquals(driver, g.Domain) ? driver
            : g.Domain;
    }

    /// <summary>
    /// After every step, for every live DMA/DMA_FQ domain: the IOVA allocator's live ranges are exactly the mappings the
    /// property's calls made there and did not unmap (first frame, size, the device they were made for); each of them
    /// translates to its buffer (iova_to_phys, and the DMA of every device that uses the domain now); a page the property
    /// unmapped there and no later map took translates nowhere, and no device reaches it (DMA_FQ: the old page until the
    /// domain's flush queue has drained). A freed domain's mappings went with it.
    /// </summary>
    private void CheckDmaBookkeeping()
    {
        var domains = new HashSet<IDomain>(_dmaLive.Keys.Concat(_dmaUnmapped.Keys), ReferenceEqualityComparer.Instance);
        foreach (IommuGroup g in _iommu.Groups)
        {
            if (g.DefaultDomain is IDomain d && d.Type is DomainType.Dma or DomainType.DmaFq)
            {
                _ = domains.Add(d);
            }
        }

        Span<byte> buf = stackalloc byte[8];
        foreach (IDomain d in domains)
        {
            IovaDomain? iovad = CookieOf(d);
            if (iovad is null)
            {
                _ = _dmaLive.Remove(d); // freed (or never mapped through): its mappings went with it
                _ = _dmaUnmapped.Remove(d);
                continue;
            }

            if (iovad.HasFlushQueue && iovad.QueuedRanges == 0)
            {
                foreach ((IDomain, ulong) k in _lazyStale.Keys.Where(k => ReferenceEquals(k.Item1, d)).ToList())
                {
                    _ = _lazyStale.Remove(k);
                }
            }

            Dictionary<ulong, DmaRange> want = _dmaLive.GetValueOrDefault(d) ?? [];
            List<(ulong Pfn, ulong Pages, object? Owner)> have = iovad.LiveRangeList();
            if (have.Count != want.Count || have.Any(h => !want.TryGetValue(h.Pfn, out DmaRange? r) || (ulong)r.Pages.Length != h.Pages || !ReferenceEquals(r.Dev, h.Owner)))
            {
                throw new IsolationViolationException($"{d.Type} domain: the IOVA allocator holds [{string.Join(", ", have.Select(h => $"{Hex(h.Pfn << 12)}+{h.Pages} ({(h.Owner as Device)?.Name})"))}], the property's maps left [{string.Join(", ", want.Values.OrderBy(r => r.Pfn).Select(r => $"{Hex(r.Pfn << 12)}+{r.Pages.Length} ({r.Dev.Name} {r.What})"))}]");
            }

            // Not a device out of its group whose requester ID a device in another domain shares: its DMA goes where that
            // ID's context entry points (SharedRidDomains; CheckDma checks it reaches only what one of those domains maps).
            List<PciDevice> users = _devs.FindAll(x => x.Bus is not null && !_aliasCleared.Contains(x.DmaRequesterId) && ReferenceEquals(RidDomain(x), d) && SharedRidDomains(x).TrueForAll(a => ReferenceEquals(a, d)));
            foreach (DmaRange r in want.Values)
            {
                foreach ((ulong iova, ulong pa) in r.Pages)
                {
                    ulong now = _iommu.IovaToPhys(d, iova);
                    if (now != pa)
                    {
                        throw new IsolationViolationException($"{r.Dev.Name}'s {r.What} at {Hex(iova)} in its {d.Type} domain translates to {Hex(now)}, the buffer is at {Hex(pa)}");
                    }
                }

                foreach (PciDevice u in users)
                {
                    DmaResult res = u.DmaRead(null, r.Pages[0].Iova, buf);
                    if (!res.IsOk || res.Address != r.Pages[0].Pa)
                    {
                        throw new IsolationViolationException($"{u.Name} (attached to the {d.Type} domain) DMA at {r.Dev.Name}'s {r.What} {Hex(r.Pages[0].Iova)} {(res.IsOk ? "reached " + Hex(res.Address) : "failed (" + res.FaultReason + ")")}, the buffer is at {Hex(r.Pages[0].Pa)}");
                    }
                }
            }

            foreach (ulong iova in _dmaUnmapped.GetValueOrDefault(d) ?? [])
            {
                if (want.Values.Any(r => iova >> 12 >= r.Pfn && iova >> 12 < r.Pfn + (ulong)r.Pages.Length))
                {
                    continue; // a live mapping holds it again (a map the allocator did not count as reuse: checked above)
                }

                if (_iommu.IovaToPhys(d, iova) is ulong stale and not 0)
                {
                    throw new IsolationViolationException($"{d.Type} domain: {Hex(iova)}, unmapped by the DMA API, still translates to {Hex(stale)}");
                }

                foreach (PciDevice u in users)
                {
                    DmaResult res = u.DmaRead(null, iova, buf);
                    if (res.IsOk && !(d.Type == DomainType.DmaFq && _lazyStale.TryGetValue((d, iova), out ulong old) && old == (res.Address & ~(Page - 1))))
                    {
                        throw new IsolationViolationException($"{u.Name}: DMA at {Hex(iova)}, unmapped by the DMA API in its {d.Type} domain{(d.Type == DomainType.DmaFq ? " (flush queue " + iovad.QueuedRanges + " entries)" : string.Empty)}, reached {Hex(res.Address)}");
                    }
                }
            }
        }
    }

    /// <summary>
    /// After every step, group membership against attach state: a live device in a group is in that group's device list,
    /// the group is live, iommu_get_domain_for_dev and iommu_get_dma_domain name the group's domains, and the VT-d
    /// driver's per-device domain is the group's (or none: 5.15's failed attach leaves the device without a context
    /// entry while the group names the old domain, see IntelIommu.AttachDev); every device a group lists points back at
    /// it; a removed device is in no group.
    /// </summary>
    private void CheckGroups()
    {
        IReadOnlyList<IommuGroup> live = _iommu.Groups;
        foreach (IommuGroup g in live)
        {
            foreach (Device d in g.Devices)
            {
                if (!ReferenceEquals(d.IommuGroup, g) || (d is PciDevice p && p.Bus is null))
                {
                    throw new IsolationViolationException($"{g} lists {d.Name}, which {(d.Bus is null ? "was removed" : "is in " + (d.IommuGroup?.ToString() ?? "no group"))}");
                }
            }
        }

        foreach (PciDevice dev in _devs)
        {
            IommuGroup? g = dev.IommuGroup;
            if (dev.Bus is null || g is null)
            {
                if (g is not null)
                {
                    throw new IsolationViolationException($"{dev.Name} was removed but is still in {g}");
                }

                continue;
            }

            if (g.IsReleased || !live.Contains(g) || !g.Devices.Contains(dev))
            {
                throw new IsolationViolationException($"{dev.Name} names {g}, which {(g.IsReleased ? "was released" : live.Contains(g) ? "does not list it" : "is not a live group")}");
            }

            IDomain? rid = _iommu.GetDomainForDev(dev);
            if (!ReferenceEquals(rid, g.Domain) || !ReferenceEquals(_iommu.GetDmaDomain(dev), g.DefaultDomain))
            {
                throw new IsolationViolationException($"{dev.Name}: iommu_get_domain_for_dev / iommu_get_dma_domain name another domain than its {g}'s");
            }

            if (g.Domain is DmarDomain gd && dev.IommuPriv is DeviceDomainInfo info && !ReferenceEquals(info.Domain, gd) && !(_partial.TryGetValue(dev, out IDomain? pd) && ReferenceEquals(info.Domain, pd)))
            {
                throw new IsolationViolationException($"{dev.Name}: the driver has it attached to a {info.Domain.Type} domain, its {g} to a {gd.Type} domain");
            }
        }
    }

    /// <summary>One DMA API mapping the property made: its device, domain, first IOVA frame and its pages' (IOVA, buffer).</summary>
    private sealed record DmaRange(PciDevice Dev, IDomain Domain, ulong Pfn, ulong PageCount, (ulong Iova, ulong Pa)[] Pages, string What);

    private void ForgetStale(PciDevice dev, ulong iova, ulong size)
    {
        if (dev.IommuGroup?.DefaultDomain is IDomain d)
        {
            for (ulong a = iova; a < iova + size; a += Page)
            {
                _ = _lazyStale.Remove((d, a));
            }
        }
    }

    // A DMA API address range lies under the mask it was allocated for (dma-direct and the IOVA allocator both promise it).
    private static void CheckDmaAddresses(Device dev, ulong start, ulong size, ulong mask, string what)
    {
        if (mask != 0 && start + size - 1 > mask)
        {
            throw new IsolationViolationException($"{dev.Name}: {what} gave [{Hex(start)}, +{Hex(size)}), above the device's mask {Hex(mask)}");
        }
    }

    // Right after a DMA API map: when the device still uses its default domain (or none), its DMA at the address lands on the buffer.
    private void ExpectDmaAt(PciDevice dev, ulong dma, ulong pa, string what)
    {
        IDomain? now = RidDomain(dev); // a device the property took out of its group still uses the old domain
        // Out of every group (iommu_group_remove_device): the driver keeps its old context entry, or none once the group's
        // release freed that domain (5.15 domain_exit), so its DMA faults or translates; it never passes through.
        if (dev.Bus is null || dev.IommuGroup is null || _aliasCleared.Contains(dev.DmaRequesterId) || !ReferenceEquals(now, dev.IommuGroup?.DefaultDomain))
        {
            return; // attached elsewhere: the mapping lives in a domain the device does not use now
        }

        Span<byte> b = stackalloc byte[8];
        DmaResult r = dev.DmaRead(null, dma, b);
        if (!r.IsOk || r.Address != pa)
        {
            throw new IsolationViolationException($"{dev.Name}: after {what} DMA at {Hex(dma)} {(r.IsOk ? "reached " + Hex(r.Address) : "failed (" + r.FaultReason + ")")}, the buffer is at {Hex(pa)}");
        }
    }

    private static void CheckRet(int ret, string what)
    {
        if (ret < 0 && !Enum.IsDefined((Errno)(-ret)))
        {
            throw new IsolationViolationException($"{what} returned {ret}, not a kernel errno");
        }
    }

    // ---- the oracle ----

    /// <summary>Runs one public member; an exception its XML docs do not list fails the property, and so does an Errno that is not a kernel errno.</summary>
    private static T Call<T>(string member, Func<T> call)
    {
        T result;
        try
        {
            result = call();
        }
        catch (Exception e) when (e is not IsolationViolationException and not UndocumentedException)
        {
            if (DocumentedExceptions.Allows(member, e))
            {
                // Not Errno.None (default): a documented throw is a failure, never a success.
                return typeof(T) == typeof(Errno) ? (T)(object)Threw : default!;
            }

            throw new UndocumentedException($"{member} threw {e.GetType().Name}, which its XML docs do not list: {e.Message}", e);
        }

        if (result is Errno errno && !Enum.IsDefined(errno))
        {
            throw new IsolationViolationException($"{member} returned {(int)errno}, not a kernel errno");
        }

        return result;
    }

    private static void Call(string member, Action call) => _ = Call(member, () =>
    {
        call();
        return 0;
    });

    private static bool Try(string member, Action call)
    {
        bool ok = false;
        Call(member, () =>
        {
            call();
            ok = true;
        });
        return ok;
    }

    /// <summary>
    /// Every live device's DMA at the probe IOVAs, without PASID and with every PASID seen: a DMA that succeeds must reach
    /// <c>iova_to_phys</c> of a domain that device/PASID is attached to now (RID: <c>iommu_get_domain_for_dev</c>; PASID: the
    /// pasid_array's domain or a live domain whose aux PASID on that device it is), and a page the attached domain maps must be
    /// reached. A DMA_FQ page the DMA API unmapped may still be reached at its old address until the flush queue drains.
    /// </summary>
    private void CheckDma()
    {
        Span<byte> buf = stackalloc byte[8];
        foreach (PciDevice dev in _devs)
        {
            if (dev.Bus is null)
            {
                continue;
            }

            IDomain? rid = RidDomain(dev);
            List<IDomain> shared = SharedRidDomains(dev);
            foreach (ulong iova in _probeIovas)
            {
                DmaResult r = dev.DmaRead(null, iova, buf);
                if (r.IsOk && shared.Count > 0 && shared.Exists(a => a.Type == DomainType.Identity ? r.Address == iova : Call("Iommu.IommuCore.IovaToPhys", () => _iommu.IovaToPhys(a, iova)) == r.Address || LazyStale(a, iova, r.Address)))
                {
                    continue; // through the shared requester ID's context entry, which a device still in a group set
                }

                if (rid is null || rid.Type == DomainType.Identity || rid.Type == DomainType.Blocked)
                {
                    if (r.IsOk && rid?.Type != DomainType.Identity)
                    {
                        throw new IsolationViolationException($"{dev.Name}: RID DMA at {Hex(iova)} reached {Hex(r.Address)} with no translating domain ({rid?.Type})");
                    }

                    continue;
                }

                ulong pa = _iommu.IovaToPhys(rid, iova);
                if (r.IsOk && r.Address != pa)
                {
                    if (LazyStale(rid, iova, r.Address))
                    {
                        continue;
                    }

                    throw new IsolationViolationException($"{dev.Name}: RID DMA at {Hex(iova)} reached {Hex(r.Address)}; its domain ({rid.Type}) maps it to {Hex(pa)}");
                }

                if (!r.IsOk && pa != 0 && r.Status == DmaStatus.Fault && !_aliasCleared.Contains(dev.DmaRequesterId) && shared.Count == 0)
                {
                    throw new IsolationViolationException($"{dev.Name}: RID DMA at {Hex(iova)} faulted ({r.FaultReason}); its domain ({rid.Type}) maps it to {Hex(pa)}");
                }
            }

            if (dev.PasidWidth == 0 || !dev.PasidEnabled)
            {
                continue;
            }

            foreach (uint pasid in _seenPasids)
            {
                IDomain? pd = null;
                if (Call("Iommu.IommuCore.GetDomainForDevPasid", () => _iommu.GetDomainForDevPasid(dev, pasid, DomainType.Blocked, out pd)) != Errno.None)
                {
                    pd = null;
                }

                IommuSva? bound = _sva.Concat(_uacceQueues.Select(q => q.Handle).OfType<IommuSva>()).FirstOrDefault(h => h.Device == dev && SvaPasid(h) == pasid);
                if (bound is not null)
                {
                    CheckSvaDma(dev, pasid, _svaMm[bound]); // the PASID translates through the process's page tables
                    continue;
                }

                foreach (ulong iova in _probeIovas.Concat(SvaProbeVas()))
                {
                    DmaResult r = dev.DmaRead(pasid, iova, buf);
                    if (!r.IsOk)
                    {
                        continue;
                    }

                    if (!ReachableWithPasid(dev, pasid, pd, iova, r.Address))
                    {
                        throw new IsolationViolationException($"{dev.Name}: DMA with PASID {pasid} at {Hex(iova)} reached {Hex(r.Address)}, which no domain attached to that PASID maps there");
                    }
                }
            }
        }
    }

    // A DMA_FQ page the DMA API unmapped, reached at its old address until the domain's flush queue drains.
    private bool LazyStale(IDomain d, ulong iova, ulong reached) =>
        d.Type == DomainType.DmaFq && _lazyStale.TryGetValue((d, iova & ~(Page - 1)), out ulong old) && old + (iova & (Page - 1)) == reached;

    // The first pages of every process's buffer: where an SVA-bound device is probed, and where a PASID no bind holds any more must not reach.
    private IEnumerable<ulong> SvaProbeVas() => _procs.Select(p => p.Buf).Concat(_procs.Select(p => p.Buf + Page)).Distinct();

    /// <summary>
    /// DMA with an SVA bind's PASID at the process's addresses: a DMA that completes lands where the process's page
    /// table maps that address now (a page fault may have mapped it meanwhile); an exited process's PASID reaches nothing.
    /// </summary>
    private void CheckSvaDma(PciDevice dev, uint pasid, ProcessAddressSpace mm)
    {
        Span<byte> buf = stackalloc byte[8];
        foreach ((ProcessAddressSpace owner, ulong b) in _procs)
        {
            foreach (ulong va in new[] { b, b + Page })
            {
                DmaResult r = dev.DmaRead(pasid, va, buf);
                if (!r.IsOk)
                {
                    continue;
                }

                if (mm.Exited || !mm.TryTranslate(va, out ulong pfn) || r.Address != (pfn << 12))
                {
                    throw new IsolationViolationException($"{dev.Name}: SVA DMA with PASID {pasid} ({mm.Name}{(mm.Exited ? ", exited" : string.Empty)}) at {Hex(va)} reached {Hex(r.Address)}; the process maps it to {(!mm.Exited && mm.TryTranslate(va, out ulong p) ? Hex(p << 12) : "nothing")}");
                }
            }
        }
    }

    private bool ReachableWithPasid(PciDevice dev, uint pasid, IDomain? pasidDomain, ulong iova, ulong reached)
    {
        if (pasidDomain is not null && _iommu.IovaToPhys(pasidDomain, iova) == reached)
        {
            return true;
        }

        IEnumerable<IDomain> aux = _domains.Where(d => !_freed.Contains(d)).Concat(_mdevs.Select(m => m.GetIommuDomain()).OfType<IDomain>());
        foreach (IDomain d in aux)
        {
            // A device that left its group (iommu_group_remove_device, then perhaps another group) keeps the PASID entries
            // the driver programmed, while the group's pasid_array that named them went with the old group: the driver's
            // attachment (dev_pasids) is where such DMA may go. Noticed by this property; left as the library has it.
            if (d is DmarDomain dd && _leftGroup.Contains(dev) && HasDevPasid(dd, dev, pasid) && _iommu.IovaToPhys(d, iova) == reached)
            {
                return true;
            }

            if (_iommu.AuxGetPasid(d, dev) == (int)pasid && _iommu.IovaToPhys(d, iova) == reached)
            {
                return true;
            }
        }

        return false;
    }

    private static bool HasDevPasid(DmarDomain d, Device dev, uint pasid)
    {
        lock (d.DevPasids)
        {
            return d.DevPasids.Exists(p => p.Device == dev && p.Pasid == pasid);
        }
    }

    private uint SvaPasid(IommuSva h)
    {
        try
        {
            return _iommu.SvaGetPasid(h);
        }
        catch (ObjectDisposedException)
        {
            return 0; // unbound
        }
    }

    private static string Hex(ulong v) => "0x" + v.ToString("x", CultureInfo.InvariantCulture);

    /// <summary>A public member threw an exception its XML docs do not list.</summary>
    internal sealed class UndocumentedException(string message, Exception inner) : Exception(message, inner);
}
