using System.Buffers.Binary;
using CoreTour;
using Iommu;
using Iommu.Devices;
using Iommu.Domains;
using Moq;
using SiovAccel;
using Vfio.Mdev.Tests.Infrastructure;

namespace Vfio.Mdev.Tests;

/// <summary>
/// The Scalable-IOV sample on the CoreTour sample's ToyIommu stand-in; the test methods play VFIO type1's part
/// (aux attach to the mdev's IOMMU device, mdev_set_iommu_domain, map).
/// </summary>
public sealed class SiovAccelTests : IDisposable
{
    private const long Bar0 = 0;

    private readonly Platform _platform;
    private readonly PciBus _pci;
    private readonly MdevCore _mdev;
    private readonly PciDevice _parent;
    private readonly SiovAccelDriver _driver;

    public SiovAccelTests()
    {
        _platform = new Platform(new PlatformOptions { MemorySize = 1UL << 30, TableMemorySize = 16UL << 20 });
        _pci = _platform.AddPciBus();
        var toy = new ToyIommu(_platform.Iommu);
        Assert.Equal(Errno.None, _pci.SetIommuOps(toy));
        _pci.AddDmaRemapper(toy, includeAll: true);
        _parent = _pci.AddDevice(new PciDeviceSpec("0000:00:04.0") { PasidWidth = 20, ScalableIov = true, DeviceId = 0x0b25 });
        _mdev = new MdevCore(_platform);
        _driver = new SiovAccelDriver(_platform.Iommu, _parent, adiCount: 3);
        Assert.Equal(Errno.None, _mdev.RegisterDevice(_parent, _driver));
    }

    private IommuCore Iommu => _platform.Iommu;

    private MdevType WqType => _mdev.FindParent(_parent)!.FindType("siov_accel-wq")!;

    public void Dispose() => _platform.Dispose();

    private MdevDevice Create()
    {
        Assert.Equal(Errno.None, _mdev.Create(WqType, Guid.NewGuid(), out MdevDevice? m));
        return m!;
    }

    // What type1 does for an mdev with an IOMMU device: aux-attach a domain to that device and tell the mdev.
    private IDomain AttachAuxDomain(MdevDevice m)
    {
        IDomain domain = Iommu.DomainAlloc(_pci)!;
        Assert.Equal(Errno.None, Iommu.AttachDeviceAux(domain, m.GetIommuDevice()!));
        m.SetIommuDomain(domain);
        return domain;
    }

    private void Map(IDomain domain, ulong iova, ulong pa, IommuProt prot = IommuProt.Read | IommuProt.Write) =>
        Assert.Equal(Errno.None, Iommu.Map(domain, iova, pa, Sizes.Page, prot));

    private static MdevDeviceFile Open(MdevDevice m)
    {
        Assert.Equal(Errno.None, m.Open(out MdevDeviceFile? f));
        return f!;
    }

    private static uint ReadPasidRegister(MdevDeviceFile f)
    {
        byte[] b = new byte[4];
        Assert.Equal(4, f.Read(b, Bar0 + 0x08));
        return BinaryPrimitives.ReadUInt32LittleEndian(b);
    }

    private static void Submit(MdevDeviceFile f, AccelDescriptor d) =>
        Assert.Equal(AccelDescriptor.Length, f.Write(d.ToBytes(), Bar0 + SiovAccelDriver.PortalOffset));

    [Fact]
    public void Create_enables_aux_on_the_parent_and_names_it_the_iommu_device()
    {
        Assert.Equal(Errno.None, Iommu.GetDevAttr(_parent, IommuDevAttr.AuxdEnabled, out bool before));
        Assert.False(before);
        MdevDevice m = Create();

        Assert.Equal(Errno.None, Iommu.GetDevAttr(_parent, IommuDevAttr.AuxdEnabled, out bool after));
        Assert.True(after);
        Assert.Same(_parent, m.GetIommuDevice());
        Assert.Null(m.GetIommuDomain());
        Assert.Equal([m], m.IommuGroup!.Devices); // still its own singleton group on the mdev bus
    }

    [Fact]
    public void Available_instances_counts_free_work_queues_and_create_beyond_them_is_ENOSPC()
    {
        Assert.Equal("3\n", MdevBed.Attr(WqType, "available_instances"));
        MdevDevice a = Create();
        Create();
        Assert.Equal("1\n", MdevBed.Attr(WqType, "available_instances"));
        Create();
        Assert.Equal("0\n", MdevBed.Attr(WqType, "available_instances"));
        Assert.Equal(Errno.ENOSPC, _mdev.Create(WqType, Guid.NewGuid(), out _));
        Assert.Equal(Errno.None, _mdev.Remove(a));
        Assert.Equal("1\n", MdevBed.Attr(WqType, "available_instances"));
        Create();
    }

    [Fact]
    public void Removing_the_last_mdev_disables_aux_again()
    {
        MdevDevice a = Create();
        MdevDevice b = Create();
        _mdev.Remove(a);
        Iommu.GetDevAttr(_parent, IommuDevAttr.AuxdEnabled, out bool mid);
        Assert.True(mid);
        _mdev.Remove(b);
        Iommu.GetDevAttr(_parent, IommuDevAttr.AuxdEnabled, out bool end);
        Assert.False(end);
    }

    [Fact]
    public void Two_mdevs_on_one_parent_get_different_pasids()
    {
        MdevDevice a = Create(), b = Create();
        IDomain da = AttachAuxDomain(a), db = AttachAuxDomain(b);
        using MdevDeviceFile fa = Open(a), fb = Open(b);

        uint pa = ReadPasidRegister(fa), pb = ReadPasidRegister(fb);
        Assert.NotEqual(0u, pa);
        Assert.NotEqual(0u, pb);
        Assert.NotEqual(pa, pb);
        Assert.Equal(Iommu.AuxGetPasid(da, _parent), (int)pa);
        Assert.Equal(Iommu.AuxGetPasid(db, _parent), (int)pb);
        Assert.Equal(pa, SiovAccelDriver.AdiOf(a).Pasid);
    }

    [Fact]
    public void A_descriptor_moves_bytes_through_the_mdev_aux_domain()
    {
        MdevDevice m = Create();
        IDomain d = AttachAuxDomain(m);
        Map(d, 0x1000_0000, 0x10_0000, IommuProt.Read);
        Map(d, 0x2000_0000, 0x20_0000);
        Map(d, 0x3000_0000, 0x30_0000);
        byte[] data = Enumerable.Range(0, 256).Select(i => (byte)(255 - i)).ToArray();
        _platform.Memory.Write(0x10_0100, data);
        using MdevDeviceFile f = Open(m);

        Submit(f, AccelDescriptor.Memmove(0x1000_0100, 0x2000_0200, 256, completion: 0x3000_0000));

        byte[] copied = new byte[256];
        _platform.Memory.Read(0x20_0200, copied);
        Assert.Equal(data, copied);
        byte[] completion = new byte[16];
        _platform.Memory.Read(0x30_0000, completion);
        Assert.Equal(Adi.StatusSuccess, completion[0]);
        Assert.Equal(256u, BinaryPrimitives.ReadUInt32LittleEndian(completion.AsSpan(4)));
    }

    [Fact]
    public void An_adi_cannot_reach_iovas_mapped_only_in_another_mdevs_domain()
    {
        MdevDevice a = Create(), b = Create();
        IDomain da = AttachAuxDomain(a), db = AttachAuxDomain(b);
        Map(da, 0x1000_0000, 0x10_0000); // a's buffer
        Map(db, 0x3000_0000, 0x30_0000); // b's completion record
        Map(db, 0x2000_0000, 0x20_0000);
        _platform.Memory.Write(0x10_0000, [1, 2, 3, 4]);
        using MdevDeviceFile fb = Open(b);

        Submit(fb, AccelDescriptor.Memmove(0x1000_0000, 0x2000_0000, 4, completion: 0x3000_0000));

        byte[] dst = new byte[4];
        _platform.Memory.Read(0x20_0000, dst);
        Assert.Equal(new byte[4], dst);
        byte[] completion = new byte[16];
        _platform.Memory.Read(0x30_0000, completion);
        Assert.Equal(Adi.StatusPageFault, completion[0]);
        Assert.Equal(0x1000_0000UL, BinaryPrimitives.ReadUInt64LittleEndian(completion.AsSpan(8)));
        Assert.Equal(DmaStatus.Fault, SiovAccelDriver.AdiOf(b).LastResult.Status);
    }

    [Fact]
    public void Open_without_an_attached_domain_is_EINVAL_and_close_disables_the_adi()
    {
        MdevDevice m = Create();
        Assert.Equal(Errno.EINVAL, m.Open(out _));
        Assert.Contains("mdev_get_iommu_domain", ErrorDetail.LastMessage, StringComparison.Ordinal);

        IDomain d = AttachAuxDomain(m);
        Map(d, 0x2000_0000, 0x20_0000);
        MdevDeviceFile f = Open(m);
        Assert.True(SiovAccelDriver.AdiOf(m).Enabled);
        f.Dispose();
        Assert.False(SiovAccelDriver.AdiOf(m).Enabled);
        Assert.Null(SiovAccelDriver.AdiOf(m).Pasid);

        // Opening again programs the ADI again (open_device runs for the first open file each time).
        using (MdevDeviceFile g = Open(m))
        {
            Assert.Equal((uint)Iommu.AuxGetPasid(d, _parent), SiovAccelDriver.AdiOf(m).Pasid);
        }

        Assert.False(SiovAccelDriver.AdiOf(m).Enabled);
    }

    [Fact]
    public void A_domain_that_has_no_pasid_yet_fails_the_open_with_its_errno()
    {
        MdevDevice m = Create();
        m.SetIommuDomain(Iommu.DomainAlloc(_pci)); // never aux-attached: DOMAIN_ATTR_AUXD_ID is invalid
        Assert.Equal(Errno.EINVAL, m.Open(out MdevDeviceFile? f));
        Assert.Null(f);
        Assert.False(SiovAccelDriver.AdiOf(m).Enabled);
    }

    [Fact]
    public void Config_space_and_registers_read_through_the_device_file()
    {
        MdevDevice m = Create();
        AttachAuxDomain(m);
        using MdevDeviceFile f = Open(m);
        byte[] id = new byte[4];
        Assert.Equal(4, f.Read(id, (7L << 40) + 0));
        Assert.Equal(0x0b25_8086u, BinaryPrimitives.ReadUInt32LittleEndian(id));
        byte[] status = new byte[4];
        f.Read(status, Bar0);
        Assert.Equal(1u, BinaryPrimitives.ReadUInt32LittleEndian(status));
        Assert.Equal(Errno.EINVAL.ToKernelReturn(), f.Read(new byte[4], Bar0 + SiovAccelDriver.Bar0Size));
        Assert.Equal(Errno.EINVAL.ToKernelReturn(), f.Write(new byte[8], Bar0 + SiovAccelDriver.Bar0Size - 4));
        Assert.Equal(Errno.EINVAL, f.Mmap(new VmArea(0, 4096, 0, true)));
        Assert.Equal(0, f.Ioctl(0x3b6b, new byte[16])); // no vendor ioctl: 0 in 5.15
    }

    [Fact]
    public void Vendor_create_calls_mdev_set_iommu_device_with_the_parent()
    {
        var mdev = new Mock<IMdevDevice>();
        object? drvdata = null;
        mdev.Setup(x => x.SetDrvdata(It.IsAny<object?>())).Callback<object?>(d => drvdata = d);
        mdev.Setup(x => x.GetDrvdata()).Returns(() => drvdata);

        Assert.Equal(Errno.None, _driver.Create(mdev.Object));

        mdev.Verify(x => x.SetIommuDevice(_parent), Times.Once);
        Assert.IsType<Adi>(drvdata);
        Assert.Equal(Errno.None, _driver.Remove(mdev.Object));
        mdev.Verify(x => x.SetIommuDevice(null), Times.Once);
        Assert.Null(drvdata);
    }

    [Fact]
    public void Aux_enable_failure_is_returned_unchanged_through_mdev_create()
    {
        PciBus other = _platform.AddPciBus(segment: 1); // a bus with no IOMMU driver
        PciDevice lonely = other.AddDevice(new PciDeviceSpec("0001:00:04.0") { PasidWidth = 8, ScalableIov = true });
        var driver = new SiovAccelDriver(Iommu, lonely, adiCount: 1);
        Assert.Equal(Errno.None, _mdev.RegisterDevice(lonely, driver));

        Assert.Equal(Errno.ENODEV, _mdev.Create(lonely, "siov_accel-wq", Guid.NewGuid(), out MdevDevice? m));
        Assert.Null(m);
        Assert.Equal(0, driver.AssignedCount);
    }

    [Fact]
    public void A_parent_without_pasid_or_the_scalable_iov_dvsec_is_refused()
    {
        PciDevice plain = _pci.AddDevice(new PciDeviceSpec("0000:00:05.0") { PasidWidth = 20 });
        Assert.Throws<ArgumentException>(() => new SiovAccelDriver(Iommu, plain));
    }
}
