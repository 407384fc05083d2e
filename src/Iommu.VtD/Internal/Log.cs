using Microsoft.Extensions.Logging;

namespace Iommu.VtD;

/// <summary>Source-generated log messages of the VT-d driver.</summary>
internal static partial class Log
{
    [LoggerMessage(EventId = 100, Level = LogLevel.Error, Message = "DMAR unit {Unit}: invalidation queue error on descriptor 0x{Descriptor:x} (IQERCD 0x{Iqercd:x}, IQH 0x{Iqh:x})")]
    public static partial void QueueError(ILogger logger, int unit, ulong descriptor, ulong iqercd, ulong iqh);

    [LoggerMessage(EventId = 101, Level = LogLevel.Information, Message = "DMAR unit {Unit}: {Mode} mode, agaw {Agaw}, {Domains} domain ids, {Invalidation} invalidation")]
    public static partial void UnitUp(ILogger logger, int unit, string mode, int agaw, int domains, string invalidation);

    [LoggerMessage(EventId = 102, Level = LogLevel.Warning, Message = "DMAR unit {Unit}: [DMA {Direction}] request device [{Source}] PASID {Pasid} fault addr 0x{Address:x} [fault reason 0x{Reason:x2}] {ReasonName}")]
    public static partial void DmaFault(ILogger logger, int unit, string direction, string source, string pasid, ulong address, int reason, string reasonName);

    [LoggerMessage(EventId = 103, Level = LogLevel.Warning, Message = "{Device}: device is ineligible for IOMMU domain attach due to platform RMRR requirement")]
    public static partial void RmrrLocked(ILogger logger, string device);

    [LoggerMessage(EventId = 104, Level = LogLevel.Error, Message = "{Device}: {What}")]
    public static partial void DeviceError(ILogger logger, string device, string what);

    [LoggerMessage(EventId = 105, Level = LogLevel.Information, Message = "DMAR unit {Unit}: IOMMU batching disallowed due to virtualization")]
    public static partial void BatchingDisallowed(ILogger logger, int unit);

    [LoggerMessage(EventId = 106, Level = LogLevel.Warning, Message = "DMAR unit on segment {Segment}: ignored a {Size}-byte register {Kind} at offset 0x{Offset:x} (value 0x{Value:x}): registers are aligned 4- or 8-byte accesses within [0x0, 0x{Limit:x})")]
    public static partial void IgnoredRegisterAccess(ILogger logger, ushort segment, string kind, int size, ulong offset, ulong value, uint limit);

    [LoggerMessage(EventId = 107, Level = LogLevel.Error, Message = "irq/{Thread}: the handler failed")]
    public static partial void IrqThreadFailed(ILogger logger, Exception exception, string thread);
}
