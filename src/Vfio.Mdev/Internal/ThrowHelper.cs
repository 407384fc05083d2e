using System.Diagnostics.CodeAnalysis;

namespace Vfio.Mdev.Internal;

/// <summary>The assembly's throw sites, one method per failure.</summary>
internal static class ThrowHelper
{
    [DoesNotReturn]
    public static void DeviceFileClosed(MdevDeviceFile file) => throw new ObjectDisposedException(file.GetType().FullName);
}
