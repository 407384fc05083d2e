using Iommu.VtD.Hardware;
using Iommu.VtD.Tests.Hardware.Infrastructure;

namespace Iommu.VtD.Tests.Hardware;

public class LegacyTranslationTests
{
    private const ushort Rid = 0x0310; // 03:02.0

    // A config supporting all three widths, so AW alone picks the walk depth.
    internal static VtdConfig AllWidths => VtdConfig.Legacy48Bit with { Supports57BitTables = true, MaxGuestAddressWidth = 57 };

    public static TheoryData<int> Widths => [39, 48, 57];

    private static int Aw(int width) => (width - 30) / 9;

    private static int Levels(int width) => Aw(width) + 2;

    // An address whose index at every level is distinct and non-zero, inside the width.
    private static ulong Iova(int width) => (0x80_8060_4000UL | (width > 48 ? 5UL << 48 : 0)) & VtdBench.Ones(width - 1);

    [Theory]
    [MemberData(nameof(Widths))]
    public void Translates_4k_page(int width)
    {
        using var b = new VtdBench(AllWidths);
        ulong sl = b.SetupLegacyDevice(Rid, Aw(width), did: 3);
        ulong iova = Iova(width);
        b.Map(sl, Levels(width), iova, 0x0123_4000);
        b.Enable(scalable: false);

        VtdTranslation t = b.Unit.Translate(Rid, null, iova + 0x123, 8, DmaAccess.Write);
        Assert.Equal(VtdTranslationStatus.Translated, t.Status);
        Assert.Equal(0x0123_4123UL, t.PhysicalAddress);
        Assert.Equal(4096UL, t.PageSize);
        Assert.True(t.Writable);
        Assert.Equal(0u, b.Fsts);
    }

    [Theory]
    [MemberData(nameof(Widths))]
    public void Translates_2m_and_1g_superpages(int width)
    {
        using var b = new VtdBench(AllWidths);
        ulong sl = b.SetupLegacyDevice(Rid, Aw(width), did: 3);
        int levels = Levels(width);
        b.Map(sl, levels, 0x4000_0000, 0x0020_0000, leafLevel: 2);
        b.Map(sl, levels, 0x8000_0000, 0x0000_0000, leafLevel: 3);
        b.Enable(scalable: false);

        VtdTranslation t2 = b.Unit.Translate(Rid, null, 0x4012_3456, 4, DmaAccess.Read);
        Assert.Equal(0x0032_3456UL, t2.PhysicalAddress);
        Assert.Equal(2UL << 20, t2.PageSize);
        VtdTranslation t1 = b.Unit.Translate(Rid, null, 0xBFFF_F000, 4, DmaAccess.Read);
        Assert.Equal(0x3FFF_F000UL, t1.PhysicalAddress);
        Assert.Equal(1UL << 30, t1.PageSize);
    }

    [Theory]
    [MemberData(nameof(Widths))]
    public void Pass_through_context_gives_identity(int width)
    {
        using var b = new VtdBench(AllWidths);
        b.SetupLegacyDevice(Rid, Aw(width), did: 1, tt: 2);
        b.Enable(scalable: false);
        VtdTranslation t = b.Unit.Translate(Rid, null, 0x1234_5678, 8, DmaAccess.Write);
        Assert.Equal(0x1234_5678UL, t.PhysicalAddress);
        Assert.Equal(VtdTranslationStatus.Translated, t.Status);
    }

    [Fact]
    public void Translation_disabled_is_identity()
    {
        using var b = new VtdBench(VtdConfig.Legacy48Bit);
        VtdTranslation t = b.Unit.Translate(Rid, null, 0xABC_D123, 1, DmaAccess.Read);
        Assert.Equal(0xABC_D123UL, t.PhysicalAddress);
        Assert.Equal(VtdTranslationStatus.Translated, t.Status);
    }

    [Fact]
    public void Request_without_pasid_to_interrupt_window_is_not_remapped()
    {
        using var b = new VtdBench(VtdConfig.Legacy48Bit);
        b.SetupLegacyDevice(Rid, 2, did: 1);
        b.Enable(scalable: false);
        Assert.Equal(VtdTranslationStatus.InterruptRange, b.Unit.Translate(Rid, null, 0xFEE0_1000, 4, DmaAccess.Write).Status);
        Assert.Equal(0u, b.Fsts);
    }

    [Fact]
    public void Read_only_mapping_allows_reads_and_reports_not_writable()
    {
        using var b = new VtdBench(VtdConfig.Legacy48Bit);
        ulong sl = b.SetupLegacyDevice(Rid, 2, did: 1);
        b.Map(sl, 4, 0x5000, 0x9000, write: false);
        b.Enable(scalable: false);
        VtdTranslation t = b.Unit.Translate(Rid, null, 0x5000, 4, DmaAccess.Read);
        Assert.Equal(0x9000UL, t.PhysicalAddress);
        Assert.False(t.Writable);
    }

    [Theory]
    [MemberData(nameof(Widths))]
    public void Dma_moves_the_right_bytes_across_pages(int width)
    {
        using var b = new VtdBench(AllWidths);
        ulong sl = b.SetupLegacyDevice(Rid, Aw(width), did: 3);
        ulong iova = Iova(width);
        // Two adjacent IOVA pages map to non-adjacent frames, in reverse order.
        b.Map(sl, Levels(width), iova, 0x0200_5000);
        b.Map(sl, Levels(width), iova + 0x1000, 0x0200_1000);
        b.Enable(scalable: false);

        byte[] data = new byte[0x1000];
        for (int i = 0; i < data.Length; i++)
        {
            data[i] = (byte)(i * 7);
        }

        VtdTranslation w = b.Unit.Dma(Rid, null, iova + 0x800, data, DmaAccess.Write);
        Assert.Equal(VtdTranslationStatus.Translated, w.Status);
        byte[] first = new byte[0x800], second = new byte[0x800];
        b.Memory.Read(0x0200_5800, first);
        b.Memory.Read(0x0200_1000, second);
        Assert.Equal(data.AsSpan(0, 0x800).ToArray(), first);
        Assert.Equal(data.AsSpan(0x800).ToArray(), second);

        byte[] back = new byte[0x1000];
        Assert.Equal(VtdTranslationStatus.Translated, b.Unit.Dma(Rid, null, iova + 0x800, back, DmaAccess.Read).Status);
        Assert.Equal(data, back);
    }

    [Fact]
    public void Dma_stops_at_the_first_faulting_page()
    {
        using var b = new VtdBench(VtdConfig.Legacy48Bit);
        ulong sl = b.SetupLegacyDevice(Rid, 2, did: 3);
        b.Map(sl, 4, 0x10_0000, 0x0300_0000);
        b.Enable(scalable: false);
        byte[] data = new byte[0x2000];
        data.AsSpan().Fill(0xAB);
        VtdTranslation t = b.Unit.Dma(Rid, null, 0x10_0000, data, DmaAccess.Write);
        Assert.True(t.IsFault);
        Assert.Equal(0x10_1000UL, t.InputAddress);
        Assert.Equal(VtdFaultReason.Write, t.Reason);
        Assert.Equal(0xAB, b.Memory.Frame(0x0300_0000)[0xFFF]);
    }

    [Fact]
    public void Dma_to_a_mapping_outside_memory_is_a_memory_error_not_a_fault()
    {
        using var b = new VtdBench(VtdConfig.Legacy48Bit);
        ulong sl = b.SetupLegacyDevice(Rid, 2, did: 3);
        b.Map(sl, 4, 0x10_0000, VtdBench.BeyondMemory);
        b.Enable(scalable: false);
        VtdTranslation t = b.Unit.Dma(Rid, null, 0x10_0000, new byte[16], DmaAccess.Read);
        Assert.Equal(VtdTranslationStatus.MemoryError, t.Status);
        Assert.Equal(0u, b.Fsts);
    }

    [Fact]
    public void Request_crossing_a_page_is_rejected()
    {
        using var b = new VtdBench(VtdConfig.Legacy48Bit);
        Assert.Throws<ArgumentOutOfRangeException>(() => b.Unit.Translate(Rid, null, 0xFFF, 2, DmaAccess.Read));
        Assert.Throws<ArgumentOutOfRangeException>(() => b.Unit.Translate(Rid, null, 0, 0, DmaAccess.Read));
    }

    [Fact]
    public void Devices_on_other_buses_and_functions_use_their_own_entries()
    {
        using var b = new VtdBench(VtdConfig.Legacy48Bit);
        ulong slA = b.SetupLegacyDevice(0x0100, 2, did: 1);
        ulong slB = b.SetupLegacyDevice(0x0107, 2, did: 2);
        ulong slC = b.SetupLegacyDevice(0xFFFF, 1, did: 3);
        b.Map(slA, 4, 0x1000, 0xA000);
        b.Map(slB, 4, 0x1000, 0xB000);
        b.Map(slC, 3, 0x1000, 0xC000);
        b.Enable(scalable: false);
        Assert.Equal(0xA000UL, b.Unit.Translate(0x0100, null, 0x1000, 1, DmaAccess.Read).PhysicalAddress);
        Assert.Equal(0xB000UL, b.Unit.Translate(0x0107, null, 0x1000, 1, DmaAccess.Read).PhysicalAddress);
        Assert.Equal(0xC000UL, b.Unit.Translate(0xFFFF, null, 0x1000, 1, DmaAccess.Read).PhysicalAddress);
    }

    [Fact]
    public void Translate_allocates_nothing_on_hits_and_misses()
    {
        using var b = new VtdBench(VtdConfig.Legacy48Bit);
        ulong sl = b.SetupLegacyDevice(Rid, 2, did: 3);
        for (ulong i = 0; i < 64; i++)
        {
            b.Map(sl, 4, i << 12, 0x0400_0000 + (i << 12));
        }

        b.Enable(scalable: false);
        for (ulong i = 0; i < 64; i++)
        {
            b.Unit.Translate(Rid, null, i << 12, 8, DmaAccess.Read);
        }

        long allocated = Iommu.VtD.Tests.Infrastructure.Allocations.Fewest(() =>
        {
            b.GlobalIotlbInvalidate(); // misses first, then hits
            for (int round = 0; round < 2; round++)
            {
                for (ulong i = 0; i < 64; i++)
                {
                    b.Unit.Translate(Rid, null, i << 12, 8, DmaAccess.Read);
                }
            }
        });

        Assert.Equal(0, allocated);
    }
}
