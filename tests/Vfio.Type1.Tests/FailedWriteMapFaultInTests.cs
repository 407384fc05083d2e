using Iommu;
using Iommu.Devices;
using Vfio.Type1.Tests.Infrastructure;

namespace Vfio.Type1.Tests;

/// <summary>
/// 5.15's vfio_pin_pages_remote fills its batch (up to 512 pages) with one pin_user_pages_remote before it
/// charges any page: a WRITE MAP_DMA of never-written memory faults in every page of the batch, and a map that
/// then fails on RLIMIT_MEMLOCK leaves those pages faulted in. A later READ map of one of them pins that page,
/// charged, not the zero page, and the device sees what the process writes there. (Found by
/// Type1SemanticsPropertyTests.)
/// </summary>
public sealed class FailedWriteMapFaultInTests
{
    private const ulong P = Sizes.Page;
    private const ulong Iova = 0x4000_0000;

    [Fact]
    public void A_write_map_failing_on_rlimit_leaves_its_whole_batch_faulted_in()
    {
        using var bed = new Type1Bed();
        PciDevice dev = bed.AddDevice("0000:00:03.0");
        (VfioContainer c, _) = bed.Std(dev);
        bed.Proc.CapIpcLock = false;
        bed.Proc.RlimitMemlock = 2 * P;
        ulong buf = bed.Proc.Mmap(4 * P); // never written

        Assert.Equal(Errno.ENOMEM, c.MapDma(Type1Bed.Map(buf, Iova, 4 * P)));
        Assert.Empty(c.Backend!.Mappings);
        Assert.Equal(0, bed.Proc.LockedVm);

        // The last page was faulted in by the failed map's batch: a READ pin takes it, and charges it.
        Assert.Equal(Errno.None, c.MapDma(Type1Bed.Map(buf + (3 * P), Iova, P, flags: 1)));
        Assert.Equal(1, bed.Proc.LockedVm);
        bed.Proc.Write(buf + (3 * P), new byte[] { 0xAB }).ThrowIfError();
        var b = new byte[1];
        Assert.True(dev.DmaRead(null, Iova, b).IsOk);
        Assert.Equal(0xAB, b[0]);
        c.Backend.Audit();
    }
}
