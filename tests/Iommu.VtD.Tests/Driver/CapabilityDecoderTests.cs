using System.Reflection;
using Iommu.VtD.Driver.Format;

namespace Iommu.VtD.Tests.Driver;

/// <summary>
/// Every CAP/ECAP decoder of the driver against the macro it names in 5.15's <c>intel-iommu.h</c>, one
/// register bit at a time: the class of test that would have caught <c>ecap_dit</c> reading bit 4 (EIM)
/// instead of bit 41, which put a PFSID into device-TLB invalidations on any unit reporting x2APIC
/// interrupt remapping.
/// </summary>
public class CapabilityDecoderTests
{
    // The macros, as 5.15 defines them: (shift, mask, scale, offset) of ((reg >> shift) & mask) * scale + offset.
    private static readonly Dictionary<string, (int Shift, ulong Mask, ulong Scale, ulong Offset)> Linux = new()
    {
        ["cap_5lp_support"] = (60, 1, 1, 0),
        ["cap_fl1gp_support"] = (56, 1, 1, 0),
        ["cap_read_drain"] = (55, 1, 1, 0),
        ["cap_write_drain"] = (54, 1, 1, 0),
        ["cap_max_amask_val"] = (48, 0x3f, 1, 0),
        ["cap_num_fault_regs"] = (40, 0xff, 1, 1),
        ["cap_pgsel_inv"] = (39, 1, 1, 0),
        ["cap_super_page_val"] = (34, 0xf, 1, 0),
        ["cap_fault_reg_offset"] = (24, 0x3ff, 16, 0),
        ["cap_mgaw"] = (16, 0x3f, 1, 1),
        ["cap_sagaw"] = (8, 0x1f, 1, 0),
        ["cap_caching_mode"] = (7, 1, 1, 0),
        ["cap_rwbf"] = (4, 1, 1, 0),
        ["ecap_smpwc"] = (48, 1, 1, 0),
        ["ecap_flts"] = (47, 1, 1, 0),
        ["ecap_slts"] = (46, 1, 1, 0),
        ["ecap_smts"] = (43, 1, 1, 0),
        ["ecap_pds"] = (42, 1, 1, 0),
        ["ecap_dit"] = (41, 1, 1, 0),
        ["ecap_pasid"] = (40, 1, 1, 0),
        ["ecap_pss"] = (35, 0x1f, 1, 0),
        ["ecap_eafs"] = (34, 1, 1, 0),
        ["ecap_srs"] = (31, 1, 1, 0),
        ["ecap_prs"] = (29, 1, 1, 0),
        ["ecap_nest"] = (26, 1, 1, 0),
        ["ecap_iotlb_offset"] = (8, 0x3ff, 16, 0),
        ["ecap_sc_support"] = (7, 1, 1, 0),
        ["ecap_pass_through"] = (6, 1, 1, 0),
        ["ecap_ir_support"] = (3, 1, 1, 0),
        ["ecap_dev_iotlb_support"] = (2, 1, 1, 0),
        ["ecap_qis"] = (1, 1, 1, 0),
    };

    public static IEnumerable<object[]> Decoders() =>
        typeof(DmarCap).GetMethods(BindingFlags.Public | BindingFlags.Static)
            .Where(m => m.GetCustomAttribute<KernelSymbolAttribute>() is not null)
            .Select(m => new object[] { m.GetCustomAttribute<KernelSymbolAttribute>()!.Symbol });

    [Theory]
    [MemberData(nameof(Decoders))]
    public void Each_decoder_reads_the_bits_its_macro_reads(string macro)
    {
        MethodInfo m = typeof(DmarCap).GetMethods(BindingFlags.Public | BindingFlags.Static)
            .Single(x => x.GetCustomAttribute<KernelSymbolAttribute>()?.Symbol == macro);
        if (macro == "cap_ndoms")
        {
            // 1 << (4 + 2 * ND), ND = bits 2:0.
            for (ulong nd = 0; nd < 8; nd++)
            {
                Assert.Equal(1 << (4 + (2 * (int)nd)), Convert.ToInt64(m.Invoke(null, [nd | ~7UL]), System.Globalization.CultureInfo.InvariantCulture));
            }

            return;
        }

        Assert.True(Linux.TryGetValue(macro, out var f), $"{macro} has no entry in the table of 5.15's macros");
        var rng = new Random(macro.GetHashCode(StringComparison.Ordinal));
        foreach (ulong reg in Registers(rng))
        {
            ulong expected = (((reg >> f.Shift) & f.Mask) * f.Scale) + f.Offset;
            object? got = m.Invoke(null, [reg]);
            ulong actual = got is bool b ? (b ? 1UL : 0UL) : Convert.ToUInt64(got, System.Globalization.CultureInfo.InvariantCulture);
            Assert.True(expected == actual, $"{macro}(0x{reg:x16}) = {actual}, 5.15 gives {expected}");
        }
    }

    // Every single bit, every register with one bit clear, and random values.
    private static IEnumerable<ulong> Registers(Random rng)
    {
        yield return 0;
        yield return ulong.MaxValue;
        for (int bit = 0; bit < 64; bit++)
        {
            yield return 1UL << bit;
            yield return ~(1UL << bit);
        }

        for (int i = 0; i < 256; i++)
        {
            yield return (ulong)rng.NextInt64() ^ ((ulong)rng.NextInt64() << 1);
        }
    }
}
