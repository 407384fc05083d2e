using Iommu.Devices;
using Iommu.Domains;
using Iommu.VtD.Driver;
using Iommu.VtD.Hardware;

namespace Iommu.Integration.Tests;

/// <summary>What docs/architecture.md says a DMA observes, checked against DMAs.</summary>
public sealed class ArchitectureDocTests
{
    [Fact]
    public void The_fault_reasons_of_an_unmapped_iova_are_the_ones_the_doc_names()
    {
        string doc = File.ReadAllText(Path.Combine(RepoPaths.Root, "docs", "architecture.md")).ReplaceLineEndings(" ");
        foreach ((VtdConfig config, string mode) in new[] { (VtdConfig.ScalableMode48Bit, "scalable"), (VtdConfig.Legacy48Bit, "legacy") })
        {
            using var platform = new Platform(new PlatformOptions { MemorySize = 4 * Sizes.GiB });
            PciBus pci = platform.AddPciBus(segment: 0);
            var dmar = new VtdUnit(platform.Memory, config);
            pci.AddDmaRemapper(dmar, includeAll: true);
            pci.SetIommuOps(new IntelIommu(platform, dmar)).ThrowIfError();
            PciDevice dev = pci.AddDevice(new PciDeviceSpec("0000:00:03.0"));
            IDomain domain = platform.Iommu.DomainAlloc(pci) ?? throw new InvalidOperationException("no domain");
            platform.Iommu.AttachDevice(domain, dev).ThrowIfError();
            platform.Iommu.Map(domain, 0x1000_0000, 0x2000_0000, Sizes.Page, IommuProt.Read | IommuProt.Write).ThrowIfError();

            DmaResult read = dev.DmaRead(null, 0x7000_0000, new byte[8]);
            DmaResult write = dev.DmaWrite(null, 0x7000_0000, new byte[8]);

            Assert.Equal(DmaStatus.Fault, read.Status);
            Assert.Equal(DmaStatus.Fault, write.Status);
            Assert.NotEqual(read.FaultReason, write.FaultReason);
            Assert.True(doc.Contains($"`{read.FaultReason}`", StringComparison.Ordinal), $"docs/architecture.md does not say that a {mode}-mode read of an unmapped IOVA records `{read.FaultReason}`");
            Assert.True(doc.Contains($"`{write.FaultReason}`", StringComparison.Ordinal), $"docs/architecture.md does not say that a {mode}-mode write of an unmapped IOVA records `{write.FaultReason}`");
        }
    }
}
