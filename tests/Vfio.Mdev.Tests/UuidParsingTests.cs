using Iommu;
using Vfio.Mdev.Tests.Infrastructure;

namespace Vfio.Mdev.Tests;

public sealed class UuidParsingTests
{
    private const string Lower = "83b8f4f2-509f-382f-3c1e-e6bfe0fa1001";

    [Theory]
    [InlineData(Lower)]
    [InlineData(Lower + "\n")]
    [InlineData("83B8F4F2-509F-382F-3C1E-E6BFE0FA1001")]
    [InlineData("83B8F4F2-509f-382F-3c1e-E6BFE0FA1001\n")]
    [InlineData(Lower + "x")] // guid_parse looks at 36 bytes only; the 37th is not checked
    public void Create_store_accepts_36_or_37_bytes_in_either_case_and_names_the_device_in_lowercase(string text)
    {
        using var bed = new MdevBed();
        bed.Register(bed.ParentA, "a");
        Assert.Equal(Errno.None, bed.Mdev.Create(bed.ParentA, "fake-a", text, out MdevDevice? m));
        Assert.Equal(Lower, m!.Name);
        Assert.Equal(Guid.Parse(Lower), m.Uuid);
        Assert.Same(m, bed.Mdev.FindDevice(Guid.Parse(Lower)));
    }

    [Theory]
    [InlineData("")]
    [InlineData("83b8f4f2-509f-382f-3c1e-e6bfe0fa100")] // 35
    [InlineData(Lower + "\n\n")] // 38
    [InlineData(Lower + "00")] // 38
    [InlineData("83b8f4f2-509f-382f-3c1e-e6bfe0fa100g")] // not hex
    [InlineData("83b8f4f2+509f-382f-3c1e-e6bfe0fa1001")] // hyphen misplaced
    [InlineData("83b8f4f2509f-382f-3c1e-e6bfe0fa10011")]
    [InlineData("{83b8f4f2-509f-382f-3c1e-e6bfe0fa10}")]
    [InlineData(" 83b8f4f2-509f-382f-3c1e-e6bfe0fa1001")]
    public void Create_store_rejects_other_lengths_and_malformed_uuids_with_EINVAL(string text)
    {
        using var bed = new MdevBed();
        FakeVendor v = bed.Register(bed.ParentA, "a");
        Assert.Equal(Errno.EINVAL, bed.Mdev.Create(bed.ParentA, "fake-a", text, out MdevDevice? m));
        Assert.Null(m);
        Assert.Empty(v.Calls);
        Assert.Empty(bed.Mdev.Devices);
    }

    [Fact]
    public void Upper_and_lower_case_texts_name_the_same_uuid()
    {
        using var bed = new MdevBed();
        bed.Register(bed.ParentA, "a");
        Assert.Equal(Errno.None, bed.Mdev.Create(bed.ParentA, "fake-a", Lower, out _));
        Assert.Equal(Errno.EEXIST, bed.Mdev.Create(bed.ParentA, "fake-a", Lower.ToUpperInvariant() + "\n", out _));
    }
}
