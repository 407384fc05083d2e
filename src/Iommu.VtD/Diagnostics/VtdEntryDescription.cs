namespace Iommu.VtD.Diagnostics;

/// <summary>One entry of a walk, decoded for people: which structure, which index, where, the raw word and what it says.</summary>
/// <param name="Structure">The entry's name (<see cref="VtdDecoder.EntryName"/>): "root entry", "PASID table entry", "PDE", ….</param>
/// <param name="Index">Its index in its table, as the walk chose it ("bus 0", "devfn 0x20", "1", "257").</param>
/// <param name="Address">Physical address of the entry's first word.</param>
/// <param name="Value">The entry's first 64-bit word.</param>
/// <param name="Meaning">The fields that steer the walk, decoded ("RW leaf: 4K page @0x100002000").</param>
public sealed record VtdEntryDescription(string Structure, string Index, ulong Address, ulong Value, string Meaning);
