using Iommu;
using Iommu.Devices;
using Iommu.Domains;
using Iommu.Mm;
using Mtty;
using Vfio.Mdev;
using Vfio.Mdev.Pinning;
using Vfio.Type1.Tests.Infrastructure;
using Vfio.Type1.Uapi;

namespace Vfio.Type1.Tests;

/// <summary>Audit of the vendor pinning path (vfio_iommu_type1_pin_pages / unpin_pages) against 5.15.</summary>
public sealed class PinningAuditTests : IDisposable
{
    private const ulong I0 = 0x10_0000;
    private readonly Type1Bed _bed = new();
    private readonly MdevDevice _m;

    public PinningAuditTests()
    {
        _m = _bed.AddMttyMdev();
    }

    public void Dispose() => _bed.Dispose();

    private VfioIommuNotifier UnpinningVendor() => (_, ev) =>
    {
        var pfns = new ulong[ev.Size >> 12];
        for (int i = 0; i < pfns.Length; i++)
        {
            pfns[i] = (ev.Iova >> 12) + (ulong)i;
        }

        _bed.Vfio.UnpinPages(_m, pfns, pfns.Length);
        return NotifyResult.Ok;
    };

    private VfioContainer ExternalContainerWithNotifier()
    {
        (VfioContainer c, _) = _bed.Std(_m);
        Assert.Equal(Errno.None, _bed.Vfio.RegisterNotifier(_m, VfioNotifyType.Iommu, VfioIommuNotifyEvents.DmaUnmap, UnpinningVendor()));
        return c;
    }

    // 5.15 vfio_pin_page_external -> vaddr_get_pfns(mm, vaddr, 1, dma->prot, ...): FOLL_WRITE comes from the
    // mapping's prot, not from the vendor's request. A READ pin of a never-touched page of a READ|WRITE
    // mapping therefore breaks COW and pins a private, accounted page (never the shared zero page), and a
    // later WRITE pin of the same IOVA (which only takes another reference on the vpfn) can never hand the
    // vendor the zero page to DMA into.
    [Fact]
    public void Read_pin_of_a_writable_mapping_pins_for_write_and_never_hands_out_the_zero_page()
    {
        VfioContainer c = ExternalContainerWithNotifier();
        ulong va = _bed.Proc.Mmap(0x1000); // never touched
        Assert.Equal(Errno.None, c.MapDma(Type1Bed.Map(va, I0, 0x1000)));
        ulong[] phys = new ulong[1];
        Assert.Equal(1, _bed.Vfio.PinPages(_m, [I0 >> 12], 1, IommuProt.Read, phys));
        Assert.NotEqual(_bed.Pages.ZeroPagePfn, phys[0]);
        Assert.Equal(1, _bed.Proc.LockedVm);

        ulong[] phys2 = new ulong[1];
        Assert.Equal(1, _bed.Vfio.PinPages(_m, [I0 >> 12], 1, IommuProt.Write, phys2));
        Assert.NotEqual(_bed.Pages.ZeroPagePfn, phys2[0]);
        Assert.Equal(phys[0], phys2[0]);

        // The process sees the page the vendor pinned (no later COW moves it away).
        Assert.True(_bed.Proc.TryTranslate(va, out ulong cpuPfn));
        Assert.Equal(phys[0], cpuPfn);
        c.Backend!.Audit();
    }

    // Same rule: a READ|WRITE mapping over read-only memory cannot be pinned at all (FOLL_WRITE on a
    // read-only VMA: -EFAULT), even for a READ request; nothing stays pinned or charged.
    [Fact]
    public void Read_pin_of_a_writable_mapping_over_read_only_memory_is_efault()
    {
        VfioContainer c = ExternalContainerWithNotifier();
        ulong va = _bed.Buffer(0x1000, prot: VmProt.Read);
        Assert.Equal(Errno.None, c.MapDma(Type1Bed.Map(va, I0, 0x1000))); // no IOMMU domain: nothing pinned yet
        ulong[] phys = [0x1234];
        Assert.Equal(-(int)Errno.EFAULT, _bed.Vfio.PinPages(_m, [I0 >> 12], 1, IommuProt.Read, phys));
        Assert.Equal(0UL, phys[0]);
        Assert.Equal(0, _bed.Proc.LockedVm);
        Assert.Equal(0, _bed.Pages.TotalPins);
        c.Backend!.Audit();
    }

    // 5.15 vfio_iommu_type1_unpin_pages: do_accounting = list_empty(&iommu->domain_list) at *unpin* time.
    // A page pinned (and charged) while only the external domain existed stays charged when the vendor
    // unpins it after an IOMMU domain joined: the replay pinned it again for the IOMMU mapping without
    // charging it (vfio_pin_pages_remote skips pages with a vpfn), so the charge now covers that pin.
    [Fact]
    public void Unpin_after_an_iommu_domain_joined_keeps_the_charge_the_iommu_pin_now_needs()
    {
        VfioContainer c = ExternalContainerWithNotifier();
        ulong buf = _bed.Buffer(0x2000);
        Assert.Equal(Errno.None, c.MapDma(Type1Bed.Map(buf, I0, 0x2000)));
        ulong[] phys = new ulong[1];
        Assert.Equal(1, _bed.Vfio.PinPages(_m, [I0 >> 12], 1, IommuProt.Read, phys));
        Assert.Equal(1, _bed.Proc.LockedVm);

        PciDevice dev = _bed.AddDevice("0000:00:03.0");
        _bed.Vfio.OpenGroup(_bed.Proc, dev.IommuGroup!.Id, out VfioGroup? g, out _).ThrowIfError();
        Assert.Equal(Errno.None, g!.SetContainer(c));
        Assert.Equal(2, _bed.Proc.LockedVm); // both pages pinned by the IOMMU mapping, each charged once

        Assert.Equal(1, _bed.Vfio.UnpinPages(_m, [I0 >> 12], 1));
        Assert.Equal(2, _bed.Proc.LockedVm); // 5.15: no accounting while an IOMMU domain exists
        c.Backend!.Audit();

        var u = new VfioIommuType1DmaUnmap(24, VfioUapi.VFIO_DMA_UNMAP_FLAG_ALL, 0, 0);
        Assert.Equal(Errno.None, c.UnmapDma(ref u));
        Assert.Equal(0, _bed.Proc.LockedVm);
        Assert.Equal(0, _bed.Pages.TotalPins);
        c.Backend.Audit();
    }

    // 5.15 pin_unwind: phys_pfn[i] = 0 for the entry that failed as well as for every earlier one.
    [Fact]
    public void A_failed_pin_zeroes_the_failing_entry_of_phys_pfn_too()
    {
        VfioContainer c = ExternalContainerWithNotifier();
        ulong buf = _bed.Buffer(0x1000);
        Assert.Equal(Errno.None, c.MapDma(Type1Bed.Map(buf, I0, 0x1000)));
        ulong[] phys = [0xdead, 0xbeef];
        Assert.Equal(-(int)Errno.EINVAL, _bed.Vfio.PinPages(_m, [I0 >> 12, 0x5], 2, IommuProt.Read, phys));
        Assert.Equal([0UL, 0UL], phys);
        Assert.Equal(0, _bed.Proc.LockedVm);
        Assert.Equal(0, _bed.Pages.TotalPins);
    }

    // 5.15: if ((dma->prot & prot) != prot) return -EPERM — every bit of prot, not only READ/WRITE.
    [Fact]
    public void A_prot_bit_the_mapping_does_not_have_is_eperm()
    {
        VfioContainer c = ExternalContainerWithNotifier();
        ulong buf = _bed.Buffer(0x1000);
        Assert.Equal(Errno.None, c.MapDma(Type1Bed.Map(buf, I0, 0x1000)));
        Assert.Equal(-(int)Errno.EPERM, _bed.Vfio.PinPages(_m, [I0 >> 12], 1, IommuProt.Read | IommuProt.Cache, new ulong[1]));
        Assert.Equal(0, _bed.Pages.TotalPins);
    }

    // 5.15: when the last external group leaves a container without IOMMU domains (and on release),
    // vfio_iommu_unmap_unpin_all -> vfio_remove_dma: WARN_ON(!RB_EMPTY_ROOT(&dma->pfn_list)), and
    // vfio_unmap_unpin returns at once without a domain. Pages a vendor never unpinned stay pinned
    // (and charged): the vendor still holds their pfns, so they must never go back to the allocator.
    [Fact]
    public void Pins_a_vendor_never_dropped_stay_pinned_and_charged_when_the_last_mdev_group_leaves()
    {
        (VfioContainer c, VfioGroup g) = _bed.Std(_m);
        ulong buf = _bed.Buffer(0x1000);
        Assert.Equal(Errno.None, c.MapDma(Type1Bed.Map(buf, I0, 0x1000)));
        VfioIommuNotifier stubborn = (_, _) => NotifyResult.Ok;
        Assert.Equal(Errno.None, _bed.Vfio.RegisterNotifier(_m, VfioNotifyType.Iommu, VfioIommuNotifyEvents.DmaUnmap, stubborn));
        ulong[] phys = new ulong[1];
        Assert.Equal(1, _bed.Vfio.PinPages(_m, [I0 >> 12], 1, IommuProt.Read | IommuProt.Write, phys));
        Assert.Equal(1, _bed.Proc.LockedVm);

        Assert.Equal(Errno.None, g.UnsetContainer());
        Assert.True(_bed.Pages.PinCount(phys[0]) > 0, "the vendor's page was unpinned behind its back");
        Assert.Equal(1, _bed.Proc.LockedVm); // 5.15 never uncharges it

        // The process frees its memory: the pinned page does not go back to the allocator.
        _bed.Proc.Munmap(buf, 0x1000);
        Assert.True(_bed.Pages.PinCount(phys[0]) > 0);
    }

    // With an IOMMU domain the leftover vpfn's page is uncharged with the IOMMU pins (vfio_unmap_unpin's
    // unlocked counts it), but the vendor's own pin is still never dropped.
    [Fact]
    public void Pins_a_vendor_never_dropped_stay_pinned_when_the_last_iommu_group_takes_the_mappings_away()
    {
        PciDevice dev = _bed.AddDevice("0000:00:03.0");
        (VfioContainer c, VfioGroup pg) = _bed.Std(dev);
        _bed.Vfio.OpenGroup(_bed.Proc, _m.IommuGroup!.Id, out VfioGroup? mg, out _).ThrowIfError();
        Assert.Equal(Errno.None, mg!.SetContainer(c));
        ulong buf = _bed.Buffer(0x2000);
        Assert.Equal(Errno.None, c.MapDma(Type1Bed.Map(buf, I0, 0x2000)));
        Assert.Equal(2, _bed.Proc.LockedVm);
        VfioIommuNotifier stubborn = (_, _) => NotifyResult.Ok;
        Assert.Equal(Errno.None, _bed.Vfio.RegisterNotifier(_m, VfioNotifyType.Iommu, VfioIommuNotifyEvents.DmaUnmap, stubborn));
        ulong[] phys = new ulong[1];
        Assert.Equal(1, _bed.Vfio.PinPages(_m, [I0 >> 12], 1, IommuProt.Read, phys));
        Assert.Equal(2, _bed.Proc.LockedVm);

        Assert.Equal(Errno.None, mg.UnsetContainer()); // external domain goes; the IOMMU domain keeps the mappings
        Assert.Equal(Errno.None, pg.UnsetContainer()); // last group: vfio_iommu_unmap_unpin_all
        Assert.Equal(0, _bed.Proc.LockedVm);
        Assert.True(_bed.Pages.PinCount(phys[0]) > 0, "the vendor's page was unpinned behind its back");
    }

    // An npage larger than physPfns pinned the pages, then threw IndexOutOfRangeException while storing a
    // pfn: the vendor got an exception and the pages stayed pinned and charged with no way to unpin them.
    [Fact]
    public void An_npage_beyond_the_arrays_is_einval_before_anything_is_pinned()
    {
        VfioContainer c = ExternalContainerWithNotifier();
        ulong buf = _bed.Buffer(0x2000);
        Assert.Equal(Errno.None, c.MapDma(Type1Bed.Map(buf, I0, 0x2000)));
        Assert.Equal(-(int)Errno.EINVAL, _bed.Vfio.PinPages(_m, [I0 >> 12, (I0 >> 12) + 1], 2, IommuProt.Read, new ulong[1]));
        Assert.Equal(-(int)Errno.EINVAL, _bed.Vfio.PinPages(_m, [I0 >> 12], 2, IommuProt.Read, new ulong[2]));
        Assert.Equal(0, _bed.Pages.TotalPins);
        Assert.Equal(0, _bed.Proc.LockedVm);
        Assert.Equal(0, c.Backend!.Mappings[0].ExternalPinCount);
        Assert.Equal(-(int)Errno.EINVAL, _bed.Vfio.UnpinPages(_m, [I0 >> 12], 2));
    }

    // 5.15 vfio_unregister_notifier -> blocking_notifier_chain_unregister: -ENOENT when not registered.
    [Fact]
    public void Unregistering_a_notifier_that_is_not_registered_is_enoent()
    {
        (VfioContainer _, _) = _bed.Std(_m);
        VfioIommuNotifier nb = (_, _) => NotifyResult.Ok;
        Assert.Equal(Errno.ENOENT, _bed.Vfio.UnregisterNotifier(_m, VfioNotifyType.Iommu, nb));
        Assert.Equal(Errno.None, _bed.Vfio.RegisterNotifier(_m, VfioNotifyType.Iommu, VfioIommuNotifyEvents.DmaUnmap, nb));
        Assert.Equal(Errno.None, _bed.Vfio.UnregisterNotifier(_m, VfioNotifyType.Iommu, nb));
        Assert.Equal(Errno.ENOENT, _bed.Vfio.UnregisterNotifier(_m, VfioNotifyType.Iommu, nb));
    }

    // 5.15 vfio_pin_pages tests !npage only; type1's loop then runs no iteration and returns i = 0.
    // vfio_unpin_pages likewise, but type1's unpin refuses npage <= 0 (-EINVAL).
    [Fact]
    public void A_negative_npage_pins_nothing_and_returns_0_while_unpin_is_einval()
    {
        VfioContainer c = ExternalContainerWithNotifier();
        Assert.Equal(0, _bed.Vfio.PinPages(_m, [I0 >> 12], -1, IommuProt.Read, new ulong[1]));
        Assert.Equal(-(int)Errno.EINVAL, _bed.Vfio.UnpinPages(_m, [I0 >> 12], -1));
        Assert.Equal(0, _bed.Pages.TotalPins);
        c.Backend!.Audit();
    }
}
