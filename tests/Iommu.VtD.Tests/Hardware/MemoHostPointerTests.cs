using Iommu.Devices;
using Iommu.Domains;
using Iommu.VtD.Driver;
using Iommu.VtD.Hardware;

namespace Iommu.VtD.Tests.Hardware;

/// <summary>
/// The unit's translation memo keeps the host address of each memoised page, and a device's 16–64 B DMA copies
/// through it with no lookup in the memory's chunk directory. A chunk's host memory changes in two ways while
/// the platform lives: a page with no backing gets some on its first write, and <see cref="Memory.PhysicalMemory.PinContiguous"/>
/// moves backed chunks into one block. After either, a device reads and writes the page's bytes where they are
/// now, and a read that races a move reads the bytes from before or after it, never unmapped memory.
/// </summary>
public sealed class MemoHostPointerTests : IDisposable
{
    private const ulong Iova = 0x4000_0000;
    private const ulong Data = 0x1_0000_0000; // 4 GiB: its own 2 MiB chunks, far from the tables
    private const int Pages = 16;

    private readonly Platform _platform;
    private readonly PciDevice _dev;

    public MemoHostPointerTests()
    {
        _platform = new Platform(new PlatformOptions { MemorySize = 8 * Sizes.GiB, TableMemorySize = 16 * Sizes.MiB });
        PciBus pci = _platform.AddPciBus();
        var unit = new VtdUnit(_platform.Memory, VtdConfig.ScalableMode48Bit);
        pci.AddDmaRemapper(unit, includeAll: true);
        pci.SetIommuOps(new IntelIommu(_platform, unit)).ThrowIfError();
        _dev = pci.AddDevice(new PciDeviceSpec("0000:00:02.0") { Acs = true });
        IDomain domain = _platform.Iommu.DomainAlloc(pci)!;
        Assert.Equal(Errno.None, _platform.Iommu.AttachDevice(domain, _dev));
        Assert.Equal(Errno.None, _platform.Iommu.Map(domain, Iova, Data, Pages * 4096, IommuProt.Read | IommuProt.Write));
    }

    public void Dispose() => _platform.Dispose();

    [Fact]
    public void A_page_backed_after_the_memo_kept_it_is_read_and_written_where_its_bytes_are()
    {
        // Never written: no backing, reads as zeros (the caches' path, which the memo leaves such pages to).
        Assert.False(_platform.Memory.IsBacked(Data));
        Assert.Equal(new byte[64], ReadTwice(Iova + 0x40));

        byte[] bytes = Pattern(64, 1);
        _platform.Memory.Write(Data + 0x40, bytes); // backs the chunk
        Assert.Equal(bytes, ReadTwice(Iova + 0x40));

        byte[] written = Pattern(48, 2);
        Assert.True(_dev.DmaWrite(null, Iova + 0x100, written).IsOk);
        Assert.True(_dev.DmaWrite(null, Iova + 0x100, written).IsOk);
        byte[] back = new byte[48];
        _platform.Memory.Read(Data + 0x100, back);
        Assert.Equal(written, back);
    }

    // 16-64 B: the memo's inline move; other lengths: the unit's unscoped move of any length. Both copy through the
    // memo's host pointer.
    [Theory]
    [InlineData(64)]
    [InlineData(8)]
    [InlineData(4096)]
    public void After_a_pin_moves_the_chunk_reads_and_writes_reach_the_pinned_block(int length)
    {
        ulong offset = length == 4096 ? 0x3000UL : 0x200UL;
        byte[] before = Pattern(length, 3);
        _platform.Memory.Write(Data + offset, before);
        Assert.Equal(before, ReadTwice(Iova + offset, length)); // memoised, with the chunk's host address

        _platform.Memory.PinContiguous(Data, 2 * Sizes.MiB);
        Assert.Equal(before, ReadTwice(Iova + offset, length)); // moved with the chunk

        // Bytes written after the move live only in the pinned block: a kept pointer to the old chunk reads the old ones.
        byte[] after = Pattern(length, 4);
        _platform.Memory.Write(Data + offset, after);
        Assert.Equal(after, ReadTwice(Iova + offset, length));

        byte[] written = Pattern(length, 5);
        Assert.True(_dev.DmaWrite(null, Iova + offset, written).IsOk);
        Assert.True(_dev.DmaWrite(null, Iova + offset, written).IsOk);
        byte[] back = new byte[length];
        _platform.Memory.Read(Data + offset, back); // through the directory: the pinned block
        Assert.Equal(written, back);
    }

    [Fact]
    public void Reads_that_race_a_pin_read_the_bytes_from_before_or_after_it()
    {
        byte[] page = Pattern(4096, 6);
        for (int k = 0; k < Pages; k++)
        {
            _platform.Memory.Write(Data + ((ulong)k << 12), page);
        }

        bool stop = false;
        string? wrong = null;
        Thread[] readers = Enumerable.Range(0, 2).Select(t => new Thread(() =>
        {
            byte[] buffer = new byte[64];
            var random = new Random(t);
            while (!Volatile.Read(ref stop) && wrong is null)
            {
                int offset = random.Next(Pages * 64) * 64;
                DmaResult r = _dev.DmaRead(null, Iova + (ulong)offset, buffer);
                if (!r.IsOk || !buffer.AsSpan().SequenceEqual(page.AsSpan(offset & 0xFFF, 64)))
                {
                    wrong = $"a read at IOVA 0x{Iova + (ulong)offset:x} returned {r.Status} and other bytes than the page holds";
                }
            }
        })).ToArray();
        foreach (Thread reader in readers)
        {
            reader.Start();
        }

        // The pin moves the data's chunk while the readers run.
        Thread.Sleep(20);
        _platform.Memory.PinContiguous(Data, 2 * Sizes.MiB);
        Thread.Sleep(20);
        Volatile.Write(ref stop, true);
        foreach (Thread reader in readers)
        {
            reader.Join();
        }

        Assert.Null(wrong);
    }

    private byte[] ReadTwice(ulong iova, int length = 64)
    {
        // The first read may fill the caches and the memo; the second is served from the memo when it can be.
        byte[] first = new byte[length], second = new byte[length];
        Assert.True(_dev.DmaRead(null, iova, first).IsOk);
        Assert.True(_dev.DmaRead(null, iova, second).IsOk);
        Assert.Equal(first, second);
        return second;
    }

    private static byte[] Pattern(int length, int seed)
    {
        byte[] bytes = new byte[length];
        new Random(seed).NextBytes(bytes);
        return bytes;
    }
}
