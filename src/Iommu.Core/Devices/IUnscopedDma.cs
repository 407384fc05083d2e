namespace Iommu.Devices;

/// <summary>
/// A remapping unit's DMA fast path that holds no access scope: for memory that
/// <see cref="Memory.PhysicalMemory.RetiresOnDispose"/>, where an access that races
/// <see cref="Memory.PhysicalMemory.Dispose"/> reads zeros or writes a fresh page instead of faulting.
/// </summary>
/// <remarks>
/// The unit moves the bytes only when it can do so from what it already holds (a cached translation, a
/// backed page) without recording anything, and only reports it after checking that the memory's dispose
/// had not started by the end of the copy; otherwise it moves nothing (or what it moved counts for nothing)
/// and the caller takes the scoped path, which throws once the dispose has started. Saves a DMA the
/// scope's thread-local lookup and its finally frame.
/// </remarks>
internal interface IUnscopedDma
{
    /// <summary>The unit's memo of translations: <see cref="PciDevice"/> moves 16 to 64 bytes through it inline (<see cref="TranslationShortcut.TryMoveSmall"/>).</summary>
    TranslationShortcut Memo { get; }

    /// <summary>Moves <paramref name="buffer"/> (one page or less) when the fast path can.</summary>
    /// <param name="requesterId">Source id.</param>
    /// <param name="pasid">PASID or null.</param>
    /// <param name="iova">Device address.</param>
    /// <param name="buffer">The bytes read into, or written from.</param>
    /// <param name="write">Whether the device writes.</param>
    /// <returns>The physical address of the first byte when the whole buffer moved, else <see cref="TranslationShortcut.NotMoved"/>.</returns>
    ulong MoveUnscoped(ushort requesterId, uint? pasid, ulong iova, Span<byte> buffer, bool write);
}
