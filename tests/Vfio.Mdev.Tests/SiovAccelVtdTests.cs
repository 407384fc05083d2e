using System.Buffers.Binary;
using Iommu;
using Iommu.Devices;
using Iommu.Domains;
using Iommu.VtD.Driver;
using Iommu.VtD.Hardware;
using SiovAccel;

namespace Vfio.Mdev.Tests;

/// <summary>
/// The Scalable-IOV sample on the real VT-d model and intel-iommu driver in scalable mode: each
/// mdev's ADI tags its DMA with its aux domain's PASID and the hardware keeps them apart.
/// </summary>
public sealed class SiovAccelVtdTests : IDisposable
{
    private readonly Platform _platform;
    private readonly PciBus _pci;
    private readonly IntelIommu _intel;
    private readonly MdevCore _mdev;
    private readonly PciDevice _parent;

    public SiovAccelVtdTests()
    {
        _platform = new Platform(new PlatformOptions { MemorySize = 4 * Sizes.GiB, TableMemorySize = 64 * Sizes.MiB });
        _pci = _platform.AddPciBus();
        var unit = new VtdUnit(_platform.Memory, VtdConfig.ScalableMode48Bit);
        _pci.AddDmaRemapper(unit, includeAll: true);
        _intel = new IntelIommu(_platform, unit);
        Assert.Equal(Errno.None, _pci.SetIommuOps(_intel));
        _parent = _pci.AddDevice(new PciDeviceSpec("0000:00:04.0") { PasidWidth = 20, ScalableIov = true, DeviceId = 0x0b25 });
        _mdev = new MdevCore(_platform);
        Assert.Equal(Errno.None, _mdev.RegisterDevice(_parent, new SiovAccelDriver(_platform.Iommu, _parent, adiCount: 4)));
    }

    public void Dispose() => _platform.Dispose();

    private (MdevDevice Mdev, IDomain Domain, MdevDeviceFile File) NewGuest()
    {
        MdevType type = _mdev.FindParent(_parent)!.FindType("siov_accel-wq")!;
        Assert.Equal(Errno.None, _mdev.Create(type, Guid.NewGuid(), out MdevDevice? m));
        IDomain domain = _platform.Iommu.DomainAlloc(_pci)!;
        Assert.Equal(Errno.None, _platform.Iommu.AttachDeviceAux(domain, m!.GetIommuDevice()!)); // what type1 does
        m.SetIommuDomain(domain);
        Assert.Equal(Errno.None, m.Open(out MdevDeviceFile? f));
        return (m, domain, f!);
    }

    private void Map(IDomain d, ulong iova, ulong pa) =>
        Assert.Equal(Errno.None, _platform.Iommu.Map(d, iova, pa, Sizes.Page, IommuProt.Read | IommuProt.Write));

    internal static uint PasidRegister(MdevDeviceFile f)
    {
        byte[] b = new byte[4];
        Assert.Equal(4, f.Read(b, 0x08));
        return BinaryPrimitives.ReadUInt32LittleEndian(b);
    }

    internal static void Submit(MdevDeviceFile f, AccelDescriptor d) =>
        Assert.Equal(AccelDescriptor.Length, f.Write(d.ToBytes(), SiovAccelDriver.PortalOffset));

    [Fact]
    public void Two_mdevs_get_different_pasids_and_their_dma_cannot_reach_each_others_pages()
    {
        var (_, da, fa) = NewGuest();
        var (_, db, fb) = NewGuest();
        using (fa)
        using (fb)
        {
            // Same IOVAs in both guests, different host pages.
            Map(da, 0x1000_0000, 0x1000_0000);
            Map(da, 0x2000_0000, 0x1000_1000);
            Map(da, 0x3000_0000, 0x1000_2000);
            Map(db, 0x1000_0000, 0x2000_0000);
            Map(db, 0x2000_0000, 0x2000_1000);
            Map(db, 0x3000_0000, 0x2000_2000);
            _platform.Memory.Write(0x1000_0000, "guest-a!"u8);
            _platform.Memory.Write(0x2000_0000, "guest-b!"u8);

            uint pa = PasidRegister(fa), pb = PasidRegister(fb);
            Assert.Equal((uint)_platform.Iommu.AuxGetPasid(da, _parent), pa);
            Assert.Equal((uint)_platform.Iommu.AuxGetPasid(db, _parent), pb);
            Assert.NotEqual(pa, pb);

            Submit(fa, AccelDescriptor.Memmove(0x1000_0000, 0x2000_0000, 8, completion: 0x3000_0000));
            Submit(fb, AccelDescriptor.Memmove(0x1000_0000, 0x2000_0000, 8, completion: 0x3000_0000));

            byte[] got = new byte[8];
            _platform.Memory.Read(0x1000_1000, got);
            Assert.Equal("guest-a!"u8.ToArray(), got);
            _platform.Memory.Read(0x2000_1000, got);
            Assert.Equal("guest-b!"u8.ToArray(), got);

            // b's ADI aimed at an IOVA only a's domain maps: the VT-d unit blocks it under b's PASID.
            Map(da, 0x4000_0000, 0x1000_3000);
            Submit(fb, AccelDescriptor.Memmove(0x4000_0000, 0x2000_0000, 8, completion: 0x3000_0000));
            byte[] completion = new byte[16];
            _platform.Memory.Read(0x2000_2000, completion);
            Assert.Equal(Adi.StatusPageFault, completion[0]);
            DmarFaultRecord fault = Assert.Single(_intel.Faults);
            Assert.Equal(pb, fault.Pasid);
            Assert.Equal(0x4000_0000UL, fault.Address);
            Assert.Equal(_parent.RequesterId, fault.SourceId);
        }
    }
}
