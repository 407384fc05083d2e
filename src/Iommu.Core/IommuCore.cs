using Iommu.Memory;
using Iommu.Devices;
using Iommu.Domains;
using Iommu.Groups;
using Microsoft.Extensions.Logging;

namespace Iommu;

/// <summary>
/// The IOMMU core of one <see cref="Platform"/> (<c>drivers/iommu/iommu.c</c>): groups and probing,
/// domain allocation, attach/detach, map/unmap/iova_to_phys, the seed's device and domain
/// attributes, auxiliary domains with both the seed and the 5.1 merged names, and fault reporting.
/// </summary>
/// <remarks>
/// <para>Reference behaviour is Linux 5.15 LTS; where the seed (v4, 2018) or 5.10 differ the member's
/// remarks say so. Errors are returned as <see cref="Errno"/> (or as the kernel's size/int results)
/// and never thrown; programming errors the kernel would <c>BUG_ON</c> throw .NET exceptions.</para>
/// <para>Thread safety: group operations take the group mutex as the kernel does; map, unmap and
/// iova_to_phys take no core lock (the driver must be safe for concurrent use, as in the kernel).</para>
/// <para>Metrics: maps, unmaps, bytes and pages mapped and faults reported are published on the
/// platform's <see cref="MeterName"/> meter as observable instruments (<c>docs/metrics.md</c>); map and
/// unmap only add to counters of the domain itself, without allocating: atomically, except that the
/// first thread to count a map on a domain keeps its map counts there with plain stores.</para>
/// </remarks>
[System.Diagnostics.CodeAnalysis.SuppressMessage("Performance", "CA1822", Justification = "The kernel API is exposed uniformly as instance members of the per-platform core.")]
public sealed partial class IommuCore
{
    private readonly Lock _idLock = new();
    private readonly List<IommuGroup?> _groupsById = [];
    private readonly ILogger _log;

    internal IommuCore(Platform platform)
    {
        Platform = platform;
        _log = platform.LoggerFactory.CreateLogger("Iommu.Core");
        _defDomainType = (int)platform.Options.DefaultDomainType;
        PublishMetrics();
    }

    /// <summary>The platform this core belongs to.</summary>
    public Platform Platform { get; }

    /// <summary>A snapshot of the live groups, by ascending id.</summary>
    public IReadOnlyList<IommuGroup> Groups
    {
        get
        {
            lock (_idLock)
            {
                var list = new List<IommuGroup>();
                foreach (IommuGroup? g in _groupsById)
                {
                    if (g is not null)
                    {
                        list.Add(g);
                    }
                }

                return list;
            }
        }
    }

    /// <summary>Whether the bus's IOMMU driver reports <paramref name="cap"/> (<c>iommu_capable</c>).</summary>
    /// <param name="bus">The bus.</param>
    /// <param name="cap">The capability.</param>
    /// <returns>False without a driver or without the <c>capable</c> callback.</returns>
    [KernelSymbol("iommu_capable")]
    public bool Capable(Bus bus, IommuCap cap)
    {
        using PhysicalMemory.AccessScope guard = Platform.Memory.EnterAccess();
        ArgumentNullException.ThrowIfNull(bus);
        return bus.IommuOps is IIommuCapableOps ops && ops.Capable(cap);
    }

    /// <summary>Whether <paramref name="bus"/> has an IOMMU driver (<c>iommu_present</c>).</summary>
    /// <param name="bus">The bus.</param>
    /// <returns>True when ops are registered.</returns>
    [KernelSymbol("iommu_present")]
    public bool Present(Bus bus)
    {
        using PhysicalMemory.AccessScope guard = Platform.Memory.EnterAccess();
        ArgumentNullException.ThrowIfNull(bus);
        return bus.IommuOps is not null;
    }

    private static Errno Fail(Errno errno, string detail) => ErrorDetail.Fail(errno, detail);

    // After a driver call that failed: keep the driver's own detail if it recorded one for this errno.
    private static Errno KeepOrFail(Errno errno, string detail) =>
        ErrorDetail.LastErrno == errno ? errno : ErrorDetail.Fail(errno, detail);
}
