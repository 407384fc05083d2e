using Iommu.Domains;

namespace Iommu.Core.Tests;

/// <summary>DMA-API configuration edge cases found in an audit against 5.15 iommu.c.</summary>
public sealed class DmaApiAuditTests
{
    [Theory]
    [InlineData(DomainType.Unmanaged)]
    [InlineData(DomainType.Blocked)]
    [InlineData((DomainType)0x7f)]
    public void A_default_domain_type_the_kernel_cannot_have_is_refused(DomainType type)
    {
        // iommu_def_domain_type is DMA, DMA_FQ or IDENTITY. An UNMANAGED default domain would make every
        // dma_map_page "succeed" through dma-direct (the physical address) while the device translates
        // through an empty paging domain and faults.
        Assert.Throws<ArgumentOutOfRangeException>(() => new Platform(new PlatformOptions { MemorySize = Sizes.GiB, TableMemorySize = 16 * Sizes.MiB, DefaultDomainType = type }));
    }

    [Theory]
    [InlineData(DomainType.Dma)]
    [InlineData(DomainType.DmaFq)]
    [InlineData(DomainType.Identity)]
    public void The_kernel_s_default_domain_types_are_accepted(DomainType type)
    {
        using var p = new Platform(new PlatformOptions { MemorySize = Sizes.GiB, TableMemorySize = 16 * Sizes.MiB, DefaultDomainType = type });
        Assert.Equal(type, p.Iommu.DefaultDomainType);
    }
}
