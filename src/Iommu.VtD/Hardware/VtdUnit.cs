using Iommu.Devices;
using Iommu.Memory;
using Iommu.VtD.Internal;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Logging.Abstractions;

namespace Iommu.VtD.Hardware;

/// <summary>
/// A software model of one Intel VT-d DMA-remapping unit as software and devices see it: the
/// register file (read and written by offset, 32 or 64 bits at a time), the translation of
/// device requests through root, context, PASID and second-level tables in
/// <see cref="PhysicalMemory"/>, the caches the unit keeps (context cache, PASID cache, IOTLB),
/// register-based and queued invalidation, and primary fault recording.
/// </summary>
/// <remarks>
/// <para>The model follows the VT-d specification. Where QEMU 7.2 behaves differently, the member's
/// remarks say so; the model does not copy those deviations.</para>
/// <para>Caches really are caches: a translation found in the context cache, PASID cache or IOTLB is
/// used until software invalidates it, even if the tables in memory changed. With caching mode
/// (CAP.CM) not-present context and PASID entries and not-present second-level entries are cached
/// as well, so a driver that does not invalidate after a not-present → present change keeps faulting.</para>
/// <para>Caches are shaped like hardware: set-associative (<see cref="VtdConfig.IotlbCapacity"/> and the
/// other shape parameters), with replacement per set; a hit is a few loads. Page-selective IOTLB and
/// device-selective context-cache invalidation visit only the sets of the pages or devices named;
/// domain-, PASID- and global invalidation retire a generation counter and scan nothing.</para>
/// <para>Thread safety: translation (<see cref="Translate(ushort, uint?, ulong, ulong, DmaAccess)"/>, <see cref="Dma"/>, <see cref="Transfer(ushort, uint?, ulong, Span{byte}, DmaAccess)"/>,
/// <see cref="Gather"/>, <see cref="Scatter"/> and the device callbacks) takes no lock: any number of
/// threads translate at once without blocking each other, and a cache fill never waits. Writers —
/// register accesses (and the command, invalidation-queue and fault-record processing they trigger)
/// and fault recording — serialise on one lock. Fault and invalidation-completion interrupts are
/// raised after that lock is released, on the thread whose call caused them.</para>
/// <para>Ordering: a translation that starts after an invalidation has completed (in particular after
/// a later wait descriptor's status write is visible, or its completion interrupt arrived) never uses
/// an entry that the invalidation removed. An invalidation first increments an epoch (an interlocked
/// operation), then retires generations or clears slots; the wait descriptor after it is processed
/// only once that is done, on the same thread. A lookup checks each entry's seqlock and generations,
/// so once the invalidation returns no lookup sees an entry it removed. A fill records the epoch when
/// its translation began and compares it after taking its slot (see the remarks of the internal
/// cache type): a walk that may have read the tables before the driver changed them, and so began
/// before the invalidation, is dropped instead of cached, and a fill that passed the check before the
/// invalidation began is retired or cleared by it. Translations that overlap an invalidation may use
/// the old or the new translation, as on hardware, but never one read from a table freed after the
/// invalidation and reused: a walk during which the epoch moved is done again (draining).</para>
/// </remarks>
public sealed partial class VtdUnit : IVtdDiagnostics
{
    private readonly PhysicalMemory _memory;
    private readonly VtdConfig _config;
    private readonly Iommu.Internal.RawSpinLock _lock = new();
    private readonly ILogger _log;
    private long _ignoredAccesses;

    /// <summary>Creates a unit in its reset state (translation disabled, caches empty).</summary>
    /// <param name="memory">The physical memory the unit reads tables from and devices DMA to.</param>
    /// <param name="config">Capabilities; see the presets on <see cref="VtdConfig"/>.</param>
    /// <param name="segment">PCI segment the unit serves.</param>
    /// <param name="logger">Where the unit reports what a guest did that the hardware ignores (none by default).</param>
    public VtdUnit(PhysicalMemory memory, VtdConfig config, ushort segment = 0, ILogger? logger = null)
    {
        _log = logger ?? NullLogger.Instance;
        ArgumentNullException.ThrowIfNull(memory);
        memory.ThrowIfDisposed();
        ArgumentNullException.ThrowIfNull(config);
        config.Validate();
        _memory = memory;
        _config = config;
        Segment = segment;
        _hawMask = (1UL << config.HostAddressWidth) - 1;
        _cachingMode = config.CachingMode;
        _didMask = (ushort)((1 << Math.Min(16, 4 + (2 * config.DomainIdEncoding))) - 1);
        _noDidGroup = _didMask + 1;
        _shortcut = new TranslationShortcut(config.IotlbCapacity, memory);
        _counters = new Counters(_shortcut);
        _contextCache = new TranslationCache(config.ContextCacheCapacity, config.ContextCacheAssociativity, _didMask + 2, 1, _shortcut);
        _pasidCache = new TranslationCache(config.PasidCacheCapacity, config.PasidCacheAssociativity, _didMask + 2, _pasidTags.CellCount, _shortcut);
        _iotlb = new TranslationCache(config.IotlbCapacity, config.IotlbAssociativity, _didMask + 2, _pasidTags.CellCount, _shortcut);
        InitRegisters();
        InitPagingMasks();
        InitFirstLevelMasks();
    }

    /// <summary>Raised when the unit sends its fault event interrupt (FEADDR/FEDATA), i.e. FECTL.IM is clear and a fault or queue error was reported.</summary>
    public event EventHandler<VtdInterruptEventArgs>? FaultEvent;

    /// <summary>Raised when the unit sends its invalidation-completion interrupt (IEADDR/IEDATA) for a wait descriptor with IF set.</summary>
    public event EventHandler<VtdInterruptEventArgs>? InvalidationCompletionEvent;

    /// <summary>The capabilities this unit was built with.</summary>
    public VtdConfig Config => _config;

    /// <summary>PCI segment the unit serves.</summary>
    public ushort Segment { get; }

    /// <summary>The physical memory the unit reads its structures from (for the diagnostics exporter).</summary>
    internal PhysicalMemory Memory => _memory;

    /// <inheritdoc/>
    PhysicalMemory IVtdDiagnostics.Memory => _memory;

    /// <summary>Size of the register block in bytes; accesses at or beyond it are ignored (<see cref="MmioWrite"/>).</summary>
    public uint RegisterBlockSize => (uint)_regs.Length;

    /// <summary>A snapshot of the cache hit/miss counters and sizes.</summary>
    public VtdCacheStatistics Statistics
    {
        get
        {
            using (_lock.EnterScope())
            {
                return new VtdCacheStatistics(
                    _counters.Sum(Counters.ContextHit), _counters.Sum(Counters.ContextMiss),
                    _counters.Sum(Counters.PasidHit), _counters.Sum(Counters.PasidMiss),
                    _counters.Sum(Counters.IotlbHit), _counters.Sum(Counters.IotlbMiss),
                    _contextCache.Count(), _pasidCache.Count(), _iotlb.Count());
            }
        }
    }

    /// <summary>A snapshot of the invalidations processed and the faults seen, by kind.</summary>
    public VtdActivity Activity
    {
        get
        {
            using (_lock.EnterScope())
            {
                var faults = new Dictionary<VtdFaultReason, long>();
                for (int r = 0; r < _faultsByReason.Length; r++)
                {
                    if (_faultsByReason[r] != 0)
                    {
                        faults[(VtdFaultReason)r] = _faultsByReason[r];
                    }
                }

                return new VtdActivity(_contextInvalidations, _pasidInvalidations, _iotlbInvalidations, faults);
            }
        }
    }

    /// <summary>Reads a 32-bit register (or either half of a 64-bit one) at <paramref name="offset"/>.</summary>
    /// <param name="offset">Offset from the MMIO base; see <see cref="MmioRead"/> for what any other access does.</param>
    /// <returns>The value; write-only fields read as 0.</returns>
    public uint Read32(uint offset) => (uint)MmioRead(offset, 4);

    /// <summary>Reads a 64-bit register (or two adjacent 32-bit ones) at <paramref name="offset"/>.</summary>
    /// <param name="offset">Offset from the MMIO base; see <see cref="MmioRead"/> for what any other access does.</param>
    /// <returns>The value; write-only fields read as 0.</returns>
    public ulong Read64(uint offset) => MmioRead(offset, 8);

    /// <summary>Writes 32 bits at <paramref name="offset"/> with the register's access semantics (RO bits kept, RW1C bits cleared by 1s, commands executed).</summary>
    /// <param name="offset">Offset from the MMIO base; see <see cref="MmioWrite"/> for what any other access does.</param>
    /// <param name="value">The value.</param>
    public void Write32(uint offset, uint value) => MmioWrite(offset, 4, value);

    /// <summary>Writes 64 bits at <paramref name="offset"/> with the registers' access semantics.</summary>
    /// <param name="offset">Offset from the MMIO base; see <see cref="MmioWrite"/> for what any other access does.</param>
    /// <param name="value">The value.</param>
    public void Write64(uint offset, ulong value) => MmioWrite(offset, 8, value);

    /// <summary>
    /// An MMIO read of the register block as a guest issues it: any offset, any size. Never throws for
    /// what the guest controls (offset, size, alignment).
    /// </summary>
    /// <param name="offset">Offset from the unit's MMIO base.</param>
    /// <param name="size">Access size in bytes.</param>
    /// <returns>
    /// For a 4- or 8-byte access aligned to its size within <see cref="RegisterBlockSize"/>: the
    /// register bits (write-only fields read as 0, unimplemented offsets as 0). For anything else — a
    /// misaligned access, another size, an offset past the block — 0, and the access is counted in
    /// <see cref="IgnoredRegisterAccesses"/> and logged.
    /// </returns>
    /// <remarks>
    /// Software must access VT-d registers as aligned doublewords or quadwords; the specification
    /// leaves other accesses undefined and makes reserved offsets read as 0. This model chooses the
    /// harmless reading of "undefined": nothing happens, and the emulator can see that it did.
    /// </remarks>
    public ulong MmioRead(ulong offset, int size)
    {
        using PhysicalMemory.AccessScope guard = _memory.EnterAccess();
        return ReadUnguarded(offset, size);
    }

    /// <summary>
    /// An MMIO write of the register block as a guest issues it: any offset, any size, any value.
    /// Never throws for what the guest controls (offset, size, alignment, the value, and the tables
    /// and queue the write makes the unit read).
    /// </summary>
    /// <param name="offset">Offset from the unit's MMIO base.</param>
    /// <param name="size">Access size in bytes.</param>
    /// <param name="value">The value (the low <paramref name="size"/> bytes).</param>
    /// <remarks>
    /// A 4- or 8-byte access aligned to its size within <see cref="RegisterBlockSize"/> writes with the
    /// registers' access semantics (an 8-byte write over two 32-bit registers writes both, low dword
    /// first, as QEMU and hardware treat a quadword write). Anything else is ignored, counted in
    /// <see cref="IgnoredRegisterAccesses"/> and logged (see <see cref="MmioRead"/>).
    /// </remarks>
    public void MmioWrite(ulong offset, int size, ulong value)
    {
        using PhysicalMemory.AccessScope guard = _memory.EnterAccess();
        WriteUnguarded(offset, size, value);
    }

    /// <summary>Register accesses that were ignored (misaligned, of a size other than 4 or 8, or past the register block).</summary>
    public long IgnoredRegisterAccesses => Volatile.Read(ref _ignoredAccesses);

    // The driver's register access: its callers (IommuCore entry points, the driver's constructor) hold the scope.
    internal uint Read32Unguarded(uint offset) => (uint)ReadUnguarded(offset, 4);

    internal ulong Read64Unguarded(uint offset) => ReadUnguarded(offset, 8);

    internal void Write32Unguarded(uint offset, uint value) => WriteUnguarded(offset, 4, value);

    internal void Write64Unguarded(uint offset, ulong value) => WriteUnguarded(offset, 8, value);

    private ulong ReadUnguarded(ulong offset, int size)
    {
        if (!IsRegisterAccess(offset, size))
        {
            Ignore("read", offset, size, 0);
            return 0;
        }

        // A 32-bit register reads without the lock: reads have no side effects, every writer stores a dword in one
        // aligned store (Set32/Set64) under the lock, and an aligned 4-byte load is atomic, so the value is one some
        // writer left (as a real MMIO read is; the register file is little-endian, as every .NET 10 target). 64-bit reads take the lock: hardware may store a 64-bit register as
        // two dwords in one locked step, which a reader must not see half done.
        if (size == 4)
        {
            return Volatile.Read(ref System.Runtime.CompilerServices.Unsafe.As<byte, uint>(ref _regs[(int)offset]))
                & ~WriteOnlyMask32((uint)offset);
        }

        using (_lock.EnterScope())
        {
            return ReadMmio64((uint)offset);
        }
    }

    private void WriteUnguarded(ulong offset, int size, ulong value)
    {
        if (!IsRegisterAccess(offset, size))
        {
            Ignore("write", offset, size, value);
            return;
        }

        bool raised;
        using (_lock.EnterScope())
        {
            bool before = _interruptPending;
            WriteMmio((uint)offset, size, value);
            raised = !before && _interruptPending;
        }

        // Only an event this write raised fires here. One already pending was raised by another thread's call, which
        // sends it (with any this write added) once it leaves the lock: software writes registers inside its own locks
        // (the driver rings the invalidation queue's doorbell under its queue lock) and must not find a device's page
        // request event, or its handler, running on its thread there.
        if (raised)
        {
            RaisePendingInterrupts();
        }
    }

    private bool IsRegisterAccess(ulong offset, int size) =>
        (size == 4 || size == 8) && (offset & (uint)(size - 1)) == 0 && offset <= (ulong)_regs.Length - (uint)size;

    private void Ignore(string kind, ulong offset, int size, ulong value)
    {
        Interlocked.Increment(ref _ignoredAccesses);
        Log.IgnoredRegisterAccess(_log, Segment, kind, size, offset, value, (uint)_regs.Length);
    }

    /// <summary>
    /// Handles one untranslated request of <paramref name="size"/> bytes at <paramref name="iova"/>
    /// from <paramref name="requesterId"/> (bus &lt;&lt; 8 | devfn), optionally tagged with a PASID:
    /// returns the physical address and page size, or records and returns a fault.
    /// </summary>
    /// <param name="requesterId">Source id of the request.</param>
    /// <param name="pasid">PASID of a request with PASID prefix, or null.</param>
    /// <param name="iova">Input address.</param>
    /// <param name="size">Bytes; the request must stay inside one 4 KiB page, as a PCIe request does.</param>
    /// <param name="access">Read or write.</param>
    /// <returns>The outcome.</returns>
    /// <exception cref="ArgumentOutOfRangeException"><paramref name="size"/> is 0, the request crosses a 4 KiB boundary, or <paramref name="pasid"/> does not fit 20 bits (the message names the value).</exception>
    /// <remarks>Allocates nothing on the GC heap (unless a fault interrupt is delivered to a subscriber).</remarks>
    public VtdTranslation Translate(ushort requesterId, uint? pasid, ulong iova, ulong size, DmaAccess access)
    {
        using PhysicalMemory.AccessScope guard = _memory.EnterAccess();
        return TranslateUnguarded(requesterId, pasid, iova, size, access);
    }

    /// <summary>As <see cref="Translate(ushort, uint?, ulong, ulong, DmaAccess)"/>, for a request with privilege and execute attributes.</summary>
    /// <param name="requesterId">Source id of the request.</param>
    /// <param name="pasid">PASID of a request with PASID prefix, or null (then the request is a user, non-execute one whatever <paramref name="attributes"/> says).</param>
    /// <param name="iova">Input address.</param>
    /// <param name="size">Bytes; the request must stay inside one 4 KiB page.</param>
    /// <param name="access">Read or write (execute is a read with <see cref="DmaRequestAttributes.Execute"/>; dropped on a write).</param>
    /// <param name="attributes">Privileged (PMR) and execute (ER) bits of the PASID prefix.</param>
    /// <returns>The outcome.</returns>
    /// <exception cref="ArgumentOutOfRangeException"><paramref name="attributes"/> has a bit <see cref="DmaRequestAttributes"/> does not define, <paramref name="size"/> is 0, the request crosses a 4 KiB boundary, or <paramref name="pasid"/> does not fit 20 bits.</exception>
    /// <remarks>
    /// <see cref="VtdTranslation.Writable"/> answers for a write with the same privilege. Requests with
    /// attributes are never served by the unit's memo of recent answers, only by its caches.
    /// </remarks>
    public VtdTranslation Translate(ushort requesterId, uint? pasid, ulong iova, ulong size, DmaAccess access, DmaRequestAttributes attributes)
    {
        using PhysicalMemory.AccessScope guard = _memory.EnterAccess();
        return TranslateUnguarded(requesterId, pasid, iova, size, access, RequestAttributes(pasid.HasValue, access, attributes));
    }

    // The attributes a request carries: none without PASID, no execute on a write.
    private static DmaRequestAttributes RequestAttributes(bool hasPasid, DmaAccess access, DmaRequestAttributes attributes)
    {
        if ((attributes & ~(DmaRequestAttributes.Privileged | DmaRequestAttributes.Execute)) != 0)
        {
            ThrowHelper.Attributes(attributes);
        }

        return !hasPasid ? DmaRequestAttributes.None
            : access == DmaAccess.Write ? attributes & ~DmaRequestAttributes.Execute
            : attributes;
    }

    // Translate for callers that hold the scope (the DMA page loop).
    private VtdTranslation TranslateUnguarded(ushort requesterId, uint? pasid, ulong iova, ulong size, DmaAccess access, DmaRequestAttributes attrs = DmaRequestAttributes.None)
    {
        if (size == 0 || size > 4096 - (iova & 0xFFF))
        {
            ThrowHelper.RequestRange(iova, size);
        }

        if (pasid is uint p && p > 0xF_FFFF)
        {
            ThrowHelper.Pasid(p);
        }

        // Requests with attributes skip the memo: its answers are the same for every privilege.
        if (attrs == DmaRequestAttributes.None
            && TryTranslateCached(requesterId, pasid.HasValue, pasid.GetValueOrDefault(), iova, size, access == DmaAccess.Write, out VtdTranslation result))
        {
            return result;
        }

        result = TranslateCore(requesterId, pasid.HasValue, pasid.GetValueOrDefault(), iova, size, access == DmaAccess.Write, attrs);
        if (_interruptPending)
        {
            RaisePendingInterrupts();
        }

        return result;
    }

    /// <summary>
    /// A device DMA: translates <paramref name="buffer"/>'s range page by page and copies between
    /// the buffer and physical memory. Stops at the first page that faults (bytes of earlier pages
    /// have moved) and returns that fault; otherwise returns the translation of the first page.
    /// </summary>
    /// <param name="requesterId">Source id of the device.</param>
    /// <param name="pasid">PASID of a request with PASID prefix, or null.</param>
    /// <param name="iova">Input address of the first byte.</param>
    /// <param name="buffer">For a read, receives memory; for a write, supplies it. Must not be empty.</param>
    /// <param name="access">Read or write.</param>
    /// <returns>The first page's translation, or the outcome of the page that stopped the transfer (its <see cref="VtdTranslation.InputAddress"/> says where).</returns>
    public VtdTranslation Dma(ushort requesterId, uint? pasid, ulong iova, Span<byte> buffer, DmaAccess access)
    {
        using PhysicalMemory.AccessScope guard = _memory.EnterAccess();
        if (buffer.IsEmpty || (ulong)buffer.Length - 1 > ulong.MaxValue - iova)
        {
            ThrowHelper.Argument("A DMA needs a non-empty buffer whose range does not wrap around.", nameof(buffer));
        }

        Move(requesterId, pasid, iova, buffer, access, out VtdTranslation outcome);
        return outcome;
    }

    private void RaisePendingInterrupts()
    {
        bool fault, inv;
        ulong faultAddr, invAddr;
        uint faultData, invData;
        (bool Pending, ulong Address, uint Data) pr;
        using (_lock.EnterScope())
        {
            pr = TakePageRequestMsi();
            fault = _faultMsiPending;
            inv = _invMsiPending;
            faultAddr = _faultMsiAddress;
            faultData = _faultMsiData;
            invAddr = _invMsiAddress;
            invData = _invMsiData;
            _faultMsiPending = false;
            _invMsiPending = false;
            _interruptPending = false;
        }

        if (fault)
        {
            FaultEvent?.Invoke(this, new VtdInterruptEventArgs(faultAddr, faultData));
        }

        if (inv)
        {
            InvalidationCompletionEvent?.Invoke(this, new VtdInterruptEventArgs(invAddr, invData));
        }

        if (pr.Pending)
        {
            RaisePageRequestEvent(pr.Address, pr.Data);
        }
    }
}
