using Iommu.Mm;

namespace Iommu.Reliability.Tests.BadInput;

/// <summary>Public types and entry points the bad-input matrix leaves out, each with its reason.</summary>
internal static class BadInputExemptions
{
    private const string ValueRecord = "positional record: a value carrier like its C struct; the constructor takes any value by design and the consumers (rows above) validate";
    private const string DriverInternal = "VT-d driver internals made public for the benchmarks and diagnostics; every input reaches them through IntelIommu/IommuCore, whose rows cover null, unaligned, out-of-range and overflowing arguments";

    public static readonly IReadOnlyDictionary<string, string> Types = new Dictionary<string, string>(StringComparer.Ordinal)
    {
        ["ErrorDetail"] = "thread-local failure-detail slot: any errno and message are valid input by design",
        ["ErrorDetailUnwindScope"] = "scope token of ErrorDetail.PreserveWhileUnwinding: no input",
        ["IommuException"] = "exception type: constructors only carry a message and errno",
        ["KernelSymbolAttribute"] = "metadata attribute naming the kernel symbol; never called with user input",
        ["DmaPageTable"] = DriverInternal,
        ["DmaPte"] = "bit-field decoder over a raw 64-bit PTE: every ulong is a valid input",
        ["DmarDomain"] = DriverInternal,
        ["IntelIommuUnit"] = DriverInternal,
        ["VtdCap"] = "bit-field decoder over the raw CAP register: every ulong is a valid input",
        ["VtdEcap"] = "bit-field decoder over the raw ECAP register: every ulong is a valid input",
        ["MdevParentOpsBase"] = "abstract base of vendor drivers: its members are the vendor's callbacks, which the mdev core calls with arguments it has checked (MdevCore, MdevDevice and MdevDeviceFile rows cover bad input)",
        ["MmuNotifier"] = "abstract base of subscribers: its members are the user's callbacks, which ProcessAddressSpace calls with page-aligned ranges it computed (its rows cover bad input)",
        ["VtdMetrics"] = "publishes counters to an EventSource/Meter listener; no caller-supplied data beyond the unit",
    };

    public static readonly IReadOnlyDictionary<string, string> Members = new Dictionary<string, string>(StringComparer.Ordinal)
    {
        ["DmaResult..ctor"] = ValueRecord,
        ["UacceInterface..ctor"] = ValueRecord,
        ["AtsCompletion..ctor"] = ValueRecord,
        ["PageRequestMessage..ctor"] = ValueRecord,
        ["DmaSegment..ctor"] = ValueRecord,
        ["Scatterlist..ctor"] = ValueRecord + " (IommuCore.DmaMapSg validates the entries)",
        ["HostMemoryRange..ctor"] = ValueRecord,
        ["IommuDomainGeometry..ctor"] = ValueRecord,
        ["IommuResvRegion..ctor"] = ValueRecord,
        ["DmarFaultRecord..ctor"] = ValueRecord,
        ["IommuHwptVtdS1..ctor"] = ValueRecord + " (IntelIommu.DomainAllocNested and AttachNestedDev validate it)",
        ["IommuHwptVtdS1Invalidate..ctor"] = ValueRecord + " (IntelIommu.CacheInvalidateUser validates it)",
        ["VtdActivity..ctor"] = ValueRecord,
        ["VtdCacheStatistics..ctor"] = ValueRecord,
        ["VtdInterruptEventArgs..ctor"] = ValueRecord,
        ["VtdImageChunk..ctor"] = ValueRecord,
        ["VtdImageEntry..ctor"] = ValueRecord,
        ["VtdEntryDescription..ctor"] = ValueRecord,
        ["VtdProbe..ctor"] = ValueRecord,
        ["VtdProbeResult..ctor"] = ValueRecord,
        ["MdevTypeAttribute..ctor"] = ValueRecord,
        ["VfioDmaUnmapEvent..ctor"] = ValueRecord,
        ["VfioBitmap..ctor"] = ValueRecord,
        ["VfioGroupStatus..ctor"] = ValueRecord,
        ["VfioIommuType1DmaMap..ctor"] = ValueRecord + " (the ioctl fuzzer feeds every field edge through MAP_DMA)",
        ["VfioIommuType1DmaUnmap..ctor"] = ValueRecord + " (the ioctl fuzzer feeds every field edge through UNMAP_DMA)",
        ["VfioIommuType1Info..ctor"] = ValueRecord,
        ["VfioIovaRange..ctor"] = ValueRecord,
        ["ProcessMemoryArea..ctor"] = ValueRecord,
        ["X86PageWalk..ctor"] = ValueRecord,
        ["FrameAllocator.TryAllocate"] = "no input: its only parameter is the out address (exhaustion is covered by TryAllocateContiguous rows)",
    };
}
