using Iommu;
using Iommu.Devices;
using Vfio.Type1.Tests.Infrastructure;
using Vfio.Type1.Uapi;

namespace Vfio.Type1.Tests;

/// <summary>
/// MAP_DMA with only <c>VFIO_DMA_MAP_FLAG_WRITE</c>: type1 asks for IOMMU_WRITE alone, and 5.15's
/// intel-iommu writes the leaf R+W ("iommu/vt-d: Remove WO permissions on second-level paging entries",
/// eea53c581688), so the device reads through it as well, as in the recorded 6.1 guest
/// (<c>device.dma_read_permissions</c>). Type1's own check in <c>vfio_dma_rw</c> still refuses a READ of that
/// mapping (DmaRwTests).
/// </summary>
public sealed class WriteOnlyMapDmaTests : IDisposable
{
    private const ulong Iova = 0x90_0000;

    private readonly Type1Bed _bed = new();

    public void Dispose() => _bed.Dispose();

    [Fact]
    public void A_device_reads_and_writes_through_a_write_only_map_dma()
    {
        PciDevice dev = _bed.AddDevice("0000:00:03.0");
        (VfioContainer c, _) = _bed.Std(dev);
        ulong buf = _bed.Buffer(2 * Sizes.Page, seed: 0x30);

        Assert.Equal(Errno.None, c.MapDma(Type1Bed.Map(buf, Iova, 2 * Sizes.Page, flags: VfioUapi.VFIO_DMA_MAP_FLAG_WRITE)));

        var read = new byte[0x800];
        DmaResult r = dev.DmaRead(null, Iova + Sizes.Page, read);
        Assert.True(r.IsOk, r.ToString()); // the old driver wrote a W-only leaf: a read fault (reason 6)
        Assert.All(read, b => Assert.Equal(0x31, b));
        Assert.Empty(_bed.Driver.Faults);

        Assert.True(dev.DmaWrite(null, Iova, "edu"u8).IsOk);
        var back = new byte[3];
        _bed.Proc.Read(buf, back).ThrowIfError();
        Assert.Equal("edu"u8.ToArray(), back);
    }
}
