using Iommu;
using Iommu.Devices;
using Iommu.Domains;
using Mtty;
using Vfio.Mdev;
using Vfio.Mdev.Pinning;
using Vfio.Type1.Tests.Infrastructure;
using Vfio.Type1.Uapi;

namespace Vfio.Type1.Tests;

/// <summary>
/// 5.15 behaviours of the vendor pinning path: vfio_pin_pages waiting for an invalidated vaddr (§4.9),
/// the DMA-unmap notifier retry limit (§4.7), and dirty reporting in pinned-page scope (§4.10).
/// </summary>
public sealed class PinningWaitRetryAndDirtyScopeTests : IDisposable
{
    private const ulong I0 = 0x10_0000;

    // Bounded waits only: long enough never to be the reason a correct run fails.
    private static readonly TimeSpan Released = TimeSpan.FromSeconds(30);
    private static readonly TimeSpan StillBlocked = TimeSpan.FromMilliseconds(200);

    private readonly Type1Bed _bed = new();
    private readonly MdevDevice _m;

    public PinningWaitRetryAndDirtyScopeTests()
    {
        _m = _bed.AddMttyMdev();
    }

    public void Dispose() => _bed.Dispose();

    /// <summary>A vendor that drops every pin in the notified range.</summary>
    private VfioIommuNotifier UnpinningVendor(Device dev, List<VfioDmaUnmapEvent>? seen = null) => (_, ev) =>
    {
        seen?.Add(ev);
        var pfns = new ulong[ev.Size >> 12];
        for (int i = 0; i < pfns.Length; i++)
        {
            pfns[i] = (ev.Iova >> 12) + (ulong)i;
        }

        _bed.Vfio.UnpinPages(dev, pfns, pfns.Length);
        return NotifyResult.Ok;
    };

    private (VfioContainer C, ulong Old, ulong New) InvalidatedExternalMapping()
    {
        (VfioContainer c, _) = _bed.Std(_m);
        ulong old = _bed.Buffer(0x2000, seed: 0x10);
        ulong nu = _bed.Buffer(0x2000, seed: 0x70);
        Assert.Equal(Errno.None, c.MapDma(Type1Bed.Map(old, I0, 0x2000)));
        Assert.Equal(Errno.None, _bed.Vfio.RegisterNotifier(_m, VfioNotifyType.Iommu, VfioIommuNotifyEvents.DmaUnmap, UnpinningVendor(_m)));
        var u = new VfioIommuType1DmaUnmap(24, VfioUapi.VFIO_DMA_UNMAP_FLAG_VADDR, I0, 0x2000);
        Assert.Equal(Errno.None, c.UnmapDma(ref u));
        Assert.Equal(0x2000UL, u.Size);
        return (c, old, nu);
    }

    /// <summary>Bounded check that the task has not completed (a correct library keeps it blocked indefinitely).</summary>
    private static async Task AssertStillBlocked(Task<int> pin)
    {
        Task first = await Task.WhenAny(pin, Task.Delay(StillBlocked));
        Assert.False(ReferenceEquals(first, pin), "vfio_pin_pages returned while the mapping's vaddr was invalid");
    }

    private byte FirstByteOfPfn(ulong pfn)
    {
        var b = new byte[1];
        _bed.Pages.Memory.Read(pfn << 12, b);
        return b[0];
    }

    [Fact]
    public async Task Pin_of_an_invalidated_vaddr_blocks_until_MAP_VADDR_and_then_pins_from_the_new_vaddr()
    {
        (VfioContainer c, _, ulong nu) = InvalidatedExternalMapping();

        // With a vaddr invalid, every requested IOVA is looked up first: no mapping → -EINVAL at once.
        Assert.Equal(-(int)Errno.EINVAL, _bed.Vfio.PinPages(_m, [0x5000], 1, IommuProt.Read, new ulong[1]));

        var phys = new ulong[1];
        Task<int> pin = Task.Run(() => _bed.Vfio.PinPages(_m, [(I0 >> 12) + 1], 1, IommuProt.Read | IommuProt.Write, phys));
        await AssertStillBlocked(pin);
        Assert.Equal(0, _bed.Proc.LockedVm);

        // MAP(VADDR) restores the vaddr and wakes the waiter (the type1 lock is not held while waiting).
        Assert.Equal(Errno.None, c.MapDma(new VfioIommuType1DmaMap(32, VfioUapi.VFIO_DMA_MAP_FLAG_VADDR, nu, I0, 0x2000)));
        Assert.Equal(1, await pin.WaitAsync(Released));
        Assert.Equal(0x71, FirstByteOfPfn(phys[0])); // page 1 of the new buffer
        Assert.Equal(1, _bed.Proc.LockedVm);         // external-only container: the pin is accounted
        Assert.Equal(1, c.Backend!.Mappings[0].ExternalPinCount);
    }

    [Fact]
    public async Task Pin_waiting_on_an_invalidated_vaddr_fails_efault_when_the_container_is_closed()
    {
        (VfioContainer c, _, _) = InvalidatedExternalMapping();
        Task<int> pin = Task.Run(() => _bed.Vfio.PinPages(_m, [I0 >> 12], 1, IommuProt.Read, new ulong[1]));
        await AssertStillBlocked(pin);

        // The group keeps the container alive; type1 only learns that the fd closed, which fails the waiters.
        Assert.Equal(Errno.None, c.Close());
        Assert.Equal(-(int)Errno.EFAULT, await pin.WaitAsync(Released));
        Assert.Single(c.Backend!.Mappings);
        Assert.Equal(0, c.Backend.Mappings[0].ExternalPinCount);
        Assert.Equal(0, _bed.Pages.TotalPins);
    }

    [Fact]
    public async Task Pin_waiting_on_an_invalidated_vaddr_fails_einval_when_the_mapping_is_unmapped()
    {
        (VfioContainer c, _, _) = InvalidatedExternalMapping();
        Task<int> pin = Task.Run(() => _bed.Vfio.PinPages(_m, [I0 >> 12], 1, IommuProt.Read, new ulong[1]));
        await AssertStillBlocked(pin);

        var u = new VfioIommuType1DmaUnmap(24, 0, I0, 0x2000); // a plain UNMAP removes an invalidated mapping
        Assert.Equal(Errno.None, c.UnmapDma(ref u));
        Assert.Equal(0x2000UL, u.Size);
        Assert.Equal(-(int)Errno.EINVAL, await pin.WaitAsync(Released)); // re-checked: no mapping any more
    }

    [Fact]
    public async Task After_a_wakeup_every_requested_iova_is_looked_up_again()
    {
        (VfioContainer c, _) = _bed.Std(_m);
        ulong a = _bed.Buffer(0x1000, seed: 0x10), b = _bed.Buffer(0x1000, seed: 0x20), a2 = _bed.Buffer(0x1000, seed: 0x30);
        Assert.Equal(Errno.None, c.MapDma(Type1Bed.Map(a, I0, 0x1000)));
        Assert.Equal(Errno.None, c.MapDma(Type1Bed.Map(b, I0 + 0x1000, 0x1000)));
        Assert.Equal(Errno.None, _bed.Vfio.RegisterNotifier(_m, VfioNotifyType.Iommu, VfioIommuNotifyEvents.DmaUnmap, UnpinningVendor(_m)));
        var u = new VfioIommuType1DmaUnmap(24, VfioUapi.VFIO_DMA_UNMAP_FLAG_VADDR, I0 + 0x1000, 0x1000);
        Assert.Equal(Errno.None, c.UnmapDma(ref u));

        var phys = new ulong[2];
        Task<int> pin = Task.Run(() => _bed.Vfio.PinPages(_m, [I0 >> 12, (I0 >> 12) + 1], 2, IommuProt.Read, phys));
        await AssertStillBlocked(pin); // waits on the second IOVA

        // While it waits, the first mapping is invalidated and the second restored: 5.15 starts the lookup over
        // (goto again) and waits on the first one now instead of pinning from its invalid vaddr.
        u = new VfioIommuType1DmaUnmap(24, VfioUapi.VFIO_DMA_UNMAP_FLAG_VADDR, I0, 0x1000);
        Assert.Equal(Errno.None, c.UnmapDma(ref u));
        Assert.Equal(Errno.None, c.MapDma(new VfioIommuType1DmaMap(32, VfioUapi.VFIO_DMA_MAP_FLAG_VADDR, b, I0 + 0x1000, 0x1000)));
        await AssertStillBlocked(pin);
        Assert.Equal(Errno.None, c.MapDma(new VfioIommuType1DmaMap(32, VfioUapi.VFIO_DMA_MAP_FLAG_VADDR, a2, I0, 0x1000)));
        Assert.Equal(2, await pin.WaitAsync(Released));
        Assert.Equal(0x30, FirstByteOfPfn(phys[0])); // pinned from the restored vaddr
        Assert.Equal(0x20, FirstByteOfPfn(phys[1]));
    }

    [Fact]
    public void A_vendor_that_never_unpins_is_notified_once_plus_ten_retries_then_the_unmap_hits_the_5_15_BUG_ON()
    {
        (VfioContainer c, _) = _bed.Std(_m);
        ulong buf = _bed.Buffer(0x3000);
        Assert.Equal(Errno.None, c.MapDma(Type1Bed.Map(buf, I0, 0x3000)));
        var seen = new List<VfioDmaUnmapEvent>();
        VfioIommuNotifier stubborn = (_, ev) =>
        {
            seen.Add(ev);
            return NotifyResult.Ok; // never unpins
        };
        Assert.Equal(Errno.None, _bed.Vfio.RegisterNotifier(_m, VfioNotifyType.Iommu, VfioIommuNotifyEvents.DmaUnmap, stubborn));
        Assert.Equal(1, _bed.Vfio.PinPages(_m, [(I0 >> 12) + 2], 1, IommuProt.Read, new ulong[1]));

        // 5.15: retries = 0 at the first notification, BUG_ON(++retries > 10) at each later one on the same mapping.
        var u = new VfioIommuType1DmaUnmap(24, 0, I0, 0x3000);
        Assert.Throws<InvalidOperationException>(() => c.UnmapDma(ref u));
        Assert.Equal(11, seen.Count);
        Assert.All(seen, ev => Assert.Equal(new VfioDmaUnmapEvent(I0, 0x3000), ev)); // always the whole mapping
        Assert.Single(c.Backend!.Mappings);
        Assert.Equal(1, c.Backend.Mappings[0].ExternalPinCount);
    }

    [Fact]
    public void A_vendor_that_unpins_on_the_last_allowed_retry_lets_the_unmap_complete()
    {
        (VfioContainer c, _) = _bed.Std(_m);
        ulong buf = _bed.Buffer(0x1000);
        Assert.Equal(Errno.None, c.MapDma(Type1Bed.Map(buf, I0, 0x1000)));
        int calls = 0;
        VfioIommuNotifier late = (_, ev) =>
        {
            if (++calls == 11)
            {
                _bed.Vfio.UnpinPages(_m, [ev.Iova >> 12], 1);
            }

            return NotifyResult.Ok;
        };
        Assert.Equal(Errno.None, _bed.Vfio.RegisterNotifier(_m, VfioNotifyType.Iommu, VfioIommuNotifyEvents.DmaUnmap, late));
        Assert.Equal(1, _bed.Vfio.PinPages(_m, [I0 >> 12], 1, IommuProt.Read, new ulong[1]));
        var u = new VfioIommuType1DmaUnmap(24, 0, I0, 0x1000);
        Assert.Equal(Errno.None, c.UnmapDma(ref u));
        Assert.Equal(0x1000UL, u.Size);
        Assert.Equal(11, calls);
        Assert.Empty(c.Backend!.Mappings);
        Assert.Equal(0, _bed.Proc.LockedVm);
    }

    private List<int> DirtyBits(VfioContainer c, ulong size)
    {
        ulong bm = _bed.Proc.Mmap(0x1000);
        Assert.Equal(Errno.None, c.GetDirtyBitmap(I0, size, new VfioBitmap(0x1000, 8, bm)));
        var data = new byte[8];
        _bed.Proc.Read(bm, data).ThrowIfError();
        ulong w = BitConverter.ToUInt64(data);
        return [.. Enumerable.Range(0, 64).Where(i => ((w >> i) & 1) != 0)];
    }

    [Fact]
    public void Iommu_backed_group_promoted_by_pinning_reports_only_pinned_pages_dirty()
    {
        PciDevice dev = _bed.AddDevice("0000:00:04.0");
        (VfioContainer c, _) = _bed.Std(dev);
        ulong buf = _bed.Buffer(0x8000);
        Assert.Equal(Errno.None, c.MapDma(Type1Bed.Map(buf, I0, 0x8000)));
        Assert.Equal(Errno.None, c.DirtyPages(VfioUapi.VFIO_IOMMU_DIRTY_PAGES_FLAG_START));
        Assert.Equal(1, c.Backend!.NumNonPinnedGroups);
        Assert.Equal([0, 1, 2, 3, 4, 5, 6, 7], DirtyBits(c, 0x8000)); // not in scope: everything mapped is dirty

        Assert.Equal(Errno.None, _bed.Vfio.RegisterNotifier(dev, VfioNotifyType.Iommu, VfioIommuNotifyEvents.DmaUnmap, UnpinningVendor(dev)));
        Assert.Equal(2, _bed.Vfio.PinPages(dev, [(I0 >> 12) + 2, (I0 >> 12) + 5], 2, IommuProt.Read | IommuProt.Write, new ulong[2]));
        Assert.Equal(0, c.Backend.NumNonPinnedGroups); // the only group promoted itself: pinned-page scope
        Assert.Equal(8, _bed.Proc.LockedVm);          // IOMMU-backed: the pins are not accounted again

        Assert.Equal([2, 5], DirtyBits(c, 0x8000));
        Assert.Equal([2, 5], DirtyBits(c, 0x8000)); // pinned pages are reported on every query
        Assert.Equal(1, _bed.Vfio.UnpinPages(dev, [(I0 >> 12) + 5], 1));
        Assert.Equal([2, 5], DirtyBits(c, 0x8000)); // page 5 was dirtied (pinned) since the last query
        Assert.Equal([2], DirtyBits(c, 0x8000));

        // Unpinning does not demote the group: scope stays pinned-page.
        Assert.Equal(1, _bed.Vfio.UnpinPages(dev, [(I0 >> 12) + 2], 1));
        Assert.Equal([2], DirtyBits(c, 0x8000));
        Assert.Equal([], DirtyBits(c, 0x8000));
        Assert.Equal(0, c.Backend.NumNonPinnedGroups);
    }

    [Fact]
    public void External_only_container_reports_only_pinned_pages_dirty()
    {
        (VfioContainer c, _) = _bed.Std(_m);
        ulong buf = _bed.Buffer(0x4000);
        Assert.Equal(Errno.None, c.MapDma(Type1Bed.Map(buf, I0, 0x4000)));
        Assert.Equal(Errno.None, _bed.Vfio.RegisterNotifier(_m, VfioNotifyType.Iommu, VfioIommuNotifyEvents.DmaUnmap, UnpinningVendor(_m)));
        Assert.Equal(1, _bed.Vfio.PinPages(_m, [(I0 >> 12) + 1], 1, IommuProt.Read, new ulong[1])); // pinned before START
        Assert.Equal(Errno.None, c.DirtyPages(VfioUapi.VFIO_IOMMU_DIRTY_PAGES_FLAG_START));
        Assert.Equal([1], DirtyBits(c, 0x4000)); // START pre-sets the externally pinned pages
        Assert.Equal(1, _bed.Vfio.PinPages(_m, [(I0 >> 12) + 3], 1, IommuProt.Read, new ulong[1]));
        Assert.Equal([1, 3], DirtyBits(c, 0x4000));
        Assert.Equal([1, 3], DirtyBits(c, 0x4000));
    }
}
