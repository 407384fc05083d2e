using System.Diagnostics.Metrics;
using Iommu.Domains;

namespace Iommu;

/// <summary>How a <see cref="Platform"/> is built.</summary>
public sealed record PlatformOptions
{
    /// <summary>Bytes of physical memory (default 64 GiB, backed lazily).</summary>
    public ulong MemorySize { get; init; } = 64 * Sizes.GiB;

    /// <summary>Bytes of physical memory reserved for translation structures handed out by <see cref="Platform.Frames"/> (default 256 MiB).</summary>
    public ulong TableMemorySize { get; init; } = 256 * Sizes.MiB;

    /// <summary>
    /// Physical address where the translation-structure region starts: the <see cref="TableMemorySize"/>
    /// bytes from which <see cref="Platform.Frames"/> hands out root, context, PASID-directory, PASID and
    /// page-table frames. Null (the default) puts it at the top of memory,
    /// <c>MemorySize - TableMemorySize</c>.
    /// </summary>
    /// <remarks>
    /// <para>It must be 4 KiB-aligned with the whole region inside memory, or the <see cref="Platform"/>
    /// constructor throws <see cref="ArgumentOutOfRangeException"/>. The region is claimed in
    /// <see cref="Platform.Memory"/>: a later claim that overlaps it (a VFIO host page pool, by default
    /// 1 GiB at 4 GiB) throws <see cref="ArgumentException"/> naming both ranges, so move one of them
    /// when memory is small.</para>
    /// <para>Set it when the top of memory does not suit the tables: a VT-d unit treats pointer bits at
    /// or above its host address width as reserved, so with more memory than the unit's
    /// <c>HostAddressWidth</c> reaches (39 bits, 512 GiB, for QEMU's default unit) the tables must sit
    /// below that line, or every walk faults; and a test that wants table addresses fixed across memory
    /// sizes can pin them here.</para>
    /// </remarks>
    public ulong? TableMemoryBase { get; init; }

    /// <summary>
    /// Type of the default domain given to each new IOMMU group (the kernel's <c>iommu_def_domain_type</c>;
    /// DMA unless booted with <c>iommu.passthrough=1</c>, which gives IDENTITY).
    /// </summary>
    /// <remarks>
    /// DMA_FQ is 5.15's lazy mode (<c>iommu.strict=0</c>): the DMA API's unmaps share one deferred IOTLB
    /// flush (<see cref="IommuCore.DmaUnmapPage"/>). It is the 5.15 x86 default
    /// (<c>CONFIG_IOMMU_DEFAULT_DMA_LAZY</c>); the model's default stays DMA, strict, as <c>iommu.strict=1</c>
    /// gives. A driver may turn DMA_FQ back into DMA (<see cref="IommuCore.SetDmaStrict"/>; Intel does with
    /// caching mode), and the core falls back to DMA when the driver cannot allocate DMA_FQ domains.
    /// Only DMA, DMA_FQ and IDENTITY are accepted (the <see cref="Platform"/> constructor throws
    /// <see cref="ArgumentOutOfRangeException"/> otherwise): with an UNMANAGED or BLOCKED default domain the
    /// DMA API would hand out physical addresses the device cannot reach.
    /// </remarks>
    public DomainType DefaultDomainType { get; init; } = DomainType.Dma;

    /// <summary>
    /// Creates the meters every layer of the platform publishes its metrics through (hosts pass the one
    /// from dependency injection). Null (the default): the platform creates plain <see cref="Meter"/>s
    /// and disposes them with itself. See <c>docs/metrics.md</c> for the instruments.
    /// </summary>
    public IMeterFactory? MeterFactory { get; init; }

    /// <summary>
    /// Tags every measurement of this platform with <c>platform</c> = this name, so that several
    /// platforms publishing through one <see cref="MeterFactory"/> can be told apart. Null (the
    /// default) adds no tag.
    /// </summary>
    public string? Name { get; init; }
}
