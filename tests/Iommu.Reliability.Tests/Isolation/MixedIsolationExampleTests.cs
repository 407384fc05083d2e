using Iommu.Domains;
using Iommu.VtD.Driver;

namespace Iommu.Reliability.Tests.Isolation;

/// <summary>
/// Fixed op lists on the isolation bed with both stages: the stale window a guest's stage-1 change opens
/// and its end, and the P_IOTLB a first-level domain's unmap owes each PASID it is reached through (the
/// random property rarely lines these up within its budget; each of these fails when that flush is skipped).
/// </summary>
public sealed class MixedIsolationExampleTests
{
    [Fact]
    public void A_stage_one_change_is_answered_from_the_iotlb_until_the_guest_invalidates()
    {
        CoreIsolationConfig config = CoreIsolationConfig.All.First(c => c.BothStages);
        using var bed = new CoreIsolationBed(config);
        DmaOp read3 = new(0, false, ProbePasid.None, 0, ProbeAddr.OwnLeaf, 3, 0);
        bed.Run([new NestAllocOp(IommuVtdS1.None, true, true), new NestAttachOp(0), read3, new Stage1SetOp(3, 5, true, true, true, false, Stage1Inv.None), read3]);
        Assert.Equal((2, 2, 1), bed.NestedStats); // the second read reached the old page

        // After the guest's invalidation only the new leaf translates (the bed throws otherwise).
        bed.Run([new Stage1InvalidateOp(3, All: false), read3, new DmaOp(0, true, ProbePasid.None, 0, ProbeAddr.OwnLeaf, 3, 0)]);
        Assert.Equal((4, 4, 1), bed.NestedStats);
    }

    // 5.15's rule puts UNMANAGED domains on the first level: an unmap flushes each PASID with P_IOTLB.
    [Theory]
    [InlineData(true)]
    [InlineData(false)]
    public void A_first_level_unmap_leaves_no_stale_translation_behind_an_aux_or_attached_pasid(bool aux)
    {
        CoreIsolationConfig config = CoreIsolationConfig.All.First(c => c.Name == "fl48-2units-dma-515");
        using var bed = new CoreIsolationBed(config);
        CoreOp[] attach = aux ? [new AuxdOp(0, true), new AuxAttachOp(0, 0)] : [new PasidAttachOp(0, 0, PasidChoice.Global, 0)];
        bed.Run([
            new DomainAllocOp(0), .. attach,
            new MapOp(0, 0x1000, 1UL << 30, 0x1000, IommuProt.Read | IommuProt.Write),
            new DmaOp(0, false, ProbePasid.Known, 0, ProbeAddr.OwnLeaf, 0, 0),
            new UnmapOp(0, 0x1000, 0x1000),
            new DmaOp(0, false, ProbePasid.Known, 0, ProbeAddr.Stale, 0, 0),
        ]);
        Assert.Equal((2, 1), (bed.Probes, bed.ProbesOk));
    }
}
