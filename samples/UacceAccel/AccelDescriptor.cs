using System.Buffers.Binary;

namespace UacceAccel;

/// <summary>What a descriptor asks the engine to do.</summary>
public enum AccelOp : uint
{
    /// <summary>Nothing; completes at once.</summary>
    Nop = 0,

    /// <summary>Copy <c>Length</c> bytes from <c>Source</c> to <c>Destination</c>.</summary>
    Copy = 1,

    /// <summary>Copy, XOR-ing every byte with the low byte of <c>Key</c> (a stand-in for a transform such as compression).</summary>
    Xor = 2,
}

/// <summary>The completion status the engine writes into a descriptor.</summary>
public enum AccelStatus : uint
{
    /// <summary>Submitted, not completed (what the process writes).</summary>
    Pending = 0,

    /// <summary>Done.</summary>
    Success = 1,

    /// <summary>A DMA was refused: the address is outside the process's mappings or lacks the access (or its PASID is torn down).</summary>
    TranslationFault = 2,

    /// <summary>A page request for the address was answered Invalid Request (no VMA allows the access).</summary>
    PageRequestFailed = 3,

    /// <summary>Unknown operation or a length above <see cref="AccelDescriptor.MaxLength"/>.</summary>
    BadDescriptor = 4,
}

/// <summary>
/// A 32-byte descriptor in a queue's ring (the DUS region). Layout: u32 op, u32 status, u64 source VA,
/// u64 destination VA, u32 length, u32 key. Addresses are the submitting process's virtual addresses.
/// </summary>
/// <param name="Op">The operation.</param>
/// <param name="Status">Completion status (the engine writes it).</param>
/// <param name="Source">Source virtual address.</param>
/// <param name="Destination">Destination virtual address.</param>
/// <param name="Length">Bytes.</param>
/// <param name="Key">XOR key (low byte) for <see cref="AccelOp.Xor"/>.</param>
public readonly record struct AccelDescriptor(AccelOp Op, AccelStatus Status, ulong Source, ulong Destination, uint Length, uint Key = 0)
{
    /// <summary>Bytes per descriptor.</summary>
    public const int Size = 32;

    /// <summary>Offset of the status word.</summary>
    public const int StatusOffset = 4;

    /// <summary>Largest transfer of one descriptor.</summary>
    public const uint MaxLength = 64 * 1024;

    /// <summary>Encodes the descriptor.</summary>
    /// <returns>32 bytes.</returns>
    public byte[] ToBytes()
    {
        byte[] b = new byte[Size];
        BinaryPrimitives.WriteUInt32LittleEndian(b, (uint)Op);
        BinaryPrimitives.WriteUInt32LittleEndian(b.AsSpan(4), (uint)Status);
        BinaryPrimitives.WriteUInt64LittleEndian(b.AsSpan(8), Source);
        BinaryPrimitives.WriteUInt64LittleEndian(b.AsSpan(16), Destination);
        BinaryPrimitives.WriteUInt32LittleEndian(b.AsSpan(24), Length);
        BinaryPrimitives.WriteUInt32LittleEndian(b.AsSpan(28), Key);
        return b;
    }

    /// <summary>Decodes a descriptor.</summary>
    /// <param name="b">At least 32 bytes.</param>
    /// <returns>The descriptor.</returns>
    public static AccelDescriptor FromBytes(ReadOnlySpan<byte> b) => new(
        (AccelOp)BinaryPrimitives.ReadUInt32LittleEndian(b),
        (AccelStatus)BinaryPrimitives.ReadUInt32LittleEndian(b[4..]),
        BinaryPrimitives.ReadUInt64LittleEndian(b[8..]),
        BinaryPrimitives.ReadUInt64LittleEndian(b[16..]),
        BinaryPrimitives.ReadUInt32LittleEndian(b[24..]),
        BinaryPrimitives.ReadUInt32LittleEndian(b[28..]));
}
