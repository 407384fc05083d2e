using Iommu.Memory;
namespace Iommu.Devices;

/// <summary>The PCI bus of one segment (<c>pci_bus_type</c> restricted to a PCI domain).</summary>
[KernelSymbol("pci_bus_type")]
public sealed class PciBus : Bus
{
    internal PciBus(Platform platform, int segment)
        : base(platform, segment == 0 ? "pci" : $"pci{segment:x4}")
    {
        Segment = (ushort)segment;
    }

    // Copy-on-write, read without a lock as the kernel reads the DRHD list under RCU: the IOPF worker's page
    // response looks the unit up while an SVA unbind holds its group's mutex and waits for that worker, and
    // device_del holds the bus lock while it takes group mutexes.
    private (IDmaRemapper Unit, bool IncludeAll, PciAddress[] Scope)[] _remappers = [];
    private int _remapperVersion; // changes whenever a unit is added, so devices can cache their unit

    /// <summary>Changes whenever a remapping unit is added: a device's cached <see cref="FindDmaRemapper"/> answer is valid while it stays the same.</summary>
    internal int RemapperVersion => Volatile.Read(ref _remapperVersion);

    /// <summary>The PCI segment (domain) number of every device on this bus.</summary>
    public ushort Segment { get; }

    /// <summary>
    /// Puts a DMA-remapping unit between devices and memory (a DRHD of the ACPI DMAR table): it
    /// covers the devices in <paramref name="scope"/>, or, with <paramref name="includeAll"/>, every
    /// device no other unit names. Devices covered by no unit DMA straight to memory.
    /// </summary>
    /// <param name="unit">The hardware.</param>
    /// <param name="includeAll">The catch-all unit of the segment (<c>INCLUDE_PCI_ALL</c>).</param>
    /// <param name="scope">Devices (or bridges, covering everything below them) this unit covers.</param>
    [KernelSymbol("struct dmar_drhd_unit")]
    public void AddDmaRemapper(IDmaRemapper unit, bool includeAll, params PciAddress[] scope)
    {
        using PhysicalMemory.AccessScope guard = Platform.Memory.EnterAccess();
        ArgumentNullException.ThrowIfNull(unit);
        ArgumentNullException.ThrowIfNull(scope);
        lock (SyncRoot)
        {
            if (includeAll && Array.Exists(_remappers, r => r.IncludeAll))
            {
                throw new InvalidOperationException($"Segment {Segment:x4} already has an INCLUDE_PCI_ALL remapping unit.");
            }

            Volatile.Write(ref _remappers, [.. _remappers, (unit, includeAll, [.. scope])]);
            Volatile.Write(ref _remapperVersion, _remapperVersion + 1);
        }
    }

    // Copy-on-write, read without a lock: the readers (the IOMMU driver's attach and reserved-region
    // callbacks) run under a group's mutex, which device_add and device_del take inside the bus lock.
    private (ulong Base, ulong End, PciAddress[] Scope)[] _rmrrs = [];

    /// <summary>
    /// Declares a Reserved Memory Region Reporting structure of the ACPI DMAR table: firmware keeps
    /// DMA going to <paramref name="baseAddress"/>..<paramref name="endAddress"/> for the devices in
    /// <paramref name="scope"/> (or below a bridge there) after boot, so the IOMMU driver reports the
    /// range as a direct (identity) reserved region of those devices and refuses to hand them to an
    /// API user (UNMANAGED domain attach fails with -EPERM).
    /// </summary>
    /// <param name="baseAddress">First byte of the region (page-aligned).</param>
    /// <param name="endAddress">Last byte of the region (inclusive; the byte after it page-aligned).</param>
    /// <param name="scope">Devices, or bridges covering everything below them, the region belongs to.</param>
    /// <exception cref="ArgumentOutOfRangeException">The region is empty, inverted or not made of whole pages.</exception>
    [KernelSymbol("struct dmar_rmrr_unit")]
    public void AddRmrr(ulong baseAddress, ulong endAddress, params PciAddress[] scope)
    {
        using PhysicalMemory.AccessScope guard = Platform.Memory.EnterAccess();
        ArgumentNullException.ThrowIfNull(scope);

        // dmar_parse_one_rmrr only warns about such firmware (FW_BUG) and keeps the entry; the model refuses it,
        // as a range of partial pages cannot be identity-mapped as the firmware meant.
        if (endAddress <= baseAddress || (baseAddress & (Sizes.Page - 1)) != 0 || ((endAddress + 1) & (Sizes.Page - 1)) != 0)
        {
            throw new ArgumentOutOfRangeException(nameof(endAddress), $"RMRR 0x{baseAddress:x}..0x{endAddress:x} is not a non-empty run of whole pages.");
        }

        lock (SyncRoot)
        {
            Volatile.Write(ref _rmrrs, [.. _rmrrs, (baseAddress, endAddress, [.. scope])]);
        }
    }

    // The RMRRs whose scope covers the device, as (first byte, last byte), in declaration order.
    internal List<(ulong Base, ulong End)> RmrrsOf(PciDevice device)
    {
        var list = new List<(ulong Base, ulong End)>();
        foreach ((ulong b, ulong e, PciAddress[] scope) in Volatile.Read(ref _rmrrs))
        {
            if (InScope(device, scope))
            {
                list.Add((b, e));
            }
        }

        return list;
    }

    // Whether an RMRR's scope covers the device (device_has_rmrr), without building the list.
    internal bool HasRmrr(PciDevice device)
    {
        foreach ((_, _, PciAddress[] scope) in Volatile.Read(ref _rmrrs))
        {
            if (InScope(device, scope))
            {
                return true;
            }
        }

        return false;
    }

    // A DMAR device scope (DRHD or RMRR) covers the device when it names the device or a bridge above it
    // (the scope walk with is_downstream_to_pci_bridge).
    private static bool InScope(PciDevice device, PciAddress[] scope)
    {
        for (PciDevice? d = device; d is not null; d = d.Upstream)
        {
            if (Array.IndexOf(scope, d.Address) >= 0)
            {
                return true;
            }
        }

        return false;
    }

    /// <summary>
    /// The remapping unit that covers <paramref name="device"/> (<c>dmar_find_matched_drhd_unit</c>):
    /// a unit whose scope names the device or a bridge above it, else the catch-all unit, else null.
    /// </summary>
    /// <param name="device">A device on this bus.</param>
    /// <returns>The unit or null.</returns>
    [KernelSymbol("dmar_find_matched_drhd_unit")]
    public IDmaRemapper? FindDmaRemapper(PciDevice device)
    {
        using PhysicalMemory.AccessScope guard = Platform.Memory.EnterAccess();
        ArgumentNullException.ThrowIfNull(device);
        (IDmaRemapper Unit, bool IncludeAll, PciAddress[] Scope)[] remappers = Volatile.Read(ref _remappers);
        foreach ((IDmaRemapper unit, bool includeAll, PciAddress[] scope) in remappers)
        {
            if (!includeAll && InScope(device, scope))
            {
                return unit;
            }
        }

        foreach ((IDmaRemapper unit, bool includeAll, _) in remappers)
        {
            if (includeAll)
            {
                return unit;
            }
        }

        return null;
    }

    /// <summary>Adds a PCI function described by <paramref name="spec"/> and probes it if the bus has IOMMU ops.</summary>
    /// <param name="spec">Address and capabilities; the address must be free and on this segment, and its upstream bridge already present.</param>
    /// <returns>The new device.</returns>
    public PciDevice AddDevice(PciDeviceSpec spec)
    {
        using PhysicalMemory.AccessScope guard = Platform.Memory.EnterAccess();
        ArgumentNullException.ThrowIfNull(spec);
        PciDevice? upstream = null;
        if (spec.Upstream is PciAddress up)
        {
            upstream = Find(up) as PciDevice
                ?? throw new ArgumentException($"Upstream bridge {up} of {spec.Address} is not on the bus; add it first.", nameof(spec));
            if (!upstream.IsBridge)
            {
                throw new ArgumentException($"Upstream device {up} of {spec.Address} is not a bridge.", nameof(spec));
            }
        }

        var device = new PciDevice(spec, upstream);
        AddDevice(device);
        return device;
    }

    /// <summary>Finds the function at <paramref name="address"/>.</summary>
    /// <param name="address">PCI address.</param>
    /// <returns>The device or null.</returns>
    public PciDevice? Find(PciAddress address)
    {
        foreach (Device d in Devices)
        {
            if (d is PciDevice p && p.Address == address)
            {
                return p;
            }
        }

        return null;
    }

    /// <summary>Finds the function at <paramref name="address"/> (<c>SSSS:BB:DD.F</c>).</summary>
    /// <param name="address">PCI address text.</param>
    /// <returns>The device or null.</returns>
    public PciDevice? Find(string address) => Find(PciAddress.Parse(address, System.Globalization.CultureInfo.InvariantCulture));

    /// <inheritdoc/>
    protected override void OnAdding(Device device)
    {
        if (device is not PciDevice pci)
        {
            throw new ArgumentException($"Only PCI functions can sit on {Name}; {device.Name} is not one.", nameof(device));
        }

        if (pci.Segment != Segment)
        {
            throw new ArgumentException($"{pci.Name} is on segment {pci.Segment:x4}, but this bus is segment {Segment:x4}.", nameof(device));
        }

        foreach (Device d in Devices)
        {
            if (d is PciDevice p && p.Address == pci.Address)
            {
                throw new ArgumentException($"A device already sits at {pci.Address}.", nameof(device));
            }
        }
    }
}
