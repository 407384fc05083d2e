using Iommu;
using Iommu.Devices;
using Iommu.VtD.Driver;
using Iommu.VtD.Hardware;
using Vfio.Type1.Tests.Infrastructure;

namespace Vfio.Type1.Tests;

/// <summary>
/// One container, groups behind two VT-d units of different widths (48-bit and 39-bit). A domain in
/// use on the wider unit is refused behind the narrower one (-EINVAL; 5.15 would free its top-level
/// table while the wider unit still walks it), so type1 keeps a domain of its own for that group, as
/// 5.15's <c>vfio_iommu_type1_attach_group</c> does when the existing domain will not take it; in the
/// other order the groups share one 3-level domain. Either way both devices reach the same host pages.
/// </summary>
public sealed class UnitWidthTests
{
    private const ulong Iova = 0x4000_0000;

    [Theory]
    [InlineData(true, 2)]   // wide unit first: the narrow group gets its own domain
    [InlineData(false, 1)]  // narrow unit first: one 3-level domain for both
    public void Groups_behind_units_of_two_widths_share_a_container_and_its_mappings(bool wideFirst, int domains)
    {
        using var bed = new Type1Bed(VtdConfig.Legacy48Bit, secondUnit: VtdConfig.Legacy39Bit);
        PciDevice wide = bed.AddDevice("0000:00:03.0");
        PciDevice narrow = bed.AddDevice("0000:05:00.0");
        PciDevice first = wideFirst ? wide : narrow, second = wideFirst ? narrow : wide;
        (VfioContainer c, _) = bed.Std(first);
        ulong buf = bed.Buffer(4 * Sizes.MiB, seed: 0x40);
        Assert.Equal(Errno.None, c.MapDma(Type1Bed.Map(buf, Iova, 4 * Sizes.MiB)));

        bed.Vfio.OpenGroup(bed.Proc, second.IommuGroup!.Id, out VfioGroup? g2, out _).ThrowIfError();
        Assert.Equal(Errno.None, g2!.SetContainer(c));

        Assert.Equal(domains, c.Backend!.Domains.Count);
        Assert.All(c.Backend.Domains, d => Assert.Equal(ReferenceEquals(bed.Iommu.GetDomainForDev(narrow), d) ? 3 : 4, ((DmarDomain)d).PageTable.Levels));
        foreach (PciDevice dev in new[] { wide, narrow })
        {
            var b = new byte[8];
            DmaResult r = dev.DmaRead(null, Iova + (3 * Sizes.MiB) + 0x10, b);
            Assert.True(r.IsOk, $"{dev.Name}: {r}");
            Assert.All(b, x => Assert.Equal(0x40, x)); // page 768 of the buffer: (0x40 + 768) & 0xff
        }
    }
}
