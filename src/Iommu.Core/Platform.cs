using System.Diagnostics;
using System.Diagnostics.Metrics;
using Iommu.Devices;
using Iommu.Memory;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Logging.Abstractions;

namespace Iommu;

/// <summary>
/// The embedding root: one machine with its physical memory, frame allocator, buses and IOMMU core.
/// Nothing is global, so any number of platforms can live in one process (tests run in parallel).
/// </summary>
/// <remarks>
/// Thread safety: adding buses and meters is serialised; the members' own types document their locking.
/// Dispose the platform to release its native memory and the meters it created; see
/// <see cref="Dispose"/> for what calls racing it do.
/// </remarks>
public sealed class Platform : IDisposable
{
    private readonly List<Bus> _buses = [];
    private readonly Lock _lock = new();
    private readonly Dictionary<string, Meter> _meters = new(StringComparer.Ordinal);
    private readonly KeyValuePair<string, object?>[] _metricTags;
    private bool _disposed;

    /// <summary>Builds a platform.</summary>
    /// <param name="options">Memory size and policies; defaults when null.</param>
    /// <param name="loggerFactory">Where logs go; nothing is logged when null.</param>
    public Platform(PlatformOptions? options = null, ILoggerFactory? loggerFactory = null)
    {
        Options = options ?? new PlatformOptions();
        LoggerFactory = loggerFactory ?? NullLoggerFactory.Instance;
        _metricTags = Options.Name is { } name ? [new("platform", name)] : [];
        if (Options.TableMemorySize == 0 || Options.TableMemorySize > Options.MemorySize)
        {
            throw new ArgumentOutOfRangeException(nameof(options), $"TableMemorySize 0x{Options.TableMemorySize:x} must be non-zero and at most MemorySize 0x{Options.MemorySize:x}.");
        }

        // iommu_def_domain_type is only ever DMA, DMA_FQ (iommu.strict=0) or IDENTITY (iommu.passthrough=1).
        if (Options.DefaultDomainType is not (Domains.DomainType.Dma or Domains.DomainType.DmaFq or Domains.DomainType.Identity))
        {
            throw new ArgumentOutOfRangeException(nameof(options), $"DefaultDomainType {Options.DefaultDomainType} must be Dma, DmaFq or Identity (iommu_def_domain_type).");
        }

        Memory = new PhysicalMemory(Options.MemorySize);
        ulong tableBase = Options.TableMemoryBase ?? Options.MemorySize - Options.TableMemorySize;
        Frames = new FrameAllocator(Memory, tableBase, Options.TableMemorySize);
        Clock = new PlatformClock(Memory);
        Iommu = new IommuCore(this);
    }

    /// <summary>The options the platform was built with.</summary>
    public PlatformOptions Options { get; }

    /// <summary>Host physical memory.</summary>
    public PhysicalMemory Memory { get; }

    /// <summary>Frames for translation structures (root, context, PASID and page tables) and for the DMA API's coherent buffers (<see cref="IommuCore.DmaAllocCoherent"/>).</summary>
    public FrameAllocator Frames { get; }

    /// <summary>The platform's virtual time, which only <see cref="PlatformClock.Advance"/> moves; the model's timers (the DMA flush queue's) fire there.</summary>
    public PlatformClock Clock { get; }

    /// <summary>The kernel-named IOMMU core API of this platform.</summary>
    public IommuCore Iommu { get; }

    /// <summary>The logger factory every component of the platform logs through.</summary>
    public ILoggerFactory LoggerFactory { get; }

    /// <summary>
    /// The tags every measurement of this platform's instruments starts with: <c>platform</c> =
    /// <see cref="PlatformOptions.Name"/> when a name was given, else none. Layers add their own
    /// (a unit, a container) to the copy they get.
    /// </summary>
    public TagList MetricTags => new(_metricTags);

    /// <summary>
    /// True once <see cref="Dispose"/> ran. Observable instruments report nothing from then on, so a
    /// shared <see cref="PlatformOptions.MeterFactory"/> (which owns its meters) shows no stale values.
    /// </summary>
    public bool IsDisposed => Volatile.Read(ref _disposed);

    /// <summary>
    /// The platform's meter named <paramref name="name"/>, created on first use through
    /// <see cref="PlatformOptions.MeterFactory"/> (which then owns it) or as a plain <see cref="Meter"/>
    /// that <see cref="Dispose"/> disposes. The meter carries the <see cref="MetricTags"/>, so named
    /// platforms sharing a factory never share a meter. Every layer publishes through this: <c>Iommu.Core</c>,
    /// <c>Iommu.VtD</c>, <c>Vfio.Type1</c>.
    /// </summary>
    /// <param name="name">Meter name (the publishing component).</param>
    /// <returns>The meter; the same instance for the same name.</returns>
    /// <exception cref="ObjectDisposedException">The platform is disposed.</exception>
    public Meter GetMeter(string name)
    {
        ArgumentException.ThrowIfNullOrEmpty(name);
        lock (_lock)
        {
            ObjectDisposedException.ThrowIf(_disposed, this);
            if (!_meters.TryGetValue(name, out Meter? meter))
            {
                // The platform tag on the meter too: a factory caches meters by name and tags, so named
                // platforms sharing one factory get a meter each (no two instruments of a name on a meter).
                var meterOptions = new MeterOptions(name) { Tags = _metricTags.Length == 0 ? null : _metricTags };
                meter = Options.MeterFactory?.Create(meterOptions) ?? new Meter(meterOptions);
                _meters.Add(name, meter);
            }

            return meter;
        }
    }

    /// <summary>A snapshot of the buses.</summary>
    public IReadOnlyList<Bus> Buses
    {
        get
        {
            lock (_lock)
            {
                ObjectDisposedException.ThrowIf(_disposed, this);
                return [.. _buses];
            }
        }
    }

    /// <summary>Adds the PCI bus of <paramref name="segment"/>.</summary>
    /// <param name="segment">PCI segment (domain) number.</param>
    /// <returns>The bus.</returns>
    /// <exception cref="ObjectDisposedException">The platform is disposed.</exception>
    public PciBus AddPciBus(int segment = 0)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(segment);
        ArgumentOutOfRangeException.ThrowIfGreaterThan(segment, 0xffff);
        lock (_lock)
        {
            ObjectDisposedException.ThrowIf(_disposed, this);
            if (GetPciBus(segment) is not null)
            {
                throw new ArgumentException($"PCI segment {segment:x4} already has a bus.", nameof(segment));
            }

            var bus = new PciBus(this, segment);
            _buses.Add(bus);
            return bus;
        }
    }

    /// <summary>Adds a non-PCI bus (for instance the <c>mdev</c> bus or a platform bus).</summary>
    /// <param name="name">A unique bus name.</param>
    /// <returns>The bus.</returns>
    /// <exception cref="ObjectDisposedException">The platform is disposed.</exception>
    public Bus AddBus(string name)
    {
        lock (_lock)
        {
            ObjectDisposedException.ThrowIf(_disposed, this);
            foreach (Bus b in _buses)
            {
                if (b.Name == name)
                {
                    throw new ArgumentException($"A bus named '{name}' already exists.", nameof(name));
                }
            }

            var bus = new Bus(this, name);
            _buses.Add(bus);
            return bus;
        }
    }

    /// <summary>The PCI bus of <paramref name="segment"/>, or null.</summary>
    /// <param name="segment">Segment number.</param>
    /// <returns>The bus or null.</returns>
    /// <exception cref="ObjectDisposedException">The platform is disposed.</exception>
    public PciBus? GetPciBus(int segment = 0)
    {
        lock (_lock)
        {
            ObjectDisposedException.ThrowIf(_disposed, this);
            foreach (Bus b in _buses)
            {
                if (b is PciBus p && p.Segment == segment)
                {
                    return p;
                }
            }

            return null;
        }
    }

    /// <summary>Releases the physical memory and the meters the platform created (not those of <see cref="PlatformOptions.MeterFactory"/>).</summary>
    /// <remarks>
    /// <para>After Dispose every public entry point of Iommu.Core, Iommu.VtD, Vfio.Mdev and Vfio.Type1
    /// that works on this platform throws <see cref="ObjectDisposedException"/>, errno-returning kernel
    /// functions included (a call on a dead platform is misuse, like the kernel's <c>BUG_ON</c>);
    /// immutable values (names, addresses, options, a device's capabilities) stay readable.</para>
    /// <para>Dispose may race calls on other threads, and every call ends cleanly: a call that is
    /// already running when Dispose starts (map, unmap, iova_to_phys, attach, DMA, an ioctl, ...) holds
    /// an access scope of <see cref="Memory"/> (<see cref="PhysicalMemory.EnterAccess"/>), and Dispose
    /// waits for every open scope before it frees the native memory, so the call finishes normally
    /// (the entry points it calls in turn, a VFIO ioctl calling <c>iommu_map</c> for instance, open
    /// nested scopes, which Dispose does not refuse). A call that starts after Dispose started throws
    /// <see cref="ObjectDisposedException"/>. No call ever touches freed memory; Dispose returns once
    /// the running calls have left. Two read paths on memory the platform owns (Linux) hold no scope and
    /// are not waited for: <c>iommu_iova_to_phys</c> and a device's DMA served from the unit's translation
    /// memo. Dispose leaves that memory mapped (its pages given back) until it is finalized, and each of them
    /// checks the dispose flag after its access, so one that races Dispose returns what it would have
    /// before or throws <see cref="ObjectDisposedException"/>. The platform's own registrations (<see cref="AddPciBus"/>,
    /// <see cref="AddBus"/>, <see cref="GetMeter"/>) refuse as soon as Dispose starts. See
    /// <see cref="PhysicalMemory.Dispose"/> for the ordering argument. Disposing the platform from a
    /// callback the platform is running on the same thread (a fault handler, a notifier) throws
    /// <see cref="InvalidOperationException"/>: Dispose would wait for that call forever.</para>
    /// <para>Idempotent.</para>
    /// </remarks>
    /// <exception cref="InvalidOperationException">Called from inside a call on this platform on the same thread (a fault handler or notifier), which Dispose would wait for forever.</exception>
    public void Dispose()
    {
        if (Memory.HeldByCurrentThread)
        {
            throw new InvalidOperationException("Platform.Dispose was called from inside a call on this platform on the same thread (a callback); it would wait for that call forever.");
        }

        lock (_lock)
        {
            if (_disposed)
            {
                return;
            }

            Volatile.Write(ref _disposed, true);
            if (Options.MeterFactory is null)
            {
                foreach (Meter m in _meters.Values)
                {
                    m.Dispose();
                }
            }

            _meters.Clear();
        }

        Memory.Dispose();
    }
}
