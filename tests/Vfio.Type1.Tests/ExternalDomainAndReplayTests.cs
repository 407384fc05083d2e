using Iommu;
using Iommu.Devices;
using Iommu.Domains;
using Mtty;
using Vfio.Mdev;
using Vfio.Mdev.Pinning;
using Vfio.Type1.Tests.Infrastructure;
using Vfio.Type1.Uapi;

namespace Vfio.Type1.Tests;

/// <summary>External domain (vfio_pin_pages / notifier) and replay of mappings into a group that joins later.</summary>
public sealed class ExternalDomainAndReplayTests : IDisposable
{
    private const ulong I0 = 0x10_0000;
    private readonly Type1Bed _bed = new();
    private readonly MdevCore _mdev;
    private readonly MdevDevice _m;

    public ExternalDomainAndReplayTests()
    {
        _mdev = new MdevCore(_bed.Platform);
        var mtty = new MttyDriver(_bed.Platform.Memory, pinning: null);
        mtty.Register(_mdev).ThrowIfError();
        _mdev.Create(_mdev.FindParent(mtty.ParentDevice)!.FindType("mtty-1")!, Guid.NewGuid(), out MdevDevice? m).ThrowIfError();
        _m = m!;
        _bed.Vfio.RegisterDevice(_m).ThrowIfError();
    }

    public void Dispose() => _bed.Dispose();

    private (VfioContainer C, VfioGroup G) ExternalContainer(int type = VfioUapi.VFIO_TYPE1v2_IOMMU) => _bed.Std(_m, type);

    private VfioGroup Join(VfioContainer c, PciDevice dev, out Errno result)
    {
        _bed.Vfio.OpenGroup(_bed.Proc, dev.IommuGroup!.Id, out VfioGroup? g, out _).ThrowIfError();
        result = g!.SetContainer(c);
        return g;
    }

    [Fact]
    public void External_pinning_errnos_refcounts_accounting_and_notifier()
    {
        (VfioContainer c, _) = ExternalContainer();
        VfioIommuType1 t1 = c.Backend!;
        Assert.True(t1.HasExternalDomain);
        Assert.Empty(t1.IovaList);
        Assert.Equal(~0xFFFUL, t1.PgsizeBitmap);
        ulong buf = _bed.Buffer(0x4000, seed: 0x60);
        Assert.Equal(Errno.None, c.MapDma(Type1Bed.Map(buf, I0, 0x3000)));
        Assert.Equal(Errno.None, c.MapDma(Type1Bed.Map(buf + 0x3000, I0 + 0x8000, 0x1000, flags: 1)));
        Assert.Equal(0, _bed.Proc.LockedVm); // nothing pinned without an IOMMU domain

        ulong[] pfn = [I0 >> 12], phys = new ulong[1];
        Assert.Equal(-(int)Errno.EINVAL, _bed.Vfio.PinPages(_m, pfn, 1, IommuProt.Read, phys)); // no notifier yet
        var unmapped = new List<VfioDmaUnmapEvent>();
        VfioIommuNotifier nb = (_, ev) =>
        {
            unmapped.Add(ev);
            var pfns = new ulong[ev.Size >> 12];
            for (int i = 0; i < pfns.Length; i++)
            {
                pfns[i] = (ev.Iova >> 12) + (ulong)i;
            }

            // The vendor drops every pin it holds in the range (twice: it pinned page 0 twice).
            _bed.Vfio.UnpinPages(_m, pfns, pfns.Length);
            _bed.Vfio.UnpinPages(_m, pfns, pfns.Length);
            return NotifyResult.Ok;
        };
        Assert.Equal(Errno.EINVAL, _bed.Vfio.RegisterNotifier(_m, VfioNotifyType.Iommu, (VfioIommuNotifyEvents)2, nb));
        Assert.Equal(Errno.None, _bed.Vfio.RegisterNotifier(_m, VfioNotifyType.Iommu, VfioIommuNotifyEvents.DmaUnmap, nb));

        Assert.Equal(-(int)Errno.E2BIG, _bed.Vfio.PinPages(_m, new ulong[513], 513, IommuProt.Read, new ulong[513]));
        Assert.Equal(-(int)Errno.EINVAL, _bed.Vfio.PinPages(_m, pfn, 0, IommuProt.Read, phys));
        Assert.Equal(-(int)Errno.EINVAL, _bed.Vfio.PinPages(_m, [0x5000], 1, IommuProt.Read, phys)); // no mapping
        Assert.Equal(-(int)Errno.EPERM, _bed.Vfio.PinPages(_m, [(I0 + 0x8000) >> 12], 1, IommuProt.Write, phys)); // READ-only mapping
        Assert.Equal(1, _bed.Vfio.PinPages(_m, pfn, 1, IommuProt.Read | IommuProt.Write, phys));
        Assert.Equal(1, _bed.Vfio.PinPages(_m, pfn, 1, IommuProt.Read, phys));
        Assert.Equal(1, _bed.Proc.LockedVm); // accounted once regardless of the reference count
        Assert.Equal(_bed.Proc.TryTranslate(buf, out ulong cpuPfn) ? cpuPfn : 0, phys[0]);
        Assert.Equal(-(int)Errno.EINVAL, _bed.Vfio.UnpinPages(_m, [0x5000], 1));
        t1.Audit();

        // A physical group joins: the mappings are pinned now and replayed into its domain.
        PciDevice dev = _bed.AddDevice("0000:00:03.0");
        Join(c, dev, out Errno joined);
        Assert.Equal(Errno.None, joined);
        Assert.Equal(4, _bed.Proc.LockedVm); // 3 + 1 pages; the externally pinned page is not charged twice
        var b = new byte[1];
        Assert.True(dev.DmaRead(null, I0 + 0x2000, b).IsOk);
        Assert.Equal(0x62, b[0]);
        t1.Audit();

        var u = new VfioIommuType1DmaUnmap(24, VfioUapi.VFIO_DMA_UNMAP_FLAG_ALL, 0, 0);
        Assert.Equal(Errno.None, c.UnmapDma(ref u));
        Assert.Equal(0x4000UL, u.Size);
        Assert.Equal([new VfioDmaUnmapEvent(I0, 0x3000)], unmapped); // whole mapping, once
        Assert.Equal(0, _bed.Proc.LockedVm);
        Assert.Equal(0, _bed.Pages.TotalPins);
        Assert.Equal(t1.DmaEntryLimit, t1.DmaAvail);
        t1.Audit();
    }

    [Fact]
    public void Pinning_on_a_v1_container_is_eacces()
    {
        (VfioContainer _, _) = ExternalContainer(VfioUapi.VFIO_TYPE1_IOMMU);
        Assert.Equal(-(int)Errno.EACCES, _bed.Vfio.PinPages(_m, [1], 1, IommuProt.Read, new ulong[1]));
    }

    [Fact]
    public void Mappings_made_before_a_physical_group_joins_are_visible_to_it()
    {
        PciDevice d1 = _bed.AddDevice("0000:00:03.0");
        PciDevice d2 = _bed.AddDevice("0000:00:04.0");
        (VfioContainer c, _) = _bed.Std(d1);
        ulong buf = _bed.Buffer(0x20_0000, seed: 0x70);
        Assert.Equal(Errno.None, c.MapDma(Type1Bed.Map(buf, 0x4000_0000, 0x20_0000)));
        Join(c, d2, out Errno e);
        Assert.Equal(Errno.None, e);
        Assert.Single(c.Backend!.Domains); // same ops and prot: the domain is reused
        var b = new byte[1];
        Assert.True(d2.DmaRead(null, 0x4000_0000 + 0x1F_F000, b).IsOk);
        Assert.Equal(unchecked((byte)(0x70 + 0x1FF)), b[0]);
        Assert.Equal(0x200, _bed.Proc.LockedVm);
        c.Backend.Audit();
    }

    [Fact]
    public void A_failure_in_the_middle_of_a_replay_unwinds_fully()
    {
        (VfioContainer c, _) = ExternalContainer();
        ulong good = _bed.Buffer(0x2000);
        ulong doomed = _bed.Buffer(0x2000);
        Assert.Equal(Errno.None, c.MapDma(Type1Bed.Map(good, I0, 0x2000)));
        Assert.Equal(Errno.None, c.MapDma(Type1Bed.Map(doomed, I0 + 0x10000, 0x2000)));
        _bed.Proc.Munmap(doomed + 0x1000, 0x1000); // the second mapping's last page is gone: its pin fails mid-replay

        PciDevice dev = _bed.AddDevice("0000:00:03.0");
        VfioGroup g = Join(c, dev, out Errno e);
        Assert.Equal(Errno.EFAULT, e);
        Assert.Null(g.Container);
        Assert.Equal(0, _bed.Proc.LockedVm);
        Assert.Equal(0, _bed.Pages.TotalPins);
        Assert.Empty(c.Backend!.Domains);
        Assert.All(c.Backend.Mappings, m => Assert.False(m.IommuMapped));
        var b = new byte[1];
        Assert.False(dev.DmaRead(null, I0, b).IsOk); // back on its default domain, where nothing is mapped
        c.Backend.Audit();
    }
}
