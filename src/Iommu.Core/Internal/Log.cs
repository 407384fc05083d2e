using Microsoft.Extensions.Logging;

namespace Iommu.Internal;

/// <summary>Source-generated log messages of the IOMMU core (no formatting cost when the level is off).</summary>
internal static partial class Log
{
    [LoggerMessage(EventId = 1, Level = LogLevel.Information, Message = "Adding {Device} to iommu group {Group}")]
    public static partial void AddedToGroup(ILogger logger, string device, int group);

    [LoggerMessage(EventId = 2, Level = LogLevel.Information, Message = "Removing {Device} from iommu group {Group}")]
    public static partial void RemovedFromGroup(ILogger logger, string device, int group);

    [LoggerMessage(EventId = 3, Level = LogLevel.Warning, Message = "Failed to add {Device} to iommu group {Group}: {Errno}")]
    public static partial void AddDeviceFailed(ILogger logger, string device, int group, Errno errno);

    [LoggerMessage(EventId = 4, Level = LogLevel.Debug, Message = "attach_dev of {Device} failed: {Errno}")]
    public static partial void AttachFailed(ILogger logger, string device, Errno errno);

    [LoggerMessage(EventId = 5, Level = LogLevel.Warning, Message = "iommu_detach_device on {Device}: group {Group} has {Count} devices")]
    public static partial void DetachMultiDeviceGroup(ILogger logger, string device, int group, int count);

    [LoggerMessage(EventId = 6, Level = LogLevel.Warning, Message = "Re-attaching {Device} of group {Group} to its default domain failed")]
    public static partial void ReattachDefaultFailed(ILogger logger, string device, int group);

    [LoggerMessage(EventId = 7, Level = LogLevel.Warning, Message = "Failed to allocate default {Type} domain for group {Group}; using DMA")]
    public static partial void DefaultDomainFallback(ILogger logger, Domains.DomainType type, int group);

    [LoggerMessage(EventId = 8, Level = LogLevel.Information, Message = "Group {Group} has no default domain")]
    public static partial void NoDefaultDomain(ILogger logger, int group);

    [LoggerMessage(EventId = 9, Level = LogLevel.Error, Message = "unaligned: iova 0x{Iova:x} pa 0x{Paddr:x} size 0x{Size:x} min_pagesz 0x{MinPagesz:x}")]
    public static partial void MapUnaligned(ILogger logger, ulong iova, ulong paddr, ulong size, ulong minPagesz);

    [LoggerMessage(EventId = 10, Level = LogLevel.Error, Message = "unaligned: iova 0x{Iova:x} size 0x{Size:x} min_pagesz 0x{MinPagesz:x}")]
    public static partial void UnmapUnaligned(ILogger logger, ulong iova, ulong size, ulong minPagesz);

    [LoggerMessage(EventId = 11, Level = LogLevel.Warning, Message = "dma_unmap of iova 0x{Iova:x} size 0x{Size:x} unmapped 0x{Unmapped:x} (WARN_ON(unmapped != size))")]
    public static partial void DmaUnmapShort(ILogger logger, ulong iova, ulong size, ulong unmapped);

    [LoggerMessage(EventId = 12, Level = LogLevel.Warning, Message = "iommu_detach_device_pasid on {Device} PASID {Pasid}: group {Group}'s slot did not hold the domain (WARN_ON)")]
    public static partial void DetachPasidMismatch(ILogger logger, string device, uint pasid, int group);

    [LoggerMessage(EventId = 13, Level = LogLevel.Warning, Message = "iommu_detach_device_pasid on {Device} PASID {Pasid}: the device has no IOMMU group")]
    public static partial void DetachPasidNoGroup(ILogger logger, string device, uint pasid);

    [LoggerMessage(EventId = 14, Level = LogLevel.Warning, Message = "iommu_free_global_pasid(IOMMU_PASID_INVALID) (WARN_ON)")]
    public static partial void FreeInvalidPasid(ILogger logger);

    [LoggerMessage(EventId = 15, Level = LogLevel.Error, Message = "iopf worker of {Queue}: a fault group failed unanswered")]
    public static partial void IopfWorkerFailed(ILogger logger, Exception exception, string queue);

    [LoggerMessage(EventId = 16, Level = LogLevel.Error, Message = "iopf: handling {Fault} threw; the group is answered Invalid")]
    public static partial void IopfHandlingFailed(ILogger logger, Exception exception, string fault);

    [LoggerMessage(EventId = 17, Level = LogLevel.Warning, Message = "iommu_free_global_pasid({Pasid}): the PASID of a process bound by SVA is not the caller's to free; ignored")]
    public static partial void FreeSvaPasid(ILogger logger, uint pasid);
}
