using Iommu.Devices;
using Iommu.Domains;
using Iommu.VtD.Driver;
using Iommu.VtD.Hardware;

namespace Iommu.VtD.Tests.Driver;

public sealed class DriverSmokeTests
{
    public static TheoryData<string> Configs => new() { nameof(VtdConfig.Legacy39Bit), nameof(VtdConfig.Legacy48Bit), nameof(VtdConfig.ScalableMode48Bit), nameof(VtdConfig.ScalableMode57Bit) };

    internal static VtdConfig Config(string name) => name switch
    {
        nameof(VtdConfig.Legacy39Bit) => VtdConfig.Legacy39Bit,
        nameof(VtdConfig.Legacy48Bit) => VtdConfig.Legacy48Bit,
        nameof(VtdConfig.ScalableMode48Bit) => VtdConfig.ScalableMode48Bit,
        _ => VtdConfig.ScalableMode57Bit,
    };

    [Theory]
    [MemberData(nameof(Configs))]
    public void Unmanaged_domain_maps_and_device_dma_lands_where_iova_to_phys_says(string config)
    {
        using var f = new DriverBed(Config(config));
        PciDevice dev = f.AddDevice("0000:00:03.0");
        IDomain dom = f.Iommu.DomainAlloc(f.Pci)!;
        Assert.Equal(Errno.None, f.Iommu.AttachDevice(dom, dev));

        Assert.Equal(Errno.None, f.Iommu.Map(dom, 0x10_0000, 0x8_0000_0000, 4 * Sizes.MiB, IommuProt.Read | IommuProt.Write));
        Assert.Equal(0x8_0000_1234UL, f.Iommu.IovaToPhys(dom, 0x10_1234));

        DmaResult r = f.Write(dev, null, 0x10_1230, 0x1122_3344_5566_7788);
        Assert.True(r.IsOk, r.ToString());
        Assert.Equal(0x1122_3344_5566_7788UL, f.Platform.Memory.ReadUInt64(0x8_0000_1230));

        DmaResult miss = f.Write(dev, null, 0x50_0000, 1);
        Assert.Equal(DmaStatus.Fault, miss.Status);

        Assert.Equal(4 * Sizes.MiB, f.Iommu.Unmap(dom, 0x10_0000, 4 * Sizes.MiB));
        DmaResult after = f.Write(dev, null, 0x10_1230, 2);
        Assert.Equal(DmaStatus.Fault, after.Status);
        Assert.Equal(0x1122_3344_5566_7788UL, f.Platform.Memory.ReadUInt64(0x8_0000_1230));
        Assert.NotEmpty(f.Driver.Faults);
    }

    [Fact]
    public void Aux_domains_isolate_pasids_on_one_parent()
    {
        using var f = new DriverBed(VtdConfig.ScalableMode48Bit);
        PciDevice parent = f.AddDevice("0000:00:02.0", pasidWidth: 20, siov: true);
        Assert.Equal(Errno.None, f.Iommu.GetDevAttr(parent, IommuDevAttr.AuxdCapability, out bool cap));
        Assert.True(cap);
        Assert.Equal(Errno.None, f.Iommu.SetDevAttr(parent, IommuDevAttr.AuxdEnable));

        IDomain a = f.Iommu.DomainAlloc(f.Pci)!, b = f.Iommu.DomainAlloc(f.Pci)!;
        Assert.Equal(Errno.None, f.Iommu.AttachDeviceAux(a, parent));
        Assert.Equal(Errno.None, f.Iommu.AttachDeviceAux(b, parent));
        f.Iommu.DomainGetAttr(a, DomainAttr.AuxdId, out uint pa).ThrowIfError();
        f.Iommu.DomainGetAttr(b, DomainAttr.AuxdId, out uint pb).ThrowIfError();
        Assert.Equal(1u, pa);
        Assert.Equal(2u, pb);

        f.Iommu.Map(a, 0x4000_0000, 0x1_0000_0000, Sizes.MiB * 2, IommuProt.Read | IommuProt.Write).ThrowIfError();
        f.Iommu.Map(b, 0x4000_0000, 0x2_0000_0000, Sizes.MiB * 2, IommuProt.Read | IommuProt.Write).ThrowIfError();

        Assert.True(f.Write(parent, pa, 0x4000_0008, 0xA).IsOk);
        Assert.True(f.Write(parent, pb, 0x4000_0008, 0xB).IsOk);
        Assert.Equal(0xAUL, f.Platform.Memory.ReadUInt64(0x1_0000_0008));
        Assert.Equal(0xBUL, f.Platform.Memory.ReadUInt64(0x2_0000_0008));
        Assert.Equal(DmaStatus.Fault, f.Write(parent, 3, 0x4000_0008, 0xC).Status);

        Assert.Equal(Errno.EPERM, f.Iommu.AttachDevice(a, parent));

        f.Iommu.DetachDeviceAux(a, parent);
        Assert.Equal(DmaStatus.Fault, f.Write(parent, pa, 0x4000_0008, 0xD).Status);
        Assert.Equal(0xAUL, f.Platform.Memory.ReadUInt64(0x1_0000_0008));
        Assert.True(f.Write(parent, pb, 0x4000_0010, 0xE).IsOk);
    }
}
