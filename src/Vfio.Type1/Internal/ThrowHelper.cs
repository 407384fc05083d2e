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
    public static void HostRangeInvalid(ulong physicalBase, ulong size) =>
        throw new ArgumentOutOfRangeException(
            nameof(size), string.Create(CultureInfo.InvariantCulture, $"range 0x{physicalBase:x}+0x{size:x} must be page aligned and inside physical memory"));

    [DoesNotReturn]
    public static void PfnNotPinned(ulong pfn) =>
        throw new InvalidOperationException(string.Create(CultureInfo.InvariantCulture, $"pfn 0x{pfn:x} is not pinned"));

    [DoesNotReturn]
    public static void HugePagesExhausted(ulong length) =>
        throw new InsufficientMemoryException(string.Create(CultureInfo.InvariantCulture, $"host page pool cannot back {length} bytes of huge pages"));

    [DoesNotReturn]
    public static void AddressNotPageAligned(ulong vaddr) =>
        throw new ArgumentException(string.Create(CultureInfo.InvariantCulture, $"address 0x{vaddr:x} is not page aligned"), nameof(vaddr));

    [DoesNotReturn]
    public static void RangeOutsideUserSpace(ulong vaddr, ulong length) =>
        throw new ArgumentOutOfRangeException(
            nameof(length), string.Create(CultureInfo.InvariantCulture, $"range 0x{vaddr:x}+0x{length:x} wraps or leaves the user address space"));

    [DoesNotReturn]
    public static void ProcessExited(string name) => throw new InvalidOperationException($"{name} has exited");

    [DoesNotReturn]
    public static void GroupNotOpen() => throw new InvalidOperationException("group is not open");

    [DoesNotReturn]
    public static void VendorDidNotUnpin(ulong iova, ulong size) =>
        throw new InvalidOperationException(
            string.Create(CultureInfo.InvariantCulture, $"vendor driver did not unpin mapping 0x{iova:x}+0x{size:x} after 11 DMA-unmap notifications (BUG_ON in vfio_dma_do_unmap)"));

    [DoesNotReturn]
    public static void InvariantViolated(string message) => throw new InvalidOperationException("type1 invariant violated: " + message);
}
