using System.Globalization;
using System.Text;
using Iommu.Domains;
using Vfio.Type1;

namespace Iommu.Reliability.Tests.Infrastructure;

/// <summary>One mapping as seen from outside (copied, because <see cref="VfioDma"/> is live).</summary>
internal readonly record struct FuzzMapping(ulong Iova, ulong Vaddr, ulong Size, IommuProt Prot, bool VaddrInvalid, bool IommuMapped, long LockedPages);

/// <summary>
/// The observable state of a <see cref="FuzzBed"/> that a failing ioctl must leave alone: group/container
/// wiring, the backend (identity, mappings, dma_avail, page sizes, dirty tracking), the process's
/// locked_vm and the host pin count, the fd table, and <c>iova_to_phys</c> of every mapped page in every
/// domain (folded into a hash, plus a probe of the request's own range).
/// </summary>
internal sealed record FuzzState
{
    public required object? GroupAContainer { get; init; }

    public required object? GroupBContainer { get; init; }

    public required int ContainerGroups { get; init; }

    public required VfioIommuType1? Backend { get; init; }

    public required uint DmaAvail { get; init; }

    public required ulong PgsizeBitmap { get; init; }

    public required bool DirtyTracking { get; init; }

    public required int DomainCount { get; init; }

    public required IReadOnlyList<FuzzMapping> Mappings { get; init; }

    public required long LockedVm { get; init; }

    public required long TotalPins { get; init; }

    public required object?[] FdTable { get; init; }

    public required ulong TranslationHash { get; init; }

    public required string Probe { get; init; }

    public static FuzzState Capture(FuzzBed bed, IReadOnlyList<int> fds, ulong probeIova, ulong probeSize)
    {
        VfioIommuType1? b = bed.Container.Backend;
        var maps = new List<FuzzMapping>();
        ulong hash = 1469598103934665603UL;
        var probe = new StringBuilder();
        IReadOnlyList<IDomain> domains = b?.Domains ?? [];
        if (b is not null)
        {
            foreach (VfioDma d in b.Mappings)
            {
                maps.Add(new FuzzMapping(d.Iova, d.Vaddr, d.Size, d.Prot, d.VaddrInvalid, d.IommuMapped, d.LockedPages));
                foreach (IDomain dom in domains)
                {
                    for (ulong off = 0; off < d.Size; off += FuzzBed.PageSize)
                    {
                        hash = (hash ^ bed.Platform.Iommu.IovaToPhys(dom, d.Iova + off)) * 1099511628211UL;
                    }
                }
            }

            // The request's own range (a failed MAP must not leave stray PTEs behind).
            foreach (IDomain dom in domains)
            {
                for (ulong k = 0; k < 4 && k * FuzzBed.PageSize < probeSize; k++)
                {
                    ulong iova = (probeIova & ~(FuzzBed.PageSize - 1)) + (k * FuzzBed.PageSize);
                    if (iova < (1UL << 39))
                    {
                        probe.Append(CultureInfo.InvariantCulture, $"{iova:x}->{bed.Platform.Iommu.IovaToPhys(dom, iova):x};");
                    }
                }
            }
        }

        object?[] fdTable = new object?[fds.Count];
        for (int i = 0; i < fds.Count; i++)
        {
            fdTable[i] = bed.Proc.GetFile(fds[i]);
        }

        return new FuzzState
        {
            GroupAContainer = bed.GroupA.Container,
            GroupBContainer = bed.GroupB.Container,
            ContainerGroups = bed.Container.Groups.Count,
            Backend = b,
            DmaAvail = b?.DmaAvail ?? 0,
            PgsizeBitmap = b?.PgsizeBitmap ?? 0,
            DirtyTracking = b?.DirtyTracking ?? false,
            DomainCount = domains.Count,
            Mappings = maps,
            LockedVm = bed.Proc.LockedVm,
            TotalPins = bed.Pages.TotalPins,
            FdTable = fdTable,
            TranslationHash = hash,
            Probe = probe.ToString(),
        };
    }

    /// <summary>The differences from <paramref name="other"/>, or null when equal.</summary>
    public string? Diff(FuzzState other)
    {
        var sb = new StringBuilder();
        void Field<T>(string name, T a, T b)
        {
            if (!EqualityComparer<T>.Default.Equals(a, b))
            {
                sb.Append(CultureInfo.InvariantCulture, $"{name}: {a} -> {b}; ");
            }
        }

        Field("group A container", GroupAContainer, other.GroupAContainer);
        Field("group B container", GroupBContainer, other.GroupBContainer);
        Field("container groups", ContainerGroups, other.ContainerGroups);
        Field("backend", Backend, other.Backend);
        Field("dma_avail", DmaAvail, other.DmaAvail);
        Field("pgsize_bitmap", PgsizeBitmap, other.PgsizeBitmap);
        Field("dirty tracking", DirtyTracking, other.DirtyTracking);
        Field("domains", DomainCount, other.DomainCount);
        Field("locked_vm", LockedVm, other.LockedVm);
        Field("host pins", TotalPins, other.TotalPins);
        if (!FdTable.SequenceEqual(other.FdTable, ReferenceEqualityComparer.Instance))
        {
            sb.Append("fd table: [").Append(string.Join(", ", FdTable.Select(f => f?.ToString() ?? "-"))).Append("] -> [").Append(string.Join(", ", other.FdTable.Select(f => f?.ToString() ?? "-"))).Append("]; ");
        }
        Field("iova_to_phys hash", TranslationHash, other.TranslationHash);
        Field("probe", Probe, other.Probe);
        if (!Mappings.SequenceEqual(other.Mappings))
        {
            sb.Append("mappings: [").Append(string.Join(", ", Mappings)).Append("] -> [").Append(string.Join(", ", other.Mappings)).Append("]; ");
        }

        return sb.Length == 0 ? null : sb.ToString();
    }
}
