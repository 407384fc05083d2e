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
/// The state also names the parts of the saved unit's <see cref="VtdConfig"/> that CAP and ECAP do not
/// show (host address width, cache shape, model profiles): it restores only into a unit with the same.
/// </remarks>
public sealed class VtdUnitState
{
    private const uint Magic = 0x5644_5453; // "STDV"

    // Version 1: the header and the register block. Version 2 adds the configuration CAP and ECAP do not
    // show, and a checksum at the end, so damage anywhere is refused instead of restored.
    private const int FormatVersion = 2;
    private const int HeaderSize = 4 + 4 + 8 + 8 + 8 + 4 + 4;
    private const int ShapeSize = 8 * 9;
    private const int ChecksumSize = 8;
    private readonly byte[] _registers;

    internal VtdUnitState(byte[] registers, ulong cap, ulong ecap, ulong latchedRootTable, int nextFaultRecord, long[]? shape)
    {
        _registers = registers;
        Cap = cap;
        Ecap = ecap;
        LatchedRootTable = latchedRootTable;
        NextFaultRecord = nextFaultRecord;
        Shape = shape;
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

    /// <summary>The state as an emulator logs it: CAP, ECAP, GSTS, the latched root table and the next fault record.</summary>
    /// <returns>For example <c>VT-d state: CAP 0xd2008c40660462, ECAP 0xf0101a, GSTS 0xc7000000, root 0x1000, next fault record 0</c>.</returns>
    public override string ToString() =>
        string.Create(CultureInfo.InvariantCulture, $"VT-d state: CAP 0x{Cap:x}, ECAP 0x{Ecap:x}, GSTS 0x{BinaryPrimitives.ReadUInt32LittleEndian(_registers.AsSpan((int)VtdRegister.Gsts)):x}, root 0x{LatchedRootTable:x}, next fault record {NextFaultRecord}");

    // The configuration CAP and ECAP do not show, in ShapeNames order; null for a version 1 blob (not recorded).
    internal long[]? Shape { get; }

    internal static readonly string[] ShapeNames =
    [
        nameof(VtdConfig.HostAddressWidth), nameof(VtdConfig.IotlbCapacity), nameof(VtdConfig.IotlbAssociativity),
        nameof(VtdConfig.ContextCacheCapacity), nameof(VtdConfig.ContextCacheAssociativity), nameof(VtdConfig.PasidCacheCapacity),
        nameof(VtdConfig.PasidCacheAssociativity), nameof(VtdConfig.QemuFirstLevelCheckOrder), nameof(VtdConfig.PageRequestOverflowResponse),
    ];

    internal static long[] ShapeOf(VtdConfig c) =>
    [
        c.HostAddressWidth, c.IotlbCapacity, c.IotlbAssociativity, c.ContextCacheCapacity, c.ContextCacheAssociativity,
        c.PasidCacheCapacity, c.PasidCacheAssociativity, c.QemuFirstLevelCheckOrder ? 1 : 0, c.PageRequestOverflowResponse ?? -1,
    ];

    /// <summary>The state as bytes (a header, the register block and a checksum), for a snapshot file.</summary>
    /// <returns>A new array.</returns>
    public byte[] ToBytes()
    {
        // A state read from a version 1 blob does not know the configuration: it is written as it came.
        long[]? shape = Shape;
        int extra = shape is null ? 0 : ShapeSize + ChecksumSize;
        var bytes = new byte[HeaderSize + _registers.Length + extra];
        Span<byte> s = bytes;
        BinaryPrimitives.WriteUInt32LittleEndian(s, Magic);
        BinaryPrimitives.WriteInt32LittleEndian(s[4..], shape is null ? 1 : FormatVersion);
        BinaryPrimitives.WriteUInt64LittleEndian(s[8..], Cap);
        BinaryPrimitives.WriteUInt64LittleEndian(s[16..], Ecap);
        BinaryPrimitives.WriteUInt64LittleEndian(s[24..], LatchedRootTable);
        BinaryPrimitives.WriteInt32LittleEndian(s[32..], NextFaultRecord);
        BinaryPrimitives.WriteInt32LittleEndian(s[36..], _registers.Length);
        if (shape is null)
        {
            _registers.CopyTo(s[HeaderSize..]);
            return bytes;
        }

        for (int i = 0; i < shape.Length; i++)
        {
            BinaryPrimitives.WriteInt64LittleEndian(s[(HeaderSize + (8 * i))..], shape[i]);
        }

        _registers.CopyTo(s[(HeaderSize + ShapeSize)..]);
        BinaryPrimitives.WriteUInt64LittleEndian(s[^ChecksumSize..], Checksum(s[..^ChecksumSize]));
        return bytes;
    }

    /// <summary>Reads a state written by <see cref="ToBytes"/> (this format version or version 1).</summary>
    /// <param name="bytes">The bytes.</param>
    /// <returns>The state.</returns>
    /// <exception cref="FormatException">
    /// The bytes are not a whole state of a known format version, fail their checksum, or hold a register
    /// block or fields that contradict the header.
    /// </exception>
    public static VtdUnitState FromBytes(ReadOnlySpan<byte> bytes)
    {
        if (bytes.Length < HeaderSize || BinaryPrimitives.ReadUInt32LittleEndian(bytes) != Magic)
        {
            throw new FormatException("Not a VT-d unit state: the header is missing.");
        }

        int version = BinaryPrimitives.ReadInt32LittleEndian(bytes[4..]);
        int length = BinaryPrimitives.ReadInt32LittleEndian(bytes[36..]);
        int next = BinaryPrimitives.ReadInt32LittleEndian(bytes[32..]);
        int extra = version == 1 ? 0 : ShapeSize + ChecksumSize;
        if (version is not (1 or FormatVersion) || length < 0x1000 || (long)length + extra != bytes.Length - HeaderSize)
        {
            throw new FormatException(string.Create(CultureInfo.InvariantCulture,
                $"VT-d unit state version {version} with a {length}-byte register block in {bytes.Length} bytes: expected version 1 or {FormatVersion} and the whole block."));
        }

        if (version != 1 && Checksum(bytes[..^ChecksumSize]) != BinaryPrimitives.ReadUInt64LittleEndian(bytes[^ChecksumSize..]))
        {
            throw new FormatException("VT-d unit state is damaged: its checksum does not match its bytes.");
        }

        ulong cap = BinaryPrimitives.ReadUInt64LittleEndian(bytes[8..]);
        ulong ecap = BinaryPrimitives.ReadUInt64LittleEndian(bytes[16..]);
        ulong root = BinaryPrimitives.ReadUInt64LittleEndian(bytes[24..]);
        ReadOnlySpan<byte> block = bytes.Slice(HeaderSize + (version == 1 ? 0 : ShapeSize), length);
        int records = VtdCap.FaultRecordCount(cap);
        if (BinaryPrimitives.ReadUInt64LittleEndian(block[(int)VtdRegister.Cap..]) != cap
            || BinaryPrimitives.ReadUInt64LittleEndian(block[(int)VtdRegister.Ecap..]) != ecap
            || next < 0 || next >= records || (root & ~(VtdFormat.PointerMask | 0xC00)) != 0)
        {
            throw new FormatException(string.Create(CultureInfo.InvariantCulture,
                $"VT-d unit state is inconsistent: header CAP 0x{cap:X} and ECAP 0x{ecap:X}, next fault record {next} of {records}, latched root 0x{root:X}; the register block holds CAP 0x{BinaryPrimitives.ReadUInt64LittleEndian(block[(int)VtdRegister.Cap..]):X} and ECAP 0x{BinaryPrimitives.ReadUInt64LittleEndian(block[(int)VtdRegister.Ecap..]):X}."));
        }

        long[]? shape = null;
        if (version != 1)
        {
            shape = new long[ShapeNames.Length];
            for (int i = 0; i < shape.Length; i++)
            {
                shape[i] = BinaryPrimitives.ReadInt64LittleEndian(bytes[(HeaderSize + (8 * i))..]);
            }
        }

        return new VtdUnitState(block.ToArray(), cap, ecap, root, next, shape);
    }

    // FNV-1a: any change confined to one byte always changes it (each step is a bijection of the running value).
    private static ulong Checksum(ReadOnlySpan<byte> bytes)
    {
        ulong h = 0xCBF2_9CE4_8422_2325;
        foreach (byte b in bytes)
        {
            h = (h ^ b) * 0x0000_0100_0000_01B3;
        }

        return h;
    }
}
