namespace Iommu.Devices;

/// <content>The device side of ATS and PRI: the address translation cache (ATC), translated DMA and page requests.</content>
public sealed partial class PciDevice
{
    private const uint NoPasid = uint.MaxValue;

    private readonly Lock _atsLock = new();
    private readonly Atc _atc = new();
    private readonly Dictionary<(uint Tag, ulong Page), PageRequestState> _pageRequests = [];
    private int _nextGroupIndex;
    private int _responsesReceived; // page group responses taken, under _atsLock
    private readonly object _responseSignal = new(); // pulsed after each page group response (taken after _atsLock, never inside it)

    private sealed class PageRequestState(int groupIndex)
    {
        public int GroupIndex { get; } = groupIndex;

        public int? Response { get; set; }
    }

    /// <summary>Translations the device's ATC holds (entries filled by translation completions, not yet invalidated).</summary>
    public int AtcCount
    {
        get
        {
            using Memory.PhysicalMemory.AccessScope guard = EnterPlatform();
            return _atc.Count;
        }
    }

    /// <summary>
    /// The device reads memory at <paramref name="iova"/> the way an ATS device does: each page from its ATC
    /// when it holds a sufficient translation (a translated request, which the unit passes through unchecked),
    /// otherwise after a translation request to the unit (<see cref="IDmaRemapperAts"/>), whose completion fills the ATC.
    /// </summary>
    /// <param name="pasid">PASID of the requests, or null.</param>
    /// <param name="iova">Untranslated address of the first byte.</param>
    /// <param name="destination">Receives the bytes.</param>
    /// <returns>
    /// The outcome. When a completion does not grant the access and PRI is enabled, the device sends one page
    /// request (last in its group) for that page and returns <see cref="DmaStatus.PageRequestPending"/>; a retry
    /// after a Success response translates again (and when a refusal was requested before that response arrived, the
    /// device translates once more before it asks again: the refusal may predate the fix), after Invalid Request it
    /// returns <see cref="DmaStatus.PageRequestFailed"/> once. Without PRI such a page is a <see cref="DmaStatus.Fault"/> with <see cref="DmaFaultReason.None"/> (the unit recorded nothing).
    /// An Unsupported Request completion is a <see cref="DmaStatus.Fault"/> with the unit's reason.
    /// </returns>
    /// <remarks>
    /// Translated requests are trusted: the model's unit does not check them (VT-d has no check of translated
    /// requests from a device whose context entry enables device-TLBs), so a stale ATC entry reaches the old page
    /// until software invalidates it. Without ATS enabled, or behind a remapper without <see cref="IDmaRemapperAts"/>,
    /// this is <see cref="DmaRead(uint?, ulong, Span{byte})"/>.
    /// </remarks>
    /// <exception cref="InvalidOperationException">The device is on no bus: never added, or removed (<see cref="Bus.RemoveDevice"/>, also by another thread as the call starts). A removed function issues no DMA.</exception>
    public DmaResult AtsDmaRead(uint? pasid, ulong iova, Span<byte> destination) => AtsTransfer(pasid, iova, destination, write: false);

    /// <summary>The device writes <paramref name="source"/> at <paramref name="iova"/> through its ATC (see <see cref="AtsDmaRead"/>).</summary>
    /// <param name="pasid">PASID of the requests, or null.</param>
    /// <param name="iova">Untranslated address of the first byte.</param>
    /// <param name="source">The bytes.</param>
    /// <returns>As <see cref="AtsDmaRead"/>.</returns>
    /// <exception cref="InvalidOperationException">The device is on no bus: never added, or removed (<see cref="Bus.RemoveDevice"/>, also by another thread as the call starts). A removed function issues no DMA.</exception>
    public DmaResult AtsDmaWrite(uint? pasid, ulong iova, ReadOnlySpan<byte> source)
    {
        // The bytes are only read; the shared loop takes a Span (no copy: 0 B per DMA).
        Span<byte> bytes = System.Runtime.InteropServices.MemoryMarshal.CreateSpan(
            ref System.Runtime.InteropServices.MemoryMarshal.GetReference(source), source.Length);
        return AtsTransfer(pasid, iova, bytes, write: true);
    }

    /// <summary>
    /// An ATS invalidate request reaches the device (sent by the unit for a device-TLB invalidation descriptor):
    /// drops every ATC translation overlapping [<paramref name="address"/>, <paramref name="address"/> + <paramref name="size"/>)
    /// of <paramref name="pasid"/>, or of every PASID and requests without PASID when <paramref name="allPasids"/>.
    /// </summary>
    /// <param name="pasid">PASID whose translations go, or null for those of requests without PASID.</param>
    /// <param name="allPasids">Every translation in the range, whatever its PASID.</param>
    /// <param name="address">First byte of the range.</param>
    /// <param name="size">Bytes; 0 drops nothing.</param>
    public void InvalidateAtc(uint? pasid, bool allPasids, ulong address, ulong size)
    {
        using Memory.PhysicalMemory.AccessScope guard = EnterPlatform();
        uint tag = pasid ?? NoPasid;
        ulong last = size == 0 ? 0 : address + Math.Min(size - 1, ulong.MaxValue - address);
        if (size == 0)
        {
            return;
        }

        lock (_atsLock)
        {
            _atc.Invalidate(allPasids, tag, address, last);
        }
    }

    /// <summary>
    /// A page group response reaches the device (sent by the unit for a page group response descriptor):
    /// answers the outstanding page request of <paramref name="groupIndex"/> (and <paramref name="pasid"/>).
    /// </summary>
    /// <param name="pasid">PASID of the response, or null for a response without PASID (then any PASID matches).</param>
    /// <param name="groupIndex">PRGI of the group answered.</param>
    /// <param name="responseCode">PCIe response code: 0 Success, 1 Invalid Request, anything else Response Failure (the device disables its PRI).</param>
    /// <remarks>A response that matches no outstanding request is ignored, as a device ignores a stray response. A Response
    /// Failure fails every outstanding request whatever its index (PCIe lets the host drop the index in that response).</remarks>
    public void ReceivePageGroupResponse(uint? pasid, int groupIndex, int responseCode)
    {
        using Memory.PhysicalMemory.AccessScope guard = EnterPlatform();
        bool failure = responseCode is not (0 or 1);
        lock (_atsLock)
        {
            foreach (KeyValuePair<(uint Tag, ulong Page), PageRequestState> e in _pageRequests)
            {
                // A Response Failure need not carry the group's index and stops PRI: nothing outstanding will be answered.
                if (e.Value.Response is null && (failure || (e.Value.GroupIndex == groupIndex && (pasid is null || e.Key.Tag == pasid.Value))))
                {
                    e.Value.Response = responseCode;
                }
            }

            _responsesReceived++;
        }

        if (failure)
        {
            PriEnabled = false;
        }

        lock (_responseSignal)
        {
            Monitor.PulseAll(_responseSignal);
        }
    }

    /// <summary>
    /// Waits until every page request the device has sent and still waits for has its page group response, as a PRI
    /// device's DMA engine waits before it retries.
    /// </summary>
    /// <param name="timeout">How long to wait at most (<see cref="Timeout.InfiniteTimeSpan"/> for no limit).</param>
    /// <returns>True when no request is outstanding; false when the time ran out first.</returns>
    /// <exception cref="ArgumentOutOfRangeException"><paramref name="timeout"/> is negative (other than infinite) or above <see cref="int.MaxValue"/> milliseconds.</exception>
    /// <exception cref="ObjectDisposedException">The device's platform is disposed.</exception>
    /// <remarks>
    /// The host answers on its own threads (VT-d: the unit's page request interrupt thread, then the iopf worker), so
    /// a device's <see cref="AtsDmaRead"/> that returned <see cref="DmaStatus.PageRequestPending"/> is answered some
    /// time later. A request the unit dropped (queue overflow without an automatic response) is never answered: the
    /// wait then ends with false.
    /// </remarks>
    public bool WaitForPageGroupResponses(TimeSpan timeout)
    {
        long ms = (long)timeout.TotalMilliseconds;
        if (ms is < -1 or > int.MaxValue)
        {
            throw new ArgumentOutOfRangeException(nameof(timeout), timeout, "A wait is infinite or between 0 and int.MaxValue milliseconds.");
        }

        // The wait holds no access scope: Platform.Dispose does not wait for a waiting device.
        Platform?.Memory.ThrowIfDisposed();
        long deadline = ms < 0 ? long.MaxValue : Environment.TickCount64 + ms;
        lock (_responseSignal)
        {
            while (AwaitsResponse())
            {
                long left = deadline - Environment.TickCount64;
                if (left <= 0)
                {
                    return false;
                }

                Monitor.Wait(_responseSignal, (int)Math.Min(left, int.MaxValue));
            }

            return true;
        }
    }

    private bool AwaitsResponse()
    {
        lock (_atsLock)
        {
            foreach (PageRequestState state in _pageRequests.Values)
            {
                if (state.Response is null)
                {
                    return true;
                }
            }

            return false;
        }
    }

    private void ClearAtc()
    {
        lock (_atsLock)
        {
            _atc.Clear();
        }
    }

    private DmaResult AtsTransfer(uint? pasid, ulong iova, Span<byte> buffer, bool write)
    {
        using Memory.PhysicalMemory.AccessScope guard = EnterPlatform();
        if (!AtsEnabled || Remapper()?.Ats is not { } unit)
        {
            return write ? DmaWrite(pasid, iova, buffer) : DmaRead(pasid, iova, buffer);
        }

        if (pasid is > 0xF_FFFF)
        {
            throw new ArgumentOutOfRangeException(nameof(pasid), pasid, "A PASID has 20 bits.");
        }

        Memory.PhysicalMemory memory = Platform?.Memory ?? throw new InvalidOperationException($"{Name} is on no bus.");
        uint tag = pasid ?? NoPasid;
        ulong moved = 0, first = 0;
        while (moved < (ulong)buffer.Length)
        {
            ulong addr = iova + moved;
            int chunk = (int)Math.Min((ulong)buffer.Length - moved, 4096 - (addr & 0xFFF));
            if (!_atc.TryGet(tag, addr, write, out ulong pa))
            {
                // Read before the request: a fill whose request overlapped an invalidation is dropped,
                // and a refusal that a page response overtook is not taken as the answer's outcome.
                uint generation = _atc.Generation;
                int responses = Volatile.Read(ref _responsesReceived);
                AtsCompletion c = unit.TranslationRequest(this, pasid, addr & ~0xFFFUL, write);
                if (!c.Success)
                {
                    return new DmaResult(DmaStatus.Fault, moved, addr & ~0xFFFUL, c.FaultReason);
                }

                if (c.Read && (!write || c.Write))
                {
                    FillAtc(tag, addr, c, generation);
                    pa = c.PhysicalAddress + (addr & 0xFFF);
                }
                else
                {
                    DmaStatus? status = PageRequestFor(unit, pasid, tag, addr, write, responses);
                    if (status is null)
                    {
                        continue; // the page's Success response came after this request: translate again
                    }

                    return new DmaResult(status.Value, moved, addr & ~0xFFFUL, DmaFaultReason.None);
                }
            }

            Span<byte> part = buffer.Slice((int)moved, chunk);
            bool ok = write ? memory.TryWrite(pa, part) : memory.TryRead(pa, part);
            if (!ok)
            {
                return new DmaResult(DmaStatus.MemoryError, moved, addr, DmaFaultReason.None);
            }

            first = moved == 0 ? pa : first;
            moved += (ulong)chunk;
        }

        return new DmaResult(DmaStatus.Ok, moved, first, DmaFaultReason.None);
    }

    // Cached per 4 KiB page with the completion's range, so an invalidation of any part of a large page drops it.
    private void FillAtc(uint tag, ulong addr, AtsCompletion c, uint generation)
    {
        ulong size = c.PageSize is 0 ? 4096 : c.PageSize;
        lock (_atsLock)
        {
            _atc.Fill(tag, addr, addr & ~(size - 1), size, c.PhysicalAddress, c.Read, c.Write, generation);
        }
    }

    // The completion did not grant the access: wait for, or send, a page request for the page. Null: the page's
    // Success response arrived after the refused translation was requested (responsesBefore), so the refusal may
    // predate the fault's fix; the caller translates once more, and a second refusal asks again.
    private DmaStatus? PageRequestFor(IDmaRemapperAts unit, uint? pasid, uint tag, ulong addr, bool write, int responsesBefore)
    {
        (uint, ulong) key = (tag, addr >> 12);
        int groupIndex;
        lock (_atsLock)
        {
            if (_pageRequests.TryGetValue(key, out PageRequestState? state))
            {
                switch (state.Response)
                {
                    case null:
                        return DmaStatus.PageRequestPending;
                    case 0 when _responsesReceived != responsesBefore:
                        _pageRequests.Remove(key);
                        return null;
                    case 0:
                        // Success, yet the page still does not translate: ask again.
                        _pageRequests.Remove(key);
                        break;
                    default:
                        _pageRequests.Remove(key);
                        return DmaStatus.PageRequestFailed;
                }
            }

            if (!PriEnabled)
            {
                return DmaStatus.Fault;
            }

            groupIndex = _nextGroupIndex;
            _nextGroupIndex = (_nextGroupIndex + 1) & 0x1FF;
            _pageRequests[key] = new PageRequestState(groupIndex);
        }

        // Outside the lock: the unit may answer at once (an automatic response) through ReceivePageGroupResponse.
        unit.PageRequest(this, new PageRequestMessage(pasid, addr & ~0xFFFUL, Read: true, Write: write, Execute: false, Privileged: false, groupIndex, LastInGroup: true));
        return DmaStatus.PageRequestPending;
    }
}
