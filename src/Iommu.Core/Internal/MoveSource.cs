using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;

namespace Iommu.Internal;

/// <summary>
/// A write's source as the <see cref="Span{T}"/> that the move paths shared by reads and writes take: on a
/// write they only read it. The one place the read-only span is cast.
/// </summary>
internal static class MoveSource
{
    /// <summary>The bytes of <paramref name="source"/> as a span (never written through on a write).</summary>
    /// <param name="source">The bytes a device or the memory writes.</param>
    /// <returns>A span over the same bytes.</returns>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Span<byte> Of(ReadOnlySpan<byte> source) => MemoryMarshal.CreateSpan(ref MemoryMarshal.GetReference(source), source.Length);
}
