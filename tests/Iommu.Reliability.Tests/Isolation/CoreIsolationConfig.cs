using Iommu.Domains;
using Iommu.VtD.Driver;
using Iommu.VtD.Hardware;

namespace Iommu.Reliability.Tests.Isolation;

/// <summary>A platform configuration of the core isolation property.</summary>
/// <param name="Name">Printed name.</param>
/// <param name="Vtd">The remapping hardware.</param>
/// <param name="Units">One unit for every device, or two (dev0/dev2 on unit 0, dev1/dev3 on unit 1).</param>
/// <param name="DefaultDomain">DMA, DMA_FQ (lazy, iommu.strict=0), or IDENTITY (iommu.passthrough=1).</param>
/// <param name="Vtd1">The second unit's hardware when it differs from the first (another width).</param>
/// <param name="Policy">Which domains the driver puts on first-level tables (matters only on units with ECAP.FLTS).</param>
public sealed record CoreIsolationConfig(string Name, VtdConfig Vtd, int Units, DomainType DefaultDomain, VtdConfig? Vtd1 = null, FirstLevelPolicy Policy = FirstLevelPolicy.FirstLevelByDefault)
{
    public static IReadOnlyList<CoreIsolationConfig> All { get; } =
    [
        new("scalable-2units-dma", VtdConfig.ScalableMode48Bit, 2, DomainType.Dma),
        new("legacy-2units-dma", VtdConfig.Legacy48Bit, 2, DomainType.Dma),

        // Domains shared across a 5-level and a 4-level unit, attached in either order.
        new("scalable-57+48-dma", VtdConfig.ScalableMode57Bit, 2, DomainType.Dma, VtdConfig.ScalableMode48Bit),
        new("legacy-48+57-dma", VtdConfig.Legacy48Bit, 2, DomainType.Dma, VtdConfig.Legacy48Bit with { Supports57BitTables = true, MaxGuestAddressWidth = 57 }),
        new("scalable-cm-identity", VtdConfig.ScalableMode48Bit with { CachingMode = true }, 1, DomainType.Identity),
        new("legacy-cm-rwbf-identity", VtdConfig.Legacy48Bit with { CachingMode = true, RequiresWriteBufferFlush = true }, 1, DomainType.Identity),

        // Lazy DMA domains: the DMA API's unmaps go through the flush queue (the deferred window).
        new("scalable-2units-dmafq", VtdConfig.ScalableMode48Bit, 2, DomainType.DmaFq),
        new("legacy-48+57-dmafq", VtdConfig.Legacy48Bit, 2, DomainType.DmaFq, VtdConfig.Legacy48Bit with { Supports57BitTables = true, MaxGuestAddressWidth = 57 }),

        // Lazy asked for, but a caching-mode unit makes DMA domains strict (iommu_set_dma_strict).
        new("scalable-cm-dmafq-strict", VtdConfig.ScalableMode48Bit with { CachingMode = true }, 1, DomainType.DmaFq),

        // Both stages (ECAP.FLTS + SLTS, NEST): 6.x puts DMA domains on the first level and UNMANAGED ones
        // on the second; 5.15 puts every domain on the first level. Nested domains only here.
        new("fl48-2units-dma-6x", VtdConfig.ScalableModeFirstLevel48Bit, 2, DomainType.Dma),
        new("fl48-2units-dma-515", VtdConfig.ScalableModeFirstLevel48Bit, 2, DomainType.Dma, Policy: FirstLevelPolicy.AllWhenEveryUnitHasFlts),
        new("fl57+48-dma-6x", VtdConfig.ScalableModeFirstLevel57Bit, 2, DomainType.Dma, VtdConfig.ScalableModeFirstLevel48Bit),
        new("fl57+48-dmafq-515", VtdConfig.ScalableModeFirstLevel57Bit, 2, DomainType.DmaFq, VtdConfig.ScalableModeFirstLevel48Bit, FirstLevelPolicy.AllWhenEveryUnitHasFlts),
        new("fl48-cm-dmafq-strict-6x", VtdConfig.ScalableModeFirstLevel48Bit with { CachingMode = true }, 1, DomainType.DmaFq),
        new("fl57-cm-dma-515", VtdConfig.ScalableModeFirstLevel57Bit with { CachingMode = true }, 1, DomainType.Dma, Policy: FirstLevelPolicy.AllWhenEveryUnitHasFlts),
        new("fl48-2units-dmafq-6x", VtdConfig.ScalableModeFirstLevel48Bit, 2, DomainType.DmaFq),
    ];

    /// <summary>Every unit has both stages: nested domains can be built, DMA domains are first level.</summary>
    public bool BothStages => Vtd.FirstLevelTranslation && Vtd.NestedTranslation && (Vtd1 ?? Vtd).FirstLevelTranslation && (Vtd1 ?? Vtd).NestedTranslation;

    /// <summary>Whether UNMANAGED domains from <c>iommu_domain_alloc</c> get first-level tables.</summary>
    public bool UnmanagedFirstLevel => BothStages && Policy == FirstLevelPolicy.AllWhenEveryUnitHasFlts;

    /// <summary>The type the default domains get: DMA_FQ turns into DMA when a unit has caching mode.</summary>
    public DomainType ExpectedDefault =>
        DefaultDomain == DomainType.DmaFq && (Vtd.CachingMode || Vtd1?.CachingMode == true) ? DomainType.Dma : DefaultDomain;

    public override string ToString() => Name;
}
