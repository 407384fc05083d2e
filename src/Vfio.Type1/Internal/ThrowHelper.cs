using System.Diagnostics.CodeAnalysis;
using System.Globalization;

namespace Vfio.Type1.Internal;

/// <summary>
/// The assembly's throw sites, one method per failure: they keep message formatting out of the methods
/// that throw and give each failure one wording.
/// </summary>
internal static class ThrowHelper
{
    [DoesNotReturn]
    public static void GroupNotOpen() => throw new InvalidOperationException("group is not open");

    [DoesNotReturn]
    public static void VendorDidNotUnpin(ulong iova, ulong size) =>
        throw new InvalidOperationException(
            string.Create(CultureInfo.InvariantCulture, $"vendor driver did not unpin mapping 0x{iova:x}+0x{size:x} after 11 DMA-unmap notifications (BUG_ON in vfio_dma_do_unmap)"));

    [DoesNotReturn]
    public static void InvariantViolated(string message) => throw new InvalidOperationException("type1 invariant violated: " + message);
}
