using Iommu.VtD.Driver;

namespace Iommu.Reliability.Tests.Isolation;

/// <summary>Fixed op lists on the isolation bed's nested domain: the stale window a guest's stage-1 change opens, and its end.</summary>
public sealed class NestedIsolationExampleTests
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
}
