namespace Iommu.Devices;

/// <summary>
/// A PCI function (<c>struct pci_dev</c>): address and requester ID, the capabilities the IOMMU
/// stack looks at (PASID, ATS, PRI, the Intel Scalable-IOV DVSEC, ACS), RMRR lock and DMA aliases.
/// </summary>
/// <remarks>Create through <see cref="PciBus.AddDevice(PciDeviceSpec)"/>. After the platform is
/// disposed, DMA and the capability-control methods throw <see cref="ObjectDisposedException"/>; the
/// immutable description (address, capabilities) stays readable.</remarks>
[KernelSymbol("struct pci_dev")]
public sealed partial class PciDevice : Device
{
    internal PciDevice(PciDeviceSpec spec, PciDevice? upstream)
        : base(spec.Address.ToString())
    {
        if (spec.PasidWidth is < 0 or > 20)
        {
            throw new ArgumentOutOfRangeException(nameof(spec), spec.PasidWidth, $"PASID width of {spec.Address} must be 0 (no PASID capability) to 20 bits.");
        }

        if (spec.ClassCode > 0xFF_FFFF)
        {
            throw new ArgumentOutOfRangeException(nameof(spec), spec.ClassCode, $"Class code 0x{spec.ClassCode:x} of {spec.Address} must fit in 24 bits.");
        }

        Spec = spec;
        Upstream = upstream;
        // pci_setup_device: dma_set_max_seg_size(65536), dma_set_seg_boundary(0xffffffff).
        HasDmaParms = true;
        SegmentBoundaryMask = 0xFFFF_FFFF;
        RequesterId = spec.Address.RequesterId;
        DmaRequesterId = RequesterId;
        for (PciDevice child = this; child.Upstream is PciDevice bridge; child = bridge)
        {
            if (bridge.IsPcieToPciBridge)
            {
                DmaRequesterId = (ushort)(child.BusNumber << 8); // (secondary bus, 00.0): the bridge owns the transaction
            }
        }
    }

    /// <summary>The description the device was created from.</summary>
    public PciDeviceSpec Spec { get; }

    /// <summary>The PCI address.</summary>
    public PciAddress Address => Spec.Address;

    /// <summary>Segment (PCI domain) number.</summary>
    public ushort Segment => Spec.Address.Segment;

    /// <summary>Bus number.</summary>
    public byte BusNumber => Spec.Address.Bus;

    /// <summary>Device and function (<c>devfn</c>).</summary>
    public byte DevFn => Spec.Address.DevFn;

    /// <summary>Requester ID (<c>bus &lt;&lt; 8 | devfn</c>) of the function; the ID its DMA carries to the IOMMU is <see cref="DmaRequesterId"/> (the same unless a PCIe-to-PCI bridge is above it).</summary>
    [KernelSymbol("pci_dev_id")]
    public ushort RequesterId { get; }

    /// <summary>
    /// The requester ID the device's DMA carries when it reaches the IOMMU: its own, or, behind a PCIe-to-PCI
    /// bridge, (secondary bus, 00.0) of the bridge nearest the root (such a bridge takes ownership of the
    /// conventional PCI transactions it forwards). The device's DMA entry points and the VT-d unit use it, so
    /// a fault record names it; 5.15 programs a context entry for it (<c>pci_for_each_dma_alias</c>,
    /// <c>PCI_EXP_TYPE_PCI_BRIDGE</c>), and QEMU aliases such devices the same way.
    /// </summary>
    [KernelSymbol("pci_for_each_dma_alias")]
    public ushort DmaRequesterId { get; } // stored: read on every DMA

    private RemapperLookup? _remapper;

    /// <summary>The bridge or port above the device, or null on a root bus.</summary>
    public PciDevice? Upstream { get; }

    /// <summary>Whether the device has a PASID capability (<c>pci_pasid_features() &gt;= 0</c>).</summary>
    [KernelSymbol("pci_pasid_features")]
    public bool HasPasidCapability => Spec.PasidWidth > 0;

    /// <summary>PASID width in bits (0 without the capability).</summary>
    public int PasidWidth => Spec.PasidWidth;

    /// <summary>Number of PASIDs the device supports (<c>pci_max_pasids</c>: 2^width), or 0 without the capability.</summary>
    /// <remarks>The kernel returns -EINVAL without the capability; 0 here keeps the property total.</remarks>
    [KernelSymbol("pci_max_pasids")]
    public int MaxPasids => Spec.PasidWidth > 0 ? 1 << Spec.PasidWidth : 0;

    /// <summary>ATS capability.</summary>
    public bool HasAts => Spec.Ats;

    /// <summary>PRI capability.</summary>
    public bool HasPri => Spec.Pri;

    /// <summary>Intel Scalable-IOV DVSEC present (ext cap 0x23, vendor 0x8086, DVSEC id 5).</summary>
    [KernelSymbol("siov_find_pci_dvsec")]
    public bool HasScalableIovDvsec => Spec.ScalableIov;

    /// <summary>The class code (<c>pdev-&gt;class</c>; see <see cref="PciDeviceSpec.ClassCode"/>).</summary>
    public uint ClassCode => Spec.ClassCode;

    /// <summary>
    /// A USB controller (class 0x0C03xx) or a display controller (base class 0x03): the RMRRs that name it
    /// are relaxable (<c>device_rmrr_is_relaxable</c>). Firmware uses them only until the OS driver takes
    /// over (USB legacy keyboard emulation, the boot framebuffer), so they lock nothing, and the driver
    /// reports them as <see cref="IommuResvType.DirectRelaxable"/>: identity mapped in a DMA default domain,
    /// but a VFIO user may map over them.
    /// </summary>
    [KernelSymbol("device_rmrr_is_relaxable")]
    public bool RmrrRelaxable => (ClassCode >> 8) == 0x0C03 || (ClassCode >> 16) == 0x03;

    /// <summary>
    /// Named in an RMRR, by <see cref="PciDeviceSpec.RmrrLocked"/> or by the scope of a region declared
    /// with <see cref="PciBus.AddRmrr"/>, and not <see cref="RmrrRelaxable"/> (<c>device_is_rmrr_locked</c>):
    /// the device's DMA mapping is locked by firmware.
    /// </summary>
    [KernelSymbol("device_is_rmrr_locked")]
    public bool RmrrLocked => !RmrrRelaxable && (Spec.RmrrLocked || (Bus is PciBus pci && pci.HasRmrr(this)));

    /// <summary>ACS isolation enabled (<c>pci_acs_enabled</c> with the flags the IOMMU core requires).</summary>
    [KernelSymbol("pci_acs_enabled")]
    public bool AcsEnabled => Spec.Acs;

    /// <summary>Multifunction device (<c>pdev->multifunction</c>): declared so, or any function other than 0.</summary>
    public bool Multifunction => Spec.Multifunction || Spec.Address.Function != 0;

    /// <summary>A bridge or port.</summary>
    public bool IsBridge => Spec.IsBridge || Spec.IsPcieToPciBridge;

    /// <summary>A PCIe-to-PCI bridge (the devices behind it share its requester ID).</summary>
    public bool IsPcieToPciBridge => Spec.IsPcieToPciBridge;

    /// <summary>PASID enabled in the device's PASID capability control register.</summary>
    public bool PasidEnabled { get; private set; }

    /// <summary>ATS enabled.</summary>
    public bool AtsEnabled { get; private set; }

    /// <summary>PRI enabled.</summary>
    public bool PriEnabled { get; private set; }

    /// <summary>Whether ACS is enabled on this device and on every bridge above it (<c>pci_acs_path_enabled</c> to the root).</summary>
    [KernelSymbol("pci_acs_path_enabled")]
    public bool AcsPathEnabled
    {
        get
        {
            for (PciDevice? d = this; d is not null; d = d.Upstream)
            {
                if (!d.AcsEnabled)
                {
                    return false;
                }
            }

            return true;
        }
    }

    /// <summary>
    /// The device reads memory at <paramref name="iova"/>: through the remapping unit that covers it
    /// (see <see cref="PciBus.AddDmaRemapper"/>), or straight from physical memory when none does.
    /// </summary>
    /// <param name="pasid">PASID to tag the request with, or null for a request without PASID.</param>
    /// <param name="iova">Device address.</param>
    /// <param name="destination">Receives the bytes.</param>
    /// <returns>The outcome.</returns>
    /// <exception cref="InvalidOperationException">The device is on no bus: never added, or removed (<see cref="Bus.RemoveDevice"/>, also by another thread as the call starts). A removed function issues no DMA.</exception>
    // Compiled on its own: inlined into a caller's loop (tiered, with dynamic PGO), the JIT's inlining
    // budget ran out inside it and left the result's constructor and the scope's end as calls on every
    // read; on its own, an IOTLB-hit read took about 15% less time (session 21).
    [System.Runtime.CompilerServices.MethodImpl(System.Runtime.CompilerServices.MethodImplOptions.NoInlining)]
    [System.Runtime.CompilerServices.SkipLocalsInit] // the unit's hit counter, inlined here, takes a local's address only
    public DmaResult DmaRead(uint? pasid, ulong iova, Span<byte> destination)
    {
        // 16-64 B through the unit's memo, inline (no call, no type test); anything else, DmaReadSlow.
        ulong pa = MoveThroughMemo(pasid, iova, destination, write: false);
        return pa != TranslationShortcut.NotMoved
            ? new DmaResult(DmaStatus.Ok, (ulong)destination.Length, pa, DmaFaultReason.None)
            : DmaReadSlow(pasid, iova, destination);
    }

    // The path DmaRead and DmaWrite try first: the memo of the unit the cached route names (managed objects
    // only, no call), or TranslationShortcut.NotMoved when no current route has a memo or the memo did not
    // take the request.
    [System.Runtime.CompilerServices.MethodImpl(System.Runtime.CompilerServices.MethodImplOptions.AggressiveInlining)]
    private ulong MoveThroughMemo(uint? pasid, ulong iova, Span<byte> buffer, bool write)
    {
        RemapperLookup? route = Volatile.Read(ref _remapper);
        if (route?.Memo is not { } memo || !IsCurrent(route, Bus))
        {
            return TranslationShortcut.NotMoved;
        }

        // Untagged requests use the key and index offset the route computed once; a tagged one's key is the
        // route's with the PASID ORed in, and its offset the one the route kept for the PASID, when it is the
        // last one the device used (a PASID wider than 20 bits is the unit's to refuse).
        ulong key = route.MemoKey;
        nint offset = route.MemoOffset;
        if (pasid.HasValue)
        {
            uint p = pasid.GetValueOrDefault();
            if (p > 0xF_FFFF)
            {
                return TranslationShortcut.NotMoved;
            }

            key = route.MemoTaggedKey | ((ulong)p << 16); // TranslationShortcut.Requester's layout
            ulong last = route.LastPasidOffset;
            if ((uint)last == (p | RemapperLookup.PasidOffsetValid))
            {
                offset = (nint)(last >> 32);
            }
            else
            {
                offset = memo.Offset(key);
                route.LastPasidOffset = ((ulong)offset << 32) | p | RemapperLookup.PasidOffsetValid;
            }
        }

        return memo.TryMoveSmall(key, offset, iova, buffer, write);
    }

    // DmaRead when the memo did not take the request: no route cached (or a stale one), another length (the
    // unit's unscoped move of any length), memory the caller owns, or a request the unit left (see
    // ScopedRead). Out of line, so that the fast path above makes no call that needs its registers kept.
    [System.Runtime.CompilerServices.MethodImpl(System.Runtime.CompilerServices.MethodImplOptions.NoInlining)]
    private DmaResult DmaReadSlow(uint? pasid, ulong iova, Span<byte> destination)
    {
        RemapperLookup? route = Remapper();
        if (route?.Unit is { } unit)
        {
            ulong pa = route.Unscoped is { } fast ? fast.MoveUnscoped(DmaRequesterId, pasid, iova, destination, write: false) : TranslationShortcut.NotMoved;
            return pa != TranslationShortcut.NotMoved
                ? new DmaResult(DmaStatus.Ok, (ulong)destination.Length, pa, DmaFaultReason.None)
                : ScopedRead(route, unit, pasid, iova, destination);
        }

        return DirectRead(destination, iova);
    }

    // DmaRead through the unit inside the memory's access scope: memory the caller owns, or a request the
    // unit's unscoped fast path left (a translation not cached, a fault, a page not backed, a dispose).
    [System.Runtime.CompilerServices.MethodImpl(System.Runtime.CompilerServices.MethodImplOptions.NoInlining)]
    private DmaResult ScopedRead(RemapperLookup route, IDmaRemapper unit, uint? pasid, ulong iova, Span<byte> destination)
    {
        using Memory.PhysicalMemory.AccessScope guard = route.Memory.EnterAccess();
        return unit.DmaRead(this, pasid, iova, destination);
    }

    // DmaRead without a remapping unit: straight to physical memory.
    [System.Runtime.CompilerServices.MethodImpl(System.Runtime.CompilerServices.MethodImplOptions.NoInlining)]
    private DmaResult DirectRead(Span<byte> destination, ulong iova)
    {
        using Memory.PhysicalMemory.AccessScope guard = EnterPlatform();
        Memory.PhysicalMemory memory = Platform?.Memory ?? throw new InvalidOperationException($"{Name} is on no bus.");
        if (!memory.TryRead(iova, destination))
        {
            return new DmaResult(DmaStatus.MemoryError, 0, iova, DmaFaultReason.None);
        }

        return new DmaResult(DmaStatus.Ok, (ulong)destination.Length, iova, DmaFaultReason.None);
    }

    /// <summary>The device writes <paramref name="source"/> to <paramref name="iova"/> (see <see cref="DmaRead(uint?, ulong, Span{byte})"/>).</summary>
    /// <param name="pasid">PASID to tag the request with, or null.</param>
    /// <param name="iova">Device address.</param>
    /// <param name="source">The bytes.</param>
    /// <returns>The outcome.</returns>
    /// <exception cref="InvalidOperationException">The device is on no bus: never added, or removed (<see cref="Bus.RemoveDevice"/>, also by another thread as the call starts). A removed function issues no DMA.</exception>
    [System.Runtime.CompilerServices.MethodImpl(System.Runtime.CompilerServices.MethodImplOptions.NoInlining)] // as DmaRead
    [System.Runtime.CompilerServices.SkipLocalsInit] // as DmaRead
    public DmaResult DmaWrite(uint? pasid, ulong iova, ReadOnlySpan<byte> source)
    {
        // The memo only reads the span it is given on a write.
        ulong pa = MoveThroughMemo(pasid, iova, Internal.MoveSource.Of(source), write: true);
        return pa != TranslationShortcut.NotMoved
            ? new DmaResult(DmaStatus.Ok, (ulong)source.Length, pa, DmaFaultReason.None)
            : DmaWriteSlow(pasid, iova, source);
    }

    // DmaWrite when the memo did not take the request (see DmaReadSlow).
    [System.Runtime.CompilerServices.MethodImpl(System.Runtime.CompilerServices.MethodImplOptions.NoInlining)]
    private DmaResult DmaWriteSlow(uint? pasid, ulong iova, ReadOnlySpan<byte> source)
    {
        RemapperLookup? route = Remapper();
        if (route?.Unit is { } unit)
        {
            ulong pa = route.Unscoped is { } fast ? fast.MoveUnscoped(DmaRequesterId, pasid, iova, Internal.MoveSource.Of(source), write: true) : TranslationShortcut.NotMoved;
            return pa != TranslationShortcut.NotMoved
                ? new DmaResult(DmaStatus.Ok, (ulong)source.Length, pa, DmaFaultReason.None)
                : ScopedWrite(route, unit, pasid, iova, source);
        }

        return DirectWrite(source, iova);
    }

    // DmaWrite through the unit inside the memory's access scope (see ScopedRead).
    [System.Runtime.CompilerServices.MethodImpl(System.Runtime.CompilerServices.MethodImplOptions.NoInlining)]
    private DmaResult ScopedWrite(RemapperLookup route, IDmaRemapper unit, uint? pasid, ulong iova, ReadOnlySpan<byte> source)
    {
        using Memory.PhysicalMemory.AccessScope guard = route.Memory.EnterAccess();
        return unit.DmaWrite(this, pasid, iova, source);
    }

    // DmaWrite without a remapping unit: straight to physical memory.
    [System.Runtime.CompilerServices.MethodImpl(System.Runtime.CompilerServices.MethodImplOptions.NoInlining)]
    private DmaResult DirectWrite(ReadOnlySpan<byte> source, ulong iova)
    {
        using Memory.PhysicalMemory.AccessScope guard = EnterPlatform();
        Memory.PhysicalMemory memory = Platform?.Memory ?? throw new InvalidOperationException($"{Name} is on no bus.");
        if (!memory.TryWrite(iova, source))
        {
            return new DmaResult(DmaStatus.MemoryError, 0, iova, DmaFaultReason.None);
        }

        return new DmaResult(DmaStatus.Ok, (ulong)source.Length, iova, DmaFaultReason.None);
    }

    /// <summary>
    /// The device reads memory at <paramref name="iova"/> with privileged/execute attributes: through a
    /// remapping unit that models them (<see cref="IDmaRemapperAttributes"/>), otherwise as
    /// <see cref="DmaRead(uint?, ulong, Span{byte})"/> (the attributes dropped).
    /// </summary>
    /// <param name="pasid">PASID to tag the request with, or null (then the request carries no attributes).</param>
    /// <param name="iova">Device address.</param>
    /// <param name="destination">Receives the bytes.</param>
    /// <param name="attributes">Privileged and execute bits of the PASID prefix.</param>
    /// <returns>The outcome.</returns>
    /// <exception cref="InvalidOperationException">The device is on no bus: never added, or removed (<see cref="Bus.RemoveDevice"/>, also by another thread as the call starts). A removed function issues no DMA.</exception>
    public DmaResult DmaRead(uint? pasid, ulong iova, Span<byte> destination, DmaRequestAttributes attributes)
    {
        using Memory.PhysicalMemory.AccessScope guard = EnterPlatform();
        return DmaRemapper() is IDmaRemapperAttributes unit
            ? unit.DmaRead(this, pasid, iova, destination, attributes)
            : DmaRead(pasid, iova, destination);
    }

    /// <summary>The device writes <paramref name="source"/> to <paramref name="iova"/> with privileged attributes (see <see cref="DmaRead(uint?, ulong, Span{byte}, DmaRequestAttributes)"/>).</summary>
    /// <param name="pasid">PASID to tag the request with, or null.</param>
    /// <param name="iova">Device address.</param>
    /// <param name="source">The bytes.</param>
    /// <param name="attributes">Privileged bit of the PASID prefix (execute is dropped on a write).</param>
    /// <returns>The outcome.</returns>
    /// <exception cref="InvalidOperationException">The device is on no bus: never added, or removed (<see cref="Bus.RemoveDevice"/>, also by another thread as the call starts). A removed function issues no DMA.</exception>
    public DmaResult DmaWrite(uint? pasid, ulong iova, ReadOnlySpan<byte> source, DmaRequestAttributes attributes)
    {
        using Memory.PhysicalMemory.AccessScope guard = EnterPlatform();
        return DmaRemapper() is IDmaRemapperAttributes unit
            ? unit.DmaWrite(this, pasid, iova, source, attributes)
            : DmaWrite(pasid, iova, source);
    }

    // The unit this device's DMA goes through, cached while the bus's set of units is unchanged, so
    // the DMA path takes no bus lock (many devices DMA at once).
    [System.Runtime.CompilerServices.MethodImpl(System.Runtime.CompilerServices.MethodImplOptions.AggressiveInlining)]
    private IDmaRemapper? DmaRemapper() => Remapper()?.Unit;

    // The lookup behind DmaRemapper, with the unit's ATS face resolved once (no interface cast per DMA).
    [System.Runtime.CompilerServices.MethodImpl(System.Runtime.CompilerServices.MethodImplOptions.AggressiveInlining)]
    private RemapperLookup? Remapper()
    {
        RemapperLookup? cached = Volatile.Read(ref _remapper);
        return cached is not null && IsCurrent(cached, Bus) ? cached : RemapperSlow();
    }

    // Whether a cached route still holds: the device is on the bus it was found on, and that bus's set of units
    // has not changed since.
    [System.Runtime.CompilerServices.MethodImpl(System.Runtime.CompilerServices.MethodImplOptions.AggressiveInlining)]
    private static bool IsCurrent(RemapperLookup cached, Bus? bus) => ReferenceEquals(cached.Bus, bus) && cached.Version == cached.Bus.RemapperVersion;

    [System.Runtime.CompilerServices.MethodImpl(System.Runtime.CompilerServices.MethodImplOptions.NoInlining)]
    private RemapperLookup? RemapperSlow()
    {
        if (Bus is not PciBus bus)
        {
            return null;
        }

        RemapperLookup? cached = Volatile.Read(ref _remapper);
        int version = bus.RemapperVersion;
        if (cached is not null && ReferenceEquals(cached.Bus, bus) && cached.Version == version)
        {
            return cached;
        }

        IDmaRemapper? unit = bus.FindDmaRemapper(this);
        Memory.PhysicalMemory memory = bus.Platform.Memory;
        IUnscopedDma? unscoped = memory.RetiresOnDispose ? unit as IUnscopedDma : null;
        TranslationShortcut? memo = unscoped?.Memo;
        ulong key = TranslationShortcut.Requester(DmaRequesterId, hasPasid: false, 0);
        var lookup = new RemapperLookup(
            bus, version, unit, unit as IDmaRemapperAts, memory, unscoped, memo, key, memo?.Offset(key) ?? 0, TranslationShortcut.Requester(DmaRequesterId, hasPasid: true, 0));
        Volatile.Write(ref _remapper, lookup);
        return lookup;
    }

    // Unscoped: the unit's fast path that holds no access scope, only on memory that retires on dispose; Memo, its memo,
    // with MemoKey and MemoOffset, the memo's key and index offset of the device's untagged requests, and MemoTaggedKey,
    // the key of its tagged requests with PASID 0 (a PASID's key ORs the PASID in).
    private sealed record RemapperLookup(
        PciBus Bus, int Version, IDmaRemapper? Unit, IDmaRemapperAts? Ats, Memory.PhysicalMemory Memory, IUnscopedDma? Unscoped,
        TranslationShortcut? Memo, ulong MemoKey, nint MemoOffset, ulong MemoTaggedKey)
    {
        public const uint PasidOffsetValid = 1U << 31;

        // The memo's index offset of the last PASID the device's requests carried (bits 63:32), with that PASID
        // | PasidOffsetValid (bits 31:0): one word, so a reader sees a pair one writer wrote. It only picks the
        // entry to look at; the key, computed from the request, decides whether the entry is its translation.
        public ulong LastPasidOffset;
    }

    // The device's access scope: its platform's memory (none while the device is on no bus).
    private Memory.PhysicalMemory.AccessScope EnterPlatform() => Platform?.Memory.EnterAccess() ?? default;

    /// <summary>Enables PASID on the device (<c>pci_enable_pasid</c>).</summary>
    /// <returns>-EINVAL without the capability, -EBUSY when already enabled.</returns>
    [KernelSymbol("pci_enable_pasid")]
    public Errno EnablePasid()
    {
        using Memory.PhysicalMemory.AccessScope guard = EnterPlatform();
        if (PasidEnabled)
        {
            return ErrorDetail.Fail(Errno.EBUSY, $"PASID is already enabled on {Name}");
        }

        if (!HasPasidCapability)
        {
            return ErrorDetail.Fail(Errno.EINVAL, $"{Name} has no PASID capability");
        }

        PasidEnabled = true;
        return Errno.None;
    }

    /// <summary>Disables PASID (<c>pci_disable_pasid</c>).</summary>
    [KernelSymbol("pci_disable_pasid")]
    public void DisablePasid()
    {
        using Memory.PhysicalMemory.AccessScope guard = EnterPlatform();
        PasidEnabled = false;
    }

    /// <summary>Enables ATS (<c>pci_enable_ats</c>).</summary>
    /// <returns>-EINVAL without the capability, -EBUSY when already enabled.</returns>
    [KernelSymbol("pci_enable_ats")]
    public Errno EnableAts()
    {
        using Memory.PhysicalMemory.AccessScope guard = EnterPlatform();
        if (!HasAts)
        {
            return ErrorDetail.Fail(Errno.EINVAL, $"{Name} has no ATS capability");
        }

        if (AtsEnabled)
        {
            return ErrorDetail.Fail(Errno.EBUSY, $"ATS is already enabled on {Name}");
        }

        AtsEnabled = true;
        return Errno.None;
    }

    /// <summary>Disables ATS (<c>pci_disable_ats</c>).</summary>
    [KernelSymbol("pci_disable_ats")]
    public void DisableAts()
    {
        using Memory.PhysicalMemory.AccessScope guard = EnterPlatform();
        AtsEnabled = false;
        ClearAtc();
    }

    /// <summary>Enables PRI (<c>pci_enable_pri</c>).</summary>
    /// <returns>-EBUSY when already enabled, -EINVAL without the capability.</returns>
    [KernelSymbol("pci_enable_pri")]
    public Errno EnablePri()
    {
        using Memory.PhysicalMemory.AccessScope guard = EnterPlatform();
        if (PriEnabled)
        {
            return ErrorDetail.Fail(Errno.EBUSY, $"PRI is already enabled on {Name}");
        }

        if (!HasPri)
        {
            return ErrorDetail.Fail(Errno.EINVAL, $"{Name} has no PRI capability");
        }

        PriEnabled = true;
        return Errno.None;
    }

    /// <summary>Disables PRI (<c>pci_disable_pri</c>).</summary>
    [KernelSymbol("pci_disable_pri")]
    public void DisablePri()
    {
        using Memory.PhysicalMemory.AccessScope guard = EnterPlatform();
        PriEnabled = false;
    }

    /// <summary>Whether two functions are DMA aliases of each other (<c>pci_devs_are_dma_aliases</c>).</summary>
    /// <param name="other">Another function.</param>
    /// <returns>True when one lists the other's devfn as an alias on the same bus.</returns>
    [KernelSymbol("pci_devs_are_dma_aliases")]
    public bool IsDmaAliasOf(PciDevice other)
    {
        using Memory.PhysicalMemory.AccessScope guard = EnterPlatform();
        ArgumentNullException.ThrowIfNull(other);
        if (other.Segment != Segment || other.BusNumber != BusNumber)
        {
            return false;
        }

        return Contains(Spec.DmaAliases, other.DevFn) || Contains(other.Spec.DmaAliases, DevFn);

        static bool Contains(IReadOnlyList<byte> list, byte devfn)
        {
            for (int i = 0; i < list.Count; i++)
            {
                if (list[i] == devfn)
                {
                    return true;
                }
            }

            return false;
        }
    }
}
