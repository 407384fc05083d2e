using Iommu;
using Iommu.Devices;
using Iommu.Mm;
using Iommu.VtD.Hardware;
using Mtty;
using SiovAccel;
using Vfio.Mdev;
using Vfio.Type1.Tests.Infrastructure;
using Vfio.Type1.Uapi;

namespace Vfio.Type1.Tests;

/// <summary>
/// One container with a physical device, two SIOV mdevs (aux domains on the parent) and an mtty in the
/// external domain, on the real VT-d model: DMA reaches exactly the pinned pages, faults after UNMAP.
/// </summary>
public sealed class MixedContainerDmaTests : IDisposable
{
    private const ulong Iova = 0x10_0000;
    // SnoopControl: the 5.15 driver counts scalable-mode units as snooping and sets SNP in the PTEs (IOMMU_CACHE),
    // which a unit without ECAP.SC treats as a reserved bit (fault 0x7A).
    private readonly Type1Bed _bed = new(VtdConfig.ScalableMode48Bit, scalable: true);
    private readonly MdevCore _mdev;

    public MixedContainerDmaTests() => _mdev = new MdevCore(_bed.Platform);

    public void Dispose() => _bed.Dispose();

    private (VfioGroup G, VfioDeviceFile? D) Join(VfioContainer c, Device dev, bool openDevice)
    {
        Assert.Equal(Errno.None, _bed.Vfio.RegisterDevice(dev));
        Assert.Equal(Errno.None, _bed.Vfio.OpenGroup(_bed.Proc, dev.IommuGroup!.Id, out VfioGroup? g, out _));
        Assert.Equal(Errno.None, g!.SetContainer(c));
        if (c.Backend is null)
        {
            Assert.Equal(Errno.None, c.SetIommu(VfioUapi.VFIO_TYPE1v2_IOMMU));
        }

        VfioDeviceFile? d = null;
        if (openDevice)
        {
            Assert.Equal(Errno.None, g.GetDeviceFd(_bed.Proc, dev.Name, out d, out _));
        }

        return (g, d);
    }

    [Fact]
    public void Physical_device_and_adis_reach_exactly_the_pinned_pages_and_fault_after_unmap()
    {
        PciDevice phys = _bed.AddDevice("0000:00:02.0", register: false);
        PciDevice parent = _bed.AddDevice("0000:00:04.0", register: false, pasidWidth: 20, siov: true);
        var accel = new SiovAccelDriver(_bed.Iommu, parent, adiCount: 2);
        Assert.Equal(Errno.None, _mdev.RegisterDevice(parent, accel));
        MdevType wq = _mdev.FindParent(parent)!.FindType("siov_accel-wq")!;
        Assert.Equal(Errno.None, _mdev.Create(wq, Guid.NewGuid(), out MdevDevice? a1));
        Assert.Equal(Errno.None, _mdev.Create(wq, Guid.NewGuid(), out MdevDevice? a2));

        VfioContainer c = _bed.Vfio.OpenContainer(_bed.Proc, out _);
        Join(c, phys, openDevice: false);
        Join(c, a1!, openDevice: true); // the vendor's open enables the ADI (PASID on the parent)
        Join(c, a2!, openDevice: true);
        VfioIommuType1 t1 = c.Backend!;
        Assert.Single(t1.Domains); // the aux groups reuse the physical group's domain (same ops, same prot)

        ulong buf = _bed.Buffer(4 * Sizes.Page, seed: 0x40);
        Assert.Equal(Errno.None, c.MapDma(Type1Bed.Map(buf, Iova, 4 * Sizes.Page)));
        t1.Audit();

        int pasid = _bed.Iommu.AuxGetPasid(t1.Domains[0], parent);
        Assert.True(pasid > 0);
        Assert.Same(t1.Domains[0], a1!.GetIommuDomain());
        Assert.Same(t1.Domains[0], a2!.GetIommuDomain());

        // The physical device (RID) writes page 1, an ADI (PASID) writes page 2: the bytes land in the process buffer.
        DmaResult pw = phys.DmaWrite(null, Iova + Sizes.Page, new byte[] { 0xAA, 0xBB });
        Assert.True(pw.IsOk, $"RID write: {pw} {_bed.Iommu.GetDomainForDev(phys) == t1.Domains[0]}");
        DmaResult w = parent.DmaWrite((uint)pasid, Iova + (2 * Sizes.Page), new byte[] { 0xCC });
        Assert.True(w.IsOk, $"ADI write: {w} pasid {pasid} enabled {parent.PasidEnabled}");
        var got = new byte[2];
        Assert.Equal(Errno.None, _bed.Proc.Read(buf + Sizes.Page, got));
        Assert.Equal(new byte[] { 0xAA, 0xBB }, got);
        Assert.Equal(Errno.None, _bed.Proc.Read(buf + (2 * Sizes.Page), got.AsSpan(0, 1)));
        Assert.Equal(0xCC, got[0]);

        // Reads see the process's pages; an IOVA outside the mapping faults for both requesters.
        var r = new byte[1];
        Assert.True(parent.DmaRead((uint)pasid, Iova + (3 * Sizes.Page), r).IsOk);
        Assert.Equal(0x43, r[0]);
        Assert.False(phys.DmaRead(null, Iova + (4 * Sizes.Page), r).IsOk);
        Assert.False(parent.DmaRead((uint)pasid, Iova + (4 * Sizes.Page), r).IsOk);

        var unmap = new VfioIommuType1DmaUnmap(24, 0, Iova, 4 * Sizes.Page);
        Assert.Equal(Errno.None, c.UnmapDma(ref unmap));
        Assert.Equal(4 * Sizes.Page, unmap.Size);
        Assert.False(phys.DmaRead(null, Iova, r).IsOk);
        Assert.False(parent.DmaRead((uint)pasid, Iova, r).IsOk);
        Assert.Equal(0, _bed.Proc.LockedVm);
        t1.Audit();
    }

    [Fact]
    public void Mtty_in_the_external_domain_pins_through_vfio_and_is_notified_on_unmap()
    {
        PciDevice phys = _bed.AddDevice("0000:00:02.0", register: false);
        var mtty = new MttyDriver(_bed.Platform.Memory, _bed.Vfio);
        Assert.Equal(Errno.None, mtty.Register(_mdev));
        MdevType t = _mdev.FindParent(mtty.ParentDevice)!.FindType("mtty-1")!;
        Assert.Equal(Errno.None, _mdev.Create(t, Guid.NewGuid(), out MdevDevice? m));

        VfioContainer c = _bed.Vfio.OpenContainer(_bed.Proc, out _);
        Join(c, phys, openDevice: false);
        (_, VfioDeviceFile? d) = Join(c, m!, openDevice: true);
        VfioIommuType1 t1 = c.Backend!;
        Assert.True(t1.HasExternalDomain);

        ulong buf = _bed.Buffer(2 * Sizes.Page, seed: 0x50);
        Assert.Equal(Errno.None, c.MapDma(Type1Bed.Map(buf, Iova, 2 * Sizes.Page)));
        long lockedAfterMap = _bed.Proc.LockedVm;
        Assert.Equal(2, lockedAfterMap);

        // Loopback copies page 0 to page 1 through pinned pages.
        long ret = d!.MdevFile!.Ioctl(MttyDriver.IoctlDmaLoopback, new MttyDmaLoopback(Iova, Iova + Sizes.Page, 16).ToBytes());
        Assert.Equal(16, ret);
        var got = new byte[16];
        Assert.Equal(Errno.None, _bed.Proc.Read(buf + Sizes.Page, got));
        Assert.All(got, b => Assert.Equal(0x50, b));
        Assert.True(t1.Mappings[0].ExternalPinCount > 0);
        Assert.Equal(lockedAfterMap, _bed.Proc.LockedVm); // IOMMU-backed container: external pins are not charged again
        t1.Audit();

        // UNMAP notifies the vendor, which unpins; then the mapping goes.
        var unmap = new VfioIommuType1DmaUnmap(24, 0, Iova, 2 * Sizes.Page);
        Assert.Equal(Errno.None, c.UnmapDma(ref unmap));
        Assert.Equal(2 * Sizes.Page, unmap.Size);
        Assert.Empty(t1.Mappings);
        Assert.Equal(0, _bed.Proc.LockedVm);
        Assert.Equal(0, _bed.Pages.TotalPins);
        t1.Audit();
    }
}
