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
    public DomainType DefaultDomainType { get; init; } = DomainType.Dma;
}
