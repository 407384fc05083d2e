using Iommu;
using Iommu.Devices;
using Iommu.VtD.Hardware;
using Vfio.Type1.Tests.Infrastructure;
using Vfio.Type1.Uapi;

namespace Vfio.Type1.Tests;

/// <summary>
/// vfio_iommu_type1_attach_group tries the container's domains of the same ops and prot first, and keeps the
/// group's own new domain (replaying every mapping into it) when the IOMMU driver refuses the group there.
/// The container then holds two domains of the same (ops, prot), a state 5.15 allows. (Found by
/// Type1SemanticsPropertyTests: Audit() called it an invariant violation.)
/// </summary>
public sealed class DomainReuseRefusedTests
{
    private const ulong Iova = 0x4000_0000;

    [Fact]
    public void A_group_the_driver_refuses_in_a_compatible_domain_gets_its_own_with_the_mappings_replayed()
    {
        using var bed = new Type1Bed(secondUnit: VtdConfig.Legacy48Bit);
        PciDevice wide = bed.AddDevice("0000:05:00.0");   // the 48-bit unit: a 4-level domain
        PciDevice narrow = bed.AddDevice("0000:00:03.0"); // the 39-bit unit: cannot join a 4-level domain in use
        (VfioContainer c, _) = bed.Std(wide);
        ulong buf = bed.Buffer(2 * Sizes.Page, seed: 0x40);
        Assert.Equal(Errno.None, c.MapDma(Type1Bed.Map(buf, Iova, 2 * Sizes.Page)));

        bed.Vfio.OpenGroup(bed.Proc, narrow.IommuGroup!.Id, out VfioGroup? g, out _).ThrowIfError();
        Assert.Equal(Errno.None, g!.SetContainer(c));
        VfioIommuType1 t1 = c.Backend!;
        Assert.Equal(2, t1.Domains.Count);
        Assert.Same(t1.Domains[0].Ops, t1.Domains[1].Ops);
        t1.Audit();

        var b = new byte[1];
        foreach (PciDevice dev in new[] { wide, narrow })
        {
            Assert.True(dev.DmaRead(null, Iova + Sizes.Page, b).IsOk);
            Assert.Equal(0x41, b[0]);
        }

        var unmap = new VfioIommuType1DmaUnmap(24, 0, Iova, 2 * Sizes.Page);
        Assert.Equal(Errno.None, c.UnmapDma(ref unmap));
        Assert.Equal(2 * Sizes.Page, unmap.Size);
        Assert.False(wide.DmaRead(null, Iova, b).IsOk);
        Assert.False(narrow.DmaRead(null, Iova, b).IsOk);
        Assert.Equal(0, bed.Proc.LockedVm);
        t1.Audit();
    }
}
