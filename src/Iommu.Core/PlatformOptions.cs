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

    /// <summary>Where the translation-structure region starts; null puts it at the top of memory.</summary>
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
