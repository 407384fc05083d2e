namespace Iommu.VtD.Diagnostics;

/// <summary>One structure of an exported image: its physical address and its bytes.</summary>
/// <param name="Address">Physical address of the first byte (4 KiB aligned).</param>
/// <param name="Kind">What the structure is.</param>
/// <param name="Level">For <see cref="VtdImageChunkKind.PageTable"/> the paging level (1 = 4 KiB leaves … 5); 0 otherwise.</param>
/// <param name="Data">The bytes as they are in memory.</param>
public sealed record VtdImageChunk(ulong Address, VtdImageChunkKind Kind, int Level, ReadOnlyMemory<byte> Data)
{
    /// <summary>Number of bytes.</summary>
    public int Size => Data.Length;

    /// <summary>Reads the little-endian 64-bit word at byte <paramref name="offset"/> of the chunk.</summary>
    /// <param name="offset">Byte offset, 8-byte aligned.</param>
    /// <returns>The word.</returns>
    public ulong Word(int offset) => System.Buffers.Binary.BinaryPrimitives.ReadUInt64LittleEndian(Data.Span.Slice(offset, 8));
}
