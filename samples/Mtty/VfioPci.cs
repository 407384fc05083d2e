namespace Mtty;

/// <summary>vfio-pci conventions a PCI-like mdev follows: region indexes in the file offset, and the device ioctls mtty answers.</summary>
public static class VfioPci
{
    /// <summary>VFIO_PCI_OFFSET_SHIFT: the region index lives in the file offset's bits 40 and up.</summary>
    public const int OffsetShift = 40;

    /// <summary>VFIO_PCI_BAR0_REGION_INDEX.</summary>
    public const int Bar0 = 0;

    /// <summary>VFIO_PCI_BAR1_REGION_INDEX.</summary>
    public const int Bar1 = 1;

    /// <summary>VFIO_PCI_CONFIG_REGION_INDEX.</summary>
    public const int Config = 7;

    /// <summary>VFIO_PCI_NUM_REGIONS.</summary>
    public const int NumRegions = 9;

    /// <summary>VFIO_PCI_NUM_IRQS.</summary>
    public const int NumIrqs = 5;

    /// <summary>VFIO_DEVICE_GET_INFO, _IO(';', 107).</summary>
    public const uint DeviceGetInfo = 0x3b6b;

    /// <summary>VFIO_DEVICE_RESET, _IO(';', 111).</summary>
    public const uint DeviceReset = 0x3b6f;

    /// <summary>VFIO_DEVICE_FLAGS_RESET.</summary>
    public const uint DeviceFlagsReset = 1 << 0;

    /// <summary>VFIO_DEVICE_FLAGS_PCI.</summary>
    public const uint DeviceFlagsPci = 1 << 1;

    /// <summary>The file offset of <paramref name="offset"/> within region <paramref name="index"/> (VFIO_PCI_INDEX_TO_OFFSET).</summary>
    /// <param name="index">Region index.</param>
    /// <param name="offset">Offset in the region.</param>
    /// <returns>The file offset.</returns>
    public static long Offset(int index, long offset = 0) => ((long)index << OffsetShift) | offset;
}
