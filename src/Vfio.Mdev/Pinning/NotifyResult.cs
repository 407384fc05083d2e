using Iommu;

namespace Vfio.Mdev.Pinning;

/// <summary>Notifier return values.</summary>
public static class NotifyResult
{
    /// <summary>Nothing to do (<c>NOTIFY_DONE</c>).</summary>
    [KernelSymbol("NOTIFY_DONE")]
    public const int Done = 0;

    /// <summary>Handled (<c>NOTIFY_OK</c>).</summary>
    [KernelSymbol("NOTIFY_OK")]
    public const int Ok = 1;
}
