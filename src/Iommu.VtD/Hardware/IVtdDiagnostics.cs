using Iommu.Memory;

namespace Iommu.VtD.Hardware;

/// <summary>
/// What diagnostics read of a remapping unit besides what a driver sees: its configuration, its cache
/// and activity counters, its registers and the memory its tables live in. <see cref="VtdUnit"/>
/// implements it; metrics (<see cref="VtdMetrics"/>) and the image exporter read the unit through it.
/// </summary>
/// <remarks>
/// The driver never uses this interface: it reaches the unit only through its registers and the
/// tables it writes into memory, as on hardware. Whoever builds the platform hands a unit's
/// diagnostics to the tools that want them (<see cref="Driver.IntelIommu"/>'s constructor passes the
/// units it is given on to the platform's meter and to <c>ExportImage</c>, never to its own code).
/// </remarks>
public interface IVtdDiagnostics
{
    /// <summary>The capabilities the unit was built with.</summary>
    VtdConfig Config { get; }

    /// <summary>A snapshot of the cache hit/miss counters and sizes.</summary>
    VtdCacheStatistics Statistics { get; }

    /// <summary>A snapshot of the invalidations processed and the faults seen, by kind.</summary>
    VtdActivity Activity { get; }

    /// <summary>The physical memory the unit reads its structures from.</summary>
    PhysicalMemory Memory { get; }

    /// <summary>Reads a 32-bit register at <paramref name="offset"/>, as <see cref="VtdUnit.Read32"/> does.</summary>
    /// <param name="offset">Offset from the MMIO base.</param>
    /// <returns>The value.</returns>
    uint Read32(uint offset);

    /// <summary>Reads a 64-bit register at <paramref name="offset"/>, as <see cref="VtdUnit.Read64"/> does.</summary>
    /// <param name="offset">Offset from the MMIO base.</param>
    /// <returns>The value.</returns>
    ulong Read64(uint offset);
}
