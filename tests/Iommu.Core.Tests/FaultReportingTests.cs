using Iommu.Core.Tests.Infrastructure;
using Iommu.Devices;
using Iommu.Domains;
using Iommu.Faults;
using Moq;

namespace Iommu.Core.Tests;

/// <summary>Fault reporting (spec §1.13): legacy per-domain handler and per-device fault handlers with page responses.</summary>
public sealed class FaultReportingTests : IDisposable
{
    private const string Dev0 = "0000:00:02.0";

    private readonly CoreBed _p = new();

    private MockIommu Driver => _p.Driver;

    private IommuCore Core => _p.Core;

    public void Dispose() => _p.Dispose();

    private static IommuFault PageRequest(uint groupId, uint pasid = 0, PageRequestFlags flags = PageRequestFlags.LastPage) =>
        new() { Type = IommuFaultType.PageRequest, GroupId = groupId, Pasid = pasid, Flags = flags, Address = 0x1000 * (ulong)(groupId + 1) };

    private PciDevice ProbedDevice()
    {
        _p.WithIommu();
        return _p.AddPci(Dev0);
    }

    private List<(IommuFault Fault, IommuPageResponse Msg)> RecordPageResponses(Device dev, Errno result = Errno.None)
    {
        var responses = new List<(IommuFault, IommuPageResponse)>();
        Driver.PageResponseMock.Setup(o => o.PageResponse(dev, It.IsAny<IommuFault>(), It.IsAny<IommuPageResponse>()))
            .Returns((Device _, IommuFault f, IommuPageResponse m) =>
            {
                responses.Add((f, m));
                return result;
            });
        return responses;
    }

    // ---- legacy: iommu_set_fault_handler / report_iommu_fault ------------------------------------

    [Fact]
    public void ReportFault_without_a_handler_is_minus_ENOSYS()
    {
        IommuDomain d = Driver.NewDomain();

        Assert.Equal(-38, Core.ReportFault(d, new Device("x"), 0x1000, IommuFaultAccess.Read));
    }

    [Fact]
    public void ReportFault_returns_the_handler_result_and_passes_everything_to_it()
    {
        IommuDomain d = Driver.NewDomain();
        var dev = new Device("x");
        var token = new object();
        (IDomain, Device, ulong, IommuFaultAccess, object?)? seen = null;
        Core.SetFaultHandler(d, (dom, dv, iova, acc, tok) =>
        {
            seen = (dom, dv, iova, acc, tok);
            return -5;
        }, token);

        Assert.Equal(-5, Core.ReportFault(d, dev, 0xabc000, IommuFaultAccess.Write));

        Assert.Equal((d, dev, 0xabc000UL, IommuFaultAccess.Write, token), seen);
    }

    [Fact]
    public void ReportFault_after_removing_the_handler_is_minus_ENOSYS_again()
    {
        IommuDomain d = Driver.NewDomain();
        Core.SetFaultHandler(d, (_, _, _, _, _) => 0, null);
        Assert.Equal(0, Core.ReportFault(d, new Device("x"), 0, IommuFaultAccess.Read));

        Core.SetFaultHandler(d, null, null);

        Assert.Equal(-38, Core.ReportFault(d, new Device("x"), 0, IommuFaultAccess.Read));
    }

    // ---- per-device handlers --------------------------------------------------------------------

    [Fact]
    public void Register_on_a_device_without_iommu_data_is_EINVAL()
    {
        PciDevice dev = _p.AddPci(Dev0); // never probed

        Assert.Equal(Errno.EINVAL, Core.RegisterDeviceFaultHandler(dev, (_, _) => Errno.None, null));
        Assert.Equal(Errno.EINVAL, Core.UnregisterDeviceFaultHandler(dev));
    }

    [Fact]
    public void Register_twice_is_EBUSY_and_keeps_the_first_handler()
    {
        PciDevice dev = ProbedDevice();
        int first = 0, second = 0;

        Assert.Equal(Errno.None, Core.RegisterDeviceFaultHandler(dev, (_, _) => { first++; return Errno.None; }, null));
        Assert.Equal(Errno.EBUSY, Core.RegisterDeviceFaultHandler(dev, (_, _) => { second++; return Errno.None; }, null));

        Assert.Equal(Errno.None, Core.ReportDeviceFault(dev, new IommuFault { Type = IommuFaultType.DmaUnrecoverable }));
        Assert.Equal((1, 0), (first, second));
    }

    [Fact]
    public void Unregister_without_a_handler_is_zero_and_allows_registering_again()
    {
        PciDevice dev = ProbedDevice();

        Assert.Equal(Errno.None, Core.UnregisterDeviceFaultHandler(dev));
        Assert.Equal(Errno.None, Core.RegisterDeviceFaultHandler(dev, (_, _) => Errno.None, null));
        Assert.Equal(Errno.None, Core.UnregisterDeviceFaultHandler(dev));
        Assert.Equal(Errno.None, Core.RegisterDeviceFaultHandler(dev, (_, _) => Errno.None, null));
    }

    [Fact]
    public void ReportDeviceFault_without_a_handler_is_EINVAL()
    {
        PciDevice probed = ProbedDevice();
        var unprobed = new Device("not-behind-an-iommu");

        Assert.Equal(Errno.EINVAL, Core.ReportDeviceFault(probed, PageRequest(1)));
        Assert.Equal(Errno.EINVAL, Core.ReportDeviceFault(unprobed, PageRequest(1)));
    }

    [Fact]
    public void ReportDeviceFault_returns_the_handler_result_and_passes_the_fault_and_data()
    {
        PciDevice dev = ProbedDevice();
        var data = new object();
        (IommuFault, object?)? seen = null;
        Assert.Equal(Errno.None, Core.RegisterDeviceFaultHandler(dev, (f, dt) => { seen = (f, dt); return Errno.ENOSPC; }, data));
        IommuFault fault = new() { Type = IommuFaultType.DmaUnrecoverable, Reason = 6, Address = 0xfee00000 };

        Assert.Equal(Errno.ENOSPC, Core.ReportDeviceFault(dev, fault));

        Assert.Equal((fault, data), seen);
    }

    [Fact]
    public void A_last_page_request_stays_pending_until_answered()
    {
        PciDevice dev = ProbedDevice();
        List<(IommuFault Fault, IommuPageResponse Msg)> responses = RecordPageResponses(dev);
        Assert.Equal(Errno.None, Core.RegisterDeviceFaultHandler(dev, (_, _) => Errno.None, null));
        IommuFault prq = PageRequest(groupId: 3);

        Assert.Equal(Errno.None, Core.ReportDeviceFault(dev, prq));
        Assert.Equal(Errno.EBUSY, Core.UnregisterDeviceFaultHandler(dev));

        Assert.Equal(Errno.None, Core.PageResponse(dev, new IommuPageResponse { GroupId = 3, Code = IommuPageResponseCode.Success }));

        Assert.Single(responses);
        Assert.Equal(prq, responses[0].Fault);
        Assert.Equal(3u, responses[0].Msg.GroupId);
        Assert.Equal(Errno.None, Core.UnregisterDeviceFaultHandler(dev));
    }

    // 5.15 takes dev->iommu->lock in iommu_register_device_fault_handler, _unregister_ and
    // iommu_report_device_fault (across the handler), so two registrations never both succeed and an
    // unregister never drops a handler between a report's lookup and its request going pending: a
    // request whose report succeeded can always be answered. Rounds of two threads at a barrier: both
    // register (one wins), then one reports and answers a page request while the other unregisters
    // until it succeeds.
    [Fact]
    public void Register_unregister_and_report_on_two_threads_keep_one_handler_and_every_reported_request_answerable()
    {
        PciDevice dev = ProbedDevice();
        RecordPageResponses(dev);
        // At least Rounds rounds, and on until a report has reached the handler before an unregister (on a loaded
        // machine the unregistering thread can win every race of the first rounds); both threads decide to stop
        // after the same barrier, from the same count.
        const int Rounds = 20_000, MaxRounds = 400_000;
        var errors = new System.Collections.Concurrent.ConcurrentQueue<string>();
        using var barrier = new Barrier(2);
        var wins = new int[MaxRounds];
        long answered = 0;

        void Run(bool reporter)
        {
            try
            {
                for (int r = 0; r < MaxRounds && errors.IsEmpty && (r < Rounds || Interlocked.Read(ref answered) == 0); r++)
                {
                    barrier.SignalAndWait();
                    if (Core.RegisterDeviceFaultHandler(dev, (_, _) => Errno.None, null) == Errno.None)
                    {
                        Interlocked.Increment(ref wins[r]);
                    }

                    barrier.SignalAndWait();
                    if (wins[r] != 1)
                    {
                        errors.Enqueue($"round {r}: {wins[r]} registrations succeeded");
                    }

                    barrier.SignalAndWait();
                    if (reporter)
                    {
                        if (Core.ReportDeviceFault(dev, PageRequest(groupId: (uint)r & 0x1FF)) == Errno.None)
                        {
                            Errno e = Core.PageResponse(dev, new IommuPageResponse { GroupId = (uint)r & 0x1FF, Code = IommuPageResponseCode.Success });
                            if (e != Errno.None)
                            {
                                errors.Enqueue($"round {r}: a reported page request could not be answered: {e}");
                            }

                            Interlocked.Increment(ref answered);
                        }
                    }
                    else
                    {
                        // Every other round the unregister starts a little later, so reports reach the handler before
                        // it too: on some machines the thread released last by the barrier wins every race otherwise.
                        if ((r & 1) == 0)
                        {
                            Thread.SpinWait(r % 400);
                        }

                        var spin = default(SpinWait);
                        while (Core.UnregisterDeviceFaultHandler(dev) == Errno.EBUSY)
                        {
                            spin.SpinOnce();
                        }
                    }

                    barrier.SignalAndWait();
                }
            }
            catch (Exception ex)
            {
                errors.Enqueue(ex.ToString());
                barrier.RemoveParticipant();
            }
        }

        var other = new Thread(() => Run(reporter: true)) { IsBackground = true };
        other.Start();
        Run(reporter: false);
        Assert.True(other.Join(TimeSpan.FromSeconds(60)));
        Assert.True(errors.IsEmpty, string.Join("\n", errors.Take(5)));
        Assert.True(answered > 0, "no report reached the handler before the unregister");
    }

    [Fact]
    public void PageResponse_returns_the_driver_result_and_consumes_the_request()
    {
        PciDevice dev = ProbedDevice();
        RecordPageResponses(dev, Errno.EIO);
        Assert.Equal(Errno.None, Core.RegisterDeviceFaultHandler(dev, (_, _) => Errno.None, null));
        Assert.Equal(Errno.None, Core.ReportDeviceFault(dev, PageRequest(groupId: 3)));

        Assert.Equal(Errno.EIO, Core.PageResponse(dev, new IommuPageResponse { GroupId = 3 }));
        Assert.Equal(Errno.EINVAL, Core.PageResponse(dev, new IommuPageResponse { GroupId = 3 }));
    }

    [Theory]
    [InlineData(IommuFaultType.PageRequest, PageRequestFlags.None)]
    [InlineData(IommuFaultType.PageRequest, PageRequestFlags.PasidValid)]
    [InlineData(IommuFaultType.DmaUnrecoverable, PageRequestFlags.LastPage)]
    public void Faults_other_than_last_page_requests_are_not_queued(IommuFaultType type, PageRequestFlags flags)
    {
        PciDevice dev = ProbedDevice();
        List<(IommuFault, IommuPageResponse)> responses = RecordPageResponses(dev);
        Assert.Equal(Errno.None, Core.RegisterDeviceFaultHandler(dev, (_, _) => Errno.None, null));

        Assert.Equal(Errno.None, Core.ReportDeviceFault(dev, new IommuFault { Type = type, Flags = flags, GroupId = 1 }));

        Assert.Equal(Errno.None, Core.UnregisterDeviceFaultHandler(dev));
        Assert.Empty(responses);
    }

    [Fact]
    public void A_page_request_the_handler_fails_is_dequeued_again()
    {
        PciDevice dev = ProbedDevice();
        List<(IommuFault, IommuPageResponse)> responses = RecordPageResponses(dev);
        Assert.Equal(Errno.None, Core.RegisterDeviceFaultHandler(dev, (_, _) => Errno.ENOMEM, null));

        Assert.Equal(Errno.ENOMEM, Core.ReportDeviceFault(dev, PageRequest(groupId: 5)));

        Assert.Equal(Errno.EINVAL, Core.PageResponse(dev, new IommuPageResponse { GroupId = 5 }));
        Assert.Empty(responses);
        Assert.Equal(Errno.None, Core.UnregisterDeviceFaultHandler(dev));
    }

    [Fact]
    public void PageResponse_without_the_driver_callback_is_ENODEV()
    {
        Driver.Optional &= ~OptionalOps.PageResponse;
        PciDevice dev = ProbedDevice();
        Assert.Equal(Errno.None, Core.RegisterDeviceFaultHandler(dev, (_, _) => Errno.None, null));
        Assert.Equal(Errno.None, Core.ReportDeviceFault(dev, PageRequest(groupId: 1)));

        Assert.Equal(Errno.ENODEV, Core.PageResponse(dev, new IommuPageResponse { GroupId = 1 }));
    }

    [Fact]
    public void PageResponse_for_a_device_without_domain_is_ENODEV()
    {
        PciDevice dev = _p.AddPci(Dev0);

        Assert.Equal(Errno.ENODEV, Core.PageResponse(dev, new IommuPageResponse { GroupId = 1 }));
    }

    [Fact]
    public void PageResponse_without_a_registered_handler_is_EINVAL()
    {
        PciDevice dev = ProbedDevice();

        Assert.Equal(Errno.EINVAL, Core.PageResponse(dev, new IommuPageResponse { GroupId = 1 }));
    }

    [Fact]
    public void PageResponse_with_a_bad_version_or_unknown_flags_is_EINVAL_and_keeps_the_request()
    {
        PciDevice dev = ProbedDevice();
        List<(IommuFault, IommuPageResponse)> responses = RecordPageResponses(dev);
        Assert.Equal(Errno.None, Core.RegisterDeviceFaultHandler(dev, (_, _) => Errno.None, null));
        Assert.Equal(Errno.None, Core.ReportDeviceFault(dev, PageRequest(groupId: 1)));

        Assert.Equal(Errno.EINVAL, Core.PageResponse(dev, new IommuPageResponse { GroupId = 1, Version = 2 }));
        Assert.Equal(Errno.EINVAL, Core.PageResponse(dev, new IommuPageResponse { GroupId = 1, Flags = 2 }));
        Assert.Empty(responses);

        Assert.Equal(Errno.None, Core.PageResponse(dev, new IommuPageResponse { GroupId = 1 }));
        Assert.Single(responses);
    }

    [Fact]
    public void PageResponse_matching_no_group_id_is_EINVAL()
    {
        PciDevice dev = ProbedDevice();
        List<(IommuFault, IommuPageResponse)> responses = RecordPageResponses(dev);
        Assert.Equal(Errno.None, Core.RegisterDeviceFaultHandler(dev, (_, _) => Errno.None, null));
        Assert.Equal(Errno.None, Core.ReportDeviceFault(dev, PageRequest(groupId: 1)));

        Assert.Equal(Errno.EINVAL, Core.PageResponse(dev, new IommuPageResponse { GroupId = 2 }));
        Assert.Empty(responses);
        Assert.Equal(Errno.EBUSY, Core.UnregisterDeviceFaultHandler(dev));
    }

    [Fact]
    public void PageResponse_picks_the_request_with_the_matching_group_id()
    {
        PciDevice dev = ProbedDevice();
        List<(IommuFault Fault, IommuPageResponse Msg)> responses = RecordPageResponses(dev);
        Assert.Equal(Errno.None, Core.RegisterDeviceFaultHandler(dev, (_, _) => Errno.None, null));
        IommuFault g1 = PageRequest(groupId: 1);
        IommuFault g2 = PageRequest(groupId: 2);
        Assert.Equal(Errno.None, Core.ReportDeviceFault(dev, g1));
        Assert.Equal(Errno.None, Core.ReportDeviceFault(dev, g2));

        Assert.Equal(Errno.None, Core.PageResponse(dev, new IommuPageResponse { GroupId = 2 }));

        Assert.Equal(g2, Assert.Single(responses).Fault);
        Assert.Equal(Errno.EBUSY, Core.UnregisterDeviceFaultHandler(dev)); // group 1 still pending
    }

    [Fact]
    public void PageResponse_for_a_request_that_needs_the_pasid_must_carry_the_right_one()
    {
        PciDevice dev = ProbedDevice();
        List<(IommuFault Fault, IommuPageResponse Msg)> responses = RecordPageResponses(dev);
        Assert.Equal(Errno.None, Core.RegisterDeviceFaultHandler(dev, (_, _) => Errno.None, null));
        IommuFault prq = PageRequest(groupId: 1, pasid: 9, PageRequestFlags.LastPage | PageRequestFlags.PasidValid | PageRequestFlags.ResponseNeedsPasid);
        Assert.Equal(Errno.None, Core.ReportDeviceFault(dev, prq));

        Assert.Equal(Errno.EINVAL, Core.PageResponse(dev, new IommuPageResponse { GroupId = 1, Pasid = 9 })); // PASID_VALID missing
        Assert.Equal(Errno.EINVAL, Core.PageResponse(dev, new IommuPageResponse { GroupId = 1, Pasid = 8, Flags = IommuPageResponse.FlagPasidValid }));
        Assert.Empty(responses);

        Assert.Equal(Errno.None, Core.PageResponse(dev, new IommuPageResponse { GroupId = 1, Pasid = 9, Flags = IommuPageResponse.FlagPasidValid }));
        (IommuFault f, IommuPageResponse msg) = Assert.Single(responses);
        Assert.Equal(prq, f);
        Assert.Equal(9u, msg.Pasid);
        Assert.Equal(IommuPageResponse.FlagPasidValid, msg.Flags);
    }

    [Fact]
    public void PageResponse_clears_an_unneeded_pasid_before_passing_it_to_the_driver()
    {
        PciDevice dev = ProbedDevice();
        List<(IommuFault Fault, IommuPageResponse Msg)> responses = RecordPageResponses(dev);
        Assert.Equal(Errno.None, Core.RegisterDeviceFaultHandler(dev, (_, _) => Errno.None, null));
        Assert.Equal(Errno.None, Core.ReportDeviceFault(dev, PageRequest(groupId: 4, pasid: 3)));

        Assert.Equal(Errno.None, Core.PageResponse(dev, new IommuPageResponse { GroupId = 4, Pasid = 77, Flags = IommuPageResponse.FlagPasidValid }));

        IommuPageResponse msg = Assert.Single(responses).Msg;
        Assert.Equal(0u, msg.Flags);
        Assert.Equal(0u, msg.Pasid);
    }
}
