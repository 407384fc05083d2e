using Iommu;
using Iommu.Devices;
using Iommu.Domains;
using Iommu.VtD.Driver;
using Iommu.VtD.Hardware;

namespace Acme.Wq.Tests;

/// <summary>A machine with one scalable-mode VT-d unit and the Scalable-IOV parent device.</summary>
public sealed class AcmeWqBed : IDisposable
{
    public AcmeWqBed()
    {
        Platform = new Platform(new PlatformOptions { MemorySize = 8 * Sizes.GiB, TableMemorySize = 64 * Sizes.MiB });
        Pci = Platform.AddPciBus(segment: 0);
        var dmar = new VtdUnit(Platform.Memory, VtdConfig.ScalableMode48Bit);
        Pci.AddDmaRemapper(dmar, includeAll: true);
        Pci.SetIommuOps(new IntelIommu(Platform, dmar)).ThrowIfError();
        Parent = Pci.AddDevice(new PciDeviceSpec("0000:00:04.0") { PasidWidth = 20, ScalableIov = true });
    }

    public Platform Platform { get; }

    public PciBus Pci { get; }

    public PciDevice Parent { get; }

    public IommuCore Iommu => Platform.Iommu;

    /// <summary>What VFIO_SET_IOMMU does for an mdev whose IOMMU device is the parent: a new domain, aux-attached.</summary>
    public IDomain AttachAuxDomain()
    {
        IDomain domain = Iommu.DomainAlloc(Pci) ?? throw new InvalidOperationException("no domain");
        Iommu.AuxAttachDevice(domain, Parent).ThrowIfError();
        return domain;
    }

    public void Dispose() => Platform.Dispose();
}
