using Iommu;

namespace Uacce;

/// <summary>The uacce ioctl numbers and poll bits (<c>include/uapi/misc/uacce/uacce.h</c>).</summary>
public static class UacceCommands
{
    /// <summary>Starts the queue (<c>_IO('W', 0)</c>).</summary>
    [KernelSymbol("UACCE_CMD_START_Q")]
    public const uint StartQ = 0x5700;

    /// <summary>Stops and releases the queue; it becomes a zombie (<c>_IO('W', 1)</c>).</summary>
    [KernelSymbol("UACCE_CMD_PUT_Q")]
    public const uint PutQ = 0x5701;

    /// <summary>Number of region types (<c>UACCE_MAX_REGION</c>): mmap page offsets 0 and 1.</summary>
    [KernelSymbol("UACCE_MAX_REGION")]
    public const int MaxRegion = 2;

    /// <summary>Longest device name (<c>UACCE_MAX_NAME_SIZE</c>).</summary>
    [KernelSymbol("UACCE_MAX_NAME_SIZE")]
    public const int MaxNameSize = 64;

    /// <summary>Poll bit: data to read (<c>EPOLLIN</c>).</summary>
    [KernelSymbol("EPOLLIN")]
    public const int PollIn = 0x001;

    /// <summary>Poll bit: normal data to read (<c>EPOLLRDNORM</c>).</summary>
    [KernelSymbol("EPOLLRDNORM")]
    public const int PollRdNorm = 0x040;
}
