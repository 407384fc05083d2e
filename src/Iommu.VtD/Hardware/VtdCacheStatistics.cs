namespace Iommu.VtD.Hardware;

/// <summary>A snapshot of the hit and miss counters of the caches a <see cref="VtdUnit"/> keeps.</summary>
/// <param name="ContextHits">Context-cache lookups that found the device's context entry.</param>
/// <param name="ContextMisses">Context-cache lookups that had to read the root and context tables.</param>
/// <param name="PasidHits">PASID-cache lookups that found the PASID entry (scalable mode).</param>
/// <param name="PasidMisses">PASID-cache lookups that read the PASID directory and table.</param>
/// <param name="IotlbHits">IOTLB lookups that found the page.</param>
/// <param name="IotlbMisses">IOTLB lookups that walked the second-level tables.</param>
/// <param name="ContextEntries">Context-cache entries held now.</param>
/// <param name="PasidEntries">PASID-cache entries held now.</param>
/// <param name="IotlbEntries">IOTLB entries held now.</param>
public readonly record struct VtdCacheStatistics(
    long ContextHits,
    long ContextMisses,
    long PasidHits,
    long PasidMisses,
    long IotlbHits,
    long IotlbMisses,
    int ContextEntries,
    int PasidEntries,
    int IotlbEntries);
