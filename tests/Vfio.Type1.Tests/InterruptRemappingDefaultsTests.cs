using Iommu;
using Iommu.Devices;
using Iommu.VtD.Hardware;
using Vfio.Type1.Tests.Infrastructure;
using Vfio.Type1.Uapi;

namespace Vfio.Type1.Tests;

/// <summary>
/// A <see cref="VfioCore"/> with default options attaches groups where the IOMMU remaps interrupts, as
/// on a real host; where it does not, -EPERM names the C# switch to turn.
/// </summary>
public sealed class InterruptRemappingDefaultsTests
{
    [Theory]
    [InlineData(nameof(VtdConfig.Legacy48Bit), false)]
    [InlineData(nameof(VtdConfig.ScalableMode48Bit), true)]
    public void Default_options_attach_on_a_unit_with_interrupt_remapping(string preset, bool scalable)
    {
        VtdConfig config = preset == nameof(VtdConfig.Legacy48Bit) ? VtdConfig.Legacy48Bit : VtdConfig.ScalableMode48Bit;
        using var bed = new Type1Bed(config, scalable, new VfioType1Options());
        PciDevice dev = bed.AddDevice("0000:00:03.0");
        VfioContainer c = bed.Vfio.OpenContainer(bed.Proc, out _);
        bed.Vfio.OpenGroup(bed.Proc, dev.IommuGroup!.Id, out VfioGroup? g, out _).ThrowIfError();
        g!.SetContainer(c).ThrowIfError();

        Assert.Equal(Errno.None, c.SetIommu(VfioUapi.VFIO_TYPE1v2_IOMMU));
        Assert.NotNull(c.Backend);
        Assert.Same(c.Backend.Domains[0], dev.IommuGroup.Domain);
    }

    [Fact]
    public void Without_interrupt_remapping_eperm_names_the_option_and_setting_it_attaches()
    {
        using var bed = new Type1Bed(VtdConfig.ScalableMode48Bit with { InterruptRemapping = false }, scalable: true, new VfioType1Options());
        PciDevice dev = bed.AddDevice("0000:00:03.0");
        VfioContainer c = bed.Vfio.OpenContainer(bed.Proc, out _);
        bed.Vfio.OpenGroup(bed.Proc, dev.IommuGroup!.Id, out VfioGroup? g, out _).ThrowIfError();
        g!.SetContainer(c).ThrowIfError();

        IommuException ex = Assert.Throws<IommuException>(() => c.SetIommu(VfioUapi.VFIO_TYPE1v2_IOMMU).ThrowIfError());
        Assert.Equal(Errno.EPERM, ex.Errno);
        Assert.Contains("VfioType1Options.AllowUnsafeInterrupts", ex.Message, StringComparison.Ordinal);
        Assert.Null(c.Backend);

        bed.Vfio.Options.AllowUnsafeInterrupts = true;
        Assert.Equal(Errno.None, c.SetIommu(VfioUapi.VFIO_TYPE1v2_IOMMU));
    }
}
