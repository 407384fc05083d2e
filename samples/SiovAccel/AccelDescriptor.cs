using System.Buffers.Binary;

namespace SiovAccel;

/// <summary>
/// A 64-byte work descriptor written to an ADI's portal (a simplified DSA-style memory move).
/// Layout: u32 opcode, u32 flags, u64 completion_addr, u64 src_addr, u64 dst_addr, u32 xfer_size, rest zero.
/// </summary>
/// <param name="Opcode">Operation (<see cref="OpMemmove"/>).</param>
/// <param name="CompletionAddress">IOVA of the 16-byte completion record, or 0 for none.</param>
/// <param name="Source">Source IOVA.</param>
/// <param name="Destination">Destination IOVA.</param>
/// <param name="Size">Bytes to move.</param>
public readonly record struct AccelDescriptor(uint Opcode, ulong CompletionAddress, ulong Source, ulong Destination, uint Size)
{
    /// <summary>Descriptor size.</summary>
    public const int Length = 64;

    /// <summary>Memory move (the DSA opcode).</summary>
    public const uint OpMemmove = 0x03;

    /// <summary>A memory move.</summary>
    /// <param name="source">Source IOVA.</param>
    /// <param name="destination">Destination IOVA.</param>
    /// <param name="size">Bytes.</param>
    /// <param name="completion">Completion record IOVA, or 0.</param>
    /// <returns>The descriptor.</returns>
    public static AccelDescriptor Memmove(ulong source, ulong destination, uint size, ulong completion = 0) =>
        new(OpMemmove, completion, source, destination, size);

    /// <summary>Encodes the descriptor.</summary>
    /// <returns>64 bytes.</returns>
    public byte[] ToBytes()
    {
        byte[] b = new byte[Length];
        BinaryPrimitives.WriteUInt32LittleEndian(b, Opcode);
        BinaryPrimitives.WriteUInt64LittleEndian(b.AsSpan(8), CompletionAddress);
        BinaryPrimitives.WriteUInt64LittleEndian(b.AsSpan(16), Source);
        BinaryPrimitives.WriteUInt64LittleEndian(b.AsSpan(24), Destination);
        BinaryPrimitives.WriteUInt32LittleEndian(b.AsSpan(32), Size);
        return b;
    }

    internal static AccelDescriptor Parse(ReadOnlySpan<byte> b) => new(
        BinaryPrimitives.ReadUInt32LittleEndian(b),
        BinaryPrimitives.ReadUInt64LittleEndian(b[8..]),
        BinaryPrimitives.ReadUInt64LittleEndian(b[16..]),
        BinaryPrimitives.ReadUInt64LittleEndian(b[24..]),
        BinaryPrimitives.ReadUInt32LittleEndian(b[32..]));
}
