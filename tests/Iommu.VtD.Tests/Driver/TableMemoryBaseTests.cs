using Iommu.Devices;
using Iommu.Domains;
using Iommu.VtD.Driver;
using Iommu.VtD.Hardware;
using static Iommu.VtD.Tests.Driver.DriverTestKit;

namespace Iommu.VtD.Tests.Driver;

/// <summary>Where the translation structures live matters to a unit whose host address width is below the top of memory.</summary>
public sealed class TableMemoryBaseTests
{
    [Theory]
    [InlineData(null)]
    [InlineData(0x1_0000_0000UL)]
    public void Tables_beyond_the_units_host_address_width_fault_and_tables_below_it_translate(ulong? tableBase)
    {
        // 1 TiB of memory (backed lazily); QEMU's default unit reaches 2^39 = 512 GiB.
        using var platform = new Platform(new PlatformOptions { MemorySize = 1024 * Sizes.GiB, TableMemoryBase = tableBase });
        PciBus pci = platform.AddPciBus();
        var unit = new VtdUnit(platform.Memory, VtdConfig.Qemu72AwBits39);
        pci.AddDmaRemapper(unit, includeAll: true);
        pci.SetIommuOps(new IntelIommu(platform, unit)).ThrowIfError();
        PciDevice dev = pci.AddDevice(new PciDeviceSpec("0000:00:03.0"));
        IDomain dom = platform.Iommu.DomainAlloc(pci)!;
        platform.Iommu.AttachDevice(dom, dev).ThrowIfError();
        platform.Iommu.Map(dom, 0x10_0000, 0x20_0000, K4, RW).ThrowIfError();

        DmaResult r = dev.DmaRead(null, 0x10_0000, new byte[8]);

        Assert.True(platform.Frames.RegionBase == (tableBase ?? (1024 * Sizes.GiB) - (256 * Sizes.MiB)));
        Assert.True((tableBase is null ? DmaStatus.Fault : DmaStatus.Ok) == r.Status, $"tables at 0x{platform.Frames.RegionBase:x}: {r.Status}, reason {r.FaultReason}");
    }
}
