using Iommu;
using Iommu.Mm;
using Mtty;
using Vfio.Mdev;
using Vfio.Type1.Tests.Infrastructure;
using Vfio.Type1.Uapi;

namespace Vfio.Type1.Tests;

/// <summary>vfio_dma_rw (§4.9): copies across mappings through the mapping process's mm; its errnos; dirty marking; the vaddr wait.</summary>
public sealed class DmaRwTests : IDisposable
{
    private const ulong I0 = 0x10_0000;
    private readonly Type1Bed _bed = new();
    private readonly MdevDevice _m;

    public DmaRwTests()
    {
        _m = _bed.AddMttyMdev();
    }

    public void Dispose() => _bed.Dispose();

    [Fact]
    public void Reads_and_writes_span_mappings_and_writes_mark_pages_dirty()
    {
        (VfioContainer c, _) = _bed.Std(_m);
        ulong a = _bed.Buffer(0x2000, seed: 0x10), b = _bed.Buffer(0x1000, seed: 0x40);
        Assert.Equal(Errno.None, c.MapDma(Type1Bed.Map(a, I0, 0x2000)));
        Assert.Equal(Errno.None, c.MapDma(Type1Bed.Map(b, I0 + 0x2000, 0x1000)));

        var buf = new byte[0x200];
        Assert.Equal(0, _bed.Vfio.DmaRw(_m, I0 + 0x1f00, buf, write: false)); // crosses into the second mapping
        Assert.Equal(0x11, buf[0]);
        Assert.Equal(0x40, buf[0x1ff]);

        Assert.Equal(Errno.None, c.DirtyPages(VfioUapi.VFIO_IOMMU_DIRTY_PAGES_FLAG_START));
        Array.Fill(buf, (byte)0xee);
        Assert.Equal(0, _bed.Vfio.DmaRw(_m, I0 + 0x1f00, buf, write: true, caller: _bed.Proc)); // the mapping process itself may call
        var page = new byte[1];
        _bed.Proc.Read(b, page).ThrowIfError();
        Assert.Equal(0xee, page[0]);
        ulong bm = _bed.Proc.Mmap(0x1000);
        Assert.Equal(Errno.None, c.GetDirtyBitmap(I0, 0x3000, new VfioBitmap(0x1000, 8, bm)));
        var word = new byte[8];
        _bed.Proc.Read(bm, word).ThrowIfError();
        Assert.Equal(0b110UL, BitConverter.ToUInt64(word)); // pages 1 and 2 were written; page 0 was not
    }

    [Fact]
    public void Errnos()
    {
        (VfioContainer c, _) = _bed.Std(_m);
        ulong a = _bed.Buffer(0x1000), w = _bed.Buffer(0x1000);
        Assert.Equal(Errno.None, c.MapDma(Type1Bed.Map(a, I0, 0x1000, flags: 1)));
        Assert.Equal(Errno.None, c.MapDma(Type1Bed.Map(w, I0 + 0x1000, 0x1000, flags: 2)));
        var buf = new byte[16];
        Assert.Equal(-(int)Errno.EINVAL, _bed.Vfio.DmaRw(_m, I0, Span<byte>.Empty, write: false));
        Assert.Equal(-(int)Errno.EINVAL, _bed.Vfio.DmaRw(_m, 0x5000, buf, write: false)); // no mapping
        Assert.Equal(-(int)Errno.EPERM, _bed.Vfio.DmaRw(_m, I0 + 0xff8, buf, write: false)); // the second chunk is in the WRITE-only mapping
        Assert.Equal(-(int)Errno.EINVAL, _bed.Vfio.DmaRw(_m, I0 - 0x8, buf, write: false)); // first chunk unmapped
        Assert.Equal(-(int)Errno.EPERM, _bed.Vfio.DmaRw(_m, I0, buf, write: true)); // READ-only mapping
        Assert.Equal(-(int)Errno.EPERM, _bed.Vfio.DmaRw(_m, I0 + 0x1000, buf, write: false)); // WRITE-only: no READ
        Assert.Equal(-(int)Errno.EPERM, _bed.Vfio.DmaRw(_m, I0 + 0x1000, buf, write: true)); // writes need READ too
        var other = new ProcessAddressSpace(_bed.Pages, "other");
        Assert.Equal(-(int)Errno.EFAULT, _bed.Vfio.DmaRw(_m, I0, buf, write: false, caller: other));
        _bed.Proc.Munmap(a, 0x1000);
        Assert.Equal(-(int)Errno.EFAULT, _bed.Vfio.DmaRw(_m, I0, buf, write: false)); // copy fault: the vaddr is gone
    }
}
