using Iommu;
using Iommu.Devices;
using Vfio.Type1.Tests.Infrastructure;
using Vfio.Type1.Uapi;

namespace Vfio.Type1.Tests;

/// <summary>
/// GET_BITMAP when a mapping's bits start at a non-zero bit offset inside a 64-bit word of the user's
/// bitmap. 5.15's (and 6.1's) <c>update_user_bitmap</c> reads the user's whole first word and ORs all 64
/// bits of it into the shifted per-mapping bitmap (<c>bitmap_or(..., shift)</c> works on whole longs), then
/// copies whole words back. The device's group is IOMMU-backed, so every page of every mapping is dirty.
/// </summary>
public sealed class DirtyBitmapLeftoverTests : IDisposable
{
    private const ulong I0 = 0x10_0000;
    private const ulong P = 0x1000;

    private readonly Type1Bed _bed = new();
    private readonly VfioContainer _c;

    public DirtyBitmapLeftoverTests()
    {
        PciDevice dev = _bed.AddDevice("0000:00:03.0");
        (_c, _) = _bed.Std(dev);
    }

    public void Dispose() => _bed.Dispose();

    private void Map(ulong iova, ulong pages) =>
        Assert.Equal(Errno.None, _c.MapDma(Type1Bed.Map(_bed.Buffer(pages * P), iova, pages * P)));

    /// <summary>GET_BITMAP over [I0, I0 + size) into a buffer of <paramref name="declared"/> bytes plus 16 guard bytes, all prefilled with <paramref name="prefill"/>; returns every byte of buffer and guard.</summary>
    private byte[] GetBitmap(ulong size, int declared, byte[] prefill)
    {
        Assert.Equal(declared + 16, prefill.Length);
        ulong bm = _bed.Proc.Mmap(0x1000);
        _bed.Proc.Write(bm, prefill).ThrowIfError();
        Assert.Equal(Errno.None, _c.GetDirtyBitmap(I0, size, new VfioBitmap(P, (ulong)declared, bm)));
        var data = new byte[prefill.Length];
        _bed.Proc.Read(bm, data).ThrowIfError();
        return data;
    }

    private static byte[] Fill(int length, byte value)
    {
        var b = new byte[length];
        Array.Fill(b, value);
        return b;
    }

    private void Start() => Assert.Equal(Errno.None, _c.DirtyPages(VfioUapi.VFIO_IOMMU_DIRTY_PAGES_FLAG_START));

    [Fact]
    public void A_user_word_of_0xff_comes_back_whole_when_the_first_mapping_starts_at_bit_1()
    {
        Map(I0 + P, 2); // bits 1 and 2 of word 0; page 0 of the range is a hole
        Start();

        byte[] got = GetBitmap(3 * P, declared: 8, Fill(24, 0xff));

        // (0b11 << 1) | 0xffff_ffff_ffff_ffff; the guard is never written. (The old code kept only bit 0
        // of the user's word: 07 00 00 00 00 00 00 00.)
        Assert.Equal(Convert.FromHexString("ffffffffffffffff" + "ffffffffffffffffffffffffffffffff"), got);
    }

    [Fact]
    public void A_pattern_in_the_first_word_is_ORed_with_the_mapping_bits_all_64_bits_of_it()
    {
        Map(I0 + (4 * P), 2); // bits 4 and 5 of word 0
        Start();

        byte[] got = GetBitmap(6 * P, declared: 8, Fill(24, 0x5a));

        // 0x5a5a5a5a5a5a5a5a | 0x30: byte 0 = 0x7a, the rest of the word keeps the user's 0x5a
        // (the old code answered 3a 00 00 00 00 00 00 00).
        Assert.Equal(Convert.FromHexString("7a5a5a5a5a5a5a5a" + "5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a"), got);
    }

    [Fact]
    public void Words_after_the_first_are_overwritten_and_words_the_mapping_does_not_reach_are_untouched()
    {
        Map(I0 + (60 * P), 8); // bits 60..63 of word 0 and 0..3 of word 1; word 2 has no mapping
        Start();

        byte[] prefill = [.. Convert.FromHexString("0102030405060708" + "a5a5a5a5a5a5a5a5" + "c3c3c3c3c3c3c3c3"), .. Fill(16, 0xee)];
        byte[] got = GetBitmap(192 * P, declared: 24, prefill);

        Assert.Equal(
            Convert.FromHexString(
                "01020304050607f8" // word 0: the user's word ORed with bits 60..63
                + "0f00000000000000" // word 1: copied whole, the user's a5 pattern is gone, bits after the mapping are 0
                + "c3c3c3c3c3c3c3c3" // word 2: not reached by any mapping, not written
                + "eeeeeeeeeeeeeeeeeeeeeeeeeeeeeeee"),
            got);
    }

    [Fact]
    public void A_mapping_at_bit_0_overwrites_the_users_word_so_a_later_mapping_in_it_ORs_only_what_the_kernel_wrote()
    {
        Map(I0, 4);
        Map(I0 + (8 * P), 2);
        Start();

        byte[] got = GetBitmap(16 * P, declared: 8, Fill(24, 0xff));

        // The first mapping's copy wrote word 0 whole (0x0f, zeros above), the second ORed that word: 0x030f.
        Assert.Equal(Convert.FromHexString("0f03000000000000" + "ffffffffffffffffffffffffffffffff"), got);
    }

    [Fact]
    public void User_bits_ORed_above_the_mapping_stay_in_its_bitmap_and_come_back_in_the_next_query()
    {
        Map(I0 + P, 2);
        Start();

        byte[] first = GetBitmap(3 * P, declared: 8, Fill(24, 0xa5));
        Assert.Equal(Convert.FromHexString("a7a5a5a5a5a5a5a5" + "a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5"), first);

        // bitmap_clear clears only the mapping's 2 bits: 0xa5a5a5a5a5a5a5a4 stays, the next query sets bits 0-1
        // again and shifts the word left by 1 (bit 63 falls off), then ORs the user's zero word.
        byte[] second = GetBitmap(3 * P, declared: 8, new byte[24]);
        Assert.Equal(Convert.FromHexString("4e4b4b4b4b4b4b4b" + "00000000000000000000000000000000"), second);
    }
}
