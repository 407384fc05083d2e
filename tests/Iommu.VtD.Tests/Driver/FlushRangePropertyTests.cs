using CsCheck;
using Iommu.Devices;
using Iommu.VtD.Driver;
using Iommu.VtD.Hardware;
using static Iommu.VtD.Tests.Driver.DriverTestKit;
using static Iommu.VtD.Tests.Driver.FirstLevelTestKit;

namespace Iommu.VtD.Tests.Driver;

/// <summary>
/// A nested (stage-1) user invalidation of n pages at a random address, n near the boundaries of the mask
/// arithmetic (0, 2^k ± 1, 2^52, above 2^63, U64_MAX): no page of the requested range keeps its old
/// translation, neither in the unit's IOTLB nor in an ATS device's ATC.
/// </summary>
public sealed class FlushRangePropertyTests
{
    private const ulong HostBase = 0x1_0000_0000, GuestPage = 0x80_0000, HostPage = 0x1_8000_0000, Table = 0x67;
    private const int Pages = 16; // guest VA pages 1..15 are mapped

    private static readonly VtdConfig AtsConfig = VtdConfig.ScalableModeFirstLevel48Bit with { DeviceTlb = true };

    private static readonly ulong[] Counts =
    [
        0, 1, 2, 3, 4, 5, 7, 8, 9, 15, 16, 17, (1UL << 52) - 1, 1UL << 52, (1UL << 52) + 1,
        (1UL << 63) - 1, 1UL << 63, (1UL << 63) + 1, ulong.MaxValue - 1, ulong.MaxValue,
    ];

    /// <summary>
    /// The guest maps VA pages 1-15 to one page, the device reads each (through the ATC and without), the guest
    /// retargets them all and invalidates n pages at page a: every page p with a &lt;= p &lt; a + n then reads the
    /// new target both ways (the range is the request's, whatever alignment the flush needs to cover it).
    /// </summary>
    [Fact]
    public void Property_a_flush_of_n_pages_leaves_no_page_of_the_range_cached()
    {
        Gen.Select(Gen.Int[0, Counts.Length - 1], Gen.Int[0, Pages - 1]).Sample((ci, a) =>
        {
            ulong n = Counts[ci];
            ulong addr = n == ulong.MaxValue ? 0 : (ulong)a * K4; // all pages are asked from address 0 only
            using DriverBed f = NewFl(AtsConfig);
            PciDevice dev = f.Pci.AddDevice(new PciDeviceSpec("0000:00:03.0") { PasidWidth = 20, Ats = true, Acs = true });
            Assert.Equal(Errno.None, f.Driver.DomainAllocNestParent(f.Pci, out DmarDomain? parent));
            Assert.Equal(Errno.None, f.Iommu.Map(parent!, 0, HostBase, 8 * Sizes.MiB, RW));
            Assert.Equal(Errno.None, f.Iommu.Map(parent!, GuestPage, HostPage, 2 * K4, RW));
            f.Platform.Memory.WriteUInt64(HostBase + 0x1000, 0x2000 | Table);
            f.Platform.Memory.WriteUInt64(HostBase + 0x2000, 0x3000 | Table);
            f.Platform.Memory.WriteUInt64(HostBase + 0x3000, 0x4000 | Table);
            for (ulong p = 1; p < Pages; p++)
            {
                f.Platform.Memory.WriteUInt64(HostBase + 0x4000 + (p * 8), GuestPage | Table);
            }

            Assert.Equal(Errno.None, f.Driver.DomainAllocNested(parent!, new IommuHwptVtdS1(IommuVtdS1.None, 0x1000, 48), out DmarDomain? nested));
            Assert.Equal(Errno.None, f.Driver.AttachNestedDev(nested!, dev));
            for (ulong p = 1; p < Pages; p++)
            {
                Assert.Equal(HostPage + 0x10, Read(dev, p, ats: true));
                Assert.Equal(HostPage + 0x10, Read(dev, p, ats: false));
                f.Platform.Memory.WriteUInt64(HostBase + 0x4000 + (p * 8), (GuestPage + K4) | Table);
            }

            Assert.Equal(Errno.None, f.Driver.CacheInvalidateUser(nested!, [new IommuHwptVtdS1Invalidate(addr, n, IommuVtdInv.Leaf)], out int processed));
            Assert.Equal(1, processed);
            ulong first = addr / K4;
            for (ulong p = 1; p < Pages; p++)
            {
                if (p >= first && p - first < n)
                {
                    Assert.True(HostPage + K4 + 0x10 == Read(dev, p, ats: true), $"ATC kept page {p} after a flush of {n} pages at page {first}");
                    Assert.True(HostPage + K4 + 0x10 == Read(dev, p, ats: false), $"IOTLB kept page {p} after a flush of {n} pages at page {first}");
                }
            }
        }, iter: 80);
    }

    private static ulong Read(PciDevice dev, ulong page, bool ats)
    {
        Span<byte> b = stackalloc byte[8];
        DmaResult r = ats ? dev.AtsDmaRead(null, (page * K4) + 0x10, b) : dev.DmaRead(null, (page * K4) + 0x10, b);
        return r.IsOk ? r.Address : 0;
    }
}
