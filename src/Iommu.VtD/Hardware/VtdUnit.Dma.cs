using Iommu.Memory;
using Iommu.Devices;

namespace Iommu.VtD.Hardware;

/// <summary>The device side: PCI functions DMA through the unit (<see cref="IDmaRemapper"/>).</summary>
public sealed partial class VtdUnit : IDmaRemapper
{
    /// <inheritdoc/>
    /// <remarks>A remapper callback: <see cref="PciDevice.DmaRead"/> calls it inside the platform's access
    /// scope, so it only checks the disposed flag. A direct caller that may race the memory's dispose
    /// holds <see cref="PhysicalMemory.EnterAccess"/> or calls <see cref="Transfer"/>.</remarks>
    public DmaResult DmaRead(PciDevice device, uint? pasid, ulong iova, Span<byte> destination)
    {
        _memory.ThrowIfDisposed();
        ArgumentNullException.ThrowIfNull(device);
        return TransferUnguarded(device.RequesterId, pasid, iova, destination, DmaAccess.Read);
    }

    /// <inheritdoc/>
    /// <remarks>A remapper callback, as <see cref="DmaRead"/>.</remarks>
    public DmaResult DmaWrite(PciDevice device, uint? pasid, ulong iova, ReadOnlySpan<byte> source)
    {
        _memory.ThrowIfDisposed();
        ArgumentNullException.ThrowIfNull(device);

        // The write path only reads the buffer; the shared page loop takes a Span.
        Span<byte> bytes = System.Runtime.InteropServices.MemoryMarshal.CreateSpan(
            ref System.Runtime.InteropServices.MemoryMarshal.GetReference(source), source.Length);
        return TransferUnguarded(device.RequesterId, pasid, iova, bytes, DmaAccess.Write);
    }

    /// <summary>
    /// Moves <paramref name="buffer"/> page by page, translating each page; stops at the first page
    /// that does not translate, reporting how many bytes moved before it.
    /// </summary>
    /// <param name="requesterId">Source id.</param>
    /// <param name="pasid">PASID or null.</param>
    /// <param name="iova">Device address of the first byte.</param>
    /// <param name="buffer">The bytes (read into or written from).</param>
    /// <param name="access">Direction.</param>
    /// <returns>The outcome as devices see it.</returns>
    public DmaResult Transfer(ushort requesterId, uint? pasid, ulong iova, Span<byte> buffer, DmaAccess access)
    {
        using PhysicalMemory.AccessScope guard = _memory.EnterAccess();
        return TransferUnguarded(requesterId, pasid, iova, buffer, access);
    }

    // Transfer for callers that hold the scope (PciDevice DMA through DmaRead/DmaWrite).
    private DmaResult TransferUnguarded(ushort requesterId, uint? pasid, ulong iova, Span<byte> buffer, DmaAccess access) =>
        buffer.IsEmpty
            ? new DmaResult(DmaStatus.Ok, 0, iova, 0)
            : Move(requesterId, pasid, iova, buffer, access, out _);

    // The page loop shared by Dma and Transfer: outcome is the first page's translation, or the one
    // that stopped the transfer.
    private DmaResult Move(ushort requesterId, uint? pasid, ulong iova, Span<byte> buffer, DmaAccess access, out VtdTranslation outcome)
    {
        outcome = default;
        int done = 0;
        while (done < buffer.Length)
        {
            ulong a = iova + (ulong)done;
            int chunk = (int)Math.Min((ulong)(buffer.Length - done), 4096 - (a & 0xFFF));
            VtdTranslation t = TranslateUnguarded(requesterId, pasid, a, (ulong)chunk, access);
            if (t.Status == VtdTranslationStatus.Translated && !_memory.Contains(t.PhysicalAddress, (ulong)chunk))
            {
                t = t.AsMemoryError();
            }

            if (t.Status != VtdTranslationStatus.Translated)
            {
                outcome = t;
                return new DmaResult(t.IsFault ? DmaStatus.Fault : DmaStatus.MemoryError, (ulong)done, a, (int)t.Reason);
            }

            Span<byte> part = buffer.Slice(done, chunk);
            if (access == DmaAccess.Write)
            {
                _memory.Write(t.PhysicalAddress, part);
            }
            else
            {
                _memory.Read(t.PhysicalAddress, part);
            }

            if (done == 0)
            {
                outcome = t;
            }

            done += chunk;
        }

        return new DmaResult(DmaStatus.Ok, (ulong)done, outcome.PhysicalAddress, 0);
    }
}
