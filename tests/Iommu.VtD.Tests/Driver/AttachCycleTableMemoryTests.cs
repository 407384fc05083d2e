using Iommu.Devices;
using Iommu.Domains;
using Iommu.VtD.Driver;
using Iommu.VtD.Hardware;

namespace Iommu.VtD.Tests.Driver;

/// <summary>
/// Attach and detach, over and over, must not use table memory up: each attach in scalable mode allocates the
/// device's PASID directory (32 contiguous frames for 20-bit PASIDs), and the detach gave it back frame by frame,
/// where no later run could reuse it. With 4 MiB of table memory the 16th cycle failed (-EBUSY: the domain or the default domain
/// could not be attached); with the default 256 MiB, about the 1,000th.
/// </summary>
public class AttachCycleTableMemoryTests
{
    [Theory]
    [InlineData(true)]
    [InlineData(false)]
    public void Attach_detach_cycles_leave_table_memory_as_they_found_it(bool firstLevelUnit)
    {
        using var platform = new Platform(new PlatformOptions { MemorySize = 2 * Sizes.GiB, TableMemorySize = 4 * Sizes.MiB });
        PciBus pci = platform.AddPciBus();
        var unit = new VtdUnit(platform.Memory, firstLevelUnit ? VtdConfig.ScalableModeFirstLevel48Bit : VtdConfig.ScalableMode48Bit);
        pci.AddDmaRemapper(unit, includeAll: true);
        pci.SetIommuOps(new IntelIommu(platform, unit)).ThrowIfError();
        PciDevice dev = pci.AddDevice(new PciDeviceSpec("0000:00:03.0") { PasidWidth = 20, Acs = true });
        platform.Memory.WriteUInt64(0x4000_0000, 0x1234);
        var buf = new byte[8];
        long baseline = platform.Frames.LiveFrames;
        for (int round = 0; round < 300; round++)
        {
            IDomain d = platform.Iommu.DomainAlloc(pci)!;
            Assert.True(platform.Iommu.AttachDevice(d, dev) == Errno.None, $"round {round}: {ErrorDetail.LastMessage}");
            Assert.Equal(Errno.None, platform.Iommu.Map(d, 0x10_0000, 0x4000_0000, Sizes.Page, IommuProt.Read));
            Assert.True(dev.DmaRead(null, 0x10_0000, buf).IsOk && BitConverter.ToUInt64(buf) == 0x1234, $"round {round}");
            platform.Iommu.DetachDevice(d, dev);
            Assert.True(platform.Iommu.GetDomainForDev(dev)?.Type is DomainType.Dma or DomainType.DmaFq, $"round {round}: the default domain was not re-attached");
            platform.Iommu.DomainFree(d);
            Assert.Equal(baseline, platform.Frames.LiveFrames);
        }
    }
}
