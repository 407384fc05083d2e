using Iommu.Mm;
using Iommu.Reliability.Tests.Infrastructure;
using Vfio.Type1;
using Iommu.Tests.Shared;

namespace Iommu.Reliability.Tests.Chaos;

/// <summary>Findings of the chaos property, shrunk to the calls that show them.</summary>
public sealed class ChaosRegressionTests
{
    // Chaos: Exit, ContainerOpen. Opening /dev/vfio/vfio in an exited process throws; the docs must say so, as
    // OpenGroup's and GetDeviceFd's do.
    [Fact]
    public void OpenContainer_in_an_exited_process_throws_what_its_docs_list()
    {
        using var bed = new BadInputBed();
        var mm = new ProcessAddressSpace(bed.Pages, "gone");
        mm.Exit();
        InvalidOperationException e = Assert.Throws<InvalidOperationException>(() => bed.Vfio.OpenContainer(mm, out _));
        Assert.True(DocumentedExceptions.Allows("Vfio.Type1.VfioCore.OpenContainer", e), "VfioCore.OpenContainer's XML docs do not list InvalidOperationException");
    }

    // Chaos: DomainAlloc, DomainFree, IovaToPhys. A freed domain's iova_to_phys throws; the docs must say so.
    [Fact]
    public void IovaToPhys_of_a_freed_domain_throws_what_its_docs_list()
    {
        using var bed = new BadInputBed();
        Iommu.Domains.IDomain d = bed.Iommu.DomainAlloc(bed.Pci)!;
        bed.Iommu.DomainFree(d);
        ObjectDisposedException e = Assert.Throws<ObjectDisposedException>(() => bed.Iommu.IovaToPhys(d, 0x1000));
        Assert.True(DocumentedExceptions.Allows("Iommu.IommuCore.IovaToPhys", e), "IommuCore.IovaToPhys's XML docs do not list ObjectDisposedException");
    }

    // Chaos: DomainAlloc, DomainFree, UnmapFast. iommu_unmap_fast, iommu_iotlb_sync and iommu_flush_iotlb_all on a freed
    // domain throw ObjectDisposedException like iommu_unmap (the same domain-use scope); their docs must say so.
    [Fact]
    public void UnmapFast_IotlbSync_and_FlushIotlbAll_of_a_freed_domain_throw_what_their_docs_list()
    {
        using var bed = new BadInputBed();
        Iommu.Domains.IDomain d = bed.Iommu.DomainAlloc(bed.Pci)!;
        bed.Iommu.DomainFree(d);
        var gather = default(IommuIotlbGather);
        ObjectDisposedException e = Assert.Throws<ObjectDisposedException>(() => bed.Iommu.UnmapFast(d, 0x1000, 0x1000, ref gather));
        Assert.True(DocumentedExceptions.Allows("Iommu.IommuCore.UnmapFast", e), "IommuCore.UnmapFast's XML docs do not list ObjectDisposedException");
        e = Assert.Throws<ObjectDisposedException>(() => bed.Iommu.IotlbSync(d, ref gather));
        Assert.True(DocumentedExceptions.Allows("Iommu.IommuCore.IotlbSync", e), "IommuCore.IotlbSync's XML docs do not list ObjectDisposedException");
        e = Assert.Throws<ObjectDisposedException>(() => bed.Iommu.FlushIotlbAll(d));
        Assert.True(DocumentedExceptions.Allows("Iommu.IommuCore.FlushIotlbAll", e), "IommuCore.FlushIotlbAll's XML docs do not list ObjectDisposedException");
    }

    // Chaos (seed 7, 500k ops): VendorSetup, MdevCreate, VendorSetup, GroupUnset, UnmapDma. The mdev files were opened with
    // MdevDevice.Open, outside VFIO, so the group's UNSET_CONTAINER saw no open device and succeeded; the mtty vendor then
    // could not unpin from its DMA-unmap notifier (its group has no container), and UNMAP_DMA gave up after the
    // notifications 5.15 sends before its BUG_ON, throwing an InvalidOperationException its docs did not list. The docs
    // list it now, and the property no longer unsets a group the kernel would refuse to (its mdev file is open).
    [Fact]
    public void A_group_with_an_mdev_open_outside_vfio_is_not_unset_and_unmap_dma_stays_clean()
    {
        ChaosConfig config = ChaosConfig.All.First(c => c.Name == "legacy-2units-dmafq");
        using var bed = new ChaosBed(config, []);
        bed.Run([new(ChaosKind.VendorSetup, 30, 30, 22), new(ChaosKind.MdevCreate, 37, 2, 61), new(ChaosKind.VendorSetup, 5, 28, 27), new(ChaosKind.GroupUnset, 39, 4, 36), new(ChaosKind.UnmapDma, 6, 33, 30)]);
    }

    // Chaos (seed 7, 500k ops): DmaAllocCoherent, DmaMove, DmaAllocCoherent, DmaFreeCoherent. A device's stale streaming
    // unmap after it moved groups (its old domain freed) went to its new domain and took the coherent buffer another
    // device had at the same IOVA there; the next dma_alloc_coherent got that IOVA again. Freeing the first buffer then
    // unmapped the second one's mapping: dma_free_coherent unmapped whatever was live at the handle. It must unmap only
    // a mapping of its own pages.
    [Fact]
    public void Dma_free_coherent_never_unmaps_a_newer_buffer_that_reused_its_iova()
    {
        ChaosConfig config = ChaosConfig.All.First(c => c.Name == "fl-1unit-dma-515");
        using var bed = new ChaosBed(config, []);
        bed.Run([new(ChaosKind.DmaAllocCoherent, 55, 2, 22), new(ChaosKind.DmaMove, 57, 19, 51), new(ChaosKind.DmaAllocCoherent, 49, 0, 8), new(ChaosKind.DmaFreeCoherent, 1, 16, 11)]);
    }

    // Chaos: GroupAdd of a device already in a group. iommu_group_add_device refuses it (InvalidOperationException;
    // 5.15 would overwrite dev->iommu_group and corrupt both groups' lists), as it refuses a released group: the docs
    // must say so.
    [Fact]
    public void GroupAddDevice_of_a_device_already_in_a_group_throws_what_its_docs_list()
    {
        using var bed = new BadInputBed();
        InvalidOperationException e = Assert.Throws<InvalidOperationException>(() => bed.Iommu.GroupAddDevice(bed.Dev2.IommuGroup!, bed.Dev));
        Assert.True(DocumentedExceptions.Allows("Iommu.IommuCore.GroupAddDevice", e), "IommuCore.GroupAddDevice's XML docs do not list InvalidOperationException");
        Assert.True(bed.Dev.IommuGroup!.Devices.Contains(bed.Dev) && !bed.Dev2.IommuGroup!.Devices.Contains(bed.Dev), "the refused add changed a group");
    }

    // Chaos: VfioRegister, ContainerOpen, Spawn, GroupOpen (p1), Exit (p1), GroupSetContainer, SetIommu: after the group
    // file was released, SET_CONTAINER on the group object succeeded and nothing could ever unset it — the group could not
    // be opened again (-EBUSY) and the container's domain leaked at teardown. The kernel's ioctl needs the open file.
    [Fact]
    public void SetContainer_on_a_group_whose_file_is_closed_is_ebadf_and_the_group_can_be_reopened()
    {
        using var bed = new BadInputBed();
        VfioGroup g = bed.Group();
        VfioContainer c = bed.Vfio.OpenContainer(bed.Proc, out _);
        Assert.Equal(Errno.None, g.Close());

        Assert.Equal(Errno.EBADF, g.SetContainer(c));
        Assert.Null(g.Container);
        Assert.Equal(Errno.None, bed.Vfio.OpenGroup(bed.Proc, bed.Dev.IommuGroup!.Id, out VfioGroup? again, out _));
        Assert.Same(g, again);
    }

    // Chaos: DomainAlloc, Attach (dev3), Map 4K 0x4000_1000 -> 0x1000_1000, Map 2M 0x4000_0000 -> 0x2000_0000. The 2M
    // leaf replaces the 4K table (iova_to_phys says 0x2000_1000) but the unit still answers from the 4K IOTLB entry.
    // 5.15 switch_to_super_page (drivers/iommu/intel/iommu.c:2335) frees the old tables and calls iommu_flush_iotlb_psi
    // for the range on every unit of the domain; DmaPageTable.Map replaced the table without a flush (fixed: IntelIommu.MapSuperpages).
    [Fact]
    public void Superpage_over_a_live_4K_mapping_flushes_the_old_translation()
    {
        using var bed = new BadInputBed();
        Iommu.Domains.IDomain d = bed.Iommu.DomainAlloc(bed.Pci)!;
        Assert.Equal(Errno.None, bed.Iommu.AttachDevice(d, bed.Dev2));
        Assert.Equal(Errno.None, bed.Iommu.Map(d, 0x4000_1000, 0x1000_1000, 0x1000, Iommu.Domains.IommuProt.Read | Iommu.Domains.IommuProt.Write));
        Span<byte> b = stackalloc byte[8];
        Assert.True(bed.Dev2.DmaRead(null, 0x4000_1000, b).IsOk); // the 4K translation is cached now
        Assert.Equal(Errno.None, bed.Iommu.Map(d, 0x4000_0000, 0x2000_0000, 2 * Sizes.MiB, Iommu.Domains.IommuProt.Read | Iommu.Domains.IommuProt.Write));
        ulong pa = bed.Iommu.IovaToPhys(d, 0x4000_1000);
        Iommu.Devices.DmaResult r = bed.Dev2.DmaRead(null, 0x4000_1000, b);
        Assert.True(r.IsOk);
        Assert.Equal(pa, r.Address);
    }

    // Chaos: DmaMapSg (dev A), DmaAllocCoherent (dev B), DmaUnmapSg of A's list through B. Both default domains hand out the
    // same top IOVA, so B's dma_unmap_sg unmaps B's coherent buffer (as the kernel would). dma_free_coherent of that buffer
    // then threw after forgetting it, and its pages were never given back. 5.15 iommu_dma_free -> __iommu_dma_unmap only
    // WARNs when nothing is unmapped and frees the pages all the same (drivers/iommu/dma-iommu.c __iommu_dma_free).
    [Fact]
    public void DmaFreeCoherent_after_a_misdirected_unmap_took_its_iova_still_gives_the_pages_back()
    {
        using var bed = new BadInputBed();
        long before = bed.Platform.Frames.LiveFrames;
        Iommu.Scatterlist[] sg = [new Iommu.Scatterlist(0x1030_0000, 0x1000)];
        Assert.Equal(1, bed.Iommu.DmaMapSg(bed.Dev, sg, Iommu.DmaDataDirection.Bidirectional));
        ulong cpu = bed.Iommu.DmaAllocCoherent(bed.Dev2, 0x1000, out ulong handle);
        Assert.NotEqual(0UL, cpu);
        Assert.Equal(sg[0].DmaAddress, handle); // the two domains' allocators agree, which is what makes the unmap land
        long withBuffer = bed.Platform.Frames.LiveFrames;
        bed.Iommu.DmaUnmapSg(bed.Dev2, sg, Iommu.DmaDataDirection.Bidirectional);

        bed.Iommu.DmaFreeCoherent(bed.Dev2, 0x1000, cpu, handle);
        Assert.True(bed.Platform.Frames.LiveFrames < withBuffer, "the coherent buffer's page was not given back");
        Assert.Throws<ArgumentException>(() => bed.Iommu.DmaFreeCoherent(bed.Dev2, 0x1000, cpu, handle)); // and it is gone
        bed.Iommu.DmaUnmapSg(bed.Dev, sg, Iommu.DmaDataDirection.Bidirectional);
        Assert.True(bed.Platform.Frames.LiveFrames >= before);
    }

    // Chaos (seed 9, 500k ops): an iommu_attach_group of an unmanaged domain to the bridge's group failed part way, which
    // left 02:01.0 attached to it in the driver (5.15 does not unwind) and so the bridge alias's context entry on it.
    // 02:02.0, which shares that requester ID, left its group and came back: iommu_group_add_device attaches it to the
    // group's DMA domain, and domain_context_mapping_one leaves the present alias entry alone, so its DMA goes through
    // the unmanaged domain, as in 5.15. The oracle has to allow the domain of any device sharing the ID, in a group or not.
    [Fact]
    public void A_device_back_in_a_group_whose_alias_mate_a_failed_group_attach_left_elsewhere_reaches_only_their_domains()
    {
        ChaosConfig config = ChaosConfig.All.First(c => c.Name == "scalable-2units-dma");
        using var bed = new ChaosBed(config, []);
        bed.Run([new(ChaosKind.DomainAlloc, 63, 21, 7), new(ChaosKind.GroupRemove, 47, 20, 17), new(ChaosKind.DmaMove, 21, 49, 4), new(ChaosKind.MdevCreate, 26, 54, 22), new(ChaosKind.Map, 1, 31, 31), new(ChaosKind.GroupAttach, 46, 34, 62), new(ChaosKind.GroupAdd, 47, 54, 22)]);
    }

    // Chaos (seed 14, 500k ops): 02:02.0 left its group still attached to an unmanaged domain, and 02:01.0, which shares
    // its requester ID behind the bridge, was hot-removed and probed again. iommu_domain_free of that domain takes
    // 02:02.0 down (domain_exit, dmar_remove_one_dev_info), and domain_context_clear clears every DMA alias, so the new
    // 02:01.0's DMA faults with the context entry not present, as in 5.15. The oracle must expect that, as on a removal.
    [Fact]
    public void Freeing_a_domain_a_device_behind_the_bridge_still_holds_clears_the_shared_requester_id()
    {
        ChaosConfig config = ChaosConfig.All.First(c => c.Name == "fl-1unit-dma-515");
        using var bed = new ChaosBed(config, []);
        bed.Run([new(ChaosKind.DomainAlloc, 3, 50, 4), new(ChaosKind.GroupAttach, 23, 22, 42), new(ChaosKind.HotRemove, 34, 50, 13), new(ChaosKind.DmaMove, 5, 59, 41), new(ChaosKind.GroupRemove, 16, 51, 0), new(ChaosKind.GroupDetach, 57, 41, 0), new(ChaosKind.DmaMap, 44, 43, 28), new(ChaosKind.DomainFree, 1, 57, 57)]);
    }

    // Chaos (seed 19, 500k ops): the same clear from inside VFIO. 02:02.0 left the bridge's group while the group was
    // attached to the container's domain; closing the group detaches the group (02:01.0 goes back to its DMA domain) and
    // frees the container's domain, which takes 02:02.0 down and clears the bridge's requester ID under 02:01.0.
    [Fact]
    public void Closing_a_vfio_group_whose_domain_a_device_behind_the_bridge_still_holds_clears_the_shared_requester_id()
    {
        ChaosConfig config = ChaosConfig.All.First(c => c.Name == "scalable-2units-dma");
        using var bed = new ChaosBed(config, []);
        bed.Run([new(ChaosKind.VfioRegister, 31, 55, 55), new(ChaosKind.VendorSetup, 54, 27, 57), new(ChaosKind.GroupOpen, 7, 18, 25), new(ChaosKind.GroupSetContainer, 19, 35, 45), new(ChaosKind.DmaAllocCoherent, 46, 34, 20), new(ChaosKind.DmaMove, 55, 48, 30), new(ChaosKind.GroupClose, 51, 23, 58)]);
    }

    // Chaos (seed 28, 500k ops): two mdevs in one container each pinned a page; one's file was closed and its group
    // unset from the container, while its DMA-unmap notifier stayed on the container's IOMMU. UNMAP_DMA of its page
    // notifies it, its vfio_unpin_pages is -EINVAL (the group has no container), so the page stays pinned and the unmap
    // gives up (5.15's BUG_ON). The oracle counted the pin as gone; it must count only the unpins that succeeded.
    [Fact]
    public void A_vendor_unpin_refused_after_its_group_left_the_container_keeps_the_page_pinned()
    {
        ChaosConfig config = ChaosConfig.All.First(c => c.Name == "legacy-1unit-dma");
        using var bed = new ChaosBed(config, []);
        bed.Run([new(ChaosKind.VendorSetup, 48, 59, 13), new(ChaosKind.MdevCreate, 54, 49, 27), new(ChaosKind.VendorSetup, 3, 41, 2), new(ChaosKind.MdevClose, 6, 8, 61), new(ChaosKind.GroupUnset, 53, 58, 53), new(ChaosKind.UnmapDma, 55, 6, 58)]);
    }

    // Chaos (seed 33, 500k ops): 02:01.0 left the bridge's group still attached to an unmanaged domain, and the group
    // went back to its DMA_FQ default domain, which re-programs the bridge's requester ID; so 02:01.0's DMA goes through
    // that domain. A coherent buffer freed there is reached at its old page until the flush queue drains (the deferred
    // window 5.15 defines): the oracle allowed that window only for the device's own domain, not for a shared ID's.
    [Fact]
    public void A_device_on_a_shared_requester_id_may_reach_a_dma_fq_page_until_the_flush_queue_drains()
    {
        ChaosConfig config = ChaosConfig.All.First(c => c.Name == "scalable-1unit-dmafq");
        using var bed = new ChaosBed(config, []);
        bed.Run([new(ChaosKind.DomainAlloc, 34, 13, 61), new(ChaosKind.GroupAttach, 46, 52, 18), new(ChaosKind.GroupRemove, 38, 5, 33), new(ChaosKind.GroupDetach, 37, 15, 24), new(ChaosKind.DmaAllocCoherent, 15, 19, 38), new(ChaosKind.DmaFreeCoherent, 9, 8, 38)]);
    }
}
