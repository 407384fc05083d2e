using System.Runtime.CompilerServices;
using Iommu.Memory;
using Iommu.Devices;
using Iommu.VtD.Internal;

namespace Iommu.VtD.Hardware;

/// <summary>The device side: PCI functions DMA through the unit (<see cref="IDmaRemapper"/>).</summary>
public sealed partial class VtdUnit : IDmaRemapper, IDmaRemapperAttributes, IUnscopedDma
{
    /// <inheritdoc/>
    /// <remarks>A remapper callback: <see cref="PciDevice.DmaRead(uint?, ulong, Span{byte})"/> calls it inside the platform's access
    /// scope, so it only checks the disposed flag. A direct caller that may race the memory's dispose
    /// holds <see cref="PhysicalMemory.EnterAccess"/> or calls <see cref="Transfer(ushort, uint?, ulong, Span{byte}, DmaAccess)"/>.</remarks>
    public DmaResult DmaRead(PciDevice device, uint? pasid, ulong iova, Span<byte> destination)
    {
        _memory.ThrowIfDisposed();
        ArgumentNullException.ThrowIfNull(device);
        return TransferUnguarded(device.DmaRequesterId, pasid, iova, destination, DmaAccess.Read);
    }

    /// <inheritdoc/>
    /// <remarks>A remapper callback, as <see cref="DmaRead(PciDevice, uint?, ulong, Span{byte})"/>.</remarks>
    public DmaResult DmaWrite(PciDevice device, uint? pasid, ulong iova, ReadOnlySpan<byte> source)
    {
        _memory.ThrowIfDisposed();
        ArgumentNullException.ThrowIfNull(device);
        return TransferUnguarded(device.DmaRequesterId, pasid, iova, Iommu.Internal.MoveSource.Of(source), DmaAccess.Write);
    }

    /// <inheritdoc/>
    /// <remarks>A remapper callback, as <see cref="DmaRead(PciDevice, uint?, ulong, Span{byte})"/>.</remarks>
    /// <exception cref="ArgumentOutOfRangeException"><paramref name="attributes"/> has a bit <see cref="DmaRequestAttributes"/> does not define.</exception>
    public DmaResult DmaRead(PciDevice device, uint? pasid, ulong iova, Span<byte> destination, DmaRequestAttributes attributes)
    {
        _memory.ThrowIfDisposed();
        ArgumentNullException.ThrowIfNull(device);
        DmaRequestAttributes attrs = RequestAttributes(pasid.HasValue, DmaAccess.Read, attributes);
        return Move(device.DmaRequesterId, pasid, iova, destination, DmaAccess.Read, wantOutcome: false, out _, attrs);
    }

    /// <inheritdoc/>
    /// <remarks>A remapper callback, as <see cref="DmaRead(PciDevice, uint?, ulong, Span{byte})"/>.</remarks>
    /// <exception cref="ArgumentOutOfRangeException"><paramref name="attributes"/> has a bit <see cref="DmaRequestAttributes"/> does not define.</exception>
    public DmaResult DmaWrite(PciDevice device, uint? pasid, ulong iova, ReadOnlySpan<byte> source, DmaRequestAttributes attributes)
    {
        _memory.ThrowIfDisposed();
        ArgumentNullException.ThrowIfNull(device);
        DmaRequestAttributes attrs = RequestAttributes(pasid.HasValue, DmaAccess.Write, attributes);
        return Move(device.DmaRequesterId, pasid, iova, Iommu.Internal.MoveSource.Of(source), DmaAccess.Write, wantOutcome: false, out _, attrs);
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

    /// <summary>
    /// The device with <paramref name="requesterId"/> reads <paramref name="destination"/>'s length of
    /// bytes at <paramref name="iova"/>: each page translated once and copied straight into the span. The
    /// requester-id family for emulators (with <see cref="Write(ushort, uint?, ulong, ReadOnlySpan{byte})"/>, <see cref="Gather"/> and <see cref="Scatter"/>).
    /// </summary>
    /// <param name="requesterId">Source id of the device (bus &lt;&lt; 8 | devfn).</param>
    /// <param name="pasid">PASID of the request, or null.</param>
    /// <param name="iova">Device address of the first byte.</param>
    /// <param name="destination">Receives the bytes.</param>
    /// <returns>
    /// The outcome: <see cref="DmaResult.PhysicalAddress"/> when every byte moved; otherwise
    /// <see cref="DmaResult.StopAddress"/>, the fault reason and the bytes moved before the page that stopped it.
    /// </returns>
    public DmaResult Read(ushort requesterId, uint? pasid, ulong iova, Span<byte> destination)
    {
        if (TryMoveUnscoped(requesterId, pasid, iova, destination, write: false, out DmaResult done))
        {
            return done;
        }

        using PhysicalMemory.AccessScope guard = _memory.EnterAccess();
        return TransferUnguarded(requesterId, pasid, iova, destination, DmaAccess.Read);
    }

    /// <summary>The device with <paramref name="requesterId"/> writes <paramref name="source"/> at <paramref name="iova"/> (see <see cref="Read(ushort, uint?, ulong, Span{byte})"/>).</summary>
    /// <param name="requesterId">Source id of the device (bus &lt;&lt; 8 | devfn).</param>
    /// <param name="pasid">PASID of the request, or null.</param>
    /// <param name="iova">Device address of the first byte.</param>
    /// <param name="source">The bytes.</param>
    /// <returns>As <see cref="Read(ushort, uint?, ulong, Span{byte})"/>.</returns>
    public DmaResult Write(ushort requesterId, uint? pasid, ulong iova, ReadOnlySpan<byte> source)
    {
        if (TryMoveUnscoped(requesterId, pasid, iova, Iommu.Internal.MoveSource.Of(source), write: true, out DmaResult done))
        {
            return done;
        }

        using PhysicalMemory.AccessScope guard = _memory.EnterAccess();
        return TransferUnguarded(requesterId, pasid, iova, Iommu.Internal.MoveSource.Of(source), DmaAccess.Write);
    }

    /// <summary>As <see cref="Read(ushort, uint?, ulong, Span{byte})"/>, for a request with privilege and execute attributes.</summary>
    /// <param name="requesterId">Source id of the device (bus &lt;&lt; 8 | devfn).</param>
    /// <param name="pasid">PASID of the request, or null (then a user, non-execute request whatever <paramref name="attributes"/> says).</param>
    /// <param name="iova">Device address of the first byte.</param>
    /// <param name="destination">Receives the bytes.</param>
    /// <param name="attributes">Privileged (PMR) and execute (ER) bits of the PASID prefix, the same for every page.</param>
    /// <returns>As <see cref="Read(ushort, uint?, ulong, Span{byte})"/>.</returns>
    /// <exception cref="ArgumentOutOfRangeException"><paramref name="attributes"/> has a bit <see cref="DmaRequestAttributes"/> does not define.</exception>
    public DmaResult Read(ushort requesterId, uint? pasid, ulong iova, Span<byte> destination, DmaRequestAttributes attributes)
    {
        using PhysicalMemory.AccessScope guard = _memory.EnterAccess();
        DmaRequestAttributes attrs = RequestAttributes(pasid.HasValue, DmaAccess.Read, attributes);
        return Move(requesterId, pasid, iova, destination, DmaAccess.Read, wantOutcome: false, out _, attrs);
    }

    /// <summary>As <see cref="Write(ushort, uint?, ulong, ReadOnlySpan{byte})"/>, for a request with privilege attributes.</summary>
    /// <param name="requesterId">Source id of the device (bus &lt;&lt; 8 | devfn).</param>
    /// <param name="pasid">PASID of the request, or null (then a user request whatever <paramref name="attributes"/> says).</param>
    /// <param name="iova">Device address of the first byte.</param>
    /// <param name="source">The bytes.</param>
    /// <param name="attributes">Privileged (PMR) bit of the PASID prefix; execute is dropped on a write.</param>
    /// <returns>As <see cref="Read(ushort, uint?, ulong, Span{byte})"/>.</returns>
    /// <exception cref="ArgumentOutOfRangeException"><paramref name="attributes"/> has a bit <see cref="DmaRequestAttributes"/> does not define.</exception>
    public DmaResult Write(ushort requesterId, uint? pasid, ulong iova, ReadOnlySpan<byte> source, DmaRequestAttributes attributes)
    {
        using PhysicalMemory.AccessScope guard = _memory.EnterAccess();
        DmaRequestAttributes attrs = RequestAttributes(pasid.HasValue, DmaAccess.Write, attributes);
        return Move(requesterId, pasid, iova, Iommu.Internal.MoveSource.Of(source), DmaAccess.Write, wantOutcome: false, out _, attrs);
    }

    /// <summary>As <see cref="Transfer(ushort, uint?, ulong, Span{byte}, DmaAccess)"/>, for a request with privilege and execute attributes.</summary>
    /// <param name="requesterId">Source id.</param>
    /// <param name="pasid">PASID or null (then a user, non-execute request whatever <paramref name="attributes"/> says).</param>
    /// <param name="iova">Device address of the first byte.</param>
    /// <param name="buffer">The bytes (read into or written from).</param>
    /// <param name="access">Direction.</param>
    /// <param name="attributes">Privileged (PMR) and execute (ER, reads only) bits of the PASID prefix.</param>
    /// <returns>The outcome as devices see it.</returns>
    /// <exception cref="ArgumentOutOfRangeException"><paramref name="attributes"/> has a bit <see cref="DmaRequestAttributes"/> does not define.</exception>
    public DmaResult Transfer(ushort requesterId, uint? pasid, ulong iova, Span<byte> buffer, DmaAccess access, DmaRequestAttributes attributes)
    {
        using PhysicalMemory.AccessScope guard = _memory.EnterAccess();
        DmaRequestAttributes attrs = RequestAttributes(pasid.HasValue, access, attributes);
        return Move(requesterId, pasid, iova, buffer, access, wantOutcome: false, out _, attrs);
    }

    /// <summary>
    /// A scatter-gather read: the device reads each of <paramref name="segments"/> in order, and the
    /// bytes land back to back in <paramref name="destination"/> (the descriptor-and-buffer pattern of
    /// emulated devices, in one call). Each page is translated once and copied straight into the span.
    /// </summary>
    /// <param name="requesterId">Source id of the device.</param>
    /// <param name="pasid">PASID of the requests, or null.</param>
    /// <param name="segments">The pieces, in order; lengths 0 and up, none wrapping around the address space.</param>
    /// <param name="destination">Receives the bytes; at least as long as the segments together.</param>
    /// <returns>
    /// Ok with every byte moved and the physical address of the first byte moved; otherwise the outcome
    /// of the page that stopped the transfer, with the bytes moved before it (earlier segments included).
    /// </returns>
    public DmaResult Gather(ushort requesterId, uint? pasid, ReadOnlySpan<DmaSegment> segments, Span<byte> destination)
    {
        using PhysicalMemory.AccessScope guard = _memory.EnterAccess();
        CheckSegments(segments, destination.Length, nameof(destination));
        return MoveSegments(requesterId, pasid, segments, destination, DmaAccess.Read);
    }

    /// <summary>
    /// A scatter-gather write: consecutive bytes of <paramref name="source"/> go to each of
    /// <paramref name="segments"/> in order (see <see cref="Gather"/>).
    /// </summary>
    /// <param name="requesterId">Source id of the device.</param>
    /// <param name="pasid">PASID of the requests, or null.</param>
    /// <param name="segments">The pieces, in order; lengths 0 and up, none wrapping around the address space.</param>
    /// <param name="source">The bytes; at least as long as the segments together.</param>
    /// <returns>As <see cref="Gather"/>.</returns>
    public DmaResult Scatter(ushort requesterId, uint? pasid, ReadOnlySpan<DmaSegment> segments, ReadOnlySpan<byte> source)
    {
        using PhysicalMemory.AccessScope guard = _memory.EnterAccess();
        CheckSegments(segments, source.Length, nameof(source));
        return MoveSegments(requesterId, pasid, segments, Iommu.Internal.MoveSource.Of(source), DmaAccess.Write);
    }

    private static void CheckSegments(ReadOnlySpan<DmaSegment> segments, int bufferLength, string bufferName)
    {
        long total = 0;
        foreach (DmaSegment s in segments)
        {
            if (s.Length < 0 || (s.Length > 0 && (ulong)s.Length - 1 > ulong.MaxValue - s.Iova))
            {
                ThrowHelper.Argument($"Segment at 0x{s.Iova:X} of {s.Length} bytes is negative or wraps around the address space.", nameof(segments));
            }

            total += s.Length;
        }

        if (total > bufferLength)
        {
            ThrowHelper.Argument($"The segments hold {total} bytes; the buffer has {bufferLength}.", bufferName);
        }
    }

    private DmaResult MoveSegments(ushort requesterId, uint? pasid, ReadOnlySpan<DmaSegment> segments, Span<byte> buffer, DmaAccess access)
    {
        ulong done = 0;
        ulong first = 0;
        bool any = false;
        foreach (DmaSegment s in segments)
        {
            if (s.Length == 0)
            {
                continue;
            }

            DmaResult r = Move(requesterId, pasid, s.Iova, buffer.Slice((int)done, s.Length), access, wantOutcome: false, out _);
            if (!r.IsOk)
            {
                return r with { Transferred = done + r.Transferred };
            }

            if (!any)
            {
                first = r.Address;
                any = true;
            }

            done += (ulong)s.Length;
        }

        return new DmaResult(DmaStatus.Ok, done, first, default);
    }

    // The DMA path with no access scope (IUnscopedDma): a request of one page or less whose translation the
    // memo holds, to a backed page, moved only while the memory's dispose has not started; anything else
    // returns NotMoved for the scoped path. 16-64 B go through the memo's inline move
    // (TranslationShortcut.TryMoveSmall, which PciDevice also calls directly, and whose remarks give the
    // ordering with Dispose); other lengths through MoveUnscopedAnyLength. The memo's own ordering argument
    // (TranslationShortcut) is the scoped path's.
    TranslationShortcut IUnscopedDma.Memo => _shortcut;

    ulong IUnscopedDma.MoveUnscoped(ushort requesterId, uint? pasid, ulong iova, Span<byte> buffer, bool write) =>
        MoveUnscoped(requesterId, pasid, iova, buffer, write);

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal bool TryMoveUnscoped(ushort requesterId, uint? pasid, ulong iova, Span<byte> buffer, bool write, out DmaResult result)
    {
        ulong pa = MoveUnscoped(requesterId, pasid, iova, buffer, write);
        bool moved = pa != TranslationShortcut.NotMoved;
        result = moved ? new DmaResult(DmaStatus.Ok, (ulong)buffer.Length, pa, default) : default;
        return moved;
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private ulong MoveUnscoped(ushort requesterId, uint? pasid, ulong iova, Span<byte> buffer, bool write) =>
        PhysicalMemory.IsSmallMove(buffer.Length)
            ? _shortcut.TryMoveSmallFrom(requesterId, pasid, iova, buffer, write)
            : MoveUnscopedAnyLength(requesterId, pasid, iova, buffer, write);

    // MoveUnscoped for lengths the inline copy does not take (under 16 B, over 64 B), out of line: the
    // inline path, with no call on it, keeps fewer registers across calls (fewer saved and restored).
    [MethodImpl(MethodImplOptions.NoInlining)]
    private unsafe ulong MoveUnscopedAnyLength(ushort requesterId, uint? pasid, ulong iova, Span<byte> buffer, bool write)
    {
        // (The unit's own memory, the memo's, must retire on dispose: a caller decides by the platform's, which is the same in practice.)
        PhysicalMemory memory = _memory;
        TranslationShortcut shortcut = _shortcut;
        if (shortcut.TryBeginUnscoped(memory, requesterId, pasid, iova, buffer.Length, write, out ulong memo, out nint host))
        {
            PhysicalMemory.Move((byte*)host + (iova & 0xFFF), buffer, write, small: false);
            if (shortcut.EndUnscoped(memory, memo))
            {
                return TranslationShortcut.OutputAddress(memo, iova);
            }
        }

        return TranslationShortcut.NotMoved;
    }

    // Transfer for callers that hold the scope (PciDevice DMA through DmaRead/DmaWrite).
    // (Each layer returns the callee's result directly, so the JIT passes its own return buffer down
    // instead of copying the result through a temporary.)
    // The common DMA (a non-empty buffer inside one page, memoised) is served here, as the page loop
    // would serve it (same counts, bytes and result), without the loop; anything else goes to Move.
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private DmaResult TransferUnguarded(ushort requesterId, uint? pasid, ulong iova, Span<byte> buffer, DmaAccess access)
    {
        bool write = access == DmaAccess.Write;
        TranslationShortcut shortcut = _shortcut;
        if (shortcut.TryGetAccess(requesterId, pasid, iova, buffer.Length, write, out ulong memo))
        {
            shortcut.CountHit(memo);
            ulong pa = TranslationShortcut.OutputAddress(memo, iova);
            return Copy(pa, buffer, write)
                ? new DmaResult(DmaStatus.Ok, (ulong)buffer.Length, pa, default)
                : new DmaResult(DmaStatus.MemoryError, 0, iova, VtdFaultReason.None.ToDmaFaultReason());
        }

        return Move(requesterId, pasid, iova, buffer, access, wantOutcome: false, out _);
    }

    // The page loop shared by Dma, Transfer (an empty buffer moves nothing), Gather and Scatter:
    // outcome (when wanted) is the first page's translation, or the one that stopped the transfer.
    // Each page is translated once (from the caches when it can) and copied straight between memory
    // and the caller's span.
    private DmaResult Move(ushort requesterId, uint? pasid, ulong iova, Span<byte> buffer, DmaAccess access, out VtdTranslation outcome) =>
        Move(requesterId, pasid, iova, buffer, access, wantOutcome: true, out outcome);

    private DmaResult Move(ushort requesterId, uint? pasid, ulong iova, Span<byte> buffer, DmaAccess access, bool wantOutcome, out VtdTranslation outcome, DmaRequestAttributes attrs = DmaRequestAttributes.None)
    {
        Unsafe.SkipInit(out outcome);
        bool hasPasid = pasid.HasValue;
        uint p = pasid.GetValueOrDefault();
        if (p > 0xF_FFFF)
        {
            ThrowHelper.Pasid(p);
        }

        bool write = access == DmaAccess.Write;
        ulong first = iova; // an empty transfer reports its device address
        int done = 0;
        while (done < buffer.Length)
        {
            ulong a = iova + (ulong)done;
            int chunk = (int)Math.Min((ulong)(buffer.Length - done), 4096 - (a & 0xFFF));
            VtdTranslation t;
            // Requests with attributes skip the memo (its answers do not depend on privilege): one flag test.
            if (attrs == DmaRequestAttributes.None && TryTranslateCached(requesterId, hasPasid, p, a, (ulong)chunk, write, out ulong pa, out ulong pageSize, out bool writable))
            {
                if (Copy(pa, buffer.Slice(done, chunk), write))
                {
                    if (done == 0)
                    {
                        first = pa;
                        if (wantOutcome)
                        {
                            outcome = VtdTranslation.Translated(a, pa, pageSize, writable);
                        }
                    }

                    done += chunk;
                    continue;
                }

                t = VtdTranslation.Translated(a, pa, pageSize, writable).AsMemoryError();
            }
            else
            {
                t = TranslateCore(requesterId, hasPasid, p, a, (ulong)chunk, write, attrs);
                if (_interruptPending)
                {
                    RaisePendingInterrupts();
                }

                if (t.Status == VtdTranslationStatus.Translated && !Copy(t.PhysicalAddress, buffer.Slice(done, chunk), write))
                {
                    t = t.AsMemoryError();
                }
            }

            if (t.Status != VtdTranslationStatus.Translated)
            {
                outcome = t;
                return new DmaResult(t.IsFault ? DmaStatus.Fault : DmaStatus.MemoryError, (ulong)done, a, t.Reason.ToDmaFaultReason());
            }

            if (done == 0)
            {
                first = t.PhysicalAddress;
                outcome = t;
            }

            done += chunk;
        }

        return new DmaResult(DmaStatus.Ok, (ulong)done, first, default);
    }

    // Moves the part when all of it is RAM; false (nothing moved) for an address outside memory or in a hole.
    // Every part lies inside one page (the page loop cuts at page boundaries), and every caller holds the
    // memory's access scope (the DMA entry points, or the platform's around a remapper callback).
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private bool Copy(ulong pa, Span<byte> part, bool write) => write ? _memory.TryWriteInPage(pa, part) : _memory.TryReadInPage(pa, part);
}
