using Iommu.Reliability.Tests.Infrastructure;
using Iommu.Devices;
using Mtty;
using SiovAccel;
using Vfio.Mdev;
using Vfio.Type1;
using Vfio.Type1.Uapi;
using Xunit.Abstractions;

namespace Iommu.Reliability.Tests.FaultInjection;

/// <summary>
/// fail_nth over the type1 paths that allocate page tables: attaching a group that needs a new domain
/// (allocation of the domain, then the replay of every existing mapping into it, spec §4.4 steps 5
/// and 15) and MAP_DMA into a container with two domains (the map into the second domain fails
/// after the first succeeded, §4.6 step 11); then pin failures (RLIMIT_MEMLOCK, every page in turn)
/// and dma_avail exhaustion. After each failure: the errno, and dma_avail (GET_INFO), locked_vm,
/// pins, mappings, translations in every domain and both devices' DMA exactly as before; Audit().
/// </summary>
public sealed class Type1FailNthTests(ITestOutputHelper output)
{
    private static readonly (ulong Iova, ulong Size, byte Seed)[] Initial =
    [
        (0x10_0000, Sizes.MiB, 0x10),
        (0x4000_0000, 2 * Sizes.Page, 0x40),
        (0x1_0000_0000, 6 * Sizes.MiB, 0x70),
    ];

    [Fact]
    public void Replay_into_a_new_domain_and_map_into_two_domains_unwind_every_failing_allocation()
    {
        using var bed = new FailNthType1Bed();
        var baseline = new List<string>();
        bed.Counters(baseline);

        Assert.Equal(Errno.None, bed.G0.SetContainer(bed.Container));
        Assert.Equal(Errno.None, bed.Container.SetIommu(VfioUapi.VFIO_TYPE1v2_IOMMU));
        foreach ((ulong iova, ulong size, byte seed) in Initial)
        {
            Assert.Equal(Errno.None, bed.Map(bed.Buffer(size, seed), iova, size));
        }

        // 1. The second group joins: a new domain on the other unit, every mapping replayed into it.
        (int attachFailures, Errno final) = FailNthSweep.Run(
            bed.Platform.Frames,
            bed.Snapshot,
            () => bed.G1.SetContainer(bed.Container),
            (n, err, pre) =>
            {
                // n = 1 is the new domain's page-table root: iommu_domain_alloc returns NULL → -EIO (step 5);
                // later ones fail iommu_map inside the replay → -ENOMEM, unwound (step 15).
                Errno expected = n == 1 ? Errno.EIO : Errno.ENOMEM;
                Assert.True(err == expected, $"attach fail_nth={n}: {err}, expected {expected}");
                FailNthSweep.AssertSame(pre, bed.Snapshot(), $"attach fail_nth={n}");
            });
        Assert.Equal(Errno.None, final);
        Assert.Equal(2, bed.Backend.Domains.Count);
        AssertDeviceSees(bed, Initial);

        // 2. MAP_DMA into both domains.
        ulong va = bed.Buffer(4 * Sizes.MiB, 0xA0);
        const ulong NewIova = 0x20_0000_0000; // new upper tables in both domains
        (int mapFailures, Errno mapFinal) = FailNthSweep.Run(
            bed.Platform.Frames,
            bed.Snapshot,
            () => bed.Map(va, NewIova, 4 * Sizes.MiB),
            (n, err, pre) =>
            {
                Assert.True(err == Errno.ENOMEM, $"map fail_nth={n}: {err}, expected ENOMEM");
                FailNthSweep.AssertSame(pre, bed.Snapshot(), $"map fail_nth={n}");
            });
        Assert.Equal(Errno.None, mapFinal);
        AssertDeviceSees(bed, [.. Initial, (NewIova, 4 * Sizes.MiB, (byte)0xA0)]);
        output.WriteLine($"type1 attach with replay into a new domain: {attachFailures} injected failures (1 × -EIO, {attachFailures - 1} × -ENOMEM); MAP_DMA into two domains: {mapFailures} × -ENOMEM; state unchanged after each");
        Assert.True(attachFailures >= 4, $"only {attachFailures} allocations in the attach");
        Assert.True(mapFailures >= 4, $"only {mapFailures} allocations in the map");

        TearDown(bed, baseline);
    }

    [Fact]
    public void Pin_failures_at_every_page_and_dma_avail_exhaustion_change_nothing()
    {
        using var bed = new FailNthType1Bed(new VfioType1Options { AllowUnsafeInterrupts = true, DmaEntryLimit = 5 });
        var baseline = new List<string>();
        bed.Counters(baseline);
        Assert.Equal(Errno.None, bed.G0.SetContainer(bed.Container));
        Assert.Equal(Errno.None, bed.Container.SetIommu(VfioUapi.VFIO_TYPE1v2_IOMMU));
        Assert.Equal(Errno.None, bed.G1.SetContainer(bed.Container));
        foreach ((ulong iova, ulong size, byte seed) in Initial)
        {
            Assert.Equal(Errno.None, bed.Map(bed.Buffer(size, seed), iova, size));
        }

        // RLIMIT_MEMLOCK without CAP_IPC_LOCK: allow k more pages, k = 0, 1, …, until the map fits.
        const ulong Pages = 40;
        ulong va = bed.Buffer(Pages * Sizes.Page, 0xC0);
        bed.Proc.CapIpcLock = false;
        long locked = bed.Proc.LockedVm;
        int pinFailures = 0;
        for (ulong k = 0; ; k++)
        {
            bed.Proc.RlimitMemlock = ((ulong)locked + k) * Sizes.Page;
            List<string> pre = bed.Snapshot();
            Errno e = bed.Map(va, 0x3000_0000, Pages * Sizes.Page);
            if (k < Pages)
            {
                Assert.True(e == Errno.ENOMEM, $"RLIMIT +{k} pages: {e}, expected ENOMEM (spec §4.6 locked_vm accounting)");
                FailNthSweep.AssertSame(pre, bed.Snapshot(), $"RLIMIT +{k} pages");
                pinFailures++;
                continue;
            }

            Assert.Equal(Errno.None, e);
            break;
        }

        Assert.Equal(locked + (long)Pages, bed.Proc.LockedVm);
        bed.Proc.CapIpcLock = true;

        // dma_avail: 4 of 5 slots used; one more map fits, the next is -ENOSPC and changes nothing.
        Assert.Equal(1u, bed.DmaAvail());
        Assert.Equal(Errno.None, bed.Map(bed.Buffer(Sizes.Page, 0xE0), 0x5000_0000, Sizes.Page));
        ulong last = bed.Buffer(Sizes.Page, 0xF0);
        List<string> full = bed.Snapshot();
        Assert.Equal(Errno.ENOSPC, bed.Map(last, 0x6000_0000, Sizes.Page));
        FailNthSweep.AssertSame(full, bed.Snapshot(), "dma_avail exhausted");
        output.WriteLine($"MAP_DMA pin failures (RLIMIT_MEMLOCK at each of {Pages} pages): {pinFailures} × -ENOMEM; dma_avail 0: -ENOSPC; state unchanged after each");

        TearDown(bed, baseline);
    }

    [Fact]
    public void Replay_that_pins_for_the_first_iommu_domain_unwinds_every_pin_and_allocation_failure()
    {
        // A container with only an external (vendor-isolated) mdev group: MAP_DMA pins nothing. The
        // first physical group makes the replay pin every mapping from the process now (§4.4 step 15).
        using var bed = new FailNthType1Bed();
        long frames0 = bed.Platform.Frames.LiveFrames;
        var mdevCore = new MdevCore(bed.Platform);
        var mtty = new MttyDriver(bed.Platform.Memory);
        Assert.Equal(Errno.None, mtty.Register(mdevCore));
        Assert.Equal(Errno.None, mdevCore.Create(mdevCore.FindParent(mtty.ParentDevice)!.FindType("mtty-1")!, Guid.NewGuid(), out MdevDevice? m));
        Assert.Equal(Errno.None, bed.Vfio.RegisterDevice(m!));
        Assert.Equal(Errno.None, bed.Vfio.OpenGroup(bed.Proc, m!.IommuGroup!.Id, out VfioGroup? mg, out _));
        Assert.Equal(Errno.None, mg!.SetContainer(bed.Container));
        Assert.Equal(Errno.None, bed.Container.SetIommu(VfioUapi.VFIO_TYPE1v2_IOMMU));
        (ulong Iova, ulong Size, byte Seed)[] maps = [(0x10_0000, 8 * Sizes.Page, 0x10), (0x4000_0000, 2 * Sizes.Page, 0x40), (0x1_0000_0000, 16 * Sizes.Page, 0x70)];
        bed.Proc.CapIpcLock = false; // lock_cap is captured at MAP time (§4.6): without it the replay is held to RLIMIT_MEMLOCK
        foreach ((ulong iova, ulong size, byte seed) in maps)
        {
            Assert.Equal(Errno.None, bed.Map(bed.Buffer(size, seed), iova, size));
        }

        Assert.Equal(0, bed.Proc.LockedVm);
        const long Total = 26;

        // RLIMIT_MEMLOCK (read from the mapping's task at replay time): the replay's pin of page k fails, k = 0 … 25.
        ulong rlimit = bed.Proc.RlimitMemlock;
        int pinFailures = 0;
        for (long k = 0; k < Total; k++)
        {
            bed.Proc.RlimitMemlock = (ulong)k * Sizes.Page;
            List<string> pre = bed.Snapshot();
            Errno e = bed.G0.SetContainer(bed.Container);
            Assert.True(e == Errno.ENOMEM, $"replay with RLIMIT {k} pages: {e}, expected ENOMEM");
            FailNthSweep.AssertSame(pre, bed.Snapshot(), $"replay with RLIMIT {k} pages");
            pinFailures++;
        }

        bed.Proc.RlimitMemlock = rlimit;

        // Then every frame allocation of the same attach.
        (int failures, Errno final) = FailNthSweep.Run(
            bed.Platform.Frames,
            bed.Snapshot,
            () => bed.G0.SetContainer(bed.Container),
            (n, err, pre) =>
            {
                Errno expected = n == 1 ? Errno.EIO : Errno.ENOMEM;
                Assert.True(err == expected, $"attach fail_nth={n}: {err}, expected {expected}");
                FailNthSweep.AssertSame(pre, bed.Snapshot(), $"attach fail_nth={n}");
            });
        Assert.Equal(Errno.None, final);
        Assert.Equal(Total, bed.Proc.LockedVm);
        var b = new byte[1];
        foreach ((ulong iova, ulong size, byte seed) in maps)
        {
            Assert.True(bed.Dev0.DmaRead(null, iova + size - Sizes.Page, b).IsOk);
            Assert.Equal((byte)(seed + (size / Sizes.Page) - 1), b[0]);
        }

        output.WriteLine($"type1 replay pinning for the first IOMMU domain: {pinFailures} pin failures (RLIMIT at each page) and {failures} allocation failures (1 × -EIO, {failures - 1} × -ENOMEM); state unchanged after each");
        Assert.True(failures >= 3, $"only {failures} allocations in the attach");

        var all = new VfioIommuType1DmaUnmap(24, VfioUapi.VFIO_DMA_UNMAP_FLAG_ALL, 0, 0);
        Assert.Equal(Errno.None, bed.Container.UnmapDma(ref all));
        Assert.Equal(0, bed.Proc.LockedVm);
        Assert.Equal(Errno.None, bed.G0.UnsetContainer());
        Assert.Equal(Errno.None, mg.UnsetContainer());
        Assert.Equal(0, bed.Pages.TotalPins);
        Assert.Equal(frames0, bed.Platform.Frames.LiveFrames);
    }

    [Fact]
    public void Aux_attach_of_an_siov_mdev_with_replay_into_its_new_domain_unwinds_every_failing_allocation()
    {
        // The container's mappings live in a physical group's domain on segment 0; an ADI of an SIOV
        // parent on segment 1 (other ops: no reuse) joins, so type1 allocates a domain, aux-attaches
        // it to the parent (a PASID and a DID) and replays every mapping into it.
        using var bed = new FailNthType1Bed(scalableSegment1: true);
        PciDevice parent = bed.Pci1.AddDevice(new PciDeviceSpec("0001:00:02.0") { Acs = true, PasidWidth = 20, ScalableIov = true });
        var mdevCore = new MdevCore(bed.Platform);
        var accel = new SiovAccelDriver(bed.Platform.Iommu, parent, adiCount: 2);
        Assert.Equal(Errno.None, mdevCore.RegisterDevice(parent, accel));
        Assert.Equal(Errno.None, mdevCore.Create(mdevCore.FindParent(parent)!.FindType("siov_accel-wq")!, Guid.NewGuid(), out MdevDevice? adi));
        Assert.Equal(Errno.None, bed.Vfio.RegisterDevice(adi!));
        Assert.Equal(Errno.None, bed.Vfio.OpenGroup(bed.Proc, adi!.IommuGroup!.Id, out VfioGroup? ag, out _));
        long frames0 = bed.Platform.Frames.LiveFrames;
        int pasids0 = bed.Driver1.PasidsInUse;

        Assert.Equal(Errno.None, bed.G0.SetContainer(bed.Container));
        Assert.Equal(Errno.None, bed.Container.SetIommu(VfioUapi.VFIO_TYPE1v2_IOMMU));
        foreach ((ulong iova, ulong size, byte seed) in Initial)
        {
            Assert.Equal(Errno.None, bed.Map(bed.Buffer(size, seed), iova, size));
        }

        (int failures, Errno final) = FailNthSweep.Run(
            bed.Platform.Frames,
            () =>
            {
                List<string> s = bed.Snapshot();
                s.Add($"adi domain={adi.GetIommuDomain() is not null}");
                FailNthVtdBed.Dma("parent pasid 1", parent, 1, [Initial[0].Iova], s);
                return s;
            },
            () => ag!.SetContainer(bed.Container),
            (n, err, pre) =>
            {
                Errno expected = n == 1 ? Errno.EIO : Errno.ENOMEM;
                Assert.True(err == expected, $"aux attach fail_nth={n}: {err}, expected {expected}");
                List<string> now = bed.Snapshot();
                now.Add($"adi domain={adi.GetIommuDomain() is not null}");
                FailNthVtdBed.Dma("parent pasid 1", parent, 1, [Initial[0].Iova], now);
                FailNthSweep.AssertSame(pre, now, $"aux attach fail_nth={n}");
            });
        Assert.Equal(Errno.None, final);
        Assert.Equal(2, bed.Backend.Domains.Count);
        Assert.Equal(pasids0 + 1, bed.Driver1.PasidsInUse);
        int pasid = bed.Platform.Iommu.AuxGetPasid(adi.GetIommuDomain()!, parent);
        Assert.True(pasid > 0);
        var b = new byte[1];
        foreach ((ulong iova, ulong size, byte seed) in Initial)
        {
            Assert.True(parent.DmaRead((uint)pasid, iova + size - Sizes.Page, b).IsOk);
            Assert.Equal((byte)(seed + (size / Sizes.Page) - 1), b[0]);
        }

        output.WriteLine($"type1 aux attach of an SIOV mdev with replay into its new domain: {failures} injected failures (1 × -EIO, {failures - 1} × -ENOMEM); state (PASIDs, DIDs, frames, translations, DMA) unchanged after each");
        Assert.True(failures >= 4, $"only {failures} allocations in the aux attach");

        var all = new VfioIommuType1DmaUnmap(24, VfioUapi.VFIO_DMA_UNMAP_FLAG_ALL, 0, 0);
        Assert.Equal(Errno.None, bed.Container.UnmapDma(ref all));
        Assert.Equal(Errno.None, ag!.UnsetContainer());
        Assert.Equal(Errno.None, bed.G0.UnsetContainer());
        Assert.Equal(0, bed.Proc.LockedVm);
        Assert.Equal(pasids0, bed.Driver1.PasidsInUse);
        Assert.Equal(frames0, bed.Platform.Frames.LiveFrames);
    }

    private static void AssertDeviceSees(FailNthType1Bed bed, IEnumerable<(ulong Iova, ulong Size, byte Seed)> maps)
    {
        var b = new byte[1];
        foreach ((ulong iova, ulong size, byte seed) in maps)
        {
            foreach (ulong off in new[] { 0UL, size - Sizes.Page })
            {
                byte want = (byte)(seed + (off / Sizes.Page));
                Assert.True(bed.Dev0.DmaRead(null, iova + off, b).IsOk);
                Assert.Equal(want, b[0]);
                Assert.True(bed.Dev1.DmaRead(null, iova + off, b).IsOk);
                Assert.Equal(want, b[0]);
            }
        }
    }

    private static void TearDown(FailNthType1Bed bed, List<string> baseline)
    {
        var all = new VfioIommuType1DmaUnmap(24, VfioUapi.VFIO_DMA_UNMAP_FLAG_ALL, 0, 0);
        Assert.Equal(Errno.None, bed.Container.UnmapDma(ref all));
        Assert.Equal(0, bed.Proc.LockedVm);
        Assert.Equal(bed.Backend.DmaEntryLimit, bed.DmaAvail());
        bed.Backend.Audit();
        Assert.Equal(Errno.None, bed.G1.UnsetContainer());
        Assert.Equal(Errno.None, bed.G0.UnsetContainer());
        Assert.Null(bed.Container.Backend);
        var end = new List<string>();
        bed.Counters(end);

        // Host pages stay allocated (the process still maps its buffers); everything else is back.
        baseline.RemoveAll(l => l.StartsWith("host.", StringComparison.Ordinal));
        end.RemoveAll(l => l.StartsWith("host.", StringComparison.Ordinal));
        FailNthSweep.AssertSame(baseline, end, "after teardown");
        Assert.Equal(0, bed.Pages.TotalPins);
    }
}
