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
/// Thread safety: adding buses is serialised; the members' own types document their locking.
/// Dispose the platform to release its native memory.
/// </remarks>
public sealed class Platform : IDisposable
{
    private readonly List<Bus> _buses = [];
    private readonly Lock _lock = new();

    /// <summary>Builds a platform.</summary>
    /// <param name="options">Memory size and policies; defaults when null.</param>
    /// <param name="loggerFactory">Where logs go; nothing is logged when null.</param>
    public Platform(PlatformOptions? options = null, ILoggerFactory? loggerFactory = null)
    {
        Options = options ?? new PlatformOptions();
        LoggerFactory = loggerFactory ?? NullLoggerFactory.Instance;
        if (Options.TableMemorySize == 0 || Options.TableMemorySize > Options.MemorySize)
        {
            throw new ArgumentOutOfRangeException(nameof(options), $"TableMemorySize 0x{Options.TableMemorySize:x} must be non-zero and at most MemorySize 0x{Options.MemorySize:x}.");
        }

        Memory = new PhysicalMemory(Options.MemorySize);
        ulong tableBase = Options.TableMemoryBase ?? Options.MemorySize - Options.TableMemorySize;
        Frames = new FrameAllocator(Memory, tableBase, Options.TableMemorySize);
        Iommu = new IommuCore(this);
    }

    /// <summary>The options the platform was built with.</summary>
    public PlatformOptions Options { get; }

    /// <summary>Host physical memory.</summary>
    public PhysicalMemory Memory { get; }

    /// <summary>Frames for translation structures (root, context, PASID and page tables).</summary>
    public FrameAllocator Frames { get; }

    /// <summary>The kernel-named IOMMU core API of this platform.</summary>
    public IommuCore Iommu { get; }

    /// <summary>The logger factory every component of the platform logs through.</summary>
    public ILoggerFactory LoggerFactory { get; }

    /// <summary>A snapshot of the buses.</summary>
    public IReadOnlyList<Bus> Buses
    {
        get
        {
            lock (_lock)
            {
                return [.. _buses];
            }
        }
    }

    /// <summary>Adds the PCI bus of <paramref name="segment"/>.</summary>
    /// <param name="segment">PCI segment (domain) number.</param>
    /// <returns>The bus.</returns>
    public PciBus AddPciBus(int segment = 0)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(segment);
        ArgumentOutOfRangeException.ThrowIfGreaterThan(segment, 0xffff);
        lock (_lock)
        {
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
    public Bus AddBus(string name)
    {
        lock (_lock)
        {
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
    public PciBus? GetPciBus(int segment = 0)
    {
        lock (_lock)
        {
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

    /// <summary>Releases the physical memory.</summary>
    public void Dispose() => Memory.Dispose();
}
