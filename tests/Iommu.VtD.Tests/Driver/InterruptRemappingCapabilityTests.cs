using Iommu.Devices;
using Iommu.VtD.Driver;
using Iommu.VtD.Hardware;

namespace Iommu.VtD.Tests.Driver;

/// <summary>
/// <c>iommu_capable(IOMMU_CAP_INTR_REMAP)</c> follows ECAP.IR of every unit, as 5.15's
/// <c>irq_remapping_enabled</c> does: VFIO type1 asks it before attaching a group.
/// </summary>
public sealed class InterruptRemappingCapabilityTests
{
    [Theory]
    [InlineData(nameof(VtdConfig.Legacy39Bit), false)]
    [InlineData(nameof(VtdConfig.Legacy48Bit), true)]
    [InlineData(nameof(VtdConfig.ScalableMode48Bit), true)]
    [InlineData(nameof(VtdConfig.ScalableMode57Bit), true)]
    public void The_bus_reports_interrupt_remapping_when_the_unit_has_ecap_ir(string preset, bool expected)
    {
        using var f = new DriverBed(DriverSmokeTests.Config(preset));
        Assert.Equal(expected, (f.Unit.Read64(0x10) & VtdEcap.Ir) != 0);
        Assert.Equal(expected, f.Iommu.Capable(f.Pci, IommuCap.IntrRemap));
        Assert.False(f.Iommu.Capable(f.Pci, IommuCap.NoExec));
    }

    [Fact]
    public void One_unit_without_ir_turns_it_off_for_the_whole_driver()
    {
        using var platform = new Platform(new PlatformOptions { MemorySize = 4 * Sizes.GiB, TableMemorySize = 64 * Sizes.MiB });
        PciBus pci = platform.AddPciBus();
        var withIr = new VtdUnit(platform.Memory, VtdConfig.ScalableMode48Bit);
        var withoutIr = new VtdUnit(platform.Memory, VtdConfig.ScalableMode48Bit with { InterruptRemapping = false });
        pci.AddDmaRemapper(withIr, includeAll: false, PciAddress.Parse("0000:00:03.0", null));
        pci.AddDmaRemapper(withoutIr, includeAll: true);
        pci.SetIommuOps(new IntelIommu(platform, withIr, withoutIr)).ThrowIfError();

        Assert.False(platform.Iommu.Capable(pci, IommuCap.IntrRemap));
    }
}
