using Iommu.Mm;

namespace Iommu.Reliability.Tests.BadInput;

/// <summary>Public types and members the after-dispose rows leave out, each with its reason.</summary>
internal static class AfterDisposeExemptions
{
    private const string Value = "value type, record or options: carries values, owns no platform memory; harmless after any dispose";
    private const string Static = "static constants or pure helpers: no platform, no memory";
    private const string Immutable = "getter of a value fixed at construction (name, id, address, size, capability, owner reference): touches no native memory, harmless after dispose";
    private const string Managed = "getter of managed state (a counter, a snapshot list, a flag): touches no native memory, harmless after dispose, and the last values stay inspectable";
    private const string ManagedSet = "stores a managed field or reference only; reaches no native memory";
    private const string Idempotent = "Dispose is idempotent: calling it again after dispose is allowed";
    private const string NewObject = "builds a new, independent object (not one of the disposed platform)";
    private const string Callback = "driver callback object owned by the VT-d driver (IntelIommu/IommuCore hold the scope); no public entry reaches memory except through them";

    public static readonly IReadOnlyDictionary<string, string> Types = new Dictionary<string, string>(StringComparer.Ordinal)
    {
        ["Device"] = "a plain device holds no memory; its DMA-capable subclass PciDevice has rows",
        ["DmaResult"] = Value, ["AtsCompletion"] = Value, ["PageRequestMessage"] = Value, ["DmaFaultReason"] = Value, ["DmaSegment"] = Value, ["Scatterlist"] = Value, ["HostMemoryRange"] = Value, ["PciAddress"] = Value, ["PciDeviceSpec"] = Value, ["DomainTypeExtensions"] = Static,
        ["IommuDomain"] = "abstract base of driver domains: managed fields only; domains are used through IommuCore, which has rows",
        ["IommuSva"] = "abstract base of SVA bind handles: Device/Mm getters only; binds are used through IommuCore, which has rows",
        ["VtdUnitState"] = "a copy of a unit's registers in managed arrays: no platform memory",
        ["IommuDomainGeometry"] = Value, ["ErrnoExtensions"] = Static, ["ErrorDetail"] = "thread-local failure detail: no platform", ["ErrorDetailUnwindScope"] = "thread-local failure-detail scope: no platform",
        ["IopfQueue"] = "handle of an I/O page fault work queue: its name only; the operations on it are IommuCore rows",
        ["IommuFault"] = Value, ["IommuPageResponse"] = Value, ["IommuException"] = "exception type", ["IommuIotlbGather"] = Value,
        ["IommuResvRegion"] = Value, ["KernelSymbolAttribute"] = "metadata attribute", ["PlatformOptions"] = Value, ["Sizes"] = Static,
        ["VtdImage"] = "a managed copy of translation structures: owns no platform memory (LoadInto/exporters that touch memory are rows of the memory's owner)",
        ["VtdImageChunk"] = Value, ["VtdImageEntry"] = Value, ["VtdImageJson"] = Static, ["VtdDecoder"] = Static, ["VtdImageDot"] = Static, ["VtdEntryDescription"] = Value, ["VtdProbe"] = Value, ["VtdProbeResult"] = Value,
        ["DmaPte"] = Static, ["DmarDomain"] = Callback, ["DmarFaultRecord"] = Value, ["IntelIommuOptions"] = Value, ["IommuHwptVtdS1"] = Value, ["IommuHwptVtdS1Invalidate"] = Value, ["IntelIommuUnit"] = Callback,
        ["VtdActivity"] = Value, ["VtdCacheStatistics"] = Value, ["VtdCap"] = Static, ["VtdConfig"] = Value, ["VtdEcap"] = Static, ["VtdFaultReasonExtensions"] = Static, ["VtdFormat"] = Static,
        ["VtdInterruptEventArgs"] = Value, ["VtdMetrics"] = "publishes counters to listeners; observable instruments report nothing after Platform.Dispose (MetricsTests)",
        ["VtdRegister"] = Static, ["VtdTranslation"] = Value, ["VtdAssembly"] = Static, ["MdevAssembly"] = Static, ["MdevTypeAttribute"] = Value,
        ["MdevParentOpsBase"] = "abstract base of vendor drivers: it holds no state and its members are the vendor's own code, reached only through the mdev core (which has rows)",
        ["MdevTypeGroup"] = "sysfs attribute-group description: values and delegates, no platform", ["NotifyResult"] = Value,
        ["VfioDmaUnmapEvent"] = Value, ["VmArea"] = "mmap area descriptor of an mdev file: values only", ["ProcessMemoryArea"] = Value, ["X86PageWalk"] = Value,
        ["MmuNotifier"] = "abstract base of subscribers: its members are the user's callbacks, called by ProcessAddressSpace (which has rows)", ["VfioFile"] = "abstract base: FileRefs counter only",
        ["Type1Assembly"] = Static, ["VfioBitmap"] = Value, ["VfioGroupStatus"] = Value, ["VfioIommuType1DmaMap"] = Value, ["VfioIommuType1DmaUnmap"] = Value,
        ["VfioIommuType1Info"] = Value, ["VfioIovaRange"] = Value, ["VfioUapi"] = Static,
        ["VfioDeviceFile"] = "device fd: Close goes through ProcessAddressSpace.Close (a row); the rest are references fixed at open",
        ["UacceAssembly"] = Static, ["UacceCommands"] = Static, ["UacceInterface"] = Value, ["UacceVmArea"] = "mmap area descriptor handed to a uacce driver: values only",
        ["VfioDma"] = "a managed record of one mapping (VfioIommuType1.Mappings snapshot): no memory", ["VfioType1Options"] = Value,
    };

    public static readonly IReadOnlyDictionary<string, string> Members = new Dictionary<string, string>(StringComparer.Ordinal)
    {
        ["Bus.Devices"] = Managed, ["Bus.IommuOps"] = Immutable, ["Bus.Name"] = Immutable, ["Bus.Platform"] = Immutable,
        ["ContiguousRegion.ContainsFrame"] = "pure arithmetic on the region's bounds", ["ContiguousRegion.Memory"] = Immutable, ["ContiguousRegion.Size"] = Immutable, ["ContiguousRegion.Start"] = Immutable,
        ["DmaPageTable.AddressWidth"] = Immutable, ["DmaPageTable.Levels"] = Managed, ["DmaPageTable.PendingFrees"] = Managed, ["DmaPageTable.Root"] = Immutable, ["DmaPageTable.TableFrames"] = Managed,
        ["DmaPageTable.Create"] = "argument checks run first (the file is being edited by others, so only top-of-method guards were added); with valid levels the frame allocation throws ObjectDisposedException (FrameAllocator.TryAllocate row)",
        ["FrameAllocator.Capacity"] = Immutable, ["FrameAllocator.FailedAllocations"] = Managed, ["FrameAllocator.FailurePending"] = Managed, ["FrameAllocator.LiveFrames"] = Managed,
        ["FrameAllocator.PeakLiveFrames"] = Managed, ["FrameAllocator.Region"] = Immutable, ["FrameAllocator.RegionBase"] = Immutable, ["FrameAllocator.RegionSize"] = Immutable, ["FrameAllocator.TotalAllocations"] = Managed,
        ["HostPageAllocator.AllocatedPages"] = Managed, ["HostPageAllocator.PageTablePages"] = Managed, ["ProcessAddressSpace.Pgd"] = Managed, ["HostPageAllocator.Base"] = Immutable, ["HostPageAllocator.Memory"] = Immutable, ["HostPageAllocator.TotalPins"] = Managed, ["HostPageAllocator.ZeroPagePfn"] = Immutable,
        ["IntelIommu.Faults"] = Managed, ["IntelIommu.Options"] = Immutable, ["IntelIommu.PasidModeSupport"] = Immutable, ["IntelIommu.PasidsInUse"] = Managed,
        ["IntelIommu.PgsizeBitmap"] = Immutable, ["IntelIommu.ScalableModeSupport"] = Immutable, ["IntelIommu.Units"] = Immutable,
        ["IommuCore.Groups"] = Managed, ["IommuCore.DefaultDomainType"] = Managed, ["IommuCore.IovaFqTimeout"] = Static,
        ["IommuCore.DmaGetMask"] = "static read of a device's mask field: no platform memory", ["IommuCore.DmaGetMaxSegSize"] = "static read of a device's DMA parameter: no platform memory", ["IommuCore.DmaGetSegBoundary"] = "static read of a device's DMA parameter: no platform memory", ["IommuCore.PgSize"] = "static pure function (iommu_pgsize arithmetic)", ["IommuCore.Platform"] = Immutable,
        ["IommuGroup.DefaultDomain"] = Managed, ["IommuGroup.DeviceCount"] = Managed, ["IommuGroup.Devices"] = Managed, ["IommuGroup.Domain"] = Managed, ["IommuGroup.Id"] = Immutable,
        ["IommuGroup.IommuData"] = Managed, ["IommuGroup.IsReleased"] = Managed, ["IommuGroup.Name"] = Managed, ["IommuGroup.Name.set"] = ManagedSet,
        ["UacceCore.Platform"] = Immutable, ["UacceCore.Devices"] = Managed,
        ["UacceDevice.Core"] = Immutable, ["UacceDevice.Name"] = Immutable, ["UacceDevice.DevId"] = Immutable, ["UacceDevice.Flags"] = Immutable, ["UacceDevice.Parent"] = Managed, ["UacceDevice.Ops"] = Managed,
        ["UacceDevice.Api"] = Managed, ["UacceDevice.Api.set"] = ManagedSet, ["UacceDevice.Algorithms"] = Managed, ["UacceDevice.Algorithms.set"] = ManagedSet, ["UacceDevice.Registered"] = Managed, ["UacceDevice.Removed"] = Managed,
        ["UacceDevice.Queues"] = Managed, ["UacceDevice.Attributes"] = Managed, ["UacceDevice.SetRegionPageCount"] = ManagedSet,
        ["UacceQueue.Uacce"] = Immutable, ["UacceQueue.Mm"] = Immutable, ["UacceQueue.Pasid"] = Managed, ["UacceQueue.Handle"] = Managed, ["UacceQueue.State"] = Managed, ["UacceQueue.Private"] = Managed,
        ["UacceQueue.Private.set"] = ManagedSet, ["UacceQueue.Released"] = Managed, ["UacceQueue.Regions"] = Managed,
        ["MdevCore.Bus"] = Immutable, ["MdevCore.Devices"] = Managed, ["MdevCore.Parents"] = Managed, ["MdevCore.Platform"] = Immutable,
        ["MdevDevice.Active"] = Managed, ["MdevDevice.Core"] = Immutable, ["MdevDevice.FromDevice"] = "static cast helper (mdev_from_dev)", ["MdevDevice.GetDevice"] = Immutable,
        ["MdevDevice.GetDrvdata"] = Managed, ["MdevDevice.GetIommuDevice"] = Managed, ["MdevDevice.GetIommuDomain"] = Managed, ["MdevDevice.OpenCount"] = Managed, ["MdevDevice.Parent"] = Immutable,
        ["MdevDevice.ParentDevice"] = Immutable, ["MdevDevice.SetDrvdata"] = ManagedSet, ["MdevDevice.SetIommuDevice"] = ManagedSet, ["MdevDevice.SetIommuDomain"] = ManagedSet,
        ["MdevDevice.Type"] = Immutable, ["MdevDevice.TypeGroupId"] = Immutable, ["MdevDevice.Uuid"] = Immutable,
        ["MdevDeviceFile.Device"] = Immutable, ["MdevDeviceFile.Dispose"] = Idempotent, ["ProcessAddressSpace.Dispose"] = Idempotent + " (Exit; never throws after the platform is disposed: LifetimeTests)",
        ["MdevParent.Children"] = Managed, ["MdevParent.Device"] = Immutable, ["MdevParent.IsRegistered"] = Managed, ["MdevParent.Ops"] = Immutable, ["MdevParent.SupportedTypes"] = Immutable,
        ["MdevType.Devices"] = Managed, ["MdevType.Group"] = Immutable, ["MdevType.GroupName"] = Immutable, ["MdevType.Name"] = Immutable, ["MdevType.Parent"] = Immutable,
        ["MdevType.ParentDevice"] = Immutable, ["MdevType.TypeGroupId"] = Immutable,
        ["PciBus.Find"] = Managed, ["PciBus.Segment"] = Immutable,
        ["PciDevice.AcsEnabled"] = Immutable, ["PciDevice.AcsPathEnabled"] = Immutable, ["PciDevice.Address"] = Immutable, ["PciDevice.AtsEnabled"] = Managed, ["PciDevice.BusNumber"] = Immutable, ["PciDevice.ClassCode"] = Immutable,
        ["PciDevice.DevFn"] = Immutable, ["PciDevice.HasAts"] = Immutable, ["PciDevice.HasPasidCapability"] = Immutable, ["PciDevice.HasPri"] = Immutable, ["PciDevice.HasScalableIovDvsec"] = Immutable,
        ["PciDevice.IsBridge"] = Immutable, ["PciDevice.IsPcieToPciBridge"] = Immutable, ["PciDevice.MaxPasids"] = Immutable, ["PciDevice.Multifunction"] = Immutable, ["PciDevice.PasidEnabled"] = Managed,
        ["PciDevice.PasidWidth"] = Immutable, ["PciDevice.PriEnabled"] = Managed, ["PciDevice.RequesterId"] = Immutable, ["PciDevice.DmaRequesterId"] = Immutable, ["PciDevice.RmrrLocked"] = Immutable, ["PciDevice.RmrrRelaxable"] = Immutable, ["PciDevice.Segment"] = Immutable,
        ["PciDevice.Spec"] = Immutable, ["PciDevice.Upstream"] = Immutable,
        ["PhysicalMemory..ctor"] = NewObject, ["PhysicalMemory.BackedBytes"] = Managed, ["PhysicalMemory.Claims"] = Managed, ["PhysicalMemory.Contains"] = "arithmetic on Size and the managed RAM-range list; touches no native memory", ["PhysicalMemory.HostRanges"] = Immutable,
        ["PhysicalMemory.Dispose"] = Idempotent, ["PhysicalMemory.IsDisposed"] = "tells whether the memory is disposed; must answer after dispose", ["PhysicalMemory.Size"] = Immutable,
        ["Platform..ctor"] = NewObject, ["Platform.Dispose"] = Idempotent, ["Platform.Frames"] = Immutable, ["Platform.Clock"] = Immutable, ["PlatformClock.Now"] = Managed, ["Platform.Iommu"] = Immutable, ["Platform.IsDisposed"] = "tells whether the platform is disposed; must answer after dispose",
        ["Platform.LoggerFactory"] = Immutable, ["Platform.Memory"] = Immutable, ["Platform.MetricTags"] = Immutable, ["Platform.Options"] = Immutable,
        ["ProcessAddressSpace.Areas"] = Managed, ["ProcessAddressSpace.CapIpcLock"] = Managed, ["ProcessAddressSpace.CapIpcLock.set"] = ManagedSet, ["ProcessAddressSpace.Exited"] = Managed,
        ["ProcessAddressSpace.LockedVm"] = Managed, ["ProcessAddressSpace.LockedVmKb"] = Managed, ["ProcessAddressSpace.Name"] = Immutable, ["ProcessAddressSpace.Pages"] = Immutable,
        ["ProcessAddressSpace.RlimitMemlock"] = Managed, ["ProcessAddressSpace.RlimitMemlock.set"] = ManagedSet,
        ["VfioContainer.Backend"] = Managed, ["VfioContainer.Core"] = Immutable, ["VfioContainer.Fd"] = Immutable, ["VfioContainer.GetApiVersion"] = "returns the constant VFIO_API_VERSION; touches nothing",
        ["VfioContainer.Groups"] = Managed, ["VfioContainer.Id"] = Immutable, ["VfioContainer.IsOpen"] = Managed, ["VfioContainer.Owner"] = Immutable,
        ["VfioCore.Options"] = Immutable, ["VfioCore.Platform"] = Immutable,
        ["VfioGroup.Container"] = Managed, ["VfioGroup.Core"] = Immutable, ["VfioGroup.Fd"] = Immutable, ["VfioGroup.IommuGroup"] = Immutable, ["VfioGroup.IsMdevGroup"] = Immutable, ["VfioGroup.Owner"] = Managed,
        ["VfioIommuType1.DirtyTracking"] = Managed, ["VfioIommuType1.DmaAvail"] = Managed, ["VfioIommuType1.DmaEntryLimit"] = Immutable, ["VfioIommuType1.Domains"] = Managed,
        ["VfioIommuType1.HasExternalDomain"] = Managed, ["VfioIommuType1.IovaList"] = Managed, ["VfioIommuType1.Mappings"] = Managed, ["VfioIommuType1.Nesting"] = Immutable,
        ["VfioIommuType1.NumNonPinnedGroups"] = Managed, ["VfioIommuType1.PgsizeBitmap"] = Managed, ["VfioIommuType1.V2"] = Immutable,
        ["VtdUnit.Activity"] = Managed, ["VtdUnit.Config"] = Immutable, ["VtdUnit.IsQualified"] = "static pure classification of a fault reason", ["VtdUnit.RegisterBlockSize"] = Immutable,
        ["VtdUnit.Segment"] = Immutable, ["VtdUnit.Statistics"] = Managed, ["VtdUnit.IgnoredRegisterAccesses"] = Managed,
    };
}
