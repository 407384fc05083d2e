using Iommu.VtD.Hardware;

namespace Iommu.VtD.Diagnostics;

/// <summary>Which table format the root-table address register selects (RTADDR.TTM).</summary>
public enum VtdTranslationMode
{
    /// <summary>TTM = 00: legacy root and context entries, second-level tables from the context entry.</summary>
    Legacy = 0,

    /// <summary>TTM = 01: scalable-mode root and context entries, PASID directories and tables.</summary>
    Scalable = 1,
}

/// <summary>What a chunk of an exported image holds, as the walk that reached it interprets it.</summary>
public enum VtdImageChunkKind
{
    /// <summary>The root table (4 KiB, 256 root entries indexed by bus).</summary>
    RootTable = 0,

    /// <summary>A legacy context table (4 KiB, 256 entries of 16 bytes indexed by devfn).</summary>
    LegacyContextTable = 1,

    /// <summary>A scalable-mode context table (4 KiB, 128 entries of 32 bytes; lower or upper half of a bus).</summary>
    ScalableContextTable = 2,

    /// <summary>A PASID directory (2^(PDTS+7) entries of 8 bytes).</summary>
    PasidDirectory = 3,

    /// <summary>A scalable-mode PASID table (4 KiB, 64 entries of 64 bytes).</summary>
    PasidTable = 4,

    /// <summary>A second-level paging structure (4 KiB, 512 entries); <see cref="VtdImageChunk.Level"/> says which level.</summary>
    PageTable = 5,
}

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

/// <summary>One request to evaluate against an image: who asks, with which PASID, where and how.</summary>
/// <param name="RequesterId">Source id (bus &lt;&lt; 8 | devfn).</param>
/// <param name="Pasid">PASID of a request with PASID prefix, or null for a request without PASID.</param>
/// <param name="Iova">Input address.</param>
/// <param name="Access">Read or write.</param>
/// <param name="Size">Bytes (1–4096, not crossing a 4 KiB page).</param>
public readonly record struct VtdProbe(ushort RequesterId, uint? Pasid, ulong Iova, DmaAccess Access, int Size = 8);

/// <summary>What the hardware model says happens to a <see cref="VtdProbe"/>.</summary>
/// <param name="Probe">The request.</param>
/// <param name="Status">Translated, fault, or interrupt range.</param>
/// <param name="PhysicalAddress">Output address when translated; 0 otherwise.</param>
/// <param name="PageSize">Page size of the mapping when translated; 0 otherwise.</param>
/// <param name="Writable">Whether the mapping allows writes (when translated).</param>
/// <param name="Reason">Fault reason (specification code) when <see cref="Status"/> is a fault.</param>
/// <param name="FaultRecorded">Whether the fault is written to a fault-recording register (false when fault processing is disabled for a qualified fault).</param>
public sealed record VtdProbeResult(
    VtdProbe Probe, VtdTranslationStatus Status, ulong PhysicalAddress, ulong PageSize, bool Writable, VtdFaultReason Reason, bool FaultRecorded)
{
    /// <summary>True when the request is translated.</summary>
    public bool IsTranslated => Status == VtdTranslationStatus.Translated;

    /// <summary>True when the request faults.</summary>
    public bool IsFault => Status == VtdTranslationStatus.Fault;
}

/// <summary>One entry a request reads on its way through an image (see <see cref="VtdImage.Path"/>).</summary>
/// <param name="Kind">The structure the entry belongs to.</param>
/// <param name="Level">Paging level for page-table entries; 0 otherwise.</param>
/// <param name="Address">Physical address of the entry's first word.</param>
/// <param name="Value">The entry's first 64-bit word.</param>
public readonly record struct VtdImageEntry(VtdImageChunkKind Kind, int Level, ulong Address, ulong Value);

/// <summary>One entry of a walk, decoded for people: which structure, which index, where, the raw word and what it says.</summary>
/// <param name="Structure">The entry's name (<see cref="VtdDecoder.EntryName"/>): "root entry", "PASID table entry", "PDE", ….</param>
/// <param name="Index">Its index in its table, as the walk chose it ("bus 0", "devfn 0x20", "1", "257").</param>
/// <param name="Address">Physical address of the entry's first word.</param>
/// <param name="Value">The entry's first 64-bit word.</param>
/// <param name="Meaning">The fields that steer the walk, decoded ("RW leaf: 4K page @0x100002000").</param>
public sealed record VtdEntryDescription(string Structure, string Index, ulong Address, ulong Value, string Meaning);
