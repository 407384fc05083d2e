using System.Buffers.Binary;
using System.Globalization;

namespace Iommu.VtD.Hardware;

/// <summary>
/// The guest-visible state of a <see cref="VtdUnit"/> at one moment (<see cref="VtdUnit.SaveState"/>):
/// every register (command and status registers, the root-table and queue pointers, the fault
/// records and event registers), the root table latched by the last SRTP, and where the next fault
/// is recorded. Immutable; <see cref="ToBytes"/> and <see cref="FromBytes"/> carry it through a file.
/// </summary>
/// <remarks>
/// The caches are not part of the state: hardware may drop any cache entry at any time, so a unit
/// restored with empty caches behaves as the saved one would after dropping them. A guest that keeps
/// its tables and invalidations consistent gets the same translations and faults; one that changed
/// a table without invalidating may see the new entry after a restore, as it could on hardware after
/// an eviction. Statistics and counters are the model's, not the guest's, and are not saved.
/// </remarks>
public sealed class VtdUnitState
{
    private const uint Magic = 0x5644_5453; // "STDV"
    private const int FormatVersion = 1;
    private const int HeaderSize = 4 + 4 + 8 + 8 + 8 + 4 + 4;
    private readonly byte[] _registers;

    internal VtdUnitState(byte[] registers, ulong cap, ulong ecap, ulong latchedRootTable, int nextFaultRecord)
    {
        _registers = registers;
        Cap = cap;
        Ecap = ecap;
        LatchedRootTable = latchedRootTable;
        NextFaultRecord = nextFaultRecord;
    }

    /// <summary>CAP of the unit saved: a state restores only into a unit with the same CAP and ECAP.</summary>
    public ulong Cap { get; }

    /// <summary>ECAP of the unit saved.</summary>
    public ulong Ecap { get; }

    /// <summary>The root-table address and TTM latched by the last SRTP (RTADDR may have been written since).</summary>
    public ulong LatchedRootTable { get; }

    /// <summary>The fault-recording register the next fault goes to.</summary>
    public int NextFaultRecord { get; }

    /// <summary>The register block's bytes (as the hardware holds them, write-only fields included).</summary>
    public ReadOnlySpan<byte> Registers => _registers;

    /// <summary>The state as bytes (a small header and the register block), for a snapshot file.</summary>
    /// <returns>A new array.</returns>
    public byte[] ToBytes()
    {
        var bytes = new byte[HeaderSize + _registers.Length];
        Span<byte> s = bytes;
        BinaryPrimitives.WriteUInt32LittleEndian(s, Magic);
        BinaryPrimitives.WriteInt32LittleEndian(s[4..], FormatVersion);
        BinaryPrimitives.WriteUInt64LittleEndian(s[8..], Cap);
        BinaryPrimitives.WriteUInt64LittleEndian(s[16..], Ecap);
        BinaryPrimitives.WriteUInt64LittleEndian(s[24..], LatchedRootTable);
        BinaryPrimitives.WriteInt32LittleEndian(s[32..], NextFaultRecord);
        BinaryPrimitives.WriteInt32LittleEndian(s[36..], _registers.Length);
        _registers.CopyTo(s[HeaderSize..]);
        return bytes;
    }

    /// <summary>Reads a state written by <see cref="ToBytes"/>.</summary>
    /// <param name="bytes">The bytes.</param>
    /// <returns>The state.</returns>
    /// <exception cref="FormatException">The bytes are not a state of this format version.</exception>
    public static VtdUnitState FromBytes(ReadOnlySpan<byte> bytes)
    {
        if (bytes.Length < HeaderSize || BinaryPrimitives.ReadUInt32LittleEndian(bytes) != Magic)
        {
            throw new FormatException("Not a VT-d unit state: the header is missing.");
        }

        int version = BinaryPrimitives.ReadInt32LittleEndian(bytes[4..]);
        int length = BinaryPrimitives.ReadInt32LittleEndian(bytes[36..]);
        int next = BinaryPrimitives.ReadInt32LittleEndian(bytes[32..]);
        if (version != FormatVersion || length < 0x1000 || length != bytes.Length - HeaderSize || next < 0)
        {
            throw new FormatException(string.Create(CultureInfo.InvariantCulture,
                $"VT-d unit state version {version} with a {length}-byte register block in {bytes.Length} bytes: expected version {FormatVersion} and the whole block."));
        }

        return new VtdUnitState(
            bytes[HeaderSize..].ToArray(),
            BinaryPrimitives.ReadUInt64LittleEndian(bytes[8..]),
            BinaryPrimitives.ReadUInt64LittleEndian(bytes[16..]),
            BinaryPrimitives.ReadUInt64LittleEndian(bytes[24..]),
            next);
    }
}
