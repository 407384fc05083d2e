using Iommu;

namespace Uacce;

/// <summary>Capabilities of a uacce device (<c>uacce_interface.flags</c>, <c>uacce_device.flags</c>).</summary>
[Flags]
[System.Diagnostics.CodeAnalysis.SuppressMessage("Naming", "CA1711", Justification = "Mirrors uacce_device.flags (UACCE_DEV_*).")]
[KernelSymbol("UACCE_DEV_SVA")]
public enum UacceDeviceFlags
{
    /// <summary>No capability: queues get PASID 0 and work on addresses the driver provides.</summary>
    None = 0,

    /// <summary>Shared virtual addressing (<c>UACCE_DEV_SVA</c>, bit 0): each queue works in its opener's address space through a PASID, with device page faults.</summary>
    Sva = 1,
}
