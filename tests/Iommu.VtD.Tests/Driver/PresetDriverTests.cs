using Iommu.Devices;
using Iommu.Domains;
using Iommu.VtD.Driver;
using Iommu.VtD.Hardware;
using static Iommu.VtD.Tests.Driver.DriverTestKit;

namespace Iommu.VtD.Tests.Driver;

/// <summary>What the driver makes of each preset: DMA through an attached domain, and aux domains where the unit has PASIDs.</summary>
public sealed class PresetDriverTests
{
    public static TheoryData<string, bool, int> Presets => new()
    {
        // preset, aux-domain capable (scalable mode with ECAP.PASID), widest table the driver uses
        { nameof(VtdConfig.Qemu72AwBits39), false, 39 },
        { nameof(VtdConfig.Qemu72AwBits48), false, 48 },
        { nameof(VtdConfig.Qemu72ScalableAwBits39), false, 39 },
        { nameof(VtdConfig.Qemu72ScalableAwBits48), false, 48 },
        { nameof(VtdConfig.ScalableMode39Bit), true, 39 },
    };

    private static VtdConfig Preset(string name) => name switch
    {
        nameof(VtdConfig.Qemu72AwBits39) => VtdConfig.Qemu72AwBits39,
        nameof(VtdConfig.Qemu72AwBits48) => VtdConfig.Qemu72AwBits48,
        nameof(VtdConfig.Qemu72ScalableAwBits39) => VtdConfig.Qemu72ScalableAwBits39,
        nameof(VtdConfig.Qemu72ScalableAwBits48) => VtdConfig.Qemu72ScalableAwBits48,
        nameof(VtdConfig.ScalableMode39Bit) => VtdConfig.ScalableMode39Bit,
        _ => throw new ArgumentOutOfRangeException(nameof(name)),
    };

    [Theory]
    [MemberData(nameof(Presets))]
    public void A_device_dmas_through_its_domain_and_aux_needs_pasids_on_the_unit(string preset, bool aux, int width)
    {
        using var f = new DriverBed(Preset(preset), memory: SmallMemory);
        Assert.Equal(Preset(preset).ScalableMode, f.Driver.ScalableModeSupport);

        PciDevice dev = f.AddDevice("0000:00:03.0");
        IDomain dom = f.Unmanaged();
        Assert.Equal(Errno.None, f.Iommu.AttachDevice(dom, dev));
        ulong top = (1UL << width) - K4; // the last page the unit's width allows
        Assert.Equal(Errno.None, f.Iommu.Map(dom, top, 0x4000_0000, K4, RW));
        Assert.True(f.Write(dev, null, top + 8, 0x1122_3344_5566_7788).IsOk);
        Assert.Equal(0x1122_3344_5566_7788UL, f.Platform.Memory.ReadUInt64(0x4000_0008));
        Assert.Equal(Errno.EFAULT, f.Iommu.Map(dom, 1UL << width, 0x5000_0000, K4, RW)); // beyond the domain's width

        PciDevice parent = f.AddDevice("0000:00:02.0", pasidWidth: 20, siov: true);
        Assert.Equal(Errno.None, f.Iommu.GetDevAttr(parent, IommuDevAttr.AuxdCapability, out bool capable));
        Assert.Equal(aux, capable);
        Assert.Equal(aux ? Errno.None : Errno.EINVAL, f.Iommu.SetDevAttr(parent, IommuDevAttr.AuxdEnable));
    }
}
