using System.Globalization;
using Iommu.Devices;

namespace Iommu.Core.Tests;

public sealed class PciAddressTests
{
    [Theory]
    [InlineData("0000:00:02.0", 0, 0, 2, 0, 0x0010)]
    [InlineData("0001:3a:1f.7", 1, 0x3a, 0x1f, 7, 0x3aff)]
    [InlineData("00:02.1", 0, 0, 2, 1, 0x0011)]
    [InlineData("ffff:ff:1f.7", 0xffff, 0xff, 0x1f, 7, 0xffff)]
    public void Parses_segment_bus_device_function(string text, int seg, int bus, int dev, int fn, int rid)
    {
        PciAddress a = PciAddress.Parse(text, CultureInfo.InvariantCulture);

        Assert.Equal(seg, a.Segment);
        Assert.Equal(bus, a.Bus);
        Assert.Equal(dev, a.Device);
        Assert.Equal(fn, a.Function);
        Assert.Equal(rid, a.RequesterId);
        Assert.Equal((dev << 3) | fn, a.DevFn);
    }

    [Theory]
    [InlineData("0000:00:02.0")]
    [InlineData("0001:3a:1f.7")]
    public void Formats_like_dev_name(string text) =>
        Assert.Equal(text, PciAddress.Parse(text, CultureInfo.InvariantCulture).ToString());

    [Fact]
    public void Short_form_formats_with_segment() =>
        Assert.Equal("0000:00:02.1", PciAddress.Parse("00:02.1", CultureInfo.InvariantCulture).ToString());

    [Theory]
    [InlineData("")]
    [InlineData("0000:00:20.0")]
    [InlineData("0000:00:02.8")]
    [InlineData("0000:100:02.0")]
    [InlineData("00000:00:02.0")]
    [InlineData("0000:00:02")]
    [InlineData("0000:00:02.0.1")]
    [InlineData("zz:00.0")]
    [InlineData("0:0:0:0.0")]
    public void Rejects_malformed_addresses(string text)
    {
        Assert.False(PciAddress.TryParse(text, null, out _));
        var ex = Assert.Throws<FormatException>(() => PciAddress.Parse(text, CultureInfo.InvariantCulture));
        Assert.Contains(text, ex.Message, StringComparison.Ordinal);
    }

    [Fact]
    public void Requester_id_round_trips()
    {
        for (int rid = 0; rid <= 0xffff; rid += 0x123)
        {
            Assert.Equal(rid, PciAddress.FromRequesterId(3, (ushort)rid).RequesterId);
        }
    }
}
