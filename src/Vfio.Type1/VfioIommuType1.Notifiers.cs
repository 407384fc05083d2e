using Iommu;
using Vfio.Mdev.Pinning;

namespace Vfio.Type1;

public sealed partial class VfioIommuType1
{
    [KernelSymbol("vfio_iommu_type1_register_notifier")]
    internal Errno RegisterNotifier(VfioIommuNotifyEvents events, VfioIommuNotifier notifier)
    {
        if ((events & ~VfioIommuNotifyEvents.DmaUnmap) != 0)
        {
            return ErrorDetail.Fail(Errno.EINVAL, $"vfio_register_notifier: unknown events 0x{(ulong)events:x}");
        }

        lock (_lock)
        {
            _notifiers.Add(notifier);
        }

        return Errno.None;
    }

    [KernelSymbol("vfio_iommu_type1_unregister_notifier")]
    internal Errno UnregisterNotifier(VfioIommuNotifier notifier)
    {
        lock (_lock)
        {
            // blocking_notifier_chain_unregister: -ENOENT for a notifier that is not registered.
            return _notifiers.Remove(notifier) ? Errno.None : ErrorDetail.Fail(Errno.ENOENT, "vfio_unregister_notifier: notifier not registered");
        }
    }
}
