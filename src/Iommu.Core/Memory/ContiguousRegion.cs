using System.Runtime.CompilerServices;
using Iommu.Internal;

namespace Iommu.Memory;

/// <summary>
/// A range of <see cref="PhysicalMemory"/> backed by one contiguous native block (see
/// <see cref="PhysicalMemory.PinContiguous"/>): table access is a bounds check and a pointer add.
/// </summary>
/// <remarks>Thread safety: as <see cref="PhysicalMemory"/>. Valid until the memory is disposed; from
/// then on every member but the immutable <see cref="Start"/>, <see cref="Size"/>, <see cref="Memory"/>
/// and <see cref="ContainsFrame"/> throws <see cref="ObjectDisposedException"/> (a volatile flag read).
/// A caller that may race the dispose holds <see cref="PhysicalMemory.EnterAccess"/>.</remarks>
public sealed unsafe class ContiguousRegion
{
    private readonly byte* _base;

    internal ContiguousRegion(PhysicalMemory memory, byte* basePointer, ulong start, ulong size)
    {
        Memory = memory;
        _base = basePointer;
        Start = start;
        Size = size;
    }

    /// <summary>
    /// The native address of <see cref="Start"/>: byte <c>pa - Start</c> of the region lives at
    /// <c>BasePointer + (pa - Start)</c> until the memory is disposed. For page walkers that want C's
    /// pointer arithmetic; everything else should use <see cref="Table"/> or <see cref="Entry"/>.
    /// </summary>
    /// <exception cref="ObjectDisposedException">The memory is disposed.</exception>
    public byte* BasePointer
    {
        get
        {
            Memory.ThrowIfDisposed();
            return _base;
        }
    }

    /// <summary>The memory this region belongs to.</summary>
    public PhysicalMemory Memory { get; }

    /// <summary>First physical address of the region.</summary>
    public ulong Start { get; }

    /// <summary>Bytes in the region.</summary>
    public ulong Size { get; }

    /// <summary>Whether the 4 KiB frame at <paramref name="pa"/> lies in the region.</summary>
    /// <param name="pa">A frame address.</param>
    /// <returns>True when inside.</returns>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public bool ContainsFrame(ulong pa) => pa - Start <= Size - PhysicalMemory.PageSize;

    /// <summary>The 4 KiB frame at <paramref name="pa"/> as 512 entries; falls back to <see cref="PhysicalMemory.Table"/> outside the region.</summary>
    /// <param name="pa">4 KiB-aligned physical address.</param>
    /// <returns>The entries.</returns>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public Span<ulong> Table(ulong pa)
    {
        ulong offset = pa - Start;
        if (offset > Size - PhysicalMemory.PageSize || (pa & (PhysicalMemory.PageSize - 1)) != 0)
        {
            return Memory.Table(pa);
        }

        Memory.ThrowIfDisposed();

        return new Span<ulong>(_base + offset, PhysicalMemory.PageSize / sizeof(ulong));
    }

    /// <summary>A reference to the 64-bit entry at <paramref name="pa"/> (8-byte aligned, inside the region).</summary>
    /// <param name="pa">Physical address.</param>
    /// <returns>The entry.</returns>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public ref ulong Entry(ulong pa)
    {
        ulong offset = pa - Start;
        if (offset > Size - sizeof(ulong) || (pa & 7) != 0)
        {
            ThrowHelper.PhysicalRange(pa, sizeof(ulong), Start + Size);
        }

        Memory.ThrowIfDisposed();

        return ref *(ulong*)(_base + offset);
    }

}
