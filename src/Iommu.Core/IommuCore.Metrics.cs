using System.Diagnostics;
using System.Diagnostics.Metrics;
using System.Runtime.CompilerServices;
using Iommu.Domains;
using Iommu.Faults;

namespace Iommu;

public sealed partial class IommuCore
{
    /// <summary>Name of the meter the core publishes through (<see cref="Platform.GetMeter"/>).</summary>
    public const string MeterName = "Iommu.Core";

    // The kernel's PAGE_SIZE: iommu.mapped.pages counts in it whatever page sizes the domains use.
    private const long MetricPageSize = 4096;

    // Live domains allocated through the core; their counters are summed on collection. A freed
    // domain's totals move to _retired, and its still-mapped bytes stop counting as mapped.
    private readonly Lock _metricsLock = new();
    private readonly HashSet<IommuDomain> _liveDomains = new(ReferenceEqualityComparer.Instance);
    private Totals _retired;

    // Domains that do not derive from IommuDomain (foreign IDomain implementations) count here.
    private long _foreignMapOps, _foreignMappedBytes, _foreignUnmapOps, _foreignUnmappedBytes;
    private long _domainFaults, _unrecoverableFaults, _pageRequests;

    private void PublishMetrics()
    {
        Meter meter = Platform.GetMeter(MeterName);
        meter.CreateObservableCounter("iommu.map.operations", () => Observe(static t => t.MapOps), "{operation}", "Successful iommu_map calls");
        meter.CreateObservableCounter("iommu.unmap.operations", () => Observe(static t => t.UnmapOps), "{operation}", "iommu_unmap and iommu_unmap_fast calls that unmapped something");
        meter.CreateObservableCounter("iommu.map.size", () => Observe(static t => t.MappedBytes), "By", "Bytes mapped by iommu_map");
        meter.CreateObservableCounter("iommu.unmap.size", () => Observe(static t => t.UnmappedBytes), "By", "Bytes unmapped by iommu_unmap and iommu_unmap_fast");
        meter.CreateObservableUpDownCounter("iommu.mapped.pages", ObserveMappedPages, "{page}", "4 KiB pages mapped now in the live domains");
        meter.CreateObservableCounter("iommu.faults", ObserveFaults, "{fault}", "Faults reported to the core, by path (report_iommu_fault or iommu_report_device_fault by fault type)");
    }

    // Sums the counters of the live domains, the freed ones and the foreign ones.
    private Totals Sum()
    {
        Totals t;
        lock (_metricsLock)
        {
            t = _retired;
            foreach (IommuDomain d in _liveDomains)
            {
                t += Totals.Of(d);
            }
        }

        t.MapOps += Volatile.Read(ref _foreignMapOps);
        t.MappedBytes += Volatile.Read(ref _foreignMappedBytes);
        t.UnmapOps += Volatile.Read(ref _foreignUnmapOps);
        t.UnmappedBytes += Volatile.Read(ref _foreignUnmappedBytes);
        return t;
    }

    private Measurement<long>[] Observe(Func<Totals, long> pick) =>
        Platform.IsDisposed ? [] : [new Measurement<long>(pick(Sum()), Platform.MetricTags)];

    private Measurement<long>[] ObserveMappedPages()
    {
        if (Platform.IsDisposed)
        {
            return [];
        }

        long bytes = Volatile.Read(ref _foreignMappedBytes) - Volatile.Read(ref _foreignUnmappedBytes);
        lock (_metricsLock)
        {
            foreach (IommuDomain d in _liveDomains)
            {
                bytes += Volatile.Read(ref d.MappedBytes) + Volatile.Read(ref d.OwnerMappedBytes)
                    - Volatile.Read(ref d.UnmappedBytes) - Volatile.Read(ref d.OwnerUnmappedBytes);
            }
        }

        return [new Measurement<long>(bytes / MetricPageSize, Platform.MetricTags)];
    }

    private Measurement<long>[] ObserveFaults()
    {
        if (Platform.IsDisposed)
        {
            return [];
        }

        return
        [
            Fault(Volatile.Read(ref _domainFaults), "report_iommu_fault", null),
            Fault(Volatile.Read(ref _unrecoverableFaults), "iommu_report_device_fault", "dma_unrecoverable"),
            Fault(Volatile.Read(ref _pageRequests), "iommu_report_device_fault", "page_request"),
        ];

        Measurement<long> Fault(long value, string path, string? type)
        {
            TagList tags = Platform.MetricTags;
            tags.Add("path", path);
            if (type is not null)
            {
                tags.Add("type", type);
            }

            return new Measurement<long>(value, tags);
        }
    }

    // __iommu_domain_alloc: start counting a new domain of this core.
    private void TrackDomain(IDomain domain)
    {
        if (domain is IommuDomain d)
        {
            lock (_metricsLock)
            {
                _liveDomains.Add(d);
            }
        }
    }

    // iommu_domain_free: keep the freed domain's totals (not its mapped bytes: they died with it).
    private void UntrackDomain(IDomain domain)
    {
        if (domain is IommuDomain d)
        {
            lock (_metricsLock)
            {
                if (_liveDomains.Remove(d))
                {
                    _retired += Totals.Of(d);

                    // A driver may hand the same object out again (a static identity domain): start from zero.
                    Interlocked.Exchange(ref d.MapOps, 0);
                    Interlocked.Exchange(ref d.MappedBytes, 0);
                    Interlocked.Exchange(ref d.OwnerMapOps, 0);
                    Interlocked.Exchange(ref d.OwnerMappedBytes, 0);
                    Interlocked.Exchange(ref d.UnmapOps, 0);
                    Interlocked.Exchange(ref d.UnmappedBytes, 0);
                    Interlocked.Exchange(ref d.OwnerUnmapOps, 0);
                    Interlocked.Exchange(ref d.OwnerUnmappedBytes, 0);
                }
            }
        }
    }

    // Hot path (iommu_map of one page): the domain's counting owner, the first thread that counts a
    // map on it, adds with plain stores (no other thread writes those fields); any other thread adds
    // atomically to the shared ones. An atomic add costs several nanoseconds after the page-table
    // store it follows (it waits for the store buffer), as much as the page table itself.
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void CountMap(IommuDomain d, Memory.PhysicalMemory.Slot slot, ulong bytes) =>
        CountOnDomain(d, slot, ref d.OwnerMapOps, ref d.OwnerMappedBytes, ref d.MapOps, ref d.MappedBytes, bytes);

    // One operation of `bytes` on the owner's counters (plain stores) or the shared ones (atomic adds).
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void CountOnDomain(IommuDomain d, Memory.PhysicalMemory.Slot slot, ref long ownerOps, ref long ownerBytes, ref long ops, ref long total, ulong bytes)
    {
        object? owner = d.CountOwner;
        if (owner == slot || (owner is null && Interlocked.CompareExchange(ref d.CountOwner, slot, null) is null))
        {
            Volatile.Write(ref ownerOps, ownerOps + 1);
            Volatile.Write(ref ownerBytes, ownerBytes + (long)bytes);
        }
        else
        {
            Interlocked.Increment(ref ops);
            Interlocked.Add(ref total, (long)bytes);
        }
    }

    // Other maps: two uncontended atomic adds on the domain's own counters, no allocation, no lock.
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private void CountMap(IDomain domain, ulong bytes)
    {
        if (domain is IommuDomain d)
        {
            Interlocked.Increment(ref d.MapOps);
            Interlocked.Add(ref d.MappedBytes, (long)bytes);
        }
        else
        {
            Interlocked.Increment(ref _foreignMapOps);
            Interlocked.Add(ref _foreignMappedBytes, (long)bytes);
        }
    }

    // Unmaps, counted as maps are: plain stores by the domain's counting owner, atomic adds by others.
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    // core is domain when it is a core domain, else null.
    private void CountUnmap(IDomain domain, IommuDomain? core, Memory.PhysicalMemory.Slot slot, ulong bytes)
    {
        if (bytes == 0)
        {
            return;
        }

        if (core is IommuDomain d)
        {
            CountOnDomain(d, slot, ref d.OwnerUnmapOps, ref d.OwnerUnmappedBytes, ref d.UnmapOps, ref d.UnmappedBytes, bytes);
        }
        else
        {
            Interlocked.Increment(ref _foreignUnmapOps);
            Interlocked.Add(ref _foreignUnmappedBytes, (long)bytes);
        }
    }

    private void CountDeviceFault(IommuFault fault)
    {
        if (fault.Type == IommuFaultType.PageRequest)
        {
            Interlocked.Increment(ref _pageRequests);
        }
        else
        {
            Interlocked.Increment(ref _unrecoverableFaults);
        }
    }

    private struct Totals
    {
        public long MapOps;
        public long MappedBytes;
        public long UnmapOps;
        public long UnmappedBytes;

        public static Totals Of(IommuDomain d) => new()
        {
            MapOps = Volatile.Read(ref d.MapOps) + Volatile.Read(ref d.OwnerMapOps),
            MappedBytes = Volatile.Read(ref d.MappedBytes) + Volatile.Read(ref d.OwnerMappedBytes),
            UnmapOps = Volatile.Read(ref d.UnmapOps) + Volatile.Read(ref d.OwnerUnmapOps),
            UnmappedBytes = Volatile.Read(ref d.UnmappedBytes) + Volatile.Read(ref d.OwnerUnmappedBytes),
        };

        public static Totals operator +(Totals a, Totals b) => new()
        {
            MapOps = a.MapOps + b.MapOps,
            MappedBytes = a.MappedBytes + b.MappedBytes,
            UnmapOps = a.UnmapOps + b.UnmapOps,
            UnmappedBytes = a.UnmappedBytes + b.UnmappedBytes,
        };
    }
}
