using System.Buffers.Binary;

namespace Mtty;

/// <summary>
/// The argument of <see cref="MttyDriver.IoctlDmaLoopback"/> — a feature of this sample, not of the
/// kernel's mtty: the card copies <see cref="Length"/> bytes from <see cref="SourceIova"/> to
/// <see cref="DestinationIova"/> in guest (IOVA) memory, pinning the pages through VFIO.
/// Layout: u32 argsz, u32 flags, u64 src_iova, u64 dst_iova, u64 length (32 bytes, little endian).
/// </summary>
/// <param name="SourceIova">Where the bytes come from.</param>
/// <param name="DestinationIova">Where they go.</param>
/// <param name="Length">How many.</param>
public readonly record struct MttyDmaLoopback(ulong SourceIova, ulong DestinationIova, ulong Length)
{
    /// <summary>Size of the argument.</summary>
    public const int Size = 32;

    /// <summary>Encodes the argument as user space passes it.</summary>
    /// <returns>The bytes.</returns>
    public byte[] ToBytes()
    {
        byte[] b = new byte[Size];
        BinaryPrimitives.WriteUInt32LittleEndian(b, Size);
        BinaryPrimitives.WriteUInt64LittleEndian(b.AsSpan(8), SourceIova);
        BinaryPrimitives.WriteUInt64LittleEndian(b.AsSpan(16), DestinationIova);
        BinaryPrimitives.WriteUInt64LittleEndian(b.AsSpan(24), Length);
        return b;
    }

    internal static bool TryRead(ReadOnlySpan<byte> arg, out MttyDmaLoopback value)
    {
        value = default;
        if (arg.Length < Size || BinaryPrimitives.ReadUInt32LittleEndian(arg) < Size || BinaryPrimitives.ReadUInt32LittleEndian(arg[4..]) != 0)
        {
            return false;
        }

        value = new MttyDmaLoopback(
            BinaryPrimitives.ReadUInt64LittleEndian(arg[8..]),
            BinaryPrimitives.ReadUInt64LittleEndian(arg[16..]),
            BinaryPrimitives.ReadUInt64LittleEndian(arg[24..]));
        return true;
    }
}
