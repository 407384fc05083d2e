using Iommu.Devices;
using Iommu.Domains;
using Iommu.VtD.Hardware;
using static Iommu.VtD.Tests.Driver.DriverTestKit;

namespace Iommu.VtD.Tests.Driver;

/// <summary>
/// 5.15's page sizes follow the first attach: a domain offers 4K alone until then, so a 2M map made
/// before it is 512 4K entries for good (the behaviour IommuCore.Map's remarks describe).
/// </summary>
public sealed class MapBeforeAttachTests
{
    [Theory]
    [InlineData("Legacy48")]
    [InlineData("Sm48")]
    public void A_2M_map_before_the_first_attach_is_512_4K_entries_and_one_after_it_is_a_superpage(string config)
    {
        using DriverBed f = New(config);
        PciDevice dev = f.AddDevice("0000:00:03.0");
        IDomain dom = f.Unmanaged();
        Assert.Equal(K4, dom.PgsizeBitmap);

        Assert.Equal(Errno.None, f.Iommu.Map(dom, 0x4000_0000, 0x8000_0000, M2, RW));
        Assert.Equal(Errno.None, f.Iommu.AttachDevice(dom, dev));
        Assert.Equal(K4 | M2 | G1, dom.PgsizeBitmap);
        Assert.Equal(Errno.None, f.Iommu.Map(dom, 0x8000_0000, 0xC000_0000, M2, RW));

        for (ulong off = 0; off < M2; off += 0x7_F000)
        {
            VtdTranslation before = f.Unit.Translate(dev.RequesterId, null, 0x4000_0000 + off, 4, DmaAccess.Read);
            Assert.Equal(0x8000_0000 + off, before.PhysicalAddress);
            Assert.Equal(K4, before.PageSize);

            VtdTranslation after = f.Unit.Translate(dev.RequesterId, null, 0x8000_0000 + off, 4, DmaAccess.Read);
            Assert.Equal(0xC000_0000 + off, after.PhysicalAddress);
            Assert.Equal(M2, after.PageSize);
        }
    }
}
