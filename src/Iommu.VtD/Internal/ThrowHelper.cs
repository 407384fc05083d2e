using System.Diagnostics.CodeAnalysis;
using System.Globalization;

namespace Iommu.VtD.Internal;

/// <summary>Throw sites kept out of hot methods so those stay small and inlinable.</summary>
internal static class ThrowHelper
{
    [DoesNotReturn]
    public static void RequestRange(ulong iova, ulong size) =>
        throw new ArgumentOutOfRangeException(
            nameof(size),
            string.Create(CultureInfo.InvariantCulture, $"Request [0x{iova:x}, +0x{size:x}) is empty or crosses a 4 KiB boundary; a single request stays inside one 4 KiB page."));

    [DoesNotReturn]
    public static void Pasid(uint pasid) =>
        throw new ArgumentOutOfRangeException(
            nameof(pasid),
            string.Create(CultureInfo.InvariantCulture, $"PASID 0x{pasid:x} does not fit the 20-bit PASID field."));

    [DoesNotReturn]
    public static void Attributes(Iommu.Devices.DmaRequestAttributes attributes) =>
        throw new ArgumentOutOfRangeException(
            nameof(attributes),
            string.Create(CultureInfo.InvariantCulture, $"Request attributes 0x{(int)attributes:x} name bits DmaRequestAttributes does not define (Privileged = 1, Execute = 2)."));

    [DoesNotReturn]
    public static void Argument(string message, string paramName) => throw new ArgumentException(message, paramName);
}
