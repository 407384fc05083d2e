using Iommu.Core.Tests.Infrastructure;
using Iommu.Devices;
using Iommu.Faults;
using Moq;

namespace Iommu.Core.Tests;

/// <summary>The 5.15 iopf queue (io-pgfault.c) over a mock driver: device membership errnos, grouping and one answer per group.</summary>
public sealed class IopfQueueTests : IDisposable
{
    private readonly CoreBed _p = new();

    private IommuCore Core => _p.Core;

    public void Dispose() => _p.Dispose();

    private static IommuFault Prq(uint grpid, uint pasid, bool last, ulong addr = 0x1000) => new()
    {
        Type = IommuFaultType.PageRequest,
        GroupId = grpid,
        Pasid = pasid,
        Address = addr,
        Perm = 1,
        Flags = PageRequestFlags.PasidValid | PageRequestFlags.ResponseNeedsPasid | (last ? PageRequestFlags.LastPage : 0),
    };

    private (PciDevice Dev, List<(IommuFault Fault, IommuPageResponse Msg)> Answers, IopfQueue Queue) Bed()
    {
        _p.WithIommu();
        PciDevice dev = _p.AddPci("0000:00:02.0");
        var answers = new List<(IommuFault, IommuPageResponse)>();
        _p.Driver.PageResponseMock.Setup(o => o.PageResponse(dev, It.IsAny<IommuFault>(), It.IsAny<IommuPageResponse>()))
            .Returns((Device _, IommuFault f, IommuPageResponse m) =>
            {
                lock (answers)
                {
                    answers.Add((f, m));
                }

                return Errno.None;
            });
        IopfQueue q = Core.IopfQueueAlloc("dmar0-iopfq");
        Assert.Equal("iopf_queue/dmar0-iopfq", q.Name);
        Assert.Equal(Errno.None, Core.IopfQueueAddDevice(q, dev));
        Assert.Equal(Errno.None, Core.RegisterDeviceFaultHandler(dev, Core.QueueIopf, dev));
        return (dev, answers, q);
    }

    [Fact]
    public void Membership_errnos_follow_5_15()
    {
        (PciDevice dev, _, IopfQueue q) = Bed();
        IopfQueue other = Core.IopfQueueAlloc("dmar1-iopfq");
        Assert.Equal(Errno.EBUSY, Core.IopfQueueAddDevice(q, dev));
        Assert.Equal(Errno.EBUSY, Core.IopfQueueAddDevice(other, dev));
        Assert.Equal(Errno.EINVAL, Core.IopfQueueRemoveDevice(other, dev));
        Assert.Equal(Errno.ENODEV, Core.IopfQueueAddDevice(q, new Device("plain")));
        Assert.Equal(Errno.None, Core.IopfQueueFlushDev(dev));
        Assert.Equal(Errno.None, Core.IopfQueueRemoveDevice(q, dev));
        Assert.Equal(Errno.ENODEV, Core.IopfQueueFlushDev(dev));
        Assert.Equal(Errno.ENODEV, Core.QueueIopf(Prq(1, 1, last: true), dev));
        Assert.Equal(Errno.None, Core.IopfQueueAddDevice(other, dev));
        Core.IopfQueueFree(other);
        Assert.Equal(Errno.None, Core.IopfQueueAddDevice(q, dev)); // free took it off
    }

    [Fact]
    public void A_group_is_answered_once_from_its_last_request_after_its_stored_ones_matched_by_group_index_only()
    {
        (PciDevice dev, List<(IommuFault Fault, IommuPageResponse Msg)> answers, IopfQueue q) = Bed();
        Assert.Equal(Errno.None, Core.ReportDeviceFault(dev, Prq(2, pasid: 7, last: false)));
        Assert.Equal(Errno.None, Core.ReportDeviceFault(dev, Prq(3, pasid: 7, last: false)));
        Assert.Equal(Errno.None, Core.ReportDeviceFault(dev, Prq(2, pasid: 9, last: false)));
        Assert.Equal(Errno.None, Core.IopfQueueFlushDev(dev));
        Assert.Empty(answers);

        IommuFault last = Prq(2, pasid: 8, last: true);
        Assert.Equal(Errno.None, Core.ReportDeviceFault(dev, last));
        Assert.Equal(Errno.None, Core.IopfQueueFlushDev(dev));

        // No process holds PASID 7, 8 or 9: INVALID, answered with the last request's PASID and index.
        (IommuFault f, IommuPageResponse m) = Assert.Single(answers);
        Assert.Same(last, f);
        Assert.Equal((8u, 2u, IommuPageResponseCode.Invalid, IommuPageResponse.FlagPasidValid), (m.Pasid, m.GroupId, m.Code, m.Flags));

        // After a discard (overflow recovery) group 3's stored request is gone; its last request is still answered once.
        Assert.Equal(Errno.None, Core.IopfQueueDiscardPartial(q));
        Assert.Equal(Errno.None, Core.ReportDeviceFault(dev, Prq(3, pasid: 7, last: true)));
        Assert.Equal(Errno.None, Core.IopfQueueFlushDev(dev));
        Assert.Equal(2, answers.Count);
        Assert.Equal(3u, answers[1].Msg.GroupId);
        Assert.Equal(Errno.EOPNOTSUPP, Core.QueueIopf(new IommuFault { Type = IommuFaultType.DmaUnrecoverable }, dev));
    }

    public static TheoryData<string> WorkerExceptions => ["argument", "key-not-found", "invalid-operation", "disposed", "not-supported"];

    [Theory]
    [MemberData(nameof(WorkerExceptions))]
    public void A_handler_that_throws_leaves_its_group_unanswered_and_the_worker_serving_the_next(string kind)
    {
        (PciDevice dev, List<(IommuFault Fault, IommuPageResponse Msg)> answers, _) = Bed();
        Exception boom = kind switch
        {
            "argument" => new ArgumentException("boom"),
            "key-not-found" => new KeyNotFoundException("boom"),
            "invalid-operation" => new InvalidOperationException("boom"),
            "disposed" => new ObjectDisposedException("boom"),
            _ => new NotSupportedException("boom"),
        };
        _p.Driver.PageResponseMock.Setup(o => o.PageResponse(dev, It.Is<IommuFault>(f => f.GroupId == 1), It.IsAny<IommuPageResponse>()))
            .Throws(boom);

        // On a thread-pool thread an unhandled exception would end the test host; the worker logs it and goes on.
        Assert.Equal(Errno.None, Core.ReportDeviceFault(dev, Prq(1, pasid: 7, last: true)));
        Assert.Equal(Errno.None, Core.ReportDeviceFault(dev, Prq(2, pasid: 7, last: true)));
        Assert.Equal(Errno.None, Core.IopfQueueFlushDev(dev));
        (IommuFault f, _) = Assert.Single(answers);
        Assert.Equal(2u, f.GroupId);
    }
}
