using Iommu.Devices;
using Iommu.VtD.Driver;
using Iommu.VtD.Hardware;

namespace Iommu.VtD.Tests.Driver;

/// <summary>A platform with one VT-d unit covering PCI segment 0 and the intel-iommu driver on it.</summary>
internal sealed class DriverBed : IDisposable
{
    public DriverBed(VtdConfig config, IntelIommuOptions? options = null, ulong memory = 64 * Sizes.GiB, System.Diagnostics.Metrics.IMeterFactory? meterFactory = null, string? name = null, Domains.DomainType defaultDomain = Domains.DomainType.Dma)
    {
        Platform = new Platform(new PlatformOptions { MemorySize = memory, TableMemorySize = 256 * Sizes.MiB, MeterFactory = meterFactory, Name = name, DefaultDomainType = defaultDomain });
        Pci = Platform.AddPciBus();
        Unit = new VtdUnit(Platform.Memory, config);
        Pci.AddDmaRemapper(Unit, includeAll: true);
        Driver = new IntelIommu(Platform, options ?? new IntelIommuOptions(), Unit);
        Pci.SetIommuOps(Driver).ThrowIfError();
    }

    public Platform Platform { get; }

    public IommuCore Iommu => Platform.Iommu;

    public PciBus Pci { get; }

    public VtdUnit Unit { get; }

    public IntelIommu Driver { get; }

    public PciDevice AddDevice(string bdf, int pasidWidth = 0, bool siov = false, bool rmrr = false) =>
        Pci.AddDevice(new PciDeviceSpec(bdf) { PasidWidth = pasidWidth, ScalableIov = siov, RmrrLocked = rmrr, Acs = true });

    /// <summary>Writes 8 bytes at <paramref name="iova"/> by device DMA.</summary>
    public DmaResult Write(PciDevice dev, uint? pasid, ulong iova, ulong value)
    {
        Span<byte> b = stackalloc byte[8];
        BitConverter.TryWriteBytes(b, value);
        return dev.DmaWrite(pasid, iova, b);
    }

    public void Dispose() => Platform.Dispose();
}
