using System.Diagnostics.CodeAnalysis;
using System.Globalization;

namespace Iommu.Internal;

/// <summary>Throw sites kept out of hot methods so those stay small and inlinable.</summary>
internal static class ThrowHelper
{
    [DoesNotReturn]
    public static void PhysicalRange(ulong pa, ulong length, ulong size) =>
        throw new ArgumentOutOfRangeException(
            nameof(pa),
            string.Create(CultureInfo.InvariantCulture, $"Physical range [0x{pa:x}, 0x{pa + length:x}) lies outside physical memory [0x0, 0x{size:x})."));

    [DoesNotReturn]
    public static void PhysicalHole(ulong pa, ulong length) =>
        throw new ArgumentOutOfRangeException(
            nameof(pa),
            string.Create(CultureInfo.InvariantCulture, $"Physical range [0x{pa:x}, 0x{pa + length:x}) is not RAM: it reaches a hole between the RAM ranges of this caller-owned memory (see PhysicalMemory.HostRanges)."));

    [DoesNotReturn]
    public static void Misaligned(string what, ulong value, ulong alignment) =>
        throw new ArgumentException(
            string.Create(CultureInfo.InvariantCulture, $"{what} 0x{value:x} is not aligned to 0x{alignment:x}."), what);

    [DoesNotReturn]
    public static void ObjectDisposed(string name) => throw new ObjectDisposedException(name);

    [DoesNotReturn]
    public static void ObjectDisposed(string name, string message) => throw new ObjectDisposedException(name, message);

    [DoesNotReturn]
    public static void InvalidOperation(string message) => throw new InvalidOperationException(message);

    [DoesNotReturn]
    public static void Argument(string message, string paramName) => throw new ArgumentException(message, paramName);
}
