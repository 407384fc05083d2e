using Iommu.Devices;
using Iommu.Domains;
using Iommu.VtD.Driver;
using Iommu.VtD.Hardware;

namespace Iommu.Reliability.Tests.Isolation;

/// <summary>Focused regressions for what the isolation property found.</summary>
public sealed class IsolationRegressionTests
{
    /// <summary>
    /// Found by the core isolation property (scalable mode): a device's RID domain changes while an
    /// aux domain is attached to it. The PASID table, aux entry included, is freed, but only the old
    /// RID domain's DID was flushed, so the unit's PASID cache kept the aux entry (tagged with the aux
    /// domain's DID). After AUX is enabled again, a DMA with the old PASID still translated through
    /// the aux domain's page table — a PASID the device no longer has.
    /// </summary>
    [Theory]
    [InlineData(false, false)]
    [InlineData(true, false)]
    [InlineData(false, true)]
    [InlineData(true, true)]
    public void Rid_domain_change_drops_cached_aux_pasid_entries(bool cachingMode, bool identityDefault)
    {
        using var platform = new Platform(new PlatformOptions
        {
            MemorySize = 8 * Sizes.GiB,
            TableMemorySize = 16 * Sizes.MiB,
            DefaultDomainType = identityDefault ? DomainType.Identity : DomainType.Dma,
        });
        PciBus pci = platform.AddPciBus();
        var unit = new VtdUnit(platform.Memory, VtdConfig.ScalableMode48Bit with { CachingMode = cachingMode });
        pci.AddDmaRemapper(unit, includeAll: true);
        pci.SetIommuOps(new IntelIommu(platform, unit)).ThrowIfError();
        PciDevice dev = pci.AddDevice(new PciDeviceSpec("0000:00:02.0") { PasidWidth = 8, ScalableIov = true, Acs = true });
        IommuCore iommu = platform.Iommu;

        IDomain rid = iommu.DomainAlloc(pci)!;
        IDomain aux = iommu.DomainAlloc(pci)!;
        Assert.Equal(Errno.None, iommu.AttachDevice(rid, dev));
        Assert.Equal(Errno.None, iommu.SetDevAttr(dev, IommuDevAttr.AuxdEnable));
        Assert.Equal(Errno.None, iommu.AttachDeviceAux(aux, dev));
        Assert.Equal(Errno.None, iommu.DomainGetAttr(aux, DomainAttr.AuxdId, out uint pasid));
        Assert.Equal(Errno.None, iommu.Map(aux, 0x4000_0000, 0x8000_0000, 2 * Sizes.MiB, IommuProt.Read | IommuProt.Write));
        Assert.Equal(DmaStatus.Ok, dev.DmaWrite(pasid, 0x4000_0010, "cached"u8).Status); // fills the caches

        iommu.DetachDevice(rid, dev); // back to the default domain: new context entry and PASID table
        Assert.Equal(Errno.None, iommu.SetDevAttr(dev, IommuDevAttr.AuxdEnable)); // PASIDE again

        DmaResult r = dev.DmaWrite(pasid, 0x4000_0010, "stale!"u8);
        Assert.Equal(DmaStatus.Fault, r.Status);
    }
}
