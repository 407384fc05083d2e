using System.Globalization;
using Iommu.Devices;
using Iommu.VtD.Hardware;

namespace Iommu.VtD.Tests.Hardware;

/// <summary>Fault reasons print as the kernel logs them: the code in hex, then the name.</summary>
public sealed class FaultReasonTextTests
{
    public static TheoryData<VtdFaultReason> DefinedReasons()
    {
        var d = new TheoryData<VtdFaultReason>();
        foreach (VtdFaultReason r in Enum.GetValues<VtdFaultReason>())
        {
            if (r != VtdFaultReason.None)
            {
                d.Add(r);
            }
        }

        return d;
    }

    [Theory]
    [MemberData(nameof(DefinedReasons))]
    public void Every_defined_reason_prints_its_code_in_hex_and_its_name(VtdFaultReason reason)
    {
        byte code = (byte)reason;
        string expected = string.Create(CultureInfo.InvariantCulture, $"0x{code:x2} ({Enum.GetName(reason)})");

        DmaFaultReason core = reason.ToDmaFaultReason();

        Assert.Equal(expected, reason.Format());
        Assert.Equal(expected, core.ToString());
        Assert.Equal(expected, string.Create(CultureInfo.InvariantCulture, $"{core}"));
        Assert.Equal(code, core.Code);
        Assert.Equal(code, (int)core);
        Assert.Equal(reason.ToString(), core.Name);
        Assert.Equal(reason, core.ToVtdFaultReason());
        Assert.Equal(code.ToString("x2", CultureInfo.InvariantCulture), string.Create(CultureInfo.InvariantCulture, $"{core:x2}"));
        Assert.Equal(code.ToString(CultureInfo.InvariantCulture), string.Create(CultureInfo.InvariantCulture, $"{core:d}"));
        Assert.False(core.IsNone);
    }

    [Fact]
    public void Each_code_has_one_name()
    {
        // An alias would make a code print whichever name the runtime picks.
        VtdFaultReason[] all = Enum.GetValues<VtdFaultReason>();
        Assert.Equal(all.Length, all.Distinct().Count());
        Assert.Equal(all.Length, Enum.GetNames<VtdFaultReason>().Length);
    }

    [Fact]
    public void An_undefined_code_prints_in_hex_alone_and_no_fault_prints_none()
    {
        var undefined = (VtdFaultReason)0xFF;
        Assert.False(Enum.IsDefined(undefined));
        Assert.Equal("0xff", undefined.Format());
        Assert.Equal("0xff", undefined.ToDmaFaultReason().ToString());
        Assert.Null(undefined.ToDmaFaultReason().Name);
        Assert.Equal("0x13", new DmaFaultReason(0x13, null).ToString());

        Assert.Equal("none", default(DmaFaultReason).ToString());
        Assert.True(DmaFaultReason.None.IsNone);
        Assert.Equal(DmaFaultReason.None, VtdFaultReason.None.ToDmaFaultReason());
    }

    [Fact]
    public void Reasons_are_equal_by_code()
    {
        Assert.Equal(new DmaFaultReason(0x85, null), VtdFaultReason.ScalableWrite.ToDmaFaultReason());
        Assert.NotEqual(VtdFaultReason.ScalableRead.ToDmaFaultReason(), VtdFaultReason.ScalableWrite.ToDmaFaultReason());
        Assert.True(VtdFaultReason.Write.ToDmaFaultReason() != VtdFaultReason.Read.ToDmaFaultReason());
    }

    [Fact]
    public void TryFormat_writes_what_ToString_returns_and_reports_a_short_buffer()
    {
        DmaFaultReason r = VtdFaultReason.ScalableWrite.ToDmaFaultReason();
        Span<char> buf = stackalloc char[64];
        Assert.True(r.TryFormat(buf, out int n, default, null));
        Assert.Equal("0x85 (ScalableWrite)", buf[..n].ToString());
        Assert.True(r.TryFormat(buf, out n, "X", null));
        Assert.Equal("85", buf[..n].ToString());
        Assert.False(r.TryFormat(buf[..4], out _, default, null));
    }

    /// <summary>What the recorded FRCD says, in the words a user sees: called by the fault-recording theories.</summary>
    /// <param name="frcdHigh">Bits 127:64 of the fault recording register the hardware wrote.</param>
    /// <param name="returned">The reason the translation returned.</param>
    internal static void AssertPrintsRecordedCode(ulong frcdHigh, VtdFaultReason returned)
    {
        byte fr = (byte)(frcdHigh >> 32);
        var recorded = (VtdFaultReason)fr;
        Assert.True(Enum.IsDefined(recorded), $"the hardware recorded 0x{fr:x2}, which VtdFaultReason does not name");
        string expected = string.Create(CultureInfo.InvariantCulture, $"0x{fr:x2} ({Enum.GetName(recorded)})");
        Assert.Equal(expected, returned.ToDmaFaultReason().ToString());
        Assert.Equal(expected, returned.Format());
    }
}
