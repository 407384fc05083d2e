using Iommu;
using Iommu.Devices;
using Iommu.Domains;
using Iommu.VtD.Driver;
using Iommu.VtD.Hardware;
using SiovAccel;

namespace Vfio.Mdev.Tests;

/// <summary>
/// The Scalable-IOV sample in both of its modes on the VT-d model: the 5.15 aux way (VFIO aux-attaches
/// the mdev's domain; the driver asks its PASID) and the 6.2 way (the parent allocates each ADI's
/// PASID and attaches the mdev's domain to it with iommu_attach_device_pasid, as idxd does).
/// </summary>
public sealed class SiovAccelPasidAttachTests : IDisposable
{
    private readonly Platform _platform;
    private readonly PciBus _pci;
    private readonly IntelIommu _intel;
    private readonly PciDevice _parent;
    private MdevCore? _mdev;
    private SiovAccelDriver? _driver;

    public SiovAccelPasidAttachTests()
    {
        _platform = new Platform(new PlatformOptions { MemorySize = 4 * Sizes.GiB, TableMemorySize = 64 * Sizes.MiB });
        _pci = _platform.AddPciBus();
        var unit = new VtdUnit(_platform.Memory, VtdConfig.ScalableMode48Bit);
        _pci.AddDmaRemapper(unit, includeAll: true);
        _intel = new IntelIommu(_platform, unit);
        Assert.Equal(Errno.None, _pci.SetIommuOps(_intel));
        _parent = _pci.AddDevice(new PciDeviceSpec("0000:00:04.0") { PasidWidth = 20, ScalableIov = true, DeviceId = 0x0b25 });
    }

    public void Dispose() => _platform.Dispose();

    private IommuCore Iommu => _platform.Iommu;

    private void Register(SiovAccelMode mode)
    {
        _mdev = new MdevCore(_platform);
        _driver = new SiovAccelDriver(Iommu, _parent, adiCount: 3, mode);
        Assert.Equal(Errno.None, _mdev.RegisterDevice(_parent, _driver));
    }

    private MdevDevice Create()
    {
        MdevType type = _mdev!.FindParent(_parent)!.FindType("siov_accel-wq")!;
        Assert.Equal(Errno.None, _mdev.Create(type, Guid.NewGuid(), out MdevDevice? m));
        return m!;
    }

    // What the owner of the mdev's address space does: a domain for it, aux-attached in the aux way
    // (type1 does that for an mdev with an IOMMU device); in the 6.2 way the driver attaches it itself.
    private IDomain GiveDomain(MdevDevice m, SiovAccelMode mode)
    {
        IDomain domain = Iommu.DomainAlloc(_pci)!;
        if (mode == SiovAccelMode.Aux)
        {
            Assert.Equal(Errno.None, Iommu.AttachDeviceAux(domain, m.GetIommuDevice()!));
        }

        m.SetIommuDomain(domain);
        return domain;
    }

    private static uint PasidRegister(MdevDeviceFile f) => SiovAccelVtdTests.PasidRegister(f);

    private static void Submit(MdevDeviceFile f, AccelDescriptor d) => SiovAccelVtdTests.Submit(f, d);

    [Theory]
    [InlineData(SiovAccelMode.Aux)]
    [InlineData(SiovAccelMode.PasidAttach)]
    public void Each_mdev_moves_bytes_through_its_own_domain_and_cannot_reach_the_others(SiovAccelMode mode)
    {
        Register(mode);
        MdevDevice ma = Create(), mb = Create();
        IDomain da = GiveDomain(ma, mode), db = GiveDomain(mb, mode);
        Assert.Equal(Errno.None, ma.Open(out MdevDeviceFile? fa));
        Assert.Equal(Errno.None, mb.Open(out MdevDeviceFile? fb));
        using (fa)
        using (fb)
        {
            foreach ((IDomain d, ulong pa) in new[] { (da, 0x1000_0000UL), (db, 0x2000_0000UL) })
            {
                for (ulong i = 0; i < 3; i++)
                {
                    Assert.Equal(Errno.None, Iommu.Map(d, 0x1000_0000 + (i * 0x1000_0000), pa + (i * 0x1000), Sizes.Page, IommuProt.Read | IommuProt.Write));
                }
            }

            _platform.Memory.Write(0x1000_0000, "guest-a!"u8);
            _platform.Memory.Write(0x2000_0000, "guest-b!"u8);
            uint pa1 = PasidRegister(fa!), pb1 = PasidRegister(fb!);
            Assert.NotEqual(pa1, pb1);
            if (mode == SiovAccelMode.PasidAttach)
            {
                Assert.Equal(SiovAccelDriver.AdiOf(ma).AllocatedPasid, pa1);
                Assert.Equal(Errno.None, Iommu.GetDomainForDevPasid(_parent, pa1, DomainType.Blocked, out IDomain? held));
                Assert.Same(da, held);
                Assert.Null(ma.GetIommuDevice()); // no aux: the mdev names no IOMMU device
                Assert.False(Iommu.DevFeatureEnabled(_parent, IommuDevFeature.Aux));
            }
            else
            {
                Assert.Equal((uint)Iommu.AuxGetPasid(da, _parent), pa1);
            }

            Submit(fa!, AccelDescriptor.Memmove(0x1000_0000, 0x2000_0000, 8, completion: 0x3000_0000));
            Submit(fb!, AccelDescriptor.Memmove(0x1000_0000, 0x2000_0000, 8, completion: 0x3000_0000));
            byte[] got = new byte[8];
            _platform.Memory.Read(0x1000_1000, got);
            Assert.Equal("guest-a!"u8.ToArray(), got);
            _platform.Memory.Read(0x2000_1000, got);
            Assert.Equal("guest-b!"u8.ToArray(), got);

            Assert.Equal(Errno.None, Iommu.Map(da, 0x4000_0000, 0x1000_3000, Sizes.Page, IommuProt.Read | IommuProt.Write));
            Submit(fb!, AccelDescriptor.Memmove(0x4000_0000, 0x2000_0000, 8, completion: 0x3000_0000));
            byte[] completion = new byte[16];
            _platform.Memory.Read(0x2000_2000, completion);
            Assert.Equal(Adi.StatusPageFault, completion[0]);
            Assert.Equal(pb1, Assert.Single(_intel.Faults).Pasid);
        }
    }

    [Fact]
    public void In_the_62_way_close_detaches_the_pasid_and_remove_frees_it()
    {
        Register(SiovAccelMode.PasidAttach);
        MdevDevice m = Create();
        uint pasid = SiovAccelDriver.AdiOf(m).AllocatedPasid!.Value;
        Assert.Equal(1u, pasid);
        IDomain d = GiveDomain(m, SiovAccelMode.PasidAttach);
        Assert.Equal(Errno.None, Iommu.Map(d, 0x1000_0000, 0x1000_0000, Sizes.Page, IommuProt.Read | IommuProt.Write));
        Assert.Equal(Errno.None, m.Open(out MdevDeviceFile? f));
        Assert.True(_parent.DmaRead(pasid, 0x1000_0000, new byte[8]).IsOk);

        f!.Dispose(); // close

        Assert.False(_parent.DmaRead(pasid, 0x1000_0000, new byte[8]).IsOk);
        Assert.Equal(Errno.None, Iommu.GetDomainForDevPasid(_parent, pasid, DomainType.Blocked, out IDomain? held));
        Assert.Null(held);
        Assert.NotEqual(pasid, Iommu.AllocGlobalPasid(_parent)); // still the ADI's until remove
        Assert.Equal(Errno.None, _mdev!.Remove(m));
        Assert.Equal(pasid, SiovAccelDriver.AdiOf(Create()).AllocatedPasid); // freed, and the lowest free again
    }

    [Fact]
    public void In_the_62_way_open_fails_with_the_attach_errno_when_the_pasid_is_taken()
    {
        Register(SiovAccelMode.PasidAttach);
        MdevDevice m = Create();
        uint pasid = SiovAccelDriver.AdiOf(m).AllocatedPasid!.Value;
        IDomain other = Iommu.DomainAlloc(_pci)!;
        Assert.Equal(Errno.None, Iommu.AttachDevicePasid(other, _parent, pasid)); // someone took the slot
        GiveDomain(m, SiovAccelMode.PasidAttach);

        Assert.Equal(Errno.EBUSY, m.Open(out _));
        Assert.False(SiovAccelDriver.AdiOf(m).Enabled);
    }
}
