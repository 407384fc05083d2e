using Microsoft.Extensions.Logging;

namespace Vfio.Mdev.Internal;

/// <summary>Source-generated log messages of the mdev core (no formatting cost when the level is off).</summary>
internal static partial class Log
{
    [LoggerMessage(EventId = 100, Level = LogLevel.Information, Message = "MDEV: Registered {Parent}")]
    public static partial void Registered(ILogger logger, string parent);

    [LoggerMessage(EventId = 101, Level = LogLevel.Information, Message = "MDEV: Unregistering {Parent}")]
    public static partial void Unregistering(ILogger logger, string parent);

    [LoggerMessage(EventId = 102, Level = LogLevel.Information, Message = "MDEV: created {Mdev} of type {Type}, group_id = {Group}")]
    public static partial void Created(ILogger logger, string mdev, string type, int group);

    [LoggerMessage(EventId = 103, Level = LogLevel.Information, Message = "MDEV: removed {Mdev}")]
    public static partial void Removed(ILogger logger, string mdev);

    [LoggerMessage(EventId = 104, Level = LogLevel.Error, Message = "{Mdev}: Remove failed: err={Errno}")]
    public static partial void VendorRemoveFailed(ILogger logger, string mdev, Iommu.Errno errno);

    [LoggerMessage(EventId = 105, Level = LogLevel.Information, Message = "{Mdev}: No mdev vendor driver request callback support, blocked until released by user")]
    public static partial void NoRequestCallback(ILogger logger, string mdev);
}
