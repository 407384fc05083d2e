using CsCheck;
using Iommu.VtD.Hardware;

namespace Iommu.VtD.Tests.Hardware;

/// <summary>
/// The size encoding of an ATS invalidate request (device-TLB descriptors): S = 0 one 4 KiB page; S = 1 the lowest
/// clear address bit at or above 12, bit k, makes the range 2^(k+1) bytes, aligned; with bits 62:12 all set the
/// range is the whole 2^64 space.
/// </summary>
public sealed class DeviceTlbRangeTests
{
    [Fact]
    public void Property_the_decoded_range_is_the_aligned_power_of_two_the_lowest_clear_bit_names()
    {
        Gen.Select(Gen.ULong, Gen.Int[12, 64]).Sample((raw, ones) =>
        {
            // Bits 12..ones-1 set, bit "ones" clear (when below 64), the rest random: the first clear bit is at "ones".
            ulong setMask = ones >= 64 ? ~0xFFFUL : ((1UL << ones) - 1) & ~0xFFFUL;
            ulong addr = (raw | setMask) & ~0xFFFUL;
            if (ones < 64)
            {
                addr &= ~(1UL << ones);
            }

            (ulong start, ulong size) = VtdFormat.DeviceTlbRange(addr | VtdFormat.DevTlbSize, VtdFormat.DevTlbSize);
            if (ones >= 63)
            {
                Assert.Equal((0UL, ulong.MaxValue), (start, size));
                return;
            }

            ulong want = 1UL << (ones + 1);
            Assert.Equal(want, size);
            Assert.Equal(addr & ~(want - 1), start);
            Assert.InRange(addr, start, start + (size - 1));
        });
    }

    [Fact]
    public void Bits_62_to_12_set_with_bit_63_clear_is_the_whole_space()
    {
        const ulong q1 = 0x7FFF_FFFF_FFFF_F000 | VtdFormat.DevTlbSize;
        Assert.Equal((0UL, ulong.MaxValue), VtdFormat.DeviceTlbRange(q1, VtdFormat.DevTlbSize));
        Assert.Equal((0x10_3000UL, 4096UL), VtdFormat.DeviceTlbRange(0x10_3000, VtdFormat.DevTlbSize));
        Assert.Equal((0x10_4000UL, 0x4000UL), VtdFormat.DeviceTlbRange(0x10_5000 | VtdFormat.DevTlbSize, VtdFormat.DevTlbSize));
    }
}
